"""Tile matrix sets (OGC Two Dimensional Tile Matrix Set 2.0) and the one SQL statement that makes a vector tile.

Two grids are offered:

* ``WebMercatorQuad``, the OGC registered grid of web maps (EPSG:3857);
* ``HK80Grid``, the grid of the Lands Department's HK80 XYZ basemap: EPSG:2326 (axis order northing,
  easting), top-left origin easting −4,786,700 m, northing 8,353,100 m, cell size 156,543.0339 m ÷ 2^z for
  z 0–20, 256-pixel tiles. sdi's tiles in this grid overlay that basemap, and since the layers are stored in
  EPSG:2326 they need no reprojection at all.

Both are :class:`morecantile.TileMatrixSet` objects; a tile's bounds come from morecantile and are bound into
the statement, so the grid is defined in one place. Each tile is one statement: the bounds, widened by the
MVT buffer, select rows through the layer's GiST index in EPSG:2326 (a Web Mercator box is clipped to Hong
Kong's frame, densified and transformed first, see :mod:`sdi.query.boxes`), then ``ST_AsMVTGeom`` and
``ST_AsMVT`` encode them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import morecantile
import numpy as np
from psycopg import sql

from sdi.crs import HK_GRID, STORAGE_CRS_URI, WEB_MERCATOR, reprojection
from sdi.errors import FeatureNotFoundError, QueryError
from sdi.numerals import decimal_integer
from sdi.query.boxes import box_sql
from sdi.query.layer import GEOMETRY_COLUMN, LayerMeta

EXTENT = 4096  #: MVT tile extent (units per tile side)
BUFFER = 64  #: MVT buffer (units outside the tile kept for rendering)
MAX_JSON_CHARS = 4096  #: json values longer than this (as text) are left out of tiles
HK80_ORIGIN = (-4_786_700.0, 8_353_100.0)  #: easting, northing of the top-left corner
HK80_CELL_SIZE = 156_543.0339  #: metres per pixel at zoom 0
HK80_ID = "HK80Grid"
WEB_MERCATOR_ID = "WebMercatorQuad"
MAX_ZOOM = 20
MAX_TILE_FEATURES = 50_000  #: features one tile may hold (the rest are cut; see tile_statement)
MAX_AFFINE_ERROR = 0.25  #: tile units an affine stand-in for the exact transformation may stray (see tile_statement)
_NATIVE = {"integer", "bigint", "smallint", "double precision", "real", "boolean", "text", "numeric"}


def _hk80() -> morecantile.TileMatrixSet:
    matrices = [{
        "id": str(z), "scaleDenominator": HK80_CELL_SIZE / 2 ** z / 0.00028, "cellSize": HK80_CELL_SIZE / 2 ** z,
        "cornerOfOrigin": "topLeft", "pointOfOrigin": [HK80_ORIGIN[1], HK80_ORIGIN[0]],  # CRS axis order: N, E
        "tileWidth": 256, "tileHeight": 256, "matrixWidth": 2 ** z, "matrixHeight": 2 ** z,
    } for z in range(MAX_ZOOM + 1)]
    return morecantile.TileMatrixSet.model_validate({
        "id": HK80_ID,
        "title": "Hong Kong 1980 Grid tiles of the Lands Department's HK80 basemap",
        "description": ("EPSG:2326, top-left origin easting -4786700 m, northing 8353100 m, cell size "
                        "156543.0339 m / 2^z for z 0-20, 256-pixel tiles: the grid of the Lands Department's "
                        "HK80 XYZ basemap. Coordinates of pointOfOrigin follow the CRS axis order (northing, "
                        "easting)."),
        "crs": STORAGE_CRS_URI, "orderedAxes": ["N", "E"], "tileMatrices": matrices})


@dataclass(frozen=True)
class Grid:
    """A tile matrix set as served: its id, morecantile definition, SRID and zoom range."""

    id: str
    tms: morecantile.TileMatrixSet
    srid: int
    max_zoom: int = MAX_ZOOM

    @property
    def uri(self) -> str | None:
        """The OGC registry URI (for registered grids)."""
        return str(self.tms.uri) if self.tms.uri else None

    def document(self) -> dict[str, Any]:
        """The OGC 2D Tile Matrix Set JSON document."""
        doc: dict[str, Any] = self.tms.model_dump(exclude_none=True, mode="json")
        return doc

    def bounds(self, z: int, row: int, col: int) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a tile in the grid's CRS, x = easting.

        Raises
        ------
        FeatureNotFoundError
            When the tile lies outside the matrix or the zoom is not offered (HTTP 404).
        """
        if not 0 <= z <= self.max_zoom:
            raise FeatureNotFoundError(f"tileMatrix {z} is not offered in {self.id} (0–{self.max_zoom})")
        matrix = self.tms.matrix(z)
        if not (0 <= row < matrix.matrixHeight and 0 <= col < matrix.matrixWidth):
            raise FeatureNotFoundError(f"tile {z}/{row}/{col} lies outside the {self.id} tile matrix")
        box = self.tms.xy_bounds(morecantile.Tile(col, row, z))
        return float(box.left), float(box.bottom), float(box.right), float(box.top)


