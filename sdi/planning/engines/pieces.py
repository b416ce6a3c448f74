"""Large polygons cut into small pieces: the ``postgis`` engine's index-friendly plan for districts and zones.

A district has thousands of vertices. Tested against it row by row, PostGIS rebuilds and re-walks the whole
polygon (an intersection, a distance or a covering test that misses the prepared-geometry cache costs
milliseconds), and its one bounding box holds many rows that lie outside it. So the side of a join holding
such polygons (the *zones*) is cut, once per call, into a quadtree of *pieces* in a temporary table (analysed,
and GiST-indexed when a statement looks pieces up):

- *inner* pieces are quadtree cells lying in a zone's interior, checked with GEOS against the polygon
  itself; a row whose bounding box lies in an inner cell, ``EPSILON_M`` away from the cell's edges, lies in
  the zone's interior, so every predicate is known without looking at the polygon;
- *edge* pieces are the zone clipped to a cell its boundary crosses, with at most ``MAX_VERTICES``
  vertices, in a cell at most ``MAX_CELL_M`` wide.

Cells are squares on one dyadic grid (power-of-two sizes at multiples of their size, shifted by
``GRID_OFFSET_M``), exact in binary floating point, so neighbouring cells share their edges exactly and the
pieces partition each zone. A clipped edge piece differs from its
zone only where a cell edge crosses the zone's boundary: the crossing point is rounded (about 1e-10 m at
Hong Kong grid coordinates). Areas, lengths and distances summed or minimised over pieces therefore match
the zone's to far better than 1e-6 m; predicates on rows near a zone's edge are still decided against the
original polygon (:mod:`sdi.planning.engines.subdivided`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely
import shapely.errors
from psycopg import sql

#: A side is cut when one of its polygons has more vertices than this ...
CUT_VERTICES = 256
#: ... and it has at most this many rows (a layer of many small polygons is joined as it is).
MAX_ZONES = 20_000
#: An edge piece has at most this many vertices ...
MAX_VERTICES = 256
#: ... and lies in a cell at most this wide (metres), so most rows of a dense layer fall in an inner cell.
MAX_CELL_M = 1024.0
#: Cells are not cut further below this width (metres), however many vertices they hold.
MIN_CELL_M = 2.0 ** -8
#: Cells lie this far (metres; a multiple of ``MIN_CELL_M``) off the multiples of their width, so that a cut
#: rarely runs along an edge of round coordinates (where rectangle clipping can go wrong).
GRID_OFFSET_M = 91 / 256
#: Vertices of a zone's boundary per edge chunk (see :func:`chunks`).
CHUNK_VERTICES = 24
#: Margin (metres) kept between a row's bounding box and the edges of the inner cell it lies in, and added to
#: every search box: far above the rounding of clipped crossing points, far below any distance that matters.
EPSILON_M = 1e-6
_POLYGON = 3


@dataclass(frozen=True)
class Cut:
    """Pieces of a set of polygons.

    Attributes
    ----------
    zone
        For each piece, the position of its polygon in the input.
    inner
        Whether the piece is an inner cell (the cell itself) rather than an edge piece (the polygon clipped).
    geometry
        The pieces, as shapely geometries.
    """

    zone: np.ndarray
    inner: np.ndarray
    geometry: np.ndarray

    def __len__(self) -> int:
        return len(self.zone)


def _polygonal(geometries: np.ndarray) -> np.ndarray:
    """The polygon parts of each geometry (one Polygon or a MultiPolygon; None where no area is left)."""
    parts, index = shapely.get_parts(geometries, return_index=True)
    keep = (shapely.get_type_id(parts) == _POLYGON) & (shapely.area(parts) > 0)
    parts, index = parts[keep], index[keep]
    out = np.full(len(geometries), None, dtype=object)
    counts = np.bincount(index, minlength=len(geometries))
    single = counts[index] == 1
    out[index[single]] = parts[single]
    several = ~single
    if several.any():
        rows, dense = np.unique(index[several], return_inverse=True)
        out[rows] = shapely.multipolygons(parts[several], indices=dense)
    return out


def _clip(geometries: np.ndarray, zones: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Each geometry clipped to its cell with GEOS's fast rectangle clipping (which may leave an invalid result).

    Where the rectangle clipping fails (an invalid parent piece), the zone is intersected with the cell instead.
    """
    clipped = np.empty(len(geometries), dtype=object)
    with np.errstate(invalid="ignore"):
        for i, (geometry, cell) in enumerate(zip(geometries, cells, strict=True)):
            try:
                clipped[i] = shapely.clip_by_rect(geometry, *cell)
            except shapely.errors.GEOSException:
                clipped[i] = shapely.intersection(zones[i], shapely.box(*cell))
    return _polygonal(clipped)


