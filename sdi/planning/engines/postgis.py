"""The ``postgis`` engine: each join is one SQL statement on GiST-indexed tables, read back as WKB.

When one side is a few large polygons (districts, zones: :func:`sdi.planning.engines.zones.largest`),
that side is first cut into a quadtree of small pieces in temporary tables, and the join's statement runs
against the pieces (:mod:`~sdi.planning.engines.subdivided`, :mod:`~sdi.planning.engines.subdivided_nearest`,
:mod:`~sdi.planning.engines.subdivided_summary`): a row inside an inner cell is settled by a box test, a row
clear of its zone's boundary by a point-in-polygon test on a small piece, and only a row near the boundary is
tested against the whole polygon, in zone order so that PostGIS keeps it prepared; intersections and
distances are computed on pieces, never on the whole polygon. Such results come back unsorted, one row per
(row, piece), and the client keeps one row per pair in key order.

Otherwise the statements below are written so the planner may drive a join from the side with fewer rows:
a left join first finds the matching keys with an inner join, and intersections test ``st_covers`` before
``st_intersection``. Both keep a large polygon as the repeated argument, which PostGIS prepares once.

A layer id is joined in place (``layers.<id>``); a GeoDataFrame is first copied into a temporary table
(:func:`sdi.planning.sources.temp_table`) holding only its geometry and the columns the SQL needs, and
its attributes are taken back from the frame by row position. Statements run without JIT compilation:
the selectivity of spatial tests is guessed, and compiling for guessed millions of rows costs more than
it saves. (The temporary tables make the plans against pieces serial: PostgreSQL runs no parallel worker
on a temporary table. Instead, an ``sjoin`` of two layers runs half of its parts on a second connection.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sdi.planning.engines import subdivided, subdivided_nearest, subdivided_summary
from sdi.planning.engines import zones as _zones
from sdi.planning.engines.frames import Join, Summary, dimension, finish, summary_frame
from sdi.planning.engines.sides import Side, geometry, paused_gc, side
from sdi.planning.sources import LayerTable

__all__ = ["Side", "join_statement", "numeric_columns", "run_join", "run_summary", "side", "source_dimension",
           "summary_statement"]

_PREDICATES = {"intersects": "st_intersects", "within": "st_within", "contains": "st_contains"}
_AGGREGATES = {"sum": "coalesce(sum({}), 0)", "mean": "avg({})", "min": "min({})", "max": "max({})"}
_DIMENSIONS = {"point": 0, "multipoint": 0, "linestring": 1, "multilinestring": 1, "polygon": 2, "multipolygon": 2}
_TIE_MARGIN_M = 1e-6  # nearest: rows this much farther than the KNN distance are re-ranked by st_distance
_NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric


def numeric_columns(conn: psycopg.Connection, table: LayerTable) -> dict[str, bool]:
    """Each attribute column of ``table`` and whether it is numeric."""
    cur = conn.execute(sql.SQL("select {} from {} limit 0").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in table.columns), table.ident))
    return {d.name: d.type_code in _NUMERIC_OIDS for d in cur.description or ()}


def source_dimension(conn: psycopg.Connection, src: Side) -> int:
    """The geometry dimension of a side: from its frame, its catalogue type, or (mixed types) its rows."""
    if src.frame is not None:
        return dimension(src.frame.geometry.values)
    known = _DIMENSIONS.get((src.table.geometry_type or "").lower())
    if known is not None:
        return known
    row = conn.execute(sql.SQL("select max(st_dimension(geom)) from {}").format(src.table.ident)).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def _fetch(conn: psycopg.Connection, query: sql.Composed, params: Sequence[object]) -> list[tuple[object, ...]]:
    with paused_gc(), conn.cursor(binary=True) as cur:
        return cur.execute(query, params).fetchall()


def _geometry(values: Sequence[object]) -> np.ndarray:
    return geometry(values)


def _inside(geometry: str, zone: str | sql.Composable) -> sql.Composable:
    """SQL for the intersection of ``geometry`` with ``zone``: the geometry itself when the zone covers it."""
    zone_sql = sql.SQL(zone) if isinstance(zone, str) else zone
    return sql.SQL("case when st_covers({z}, {g}) then {g} else st_intersection({g}, {z}) end").format(
        g=sql.SQL(geometry), z=zone_sql)


def join_statement(join: Join, left: Side, right: Side) -> tuple[sql.Composed, list[object]]:
    """The SQL statement of ``join`` and its parameters (``right`` is the mask for ``clip``).

    Each selects the left columns, the right columns, the geometry as WKB and (distance joins) the
    distance, ordered by the left then right key; every spatial test is index-assisted
    (``st_intersects``/``st_within``/``st_contains``/``st_dwithin`` and the KNN ``<->`` operator).
    """
    items = left.output("l", "l") + ([] if join.kind == "clip" else right.output("r", "r"))
    params: list[object] = []
    lkey, rkey = left.key("l"), right.key("r")
    order: sql.Composable = sql.SQL("{}, {}").format(lkey, rkey)
    prefix: sql.Composable = sql.SQL("")
    body: sql.Composable
    if join.kind == "sjoin":
        body = sql.SQL("from {L} l join {R} r on {pred}(l.geom, r.geom)").format(
            L=left.table.ident, R=right.table.ident, pred=sql.SQL(_PREDICATES[join.predicate]))
        if join.how == "left":  # matched keys first, so the planner may loop over either side (see module doc)
            prefix = sql.SQL("with p as materialized (select {lk} as lk, {rk} as rk {body}) ").format(
                lk=lkey, rk=rkey, body=body)
            body = sql.SQL("from {L} l left join p on p.lk = {lk} left join {R} r on {rk} = p.rk").format(
                L=left.table.ident, R=right.table.ident, lk=lkey, rk=rkey)
        items.append(sql.SQL("st_asbinary(l.geom)"))
    elif join.kind == "within_distance":
        body = sql.SQL("from {L} l join {R} r on st_dwithin(l.geom, r.geom, %s)").format(
            L=left.table.ident, R=right.table.ident)
        params.append(join.distance)
        items += [sql.SQL("st_asbinary(l.geom)"), sql.SQL("st_distance(l.geom, r.geom)")]
    elif join.kind == "nearest":
        # m: the nearest distance by a KNN index scan; n: among the rows that near (index-assisted
        # st_dwithin, with a margin so exact ties are never lost to rounding), the nearest, lowest key
        within = sql.SQL("")
        if join.distance is not None:
            within = sql.SQL(" where st_dwithin(l.geom, k.geom, %s)")
            params.append(join.distance)
        body = sql.SQL("from {L} l left join lateral (select l.geom <-> k.geom as d from {R} k{within} "
                       "order by l.geom <-> k.geom limit 1) m on true "
                       "left join lateral (select {cols}, st_distance(l.geom, r.geom) as _distance from {R} r "
                       "where st_dwithin(l.geom, r.geom, m.d + {margin}) order by _distance, {rkey} limit 1) n on true"
                       ).format(L=left.table.ident, R=right.table.ident, within=within, rkey=rkey,
                                cols=sql.SQL(", ").join(right.output("r", "r")), margin=sql.Literal(_TIE_MARGIN_M))
        items = left.output("l", "l") + [sql.SQL("n.{}").format(sql.Identifier(f"r{i}"))
                                         for i in range(right.width())]
        items += [sql.SQL("st_asbinary(l.geom)"), sql.SQL("n._distance")]
        order = lkey
    else:  # overlay, clip: the intersection, keeping the parts of the left geometry's dimension
        if join.kind == "clip":  # the mask's union, computed once, is an index condition on the source
            prefix = sql.SQL("with m as materialized (select st_union(geom) as geom from {}) ").format(
                right.table.ident)
            other: sql.Composable = sql.SQL("(select geom from m)")
            source = sql.SQL("from {} l").format(left.table.ident)
            condition = sql.SQL("st_intersects(l.geom, (select geom from m)) and ")
            order = lkey
        else:
            other, condition = sql.SQL("r.geom"), sql.SQL("")
            source = sql.SQL("from {} l join {} r on st_intersects(l.geom, r.geom)").format(
                left.table.ident, right.table.ident)
        body = sql.SQL("{source} cross join lateral (select st_collectionextract({inside}, st_dimension(l.geom) + 1) "
                       "as g) q where {condition}not st_isempty(q.g)").format(
            source=source, inside=_inside("l.geom", other), condition=condition)
        items.append(sql.SQL("st_asbinary(q.g)"))
    query = sql.SQL("{prefix}select {items} {body} order by {order}").format(
        prefix=prefix, items=sql.SQL(", ").join(items), body=body, order=order)
    return query, params


def _settle(conn: psycopg.Connection) -> None:
    """Settings for this transaction's statements: no JIT (see the module docstring), and room to aggregate
    the candidate pairs of a large layer in memory rather than in temporary files."""
    conn.execute("set local jit = off")
    conn.execute("set local work_mem = '64MB'")


def _cut_side(conn: psycopg.Connection, join: Join, left: Side, right: Side) -> subdivided.Plan | None:
    """The plan against pieces when a side of ``join`` is worth cutting (the mask of a clip is unioned first)."""
    if join.kind == "clip":
        zoneset = _zones.unioned(conn, right, left, "mask") if _zones.largest(conn, right) else None
        return None if zoneset is None else subdivided.Plan.make(conn, left, zoneset, True)
    sizes = {"right": _zones.largest(conn, right),
             "left": 0 if join.kind == "nearest" else _zones.largest(conn, left)}
    chosen = max(sizes, key=lambda name: sizes[name])  # the side with the largest polygon; right on a tie
    if not sizes[chosen]:
        return None
    small_left = chosen == "right"
    small = left if small_left else right
    zoneset = _zones.plain(conn, right if small_left else left, small, chosen)
    return None if zoneset is None else subdivided.Plan.make(conn, small, zoneset, small_left)


def run_join(conn: psycopg.Connection, join: Join, left: Side, right: Side,
             helper: Callable[[], psycopg.Connection] | None = None) -> gpd.GeoDataFrame:
    """Run ``join`` (``right`` is the mask for ``clip``) and assemble the result.

    Against pieces when a side is a few large polygons (see the module docstring), else as one statement.
    An ``sjoin`` of two layers against pieces in several parts runs every other part on a second connection
    from ``helper`` (closed afterwards), so two server processes share the work.
    """
    _settle(conn)
    plan = _cut_side(conn, join, left, right)
    if plan is None:
        return _run_whole(conn, join, left, right)
    with paused_gc(), ExitStack() as stack:  # millions of new objects, none in a cycle: collections only walk them
        if join.kind == "nearest":
            return subdivided_nearest.run_nearest(conn, join, plan)
        if join.kind == "within_distance":
            return subdivided.run_within_distance(conn, join, plan)
        if join.kind == "sjoin" and helper is not None and plan.shareable:
            second = stack.enter_context(helper())
            _settle(second)
            plan = plan.shared(conn, second)
        if join.kind == "sjoin" and join.how == "left":
            return subdivided.run_left(conn, join, plan)
        return subdivided.run_pairs(conn, join, plan)


def _run_whole(conn: psycopg.Connection, join: Join, left: Side, right: Side) -> gpd.GeoDataFrame:
    """Run ``join`` as one statement on the whole polygons (:func:`join_statement`)."""
    rows = _fetch(conn, *join_statement(join, left, right))
    nl = left.width()
    nr = 0 if join.kind == "clip" else right.width()
    left_attrs = left.attrs([r[:nl] for r in rows])
    right_attrs = None if join.kind == "clip" else right.attrs([r[nl:nl + nr] for r in rows])
    geometry = _geometry([r[nl + nr] for r in rows])
    distance = np.array([np.nan if r[-1] is None else r[-1] for r in rows], dtype=float) if join.has_distance else None
    return finish(join, left_attrs, right_attrs, geometry, distance)


def summary_statement(summary: Summary, source: Side, zones: Side) -> sql.Composed:
    """The SQL statement of a summary: zone columns (or the ``by`` value), statistics, zone geometry as WKB.

    Zones are dissolved by ``summary.by`` first; each zone's source rows are found with the index-assisted
    ``st_intersects`` in a lateral aggregate, so a zone without rows still gets one (count 0).
    """
    stats: list[sql.Composable] = [sql.SQL("count(*)")]
    for column, function in summary.agg:
        stats.append(sql.SQL("({})::float8").format(
            sql.SQL(_AGGREGATES[function]).format(sql.Identifier("s", column))))
    if summary.measure:
        measure = "st_area" if summary.dimension == 2 else "st_length"
        stats.append(sql.SQL("coalesce(sum({}({})), 0)::float8").format(sql.SQL(measure), _inside("s.geom", "z.geom")))
    aggregated = sql.SQL("cross join lateral (select {stats} from {S} s where st_intersects(z.geom, s.geom)) a").format(
        stats=sql.SQL(", ").join(sql.SQL("{} as {}").format(s, sql.Identifier(f"a{i}")) for i, s in enumerate(stats)),
        S=source.table.ident)
    outputs = [sql.SQL("a.{}").format(sql.Identifier(f"a{i}")) for i in range(len(stats))]
    if summary.by is None:
        query = sql.SQL("select {zcols}, {outputs}, st_asbinary(z.geom) from {Z} z {aggregated} order by {key}").format(
            zcols=sql.SQL(", ").join(zones.output("z", "z")), outputs=sql.SQL(", ").join(outputs),
            Z=zones.table.ident, aggregated=aggregated, key=zones.key("z"))
    else:
        by = sql.Identifier(summary.by)
        query = sql.SQL("with z as (select t.{by} as _by, st_union(t.geom) as geom from {Z} t where t.{by} is not null "
                        "group by t.{by}) select z._by, {outputs}, st_asbinary(z.geom) from z {aggregated}").format(
            by=by, Z=zones.table.ident, outputs=sql.SQL(", ").join(outputs), aggregated=aggregated)
    return query


def run_summary(conn: psycopg.Connection, summary: Summary, source: Side, zones: Side) -> gpd.GeoDataFrame:
    """Summarise ``source`` over ``zones`` in one SQL statement and assemble the result.

    Against pieces when the zones (dissolved by ``summary.by`` first) are a few large polygons.
    """
    _settle(conn)
    if _zones.largest(conn, zones):
        zoneset = (_zones.plain(conn, zones, source, "zones") if summary.by is None
                   else _zones.dissolved(conn, zones, summary.by, source, "zones"))
        if zoneset is not None:
            return subdivided_summary.run_summary(conn, summary, source, zoneset)
    rows = _fetch(conn, summary_statement(summary, source, zones), ())
    width = zones.width() if summary.by is None else 1
    if summary.by is None:
        zone_attrs = zones.attrs([r[:width] for r in rows])
    else:  # groups in the order pandas sorts them (as the in-memory engines dissolve them)
        by_values = pd.Series([r[0] for r in rows])
        rows = [rows[i] for i in by_values.sort_values(kind="stable").index]
        zone_attrs = pd.DataFrame({summary.by: [r[0] for r in rows]})
    names = ["count", *(f"{c}_{f}" for c, f in summary.agg), *([summary.measure] if summary.measure else [])]
    values = {name: np.array([np.nan if r[width + i] is None else r[width + i] for r in rows],
                             dtype=np.int64 if name == "count" else float) for i, name in enumerate(names)}
    return summary_frame(zone_attrs, values, _geometry([r[-1] for r in rows]))
