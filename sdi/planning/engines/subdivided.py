"""Joins against zones cut into pieces: one SQL statement per join, driven from the pieces in zone order.

Every statement walks the pieces (:mod:`sdi.planning.engines.pieces`) in zone order and, through the other
side's GiST index, the rows ``s`` whose box meets a piece's search box. Each candidate (row, piece) is
settled by the cheapest test that is exact:

- a row inside an inner cell (``s.geom @ p.cell``, a box test) lies in the zone's interior;
- a single-part row that keeps ``EPSILON_M`` away from the zone's boundary (its pair is not in
  :attr:`~sdi.planning.engines.zones.ZoneSet.near`, found first from the boundary chunks, which hold the
  zone's own vertices) lies wholly inside or wholly outside the zone, so it is inside exactly when one of its
  vertices lies in the piece: a point-in-polygon test on a small polygon, where rounding at the cut cannot
  matter;
- any other pair (the row meets or nearly meets the zone's boundary, or has several parts) is tested
  against the zone's own polygon ``z.geom``; consecutive rows share their zone, which PostGIS keeps
  prepared, and such pairs are few.

Intersections and distances are computed on the small pieces, never on the whole polygon. A row meeting
several pieces of its zone yields one result row per piece: the client keeps one per (row, zone) pair and
sorts by the left then the right key (:class:`Plan`). The statements name the small side ``s``, the
pieces ``p`` and the zone ``z``; ``small_left`` tells whether the small side is the join's left input.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sdi.planning.engines import pieces
from sdi.planning.engines.frames import Join, finish, take
from sdi.planning.engines.pieces import EPSILON_M
from sdi.planning.engines.sides import (
    Side,
    column_type,
    estimated_rows,
    fetch_columns,
    fetch_parts,
    geometry,
    integers,
    paused_gc,
    python_sortable,
    ranks,
)
from sdi.planning.engines.zones import ZoneSet

EPSILON = sql.Literal(EPSILON_M)
#: A row inside an inner cell of its zone (a box test; :mod:`sdi.planning.engines.pieces` says why it is exact).
INSIDE = sql.SQL("coalesce(s.geom @ p.cell, false)")
#: A vertex of a row of each type (of its first part; a layer of mixed types: found the slow way).
_VERTEX = {"Point": "s.geom", "LineString": "st_startpoint(s.geom)", "Polygon": "st_pointn(st_exteriorring(s.geom), 1)",
           "MultiPoint": "st_geometryn(s.geom, 1)", "MultiLineString": "st_startpoint(st_geometryn(s.geom, 1))",
           "MultiPolygon": "st_pointn(st_exteriorring(st_geometryn(s.geom, 1)), 1)"}
_SINGLE = {"Point", "LineString", "Polygon"}


def near(small: Side, zones: ZoneSet) -> sql.Composed:
    """The row comes near its zone's boundary: the pair is in :attr:`ZoneSet.near` (a hashed lookup, evaluated
    only where needed; a join could be planned on the zone alone)."""
    return sql.SQL("((s.{}, p.k) in (select sk, zk from {}))").format(
        sql.Identifier(small.table.primary_key), zones.near)


def clear(small: Side, zones: ZoneSet) -> sql.Composable:
    """A single-part row keeping clear of its zone's boundary: wholly inside or wholly outside the zone."""
    if small.kind() in _SINGLE:
        return sql.SQL("not {}").format(near(small, zones))
    return sql.SQL("(not {} and st_numgeometries(s.geom) = 1)").format(near(small, zones))


def clear_inside(small: Side) -> sql.Composable:
    """For a clear row: inside the zone exactly when one of its vertices lies in the piece.

    PostGIS's own point-in-polygon test, with the piece's ring index cached while its rows go by.
    """
    vertex = _VERTEX.get(small.kind() or "", "st_geometryn(st_points(s.geom), 1)")
    return sql.SQL("st_intersects(p.geom, {})").format(sql.SQL(vertex))


#: The row meets its zone (exact; for a row near the zone's boundary).
MEETS = sql.SQL("st_intersects(z.geom, s.geom)")