def _repaired(pieces: np.ndarray, zones: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``pieces`` where valid; elsewhere the zone intersected with the cell by an overlay (always valid)."""
    bad = np.flatnonzero(~shapely.is_valid(pieces))
    if len(bad):
        pieces = pieces.copy()
        pieces[bad] = _polygonal(shapely.intersection(zones[bad], shapely.box(*cells[bad].T)))
    return pieces


def _present(values: np.ndarray) -> np.ndarray:
    """Whether each entry of an object array holds a geometry (is not None)."""
    return np.array([v is not None for v in values], dtype=bool)


def _roots(geometries: np.ndarray) -> np.ndarray:
    """A square cell round each geometry: power-of-two width, corner at a multiple of half that width plus
    ``GRID_OFFSET_M`` (so every cell of the quadtree is exact in binary floating point)."""
    bounds = shapely.bounds(geometries)
    extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    half = 2.0 ** np.ceil(np.log2(np.maximum(extent, MIN_CELL_M)))
    x0 = np.floor((bounds[:, 0] - GRID_OFFSET_M) / half) * half + GRID_OFFSET_M
    y0 = np.floor((bounds[:, 1] - GRID_OFFSET_M) / half) * half + GRID_OFFSET_M
    return np.column_stack([x0, y0, x0 + 2 * half, y0 + 2 * half])


def _quadtree(zones: np.ndarray, index: np.ndarray, checked: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pieces of the (prepared) ``zones[index]``: (zone positions, inner flags, geometries) per level.

    Each cell is clipped from its parent's piece with GEOS's fast rectangle clipping, which can leave an
    invalid piece (when an edge runs along the cut); final pieces are always checked and, where invalid,
    remade by an overlay with the zone, and when ``checked`` every intermediate piece is too.
    """
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    cells, parents = _roots(zones[index]), zones[index]
    while len(index):
        boxes = shapely.box(*cells.T)
        inner = shapely.contains_properly(zones[index], boxes)
        found.append((index[inner], np.ones(int(inner.sum()), dtype=bool), boxes[inner]))
        edge = ~inner & shapely.intersects(zones[index], boxes)  # prepared tests: cheaper than clipping to nothing
        index, cells, parents = index[edge], cells[edge], parents[edge]
        pieces = _clip(parents, zones[index], cells)
        if checked:
            pieces = _repaired(pieces, zones[index], cells)
        kept = _present(pieces)
        index, cells, pieces = index[kept], cells[kept], pieces[kept]
        width = cells[:, 2] - cells[:, 0]
        done = ((shapely.get_num_coordinates(pieces) <= MAX_VERTICES) & (width <= MAX_CELL_M)) | (width <= MIN_CELL_M)
        final = pieces[done] if checked else _repaired(pieces[done], zones[index[done]], cells[done])
        kept = _present(final)
        found.append((index[done][kept], np.zeros(int(kept.sum()), dtype=bool), final[kept]))
        index, cells, parents = index[~done], cells[~done], pieces[~done]
        half = (cells[:, 2] - cells[:, 0]) / 2
        children = [np.column_stack([cells[:, 0] + dx * half, cells[:, 1] + dy * half,
                                     cells[:, 0] + (dx + 1) * half, cells[:, 1] + (dy + 1) * half])
                    for dx in (0, 1) for dy in (0, 1)]
        cells = np.vstack(children)
        index, parents = np.tile(index, 4), np.tile(parents, 4)
    return found


def cut(geometries: Sequence[object] | np.ndarray) -> Cut:
    """Cut polygons into inner cells and edge pieces (see the module docstring).

    The pieces of each polygon must add up to its area (to 1e-9 of it); a polygon whose fast cut does not
    (an invalid intermediate clip lost a part) is cut again with every piece checked.

    Parameters
    ----------
    geometries
        Valid polygonal geometries (missing or empty ones get no piece).

    Returns
    -------
    Cut
        The pieces, by polygon; a polygon small enough is its own single edge piece.
    """
    zones = np.asarray(geometries, dtype=object)
    present = np.flatnonzero(_present(zones))
    present = present[~shapely.is_empty(zones[present])]
    shapely.prepare(zones[present])
    whole = present[(shapely.get_num_coordinates(zones[present]) <= MAX_VERTICES)]
    bounds = shapely.bounds(zones[whole]) if len(whole) else np.empty((0, 4))
    whole = whole[np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) <= MAX_CELL_M]
    found = [(whole, np.zeros(len(whole), dtype=bool), zones[whole])]
    found += _quadtree(zones, np.setdiff1d(present, whole), checked=False)
    zone = np.concatenate([f[0] for f in found]).astype(np.int64)
    inner = np.concatenate([f[1] for f in found])
    geometry = np.concatenate([f[2] for f in found])
    total = np.bincount(zone, weights=shapely.area(geometry), minlength=len(zones))
    expected = np.zeros(len(zones))
    expected[present] = shapely.area(zones[present])
    lost = np.flatnonzero(np.abs(total - expected) > 1e-9 * expected + 1e-9)
    if len(lost):
        again = _quadtree(zones, lost, checked=True)
        keep = ~np.isin(zone, lost)
        zone = np.concatenate([zone[keep], *(f[0] for f in again)]).astype(np.int64)
        inner = np.concatenate([inner[keep], *(f[1] for f in again)])
        geometry = np.concatenate([geometry[keep], *(f[2] for f in again)])
    order = np.lexsort((~inner, zone))  # by zone: consecutive rows share the zone PostGIS has prepared
    return Cut(zone[order], inner[order], geometry[order])