@cache
def grids() -> dict[str, Grid]:
    """The offered tile matrix sets, by id (built once)."""
    return {WEB_MERCATOR_ID: Grid(WEB_MERCATOR_ID, morecantile.tms.get(WEB_MERCATOR_ID), WEB_MERCATOR),
            HK80_ID: Grid(HK80_ID, _hk80(), HK_GRID)}


def grid(tms_id: str) -> Grid:
    """The tile matrix set ``tms_id``; :class:`FeatureNotFoundError` (404) for another."""
    found = grids().get(tms_id)
    if found is None:
        raise FeatureNotFoundError(f"tile matrix set {tms_id[:60]!r} is not offered; use {', '.join(grids())}")
    return found


def tile_index(value: str, name: str) -> int:
    """A tile matrix, row or column from the path: a non-negative integer, else 400."""
    number = decimal_integer(value, max_digits=9)
    if number is None:
        raise QueryError(f"{name}: {value[:20]!r} is not a non-negative integer")
    return number


def tile_attributes(layer: LayerMeta) -> list[tuple[str, sql.Composable]]:
    """(name, SQL expression) per tile attribute: every property; json as text, overlong json left out."""
    out: list[tuple[str, sql.Composable]] = []
    for name, kind in layer.columns.items():
        column: sql.Composable = sql.SQL("t.{}").format(sql.Identifier(name))
        if kind in ("json", "jsonb"):
            column = sql.SQL("case when length({c}::text) <= {n} then {c}::text end").format(
                c=column, n=sql.Literal(MAX_JSON_CHARS))
        elif kind not in _NATIVE:
            column = sql.SQL("{}::text").format(column)
        out.append((name, column))
    return out


def affine_to_grid(srid: int, wide: tuple[float, float, float, float],
                   unit: float) -> tuple[float, float, float, float, float, float] | None:
    """An affine map from EPSG:2326 to ``srid`` over the box ``wide`` (in ``srid``), or ``None`` when the map is
    not within :data:`MAX_AFFINE_ERROR` of a tile unit ``unit`` of the exact transformation anywhere in the box.

    Across a small tile the transformation from the Hong Kong 1980 Grid to Web Mercator is all but linear: at
    zoom 14 the best affine map strays 0.1 m (0.18 tile units) at most, at zoom 16 7 mm. Its Jacobian is taken
    from central differences of the exact, EPSG:1825-checked transformation (the one PostGIS uses) at the box's
    centre, and its error is measured on a grid of points spanning the box.

    Returns
    -------
    tuple or None
        ``(a, b, d, e, xoff, yoff)`` for ``ST_Affine``: ``x' = a x + b y + xoff``, ``y' = d x + e y + yoff``.
    """
    to_grid = reprojection(HK_GRID, srid).transformer
    to_hk80 = reprojection(srid, HK_GRID).transformer
    if to_grid is None or to_hk80 is None:
        return None
    x0, y0, x1, y1 = wide
    cx, cy = to_hk80.transform((x0 + x1) / 2, (y0 + y1) / 2)
    h = max(x1 - x0, y1 - y0) / 4
    xs, ys = to_grid.transform([cx, cx + h, cx - h, cx, cx], [cy, cy, cy, cy + h, cy - h])
    a, d = (xs[1] - xs[2]) / (2 * h), (ys[1] - ys[2]) / (2 * h)
    b, e = (xs[3] - xs[4]) / (2 * h), (ys[3] - ys[4]) / (2 * h)
    xoff, yoff = xs[0] - a * cx - b * cy, ys[0] - d * cx - e * cy
    sx, sy = np.meshgrid(np.linspace(x0, x1, 7), np.linspace(y0, y1, 7))
    hx, hy = to_hk80.transform(sx.ravel(), sy.ravel())
    hx, hy = np.asarray(hx), np.asarray(hy)
    error = np.max(np.hypot(a * hx + b * hy + xoff - sx.ravel(), d * hx + e * hy + yoff - sy.ravel()))
    if not np.isfinite(error) or error > MAX_AFFINE_ERROR * unit:
        return None
    return a, b, d, e, xoff, yoff


