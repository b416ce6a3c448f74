"""``summarise_by`` over zones cut into pieces: each (row, zone) pair counted once, its part summed over pieces.

One pass over the pieces (:mod:`sdi.planning.engines.subdivided`) finds the candidate (row, piece) rows.
A row inside an inner cell meets no other piece of its zone: it is a pair of its own, wholly inside. The
other candidates are grouped by (zone, row), each pair decided as :func:`~sdi.planning.engines.subdivided.
predicate` decides intersection. A single-part row clear of the zone's boundary lies wholly inside: it
counts its whole area (or length). A row near the boundary counts the sum of its intersections with the
zone's pieces, which partition the zone, so the sum is the area inside the zone to the rounding of the cuts
(a line is measured once, against the union of the pieces round it). The pairs are then aggregated per zone.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sdi.planning.engines import pieces
from sdi.planning.engines.frames import Summary, summary_frame, take
from sdi.planning.engines.sides import Side, fetch_columns
from sdi.planning.engines.subdivided import INSIDE, candidates, clear, predicate, statement
from sdi.planning.engines.zones import ZoneSet

_AGGREGATES = {"sum": "coalesce(sum({}), 0)", "mean": "avg({})", "min": "min({})", "max": "max({})"}


_MEASURE = {2: "st_area", 1: "st_length"}


def _part(dimension: int, zones: ZoneSet) -> sql.Composable:
    """SQL for a row's measure inside its zone, on a candidate row of a pair near the zone's boundary.

    Areas: the part in this piece (the pieces partition the zone, so the parts add up; the areas of their
    shared edges are 0). Lengths: a line can run along the edge between two pieces, so the first candidate
    row of the pair measures the line inside the union of the zone's pieces round it, and the others 0.
    """
    if dimension == 2:
        return sql.SQL("st_area(st_intersection(s.geom, p.geom))")
    return sql.SQL("case when exists (select from {P} r where r.k = p.k and r.id < p.id and r.near && s.geom) then 0 "
                   "else st_length(st_intersection(s.geom, (select st_union(r.geom) from {P} r where r.k = p.k "
                   "and r.near && s.geom))) end").format(P=zones.pieces)


def summary_statement(summary: Summary, source: Side, zones: ZoneSet) -> sql.Composed:
    """The statement: one row per zone with a source row (zone key, count, aggregates, measure)."""
    columns = list(dict.fromkeys(c for c, _ in summary.agg))
    values = [sql.SQL("s.{} as a{}").format(sql.Identifier(c), sql.SQL(str(i))) for i, c in enumerate(columns)]
    kept = [sql.SQL("a{}").format(sql.SQL(str(i))) for i in range(len(columns))]
    grouped = [sql.SQL("min(a{0}) as a{0}").format(sql.SQL(str(i))) for i in range(len(columns))]
    stats: list[sql.Composable] = [sql.SQL("count(*)")]
    for column, function in summary.agg:
        item = sql.SQL("a{}").format(sql.SQL(str(columns.index(column))))
        stats.append(sql.SQL("({})::float8").format(sql.SQL(_AGGREGATES[function]).format(item)))
    measure_rows: sql.Composable = sql.SQL("")
    measure_in: sql.Composable = sql.SQL("")
    measure_grouped: sql.Composable = sql.SQL("")
    if summary.measure:
        measure_rows = sql.SQL(", {m}(s.geom) as whole, case when not {inside} and not {clear} then {part} end as part"
                               ).format(m=sql.SQL(_MEASURE[summary.dimension]), inside=INSIDE,
                                        clear=clear(source, zones), part=_part(summary.dimension, zones))
        measure_in, measure_grouped = sql.SQL(", whole as m"), sql.SQL(
            ", case when bool_or(part is not null) then coalesce(sum(part), 0) else max(whole) end as m")
        stats.append(sql.SQL("coalesce(sum(m), 0)::float8"))
    ctes = sql.SQL(
        "c as materialized (select p.k as zk, s.{sk} as sk{values}, {inside} as inside, {hit} as hit{rows} {src}), "
        "pairs as (select zk{kept}{m_in} from c where inside union all "
        "select zk{grouped}{m_grouped} from c where not inside group by zk, sk having bool_or(hit))").format(
        sk=sql.Identifier(source.table.primary_key), values=sql.SQL("").join(sql.SQL(", ") + v for v in values),
        inside=INSIDE, hit=predicate("intersects", source, zones, True), rows=measure_rows,
        src=candidates(source, zones),
        kept=sql.SQL("").join(sql.SQL(", ") + k for k in kept), m_in=measure_in,
        grouped=sql.SQL("").join(sql.SQL(", ") + g for g in grouped), m_grouped=measure_grouped)
    body = sql.SQL("select zk, {stats} from pairs group by zk").format(stats=sql.SQL(", ").join(stats))
    return statement(body, ctes)


def run_summary(conn: psycopg.Connection, summary: Summary, source: Side, zones: ZoneSet) -> gpd.GeoDataFrame:
    """Summarise ``source`` over the zones in one SQL statement; one row per zone, in the zone set's order."""
    if summary.dimension == 1:
        pieces.index(conn, zones.pieces)  # a line near a boundary is measured in the union of the pieces round it
    columns = fetch_columns(conn, summary_statement(summary, source, zones))
    found = zones.positions(columns[0])
    n = len(zones.keys)
    names = ["count", *(f"{c}_{f}" for c, f in summary.agg), *([summary.measure] if summary.measure else [])]
    values: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        empty = 0.0 if name == "count" or name == summary.measure or name.endswith("_sum") else np.nan
        column = np.full(n, empty, dtype=float)
        column[found] = [np.nan if v is None else v for v in columns[i + 1]]
        values[name] = column.astype(np.int64) if name == "count" else column
    if zones.attrs is None:  # dissolved zones: the column dissolved by, in its sorted order
        assert summary.by is not None
        attrs = pd.DataFrame({summary.by: list(zones.keys)})
    else:
        attrs = take(zones.attrs, np.arange(n))
    return summary_frame(attrs, values, zones.geometries)
