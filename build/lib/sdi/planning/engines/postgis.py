"""The ``postgis`` engine: each join is one SQL statement on GiST-indexed tables, read back as WKB.

Statements are written so the planner may drive a join from the side with fewer rows: a left join
first finds the matching keys with an inner join, and intersections test ``st_covers`` before
``st_intersection``. Both keep a large polygon (a district) as the repeated argument, which PostGIS
prepares once, instead of re-reading it for every small geometry.

A layer id is joined in place (``layers.<id>``); a GeoDataFrame is first copied into a temporary
table (:func:`sdi.planning.sources.temp_table`) holding only its geometry and the columns the SQL
needs, and its attributes are taken back from the frame by row position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.planning.engines.frames import Join, Summary, attributes, dimension, finish, summary_frame, take
from sdi.planning.sources import LayerTable, layer_table, temp_table

_PREDICATES = {"intersects": "st_intersects", "within": "st_within", "contains": "st_contains"}
_AGGREGATES = {"sum": "coalesce(sum({}), 0)", "mean": "avg({})", "min": "min({})", "max": "max({})"}
_DIMENSIONS = {"point": 0, "multipoint": 0, "linestring": 1, "multilinestring": 1, "polygon": 2, "multipolygon": 2}
_TIE_MARGIN_M = 1e-6  # nearest: rows this much farther than the KNN distance are re-ranked by st_distance
_NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric


@dataclass(frozen=True)
class Side:
    """One input of a join: a loaded layer, or a temporary copy of ``frame``."""

    table: LayerTable
    frame: gpd.GeoDataFrame | None = None

    def key(self, alias: str) -> sql.Composable:
        """The row key (primary key, or frame position) qualified by ``alias``."""
        return sql.Identifier(alias, self.table.primary_key)

    def output(self, alias: str, prefix: str) -> list[sql.Composable]:
        """Select items for this side's result columns, named ``<prefix><n>``."""
        names = ["_row"] if self.frame is not None else list(self.table.columns)
        return [sql.SQL("{} as {}").format(sql.Identifier(alias, c), sql.Identifier(f"{prefix}{i}"))
                for i, c in enumerate(names)]

    def width(self) -> int:
        """How many result columns :meth:`output` selects."""
        return 1 if self.frame is not None else len(self.table.columns)

    def attrs(self, rows: Sequence[Sequence[object]]) -> pd.DataFrame:
        """This side's attributes from its selected values (one sequence per result row)."""
        if self.frame is None:
            return pd.DataFrame([list(r) for r in rows], columns=list(self.table.columns))
        positions = np.array([-1 if r[0] is None else r[0] for r in rows], dtype=np.int64)
        return take(attributes(self.frame), positions)


def side(conn: psycopg.Connection, source: str | gpd.GeoDataFrame, name: str,
         columns: Sequence[str] = ()) -> Side:
    """The :class:`Side` of a layer id, or of a frame copied (geometry, ``columns``) into temp table ``_sdi_<name>``."""
    if isinstance(source, str):
        return Side(layer_table(conn, source))
    copy = source[[*columns, source.geometry.name]]
    return Side(temp_table(conn, copy, f"_sdi_{name}"), source)


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
    with conn.cursor(binary=True) as cur:
        return cur.execute(query, params).fetchall()


def _geometry(values: Sequence[object]) -> np.ndarray:
    wkb = np.empty(len(values), dtype=object)
    wkb[:] = [None if v is None else bytes(v) for v in values]  # type: ignore[call-overload]
    return np.asarray(shapely.from_wkb(wkb), dtype=object)


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


def run_join(conn: psycopg.Connection, join: Join, left: Side, right: Side) -> gpd.GeoDataFrame:
    """Run ``join`` as one SQL statement (``right`` is the mask for ``clip``) and assemble the result."""
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
    """Summarise ``source`` over ``zones`` in one SQL statement and assemble the result."""
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