def candidates(small: Side, zones: ZoneSet, reach: sql.Composable | None = None,
               part: tuple[int, int] | None = None) -> sql.Composed:
    """The ``from`` clause: pieces in zone order, each piece's zone ``z``, the rows ``s`` near it.

    ``reach`` (metres, SQL) widens the search box beyond the piece's own (``EPSILON_M`` round it); ``part``
    keeps the pieces whose ``id`` lies in that half-open range.
    """
    box = sql.SQL("p.near") if reach is None else sql.SQL("st_expand(p.near, {})").format(reach)
    only = sql.SQL("") if part is None else sql.SQL(" where id >= {} and id < {}").format(*map(sql.Literal, part))
    return sql.SQL("from (select * from {P}{only} order by id) p join {Z} z on z.{zk} = p.k "
                   "join {S} s on s.geom && {box}").format(
        P=zones.pieces, only=only, Z=zones.table, zk=sql.Identifier(zones.key), S=small.table.ident, box=box)


def statement(body: sql.Composable, ctes: sql.Composable | None = None) -> sql.Composed:
    """``[with ctes] body``."""
    return sql.SQL("{}{}").format(sql.SQL("with {} ").format(ctes) if ctes else sql.SQL(""), body)


def predicate(name: str, small: Side, zones: ZoneSet, small_left: bool) -> sql.Composed:
    """The value of ``name(left, right)`` for a candidate row (false when the row and zone do not form a pair)."""
    if name == "intersects" or (name == "within") == small_left:  # meets, the row within, the zone contains it
        exact = MEETS if name == "intersects" else sql.SQL("st_contains(z.geom, s.geom)")
        return sql.SQL("case when {} then true when {} then {} else {} end").format(
            INSIDE, clear(small, zones), clear_inside(small), exact)
    exact = sql.SQL("st_contains(s.geom, z.geom)") if small_left else sql.SQL("st_within(z.geom, s.geom)")
    return sql.SQL("(not {} and {})").format(INSIDE, exact)  # the row containing its zone: bounding boxes first


def intersection(small: Side, zones: ZoneSet) -> sql.Composed:
    """SQL for the row's part inside its zone, or NULL (on this candidate row).

    A row inside an inner cell, or clear of the boundary and meeting the piece, is its own intersection.
    Otherwise the first candidate row of the pair (in piece order; the ``near`` test repeats the candidate
    test exactly) computes it: the row itself when the zone covers it, else its intersection with the union
    of the zone's pieces round it.
    """
    return sql.SQL(
        "case when {inside} then s.geom when {clear} then case when {clear_in} then s.geom end "
        "when not exists (select from {P} r where r.k = p.k and r.id < p.id and r.near && s.geom) then "
        "case when st_covers(z.geom, s.geom) then s.geom when {meets} then st_intersection(s.geom, "
        "(select st_union(r.geom) from {P} r where r.k = p.k and r.near && s.geom)) end end").format(
        inside=INSIDE, clear=clear(small, zones), clear_in=clear_inside(small), P=zones.pieces, meets=MEETS)


#: Rows of the small side per part of a statement (:attr:`Plan.parts`), and the most parts.
ROWS_PER_PART = 40_000
MAX_PARTS = 16