def chunks(geometries: Sequence[object] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each polygon's boundary as LineStrings of at most ``CHUNK_VERTICES`` of its own vertices.

    The chunks are the rings cut at vertices (consecutive chunks share one), so their coordinates are the
    polygon's own: a test against them is exact, which a test against a clipped piece is not near a cut.

    Returns
    -------
    tuple of numpy.ndarray
        The position of each chunk's polygon in ``geometries``, and the chunks.
    """
    zones = np.asarray(geometries, dtype=object)
    present = np.flatnonzero(_present(zones))
    present = present[~shapely.is_empty(zones[present])]
    parts, part_zone = shapely.get_parts(zones[present], return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    ring_zone = part_zone[ring_part]
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    sizes = np.bincount(ring_of, minlength=len(rings))  # points per ring, the closing point repeated
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    per_ring = np.maximum(np.ceil((sizes - 1) / CHUNK_VERTICES).astype(np.int64), 0)
    ring = np.repeat(np.arange(len(rings)), per_ring)
    nth = np.arange(len(ring)) - np.repeat(np.cumsum(per_ring) - per_ring, per_ring)
    start = nth * CHUNK_VERTICES
    length = np.minimum(start + CHUNK_VERTICES, sizes[ring] - 1) - start + 1
    offsets = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    points = np.repeat(first[ring] + start, length) + offsets
    lines = shapely.linestrings(coords[points], indices=np.repeat(np.arange(len(ring)), length))
    return present[ring_zone[ring]].astype(np.int64), np.asarray(lines, dtype=object)


def _cell_margin(bounds: np.ndarray) -> np.ndarray:
    """How far (metres) to shrink each cell so that PostGIS's float4 boxes cannot reach past it.

    An index or ``@`` test compares boxes rounded outward to single precision. Four single-precision steps at
    the cell's largest coordinate (0.25 m in Hong Kong's grid) plus twice ``EPSILON_M`` keep a row that passes
    ``row @ cell`` inside the real cell and clear of the (equally rounded, ``EPSILON_M``-grown) search boxes of
    the pieces next to it, so such a row meets no other piece of its zone.
    """
    largest = np.abs(bounds).max(axis=1).astype(np.float32)
    return 4.0 * np.spacing(largest).astype(float) + 2 * EPSILON_M


#: Key types copied in binary (psycopg's names for them); other keys go through text.
_BINARY_KEYS = {"bigint": "int8", "integer": "int4", "smallint": "int2", "text": "text"}


def _copy(conn: psycopg.Connection, ident: sql.Identifier, key_type: str, key_column: int, rows: Iterable[list[object]],
          geometries: int) -> None:
    """COPY ``rows`` into ``ident``: geometries as WKB (the column's SRID applies), binary when the key type allows."""
    binary = _BINARY_KEYS.get(key_type)
    with conn.cursor() as cur:
        if binary is None:
            with cur.copy(sql.SQL("copy {} from stdin").format(ident)) as copy:
                for row in rows:
                    copy.write_row([v.hex() if isinstance(v, bytes) else v for v in row])
            return
        with cur.copy(sql.SQL("copy {} from stdin (format binary)").format(ident)) as copy:
            width = key_column + 1 + geometries
            copy.set_types(["int4" if i < key_column else binary if i == key_column else "bytea" for i in range(width)])
            for row in rows:
                copy.write_row(row)


def store(conn: psycopg.Connection, pieces: Cut, keys: Sequence[object] | np.ndarray, key_type: str,
          name: str) -> sql.Identifier:
    """Copy ``pieces`` into the temporary table ``name`` (analysed; :func:`index` indexes it) and return its name.

    Columns: ``id`` (the piece's position in ``pieces``: by zone), ``k`` (the key of its zone, SQL type
    ``key_type``), ``cell`` (an inner piece's cell shrunk by :func:`_cell_margin`, as a box; NULL for edge
    pieces: a row with ``row.geom @ cell`` lies in the zone's interior), ``near`` (the piece's bounding box
    grown by ``EPSILON_M``: the search box) and ``geom`` (the piece).
    """
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create temp table {} (id integer primary key, k {}, cell geometry(Polygon, 2326), near "
                         "geometry(Polygon, 2326), geom geometry(Geometry, 2326))").format(ident, sql.SQL(key_type)))
    bounds = shapely.bounds(pieces.geometry)
    inset = bounds + _cell_margin(bounds)[:, None] * np.array([1.0, 1.0, -1.0, -1.0])
    grown = bounds + EPSILON_M * np.array([-1.0, -1.0, 1.0, 1.0])
    cells, near, wkb = (shapely.to_wkb(g) for g in (shapely.box(*inset.T), shapely.box(*grown.T), pieces.geometry))
    rows = ([i, keys[zone], cells[i] if inner else None, near[i], wkb[i]]
            for i, (zone, inner) in enumerate(zip(pieces.zone.tolist(), pieces.inner.tolist(), strict=True)))
    _copy(conn, ident, key_type, 1, rows, 3)
    conn.execute(sql.SQL("analyze {}").format(ident))
    return ident


def index(conn: psycopg.Connection, ident: sql.Identifier) -> None:
    """GiST-index the pieces table ``ident`` on ``near`` and ``geom``, for statements that look pieces up.

    The joins walk the pieces from start to end; only intersections (the pieces round a row) and
    ``nearest`` (``<->``) look pieces up, so only they pay for the indexes.
    """
    conn.execute(sql.SQL("create index on {} using gist (near)").format(ident))
    conn.execute(sql.SQL("create index on {} using gist (geom)").format(ident))
    conn.execute(sql.SQL("analyze {}").format(ident))


def store_chunks(conn: psycopg.Connection, zone: np.ndarray, lines: np.ndarray, keys: Sequence[object] | np.ndarray,
                 key_type: str, name: str) -> sql.Identifier:
    """Copy boundary chunks (:func:`chunks`) into the temporary table ``name`` (``k``, ``geom``).

    The table is only ever read from start to end (it drives a join), so it has no index.
    """
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create temp table {} (k {}, geom geometry(LineString, 2326))").format(
        ident, sql.SQL(key_type)))
    wkb = shapely.to_wkb(lines)
    _copy(conn, ident, key_type, 0, ([keys[z], line] for z, line in zip(zone.tolist(), wkb, strict=True)), 1)
    return ident
