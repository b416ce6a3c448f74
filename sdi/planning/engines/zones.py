"""Zone sets: the side of a ``postgis`` join that is cut into pieces, as it is, dissolved by a column or unioned.

The ``postgis`` engine cuts a side when it is a few large polygons (:func:`largest`: at most
``MAX_ZONES`` rows, all polygonal, one with more than ``CUT_VERTICES`` vertices), such as the 18 districts
or a zoning layer. A :class:`ZoneSet` keeps the polygons where PostGIS can test them exactly (the layer
itself, the frame's temporary copy, or a temporary table of dissolved or unioned polygons), their pieces
(:mod:`sdi.planning.engines.pieces`), and, on the client, their keys, attributes and geometries, so a
result row carries only a zone's key and never its thousands of vertices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.planning.engines import pieces
from sdi.planning.engines.frames import attributes
from sdi.planning.engines.pieces import Cut
from sdi.planning.engines.sides import Side, Values, column_type, fetch_columns, geometry, integers, objects

_POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon
_SERIAL = itertools.count()  # temporary tables get names of their own, even on a connection used again


@dataclass(frozen=True)
class ZoneSet:
    """Polygons with a key, in a table PostGIS can test exactly, and their pieces.

    Attributes
    ----------
    table
        The table holding the polygons (column ``geom``) under ``key``.
    key
        The key column of ``table`` (also the ``k`` of each piece).
    pieces
        The temporary table of pieces (:func:`sdi.planning.engines.pieces.store`).
    near
        The temporary table of (row, zone) pairs near a zone's boundary (:func:`near_boundary`).
    keys
        The zone keys, in the order of ``geometries`` and ``attrs``.
    geometries
        The polygons, as shapely geometries.
    count
        The number of pieces (their ``id`` runs from 0 to ``count - 1``, by zone).
    attrs
        The zones' attribute columns (a side's result columns), or ``None`` for dissolved or unioned zones.
    cut
        The pieces as cut on the client (to store them again for a second connection).
    key_type
        The SQL type of the keys.
    shared
        Whether :attr:`table` is a loaded layer (any connection can read it) rather than a temporary table.
    """

    table: sql.Composable
    key: str
    pieces: sql.Identifier
    near: sql.Identifier
    keys: pd.Index
    geometries: np.ndarray
    count: int
    attrs: pd.DataFrame | None = None
    cut: Cut | None = None
    key_type: str = "bigint"
    shared: bool = False

    def positions(self, values: Values) -> np.ndarray:
        """The position in :attr:`keys` of each of ``values`` (``-1`` for a missing or unknown key)."""
        numbers = integers(values)
        lookup = pd.Index(numbers) if numbers is not None else pd.Index(objects(values)).infer_objects()
        return np.asarray(self.keys.get_indexer(lookup), dtype=np.int64)


def _polygonal(geometries: np.ndarray) -> bool:
    """Whether every present, non-empty geometry is a (Multi)Polygon and at least one is present."""
    present = geometries[~(shapely.is_missing(geometries) | shapely.is_empty(geometries))]
    return len(present) > 0 and bool(np.isin(shapely.get_type_id(present), _POLYGONAL).all())


def largest(conn: psycopg.Connection, source: Side) -> int:
    """The most vertices of a polygon of ``source`` when it is worth cutting, else 0.

    A side is worth cutting when it is a few large polygons: at most ``MAX_ZONES`` rows, every non-empty
    geometry a (Multi)Polygon, one with more than ``CUT_VERTICES`` vertices.
    """
    if source.frame is not None:
        values = np.asarray(source.frame.geometry.values, dtype=object)
        if len(values) > pieces.MAX_ZONES or not _polygonal(values):
            return 0
        most = int(shapely.get_num_coordinates(values).max())
        return most if most > pieces.CUT_VERTICES else 0
    ident = source.table.ident
    row = conn.execute(sql.SQL("select count(*) from (select from {} limit %s) t").format(ident),
                       (pieces.MAX_ZONES + 1,)).fetchone()
    if row is None or row[0] > pieces.MAX_ZONES:
        return 0
    query = sql.SQL("select max(st_npoints(geom)), bool_and(geometrytype(geom) in ('POLYGON', 'MULTIPOLYGON')) "
                    "from {} where not st_isempty(geom)").format(ident)
    row = conn.execute(query).fetchone()
    if row is None or row[0] is None or not row[1] or row[0] <= pieces.CUT_VERTICES:
        return 0
    return int(row[0])


def near_boundary(conn: psycopg.Connection, small: Side, edges: sql.Identifier, name: str) -> sql.Identifier:
    """The temporary table ``name`` (``sk``, ``zk``) of the (row, zone) pairs whose row's box, grown by
    ``EPSILON_M``, meets the zone's boundary.

    Driven from the boundary chunks ``edges`` (the zones' own vertices) through the small side's GiST index;
    each chunk is prepared once for the boxes round it (a distance to a chunk costs more than this superset).
    """
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create temp table {t} as select distinct s.{sk} as sk, e.k as zk from {E} e join {S} s on "
                         "s.geom && st_expand(e.geom, {eps}) where st_intersects(e.geom, st_expand(s.geom, {eps}))"
                         ).format(t=ident, sk=sql.Identifier(small.table.primary_key), E=edges, S=small.table.ident,
                                  eps=sql.Literal(pieces.EPSILON_M)))
    return ident


def _worth_cutting(values: np.ndarray) -> bool:
    """Whether ``values`` are polygons worth cutting: all polygonal, one with more than ``CUT_VERTICES`` vertices."""
    return _polygonal(values) and int(shapely.get_num_coordinates(values).max()) > pieces.CUT_VERTICES


def _cut(conn: psycopg.Connection, small: Side, key_type: str, keys: Values, outline: np.ndarray,
         outline_zone: np.ndarray | None, make: Callable[[], np.ndarray],
         name: str) -> tuple[np.ndarray, sql.Identifier, sql.Identifier, pieces.Cut] | None:
    """Make the zones (``make()``, keyed by ``keys`` of SQL type ``key_type``) and cut them for a join with ``small``.

    ``outline`` holds the boundaries the zones' boundaries lie on: the zones themselves, or the rows they are
    unioned from (``outline_zone`` gives each row's zone; a boundary a union removes only makes more rows
    count as near it, which are then tested exactly). Its boundary chunks are stored first; the zones are then
    made and cut on a worker thread while PostgreSQL finds the rows near those boundaries
    (:func:`near_boundary`), and the pieces are stored last.

    Returns the zones, the pieces table, the near table and the pieces; ``None`` when the zones
    are not worth cutting (:func:`_worth_cutting`).
    """
    name = f"{name}_{next(_SERIAL)}"
    zone, lines = pieces.chunks(outline)
    if outline_zone is not None:
        zone = np.asarray(outline_zone, dtype=np.int64)[zone]
    edges = pieces.store_chunks(conn, zone, lines, keys, key_type, f"_sdi_edges_{name}")

    def made() -> tuple[np.ndarray, pieces.Cut | None]:
        values = make()
        return values, pieces.cut(values) if _worth_cutting(values) else None

    with ThreadPoolExecutor(max_workers=1) as pool:
        making = pool.submit(made)  # GEOS releases the GIL, and so does psycopg while it waits
        near = near_boundary(conn, small, edges, f"_sdi_near_{name}")
        values, cut = making.result()
    if cut is None:
        return None
    ident = pieces.store(conn, cut, keys, key_type, f"_sdi_pieces_{name}")
    return values, ident, near, cut


def plain(conn: psycopg.Connection, source: Side, small: Side, name: str) -> ZoneSet | None:
    """The rows of ``source`` as zones for a join with ``small``, keyed by its primary key (a frame: by position).

    ``None`` when a frame's polygon is invalid (GEOS predicates on it are undefined: it is joined as it is).
    """
    table = source.table
    names = source.names()
    columns = fetch_columns(conn, sql.SQL("select {}, st_asbinary(geom) from {} order by {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in names), table.ident, sql.Identifier(table.primary_key)))
    keys = columns[source.key_position()]
    values = geometry(columns[-1])
    if source.frame is not None:
        if not shapely.is_valid(values[~shapely.is_missing(values)]).all():
            return None  # a loaded layer's polygons (and a union) are valid; a frame's may not be
        attrs = attributes(source.frame)
    else:
        attrs = source.attrs_from([objects(c) for c in columns[:-1]])
    key_type = column_type(conn, table.ident, table.primary_key)
    made = _cut(conn, small, key_type, keys, values, None, lambda: values, name)
    if made is None:
        return None
    values, ident, near, cut = made
    return ZoneSet(table.ident, table.primary_key, ident, near, pd.Index(objects(keys)).infer_objects(), values,
                   len(cut), attrs, cut, key_type, shared=source.frame is None)


def _temporary(conn: psycopg.Connection, name: str, key_type: str, keys: Sequence[object],
               values: np.ndarray) -> sql.Identifier:
    """A temporary table ``name`` (``k key_type``, ``geom``) holding ``values`` under ``keys``."""
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create temp table {} (k {} primary key, geom geometry(Geometry, 2326))").format(
        ident, sql.SQL(key_type)))
    wkb = shapely.to_wkb(values, hex=True)
    with conn.cursor() as cur, cur.copy(sql.SQL("copy {} from stdin").format(ident)) as copy:
        for key, value in zip(keys, wkb, strict=True):
            copy.write_row([key, None if value is None else f"SRID=2326;{value}"])
    conn.execute(sql.SQL("analyze {}").format(ident))
    return ident


def dissolved(conn: psycopg.Connection, source: Side, by: str, small: Side, name: str) -> ZoneSet | None:
    """The rows of ``source`` dissolved by the column ``by`` (null values left out), keyed by its values.

    Each group is unioned with shapely's ``union_all``, as GeoPandas' ``dissolve`` does (so a one-part
    MultiPolygon held by one row becomes a Polygon there too), while PostgreSQL finds the rows near the
    boundaries of the rows unioned (:func:`_cut`).
    """
    columns = fetch_columns(conn, sql.SQL("select {by}, st_asbinary(geom) from {t} where {by} is not null").format(
        by=sql.Identifier(by), t=source.table.ident))
    values = geometry(columns[1])
    codes, keys = pd.factorize(pd.Series(list(columns[0]), dtype=object), sort=True)

    def groups() -> np.ndarray:
        unions = np.empty(len(keys), dtype=object)
        for code in range(len(keys)):
            unions[code] = shapely.union_all(values[codes == code])
        return unions

    key_type = column_type(conn, source.table.ident, by)
    made = _cut(conn, small, key_type, list(keys), values, codes, groups, name)
    if made is None:
        return None
    unions, ident, near, cut = made
    table = _temporary(conn, f"_sdi_groups_{name}_{next(_SERIAL)}", key_type, list(keys), unions)
    return ZoneSet(table, "k", ident, near, pd.Index(objects(list(keys))).infer_objects(), unions, len(cut),
                   None, cut, key_type)


def unioned(conn: psycopg.Connection, source: Side, small: Side, name: str) -> ZoneSet | None:
    """The union of the rows of ``source`` as one zone (key 0), as :func:`sdi.planning.clip` masks with it."""
    columns = fetch_columns(conn, sql.SQL("select st_asbinary(geom) from {}").format(source.table.ident))
    values = geometry(columns[0])
    made = _cut(conn, small, "integer", [0], values, np.zeros(len(values), dtype=np.int64),
                lambda: np.array([shapely.union_all(values)], dtype=object), name)
    if made is None:
        return None
    union, ident, near, cut = made
    table = _temporary(conn, f"_sdi_mask_{name}_{next(_SERIAL)}", "integer", [0], union)
    return ZoneSet(table, "k", ident, near, pd.Index([0]), union, len(cut), None, cut, "integer")