def tile_statement(layer: LayerMeta, grid_: Grid, z: int, row: int, col: int, exact: bool = False,
                   max_features: int = MAX_TILE_FEATURES) -> tuple[sql.SQL | sql.Composed, dict[str, Any]]:
    """The statement making one tile: one row with the MVT bytes (NULL or empty when nothing is in it).

    In EPSG:2326 (``HK80Grid``) the stored geometries need no transformation. For another grid they are
    transformed exactly (``ST_Transform``), or, where :func:`affine_to_grid` finds the transformation linear
    to within :data:`MAX_AFFINE_ERROR` of a tile unit across the tile, with that affine map (``ST_Affine``,
    several times cheaper per vertex); coordinates in a tile are whole units, so the two agree to within a unit.
    ``exact`` always transforms exactly.

    Bounded work: lines and polygons smaller than half a tile unit either way are left out (they would snap to
    nothing or a speck), and a tile holds at most ``max_features`` features (any beyond are cut).
    """
    x0, y0, x1, y1 = grid_.bounds(z, row, col)
    params: dict[str, Any] = {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "cap": int(max_features),
                              "speck": (x1 - x0) / EXTENT / 2 / (1.2 if grid_.srid == WEB_MERCATOR else 1.0)}
    margin = (x1 - x0) * BUFFER / EXTENT
    wide = (x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    box = box_sql(wide, grid_.srid, params, "f")
    geom: sql.Composable = sql.SQL("t.{}").format(sql.Identifier(GEOMETRY_COLUMN))
    if grid_.srid != HK_GRID:
        affine = affine_to_grid(grid_.srid, wide, (x1 - x0) / EXTENT) if box is not None and not exact else None
        if affine is not None:
            params.update(zip(("aa", "ab", "ad", "ae", "ax", "ay"), affine, strict=True))
            geom = sql.SQL("st_affine({}, %(aa)s, %(ab)s, %(ad)s, %(ae)s, %(ax)s, %(ay)s)").format(geom)
        else:
            geom = sql.SQL("st_transform({}, {})").format(geom, sql.Literal(grid_.srid))
    columns = [sql.SQL("{} as {}").format(expr, sql.Identifier(name)) for name, expr in tile_attributes(layer)]
    key_type = layer.columns.get(layer.primary_key)
    feature_id = sql.Literal(layer.primary_key) if key_type in ("integer", "bigint", "smallint") else sql.NULL
    if box is None:
        return sql.SQL("select null::bytea"), {}
    statement = sql.SQL("""
        select st_asmvt(f.*, {layer}, {extent}, '__mvt_geom', {fid}) from (
            select st_asmvtgeom({geom}, st_makeenvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {srid}),
                                {extent}, {buffer}, true) as __mvt_geom{comma}{columns}
            from {table} as t
            where t.{geom_col} && {box}
              and (st_dimension(t.{geom_col}) = 0
                   or greatest(st_xmax(t.{geom_col}) - st_xmin(t.{geom_col}),
                               st_ymax(t.{geom_col}) - st_ymin(t.{geom_col})) >= %(speck)s)
            limit %(cap)s
        ) as f""").format(
        layer=sql.Literal(layer.id), extent=sql.Literal(EXTENT), fid=feature_id, geom=geom,
        srid=sql.Literal(grid_.srid), buffer=sql.Literal(BUFFER), comma=sql.SQL(", " if columns else ""),
        columns=sql.SQL(", ").join(columns), table=sql.Identifier("layers", layer.id),
        geom_col=sql.Identifier(GEOMETRY_COLUMN), box=box)
    return statement, params