@dataclass(frozen=True)
class Plan:
    """A join between a small side and zones: who is left, how the client orders the small side's keys, and the
    ranges of pieces a statement is run for one after the other (so the client parses one part's rows while
    PostgreSQL computes the next)."""

    small: Side
    zones: ZoneSet
    small_left: bool
    presorted: bool
    parts: tuple[tuple[int, int] | None, ...] = (None,)
    helper: psycopg.Connection | None = None
    helper_setup: Callable[[], None] | None = None

    @property
    def shareable(self) -> bool:
        """Whether a second connection can run some of the parts: several parts in no server order, and every
        table but the pieces and near pairs a loaded layer (a temporary table lives in its session only)."""
        return len(self.parts) > 1 and not self.presorted and self.small.frame is None and self.zones.shared

    def shared(self, conn: psycopg.Connection, helper: psycopg.Connection) -> Plan:
        """This plan with ``helper`` running every other part of a statement.

        The pieces and the near pairs are stored in temporary tables of the same names on ``helper`` (by
        :attr:`helper_setup`, which runs before its first part while ``conn`` runs its own). The layers it
        reads are those ``conn`` reads: ``conn``'s transaction holds locks on them, so a reload cannot
        replace them before it ends.
        """
        zones, small = self.zones, self.small
        cut = zones.cut
        assert cut is not None
        pairs = fetch_columns(conn, sql.SQL("select sk, zk from {}").format(zones.near))
        key_type = column_type(conn, small.table.ident, small.table.primary_key)

        def setup() -> None:
            pieces.store(helper, cut, list(zones.keys), zones.key_type, _name(helper, zones.pieces))
            helper.execute(sql.SQL("create temp table {} (sk {}, zk {})").format(
                zones.near, sql.SQL(key_type), sql.SQL(zones.key_type)))
            with helper.cursor() as cur, cur.copy(sql.SQL("copy {} from stdin").format(zones.near)) as copy:
                for row in zip(*pairs, strict=True):
                    copy.write_row(row)
            helper.execute(sql.SQL("analyze {}").format(zones.near))

        return dataclasses.replace(self, helper=helper, helper_setup=setup)

    @classmethod
    def make(cls, conn: psycopg.Connection, small: Side, zones: ZoneSet, small_left: bool) -> Plan:
        """A plan; the rows come sorted by the small key when Python cannot sort those keys as PostgreSQL does."""
        sortable = small.frame is not None or python_sortable(conn, small.table, small.table.primary_key)
        count = len(small.frame) if small.frame is not None else estimated_rows(conn, small)
        n = int(min(MAX_PARTS, max(1, round(count / ROWS_PER_PART)), max(1, zones.count)))
        n = 1 if not sortable else n  # rows sorted by the server: one statement, or the parts would interleave
        edges = np.linspace(0, zones.count, n + 1).round().astype(int)
        parts = tuple((int(a), int(b)) for a, b in itertools.pairwise(edges)) if n > 1 else (None,)
        return cls(small, zones, small_left, not sortable, parts)

    def fetch(self, conn: psycopg.Connection,
              build: Callable[[tuple[int, int] | None], sql.Composed]) -> list[np.ndarray]:
        """Run the statement ``build(part)`` for each part; the WKB column after the zone key (after the small
        side's columns) comes back parsed (:func:`sdi.planning.engines.sides.fetch_parts`)."""
        queries = [build(part) for part in self.parts]
        if self.helper is None:
            return fetch_parts([conn], queries, self.small.width() + 1)
        return fetch_parts([conn, self.helper], queries, self.small.width() + 1, [None, self.helper_setup])

    def order_by(self) -> sql.Composable:
        """The statement's ``order by`` (nothing when the client sorts)."""
        return sql.SQL(" order by s.{}").format(sql.Identifier(self.small.table.primary_key)) if self.presorted \
            else sql.SQL("")

    def groups(self, columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row positions sorted by left then right key, where each (row, zone) pair starts, and each row's zone.

        Zones rank by their keys' order (read sorted); the small side's keys rank as Python sorts them, or in
        the order the statement returned them when ``presorted``. The zones are positions in the zone set.
        """
        small_rank = ranks(columns[self.small.key_position()], self.presorted)
        zones = self.zones.positions(columns[self.small.width()])
        left, right = (small_rank, zones) if self.small_left else (zones, small_rank)
        order = np.lexsort((right, left))
        left, right = left[order], right[order]
        starts = np.flatnonzero(np.r_[True, (left[1:] != left[:-1]) | (right[1:] != right[:-1])])
        return order, starts, zones

    def result(self, join: Join, columns: Sequence[np.ndarray], rows: np.ndarray, zones: np.ndarray,
               distance: np.ndarray | None = None) -> gpd.GeoDataFrame:
        """Assemble ``rows`` of a statement selecting the small side's columns, ``p.k`` and a WKB geometry.

        ``zones`` is each statement row's zone (:meth:`groups`).
        """
        with paused_gc():
            width = self.small.width()
            small_attrs = self.small.attrs_from([c[rows] for c in columns[:width]])
            positions = zones[rows]
            zone_attrs = None if self.zones.attrs is None else take(self.zones.attrs, positions)
            if join.intersects_geometry or self.small_left:
                shapes = columns[width + 1][rows]  # parsed by fetch_parts
            else:  # the zone is the left row: its polygon comes from the client, never through the wire
                shapes = self.zones.geometries[positions]
            left, right = (small_attrs, zone_attrs) if self.small_left else (zone_attrs, small_attrs)
            assert left is not None
            return finish(join, left, None if join.kind == "clip" else right, shapes, distance)


def _name(conn: psycopg.Connection, ident: sql.Identifier) -> str:
    """The bare name of a temporary table's identifier."""
    return ident.as_string(conn).strip('"')


def _pair_columns(conn: psycopg.Connection, join: Join, plan: Plan) -> list[np.ndarray]:
    """The result columns of an inner ``sjoin``, ``overlay`` or ``clip`` against pieces (a pair may repeat)."""
    small, zones = plan.small, plan.zones
    outputs = sql.SQL(", ").join(small.output("s", "s"))
    if join.kind == "sjoin":
        shape = sql.SQL("st_asbinary(s.geom)") if plan.small_left else sql.SQL("null::bytea")
        cond = predicate(join.predicate, small, zones, plan.small_left)

        def build(part: tuple[int, int] | None) -> sql.Composed:
            return statement(sql.SQL("select {out}, p.k, {shape} {src} where {cond}{order}").format(
                out=outputs, shape=shape, src=candidates(small, zones, part=part), cond=cond, order=plan.order_by()))
    else:  # overlay, clip: the zones are polygons, so a zone on the left keeps polygonal parts only
        pieces.index(conn, zones.pieces)  # the union of the pieces round a row
        dimension = sql.SQL("st_dimension(s.geom) + 1") if plan.small_left else sql.Literal(3)
        cut = intersection(small, zones)

        def build(part: tuple[int, int] | None) -> sql.Composed:
            return statement(sql.SQL(
                "select {out}, p.k, st_asbinary(q.g) {src} cross join lateral (select st_collectionextract({cut}, "
                "{dim}) as g offset 0) q where not st_isempty(q.g){order}").format(
                out=outputs, src=candidates(small, zones, part=part), cut=cut, dim=dimension, order=plan.order_by()))
    return plan.fetch(conn, build)


def _pair_rows(conn: psycopg.Connection, join: Join, plan: Plan) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The rows of an inner ``sjoin``, ``overlay`` or ``clip`` against pieces, one row per pair, each row's zone."""
    columns = _pair_columns(conn, join, plan)
    order, starts, positions = plan.groups(columns)
    return columns, order[starts], positions


def run_pairs(conn: psycopg.Connection, join: Join, plan: Plan) -> gpd.GeoDataFrame:
    """Run an inner ``sjoin``, an ``overlay`` or a ``clip`` against pieces and assemble the result."""
    return plan.result(join, *_pair_rows(conn, join, plan))


def _unmatched(conn: psycopg.Connection, plan: Plan, columns: list[np.ndarray]) -> list[np.ndarray]:
    """Rows for the left rows without a pair in ``columns`` (the pairs' result columns), in the same layout.

    Left zones: from the zone set. Left rows of the small side: all its keys are read, and the rows of the
    keys not among the pairs (usually few) are read whole.
    """
    small, width = plan.small, plan.small.width()
    if not plan.small_left:
        positions = plan.zones.positions(columns[width])
        found = np.zeros(len(plan.zones.keys), dtype=bool)
        found[positions[positions >= 0]] = True
        keys = np.asarray(plan.zones.keys, dtype=object)[~found]
        return [*(np.full(len(keys), None, dtype=object) for _ in range(width)), keys,
                np.full(len(keys), None, dtype=object)]
    sk = sql.Identifier(small.table.primary_key)
    every = fetch_columns(conn, sql.SQL("select {} from {}").format(sk, small.table.ident))[0]
    matched = columns[small.key_position()]
    numbers, paired = integers(every), integers(matched)
    if numbers is not None and (paired is not None or not len(matched)):
        missing = every[~np.isin(numbers, paired if paired is not None else np.empty(0, np.int64))]
    else:
        missing = every[~pd.Index(every).isin(pd.Index(matched))]
    if not len(missing):
        return [np.empty(0, dtype=object) for _ in columns]
    rows = fetch_columns(conn, sql.SQL("select {}, null, st_asbinary(s.geom) from {} s where s.{} = any(%s)").format(
        sql.SQL(", ").join(small.output("s", "s")), small.table.ident, sk), [list(missing)])
    rows[width + 1] = geometry(rows[width + 1])
    return rows


def run_left(conn: psycopg.Connection, join: Join, plan: Plan) -> gpd.GeoDataFrame:
    """Run an ``sjoin`` with ``how="left"``: the pairs found against pieces, and the left rows without one.

    The pairs come from the inner join's statement (in parts); the unmatched left rows are added by
    :func:`_unmatched`. When the server sorts the small side's keys (:attr:`Plan.presorted`), every left row
    is joined to the pairs in one statement instead.
    """
    if not (plan.presorted and plan.small_left):
        columns = _pair_columns(conn, Join("sjoin", join.predicate), plan)
        extra = _unmatched(conn, plan, columns)
        if len(extra[0]):
            columns = [np.concatenate([c, e] if c.dtype == e.dtype else [c.astype(object), e])
                       for c, e in zip(columns, extra, strict=True)]
        order, starts, positions = plan.groups(columns)
        return plan.result(join, columns, order[starts], positions)
    small, sk = plan.small, sql.Identifier(plan.small.table.primary_key)
    pairs = sql.SQL("m as materialized (select distinct s.{sk} as sk, p.k as zk {src} where {cond})").format(
        sk=sk, src=candidates(small, plan.zones), cond=predicate(join.predicate, small, plan.zones, True))
    body = sql.SQL("select {out}, m.zk, st_asbinary(s.geom) from {S} s left join m on m.sk = s.{sk}{order}").format(
        out=sql.SQL(", ").join(small.output("s", "s")), S=small.table.ident, sk=sk, order=plan.order_by())
    columns = fetch_parts([conn], [statement(body, pairs)], small.width() + 1)
    order, starts, positions = plan.groups(columns)
    return plan.result(join, columns, order[starts], positions)


def run_within_distance(conn: psycopg.Connection, join: Join, plan: Plan) -> gpd.GeoDataFrame:
    """Run ``within_distance`` against pieces: each pair's distance is the least over the pieces of its zone.

    A piece's distance is its zone's to the rounding of the cut (far below 1e-6 m). What that rounding could
    change is decided on the zone's own polygon: whether a row near the zone's boundary meets the zone
    (distance 0), and whether a row within ``EPSILON_M`` of the threshold is within it.
    """
    if not join.distance:  # distance 0: the pairs that intersect
        columns, rows, positions = _pair_rows(conn, Join("sjoin", "intersects"), plan)
        return plan.result(join, columns, rows, positions, np.zeros(len(rows)))
    small = plan.small
    shape = sql.SQL("st_asbinary(s.geom)") if plan.small_left else sql.SQL("null::bytea")
    limit = sql.Literal(join.distance)

    def build(part: tuple[int, int] | None) -> sql.Composed:
        return statement(sql.SQL(
            "select {out}, p.k, {shape}, q.d, q.within {src} "
            "cross join lateral (select {inside} as inside, case when {inside} then 0::float8 "
            "else st_distance(p.geom, s.geom) end as dp offset 0) a "
            "cross join lateral (select case when a.inside then 0::float8 "
            "when a.dp <= {eps} and {near} then case when {meets} then 0::float8 else a.dp end "
            "when abs(a.dp - {d}) <= {eps} then st_distance(z.geom, s.geom) else a.dp end as d, "
            "a.inside or a.dp < {d} - {eps} or st_dwithin(z.geom, s.geom, {d}) as within offset 0) q "
            "where a.dp <= {d} + {eps}{order}").format(
            out=sql.SQL(", ").join(small.output("s", "s")), shape=shape, inside=INSIDE, eps=EPSILON, meets=MEETS,
            near=near(small, plan.zones), d=limit, order=plan.order_by(),
            src=candidates(small, plan.zones, sql.SQL("{} + {}").format(limit, EPSILON), part)))

    columns = plan.fetch(conn, build)
    order, starts, positions = plan.groups(columns)
    if not len(order):
        return plan.result(join, columns, order, positions, np.empty(0))
    width = small.width()
    distance = np.minimum.reduceat(columns[width + 2].astype(float)[order], starts)
    within = np.logical_or.reduceat(columns[width + 3].astype(bool)[order], starts)
    return plan.result(join, columns, order[starts][within], positions, distance[within])
