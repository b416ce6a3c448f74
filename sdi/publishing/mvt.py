"""A pygeoapi ``tile`` provider serving Mapbox Vector Tiles made in PostGIS with ``ST_AsMVT``.

Configure it in a collection (``sdi.publishing.tiles.tile_provider`` writes this block)::

    providers:
      - type: tile
        name: sdi.publishing.mvt.SdiMVTProvider
        data: env                      # SDI_DATABASE_URL; or a libpq URL
        options:
          table: public_libraries_2013 # layers.<table>
          geom_field: geom             # geometry(<Type>, 2326) with a GiST index
          id_field: fid                # optional; becomes the MVT feature id
          properties: {name: text, n: bigint, ...}  # optional; default: every column but the geometry
          zoom: {min: 0, max: 20}
          schemes: [WebMercatorQuad]
          bounds: [113.8, 22.1, 114.5, 22.6]   # optional, CRS84, for TileJSON
        format: {name: pbf, mimetype: application/vnd.mapbox-vector-tile}

Each tile is one SQL statement: the tile envelope (with the 64-unit buffer) is clipped to a box
around Hong Kong, densified and transformed to EPSG:2326, so the ``&&`` filter runs on the layer's
GiST index in the storage CRS; the matching rows are transformed to EPSG:3857 and encoded with
``ST_AsMVTGeom`` (extent 4096, buffer 64) and ``ST_AsMVT``. An empty tile is ``None`` (pygeoapi
answers 204). pygeoapi builds a provider per request; the constructor does not touch the database.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql
from pygeoapi.models.provider.base import LinkType, TileMatrixSetEnum, TileMatrixSetEnumType, TileSetMetadata
from pygeoapi.models.provider.mvt import MVTTilesJson, VectorLayers
from pygeoapi.provider.base import ProviderConnectionError, ProviderInvalidQueryError, ProviderQueryError
from pygeoapi.provider.base_mvt import BaseMVTProvider
from pygeoapi.provider.tile import ProviderTileNotFoundError, ProviderTilesetIdNotFoundError
from pygeoapi.util import url_join

from sdi.db import connect
from sdi.errors import DatabaseUnavailableError
from sdi.settings import Settings

LOGGER = logging.getLogger(__name__)
_TILEJSON_TYPES = {"integer": "Number", "bigint": "Number", "float": "Number", "double precision": "Number",
                   "boolean": "Boolean"}

EXTENT = 4096  #: MVT tile extent (units per tile side)
BUFFER = 64  #: MVT buffer (units outside the tile kept for rendering)
WEB_MERCATOR = TileMatrixSetEnum.WEBMERCATORQUAD.value
#: Box around Hong Kong in EPSG:3857 (lon 109–120, lat 17–27) that tile envelopes are clipped to before
#: they are transformed to EPSG:2326, whose transverse Mercator is meaningless far from Hong Kong.
HK_3857_BOX = (12_133_824.0, 1_920_825.0, 13_358_339.0, 3_123_471.0)
MAX_JSON_CHARS = 4096  #: json/jsonb values longer than this (as text) are left out of tiles
_SKIPPED_TYPES = {"bytea", "geometry", "geography", "raster"}
#: Types ST_AsMVT encodes natively (sdi field types and PostgreSQL udt names); others are sent as text.
_NATIVE_TYPES = {"integer", "bigint", "float", "boolean", "text", "int2", "int4", "int8", "float4", "float8",
                 "smallint", "real", "double precision",
                 "numeric", "bool", "varchar"}


class SdiMVTProvider(BaseMVTProvider):
    """Vector tiles (WebMercatorQuad) of one ``layers.<table>`` table, made by PostGIS."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        options: dict[str, Any] = dict(provider_def.get("options") or {})
        self.options = options
        try:
            self.table = str(options["table"])
        except KeyError:
            raise ProviderConnectionError("the tile provider needs options.table") from None
        self.geom_field = str(options.get("geom_field", "geom"))
        self.id_field: str | None = options.get("id_field")
        props = options.get("properties")
        self.properties: dict[str, str] | None = (
            None if props is None else {str(k): str(v) for k, v in props.items()} if isinstance(props, dict)
            else {str(k): "text" for k in props})
        zoom = options.get("zoom") or {}
        self.min_zoom = int(zoom.get("min", 0))
        self.max_zoom = int(zoom.get("max", 20))
        options.setdefault("zoom", {"min": self.min_zoom, "max": self.max_zoom})
        options.setdefault("schemes", [WEB_MERCATOR.tileMatrixSet])
        self.bounds: list[float] | None = options.get("bounds")
        data = self.data
        self._settings = Settings() if data in (None, "", "env") else Settings(database_url=str(data))
        self._service_url = ""
        self._service_metadata_url = ""
        self._types: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<SdiMVTProvider> layers.{self.table}"

    # -- pygeoapi interface -------------------------------------------------------------------------

    def get_layer(self) -> str:
        """Return the MVT layer name: the table (layer id)."""
        return self.table

    def get_tiling_schemes(self) -> list[TileMatrixSetEnumType]:
        """Return the tile matrix sets offered: WebMercatorQuad only."""
        return [WEB_MERCATOR]

    def get_tiles_service(self, baseurl: str | None = None, servicepath: str | None = None,
                          dirpath: str | None = None, tile_type: str | None = None) -> dict[str, Any]:
        """Return the tile service links (tiles, tileset list and metadata) for ``servicepath``."""
        self._service_url = servicepath or ""
        return dict(self.get_tms_links())

    def get_fields(self) -> dict[str, Any]:
        """Return the configured properties (the tile attributes) as a name → type-hint mapping."""
        return dict(self.properties or {})

    def get_tiles(self, layer: str | None = None, tileset: str | None = None, z: Any = None, y: Any = None,
                  x: Any = None, format_: str | None = None) -> bytes | None:
        """Return one encoded tile, or ``None`` when no feature touches it.

        Parameters
        ----------
        layer
            MVT layer name (defaults to the table).
        tileset
            Tile matrix set id; only ``WebMercatorQuad``.
        z, y, x
            Tile matrix, row and column.
        format_
            Ignored (always MVT).

        Returns
        -------
        bytes or None

        Raises
        ------
        ProviderTilesetIdNotFoundError
            Another tile matrix set (404).
        ProviderInvalidQueryError
            Non-integer indices (400).
        ProviderTileNotFoundError
            A zoom outside the configured range or a row/column outside the matrix (404).
        ProviderConnectionError, ProviderQueryError
            The database is unreachable or the query fails.
        """
        if tileset != WEB_MERCATOR.tileMatrixSet:
            raise ProviderTilesetIdNotFoundError(f"tile matrix set {tileset!r} is not offered; use WebMercatorQuad")
        try:
            zi, yi, xi = int(str(z)), int(str(y)), int(str(x))
        except ValueError:
            raise ProviderInvalidQueryError(f"tile indices must be integers, not {z}/{y}/{x}") from None
        if not self.min_zoom <= zi <= self.max_zoom:
            raise ProviderTileNotFoundError(f"zoom {zi} is outside {self.min_zoom}–{self.max_zoom}")
        if not (0 <= xi < 2 ** zi and 0 <= yi < 2 ** zi):
            raise ProviderTileNotFoundError(f"tile {zi}/{yi}/{xi} is outside the tile matrix")
        query = self._tile_query(layer or self.table)
        try:
            with connect(self._settings) as conn:
                row = conn.execute(query, {"z": zi, "x": xi, "y": yi, "margin": BUFFER / EXTENT}).fetchone()
        except DatabaseUnavailableError as exc:
            raise ProviderConnectionError(str(exc)) from exc
        except psycopg.Error as exc:
            LOGGER.error("tile %s/%s/%s of %s failed: %s", zi, yi, xi, self.table, exc)
            raise ProviderQueryError(f"tile query on layers.{self.table} failed") from exc
        tile = bytes(row[0]) if row and row[0] is not None else b""
        return tile or None

    def _tile_query(self, layer: str) -> sql.Composed:
        """The one statement that makes a tile (parameters ``z``, ``x``, ``y``, ``margin``)."""
        geom = sql.Identifier(self.geom_field)
        columns = [sql.SQL("{} AS {}").format(expr, sql.Identifier(name)) for name, expr in self._attributes()]
        select_list = sql.SQL(", ").join([
            sql.SQL("ST_AsMVTGeom(ST_Transform(t.{geom}, 3857), b.tile, extent => {ext}, buffer => {buf}) AS {mvt}")
            .format(geom=geom, ext=sql.Literal(EXTENT), buf=sql.Literal(BUFFER), mvt=sql.Identifier("__mvt_geom")),
            *columns,
        ])
        id_arg = sql.Literal(self.id_field) if self.id_field else sql.NULL
        return sql.SQL("""
            WITH b AS (
                SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS tile,
                       ST_Transform(ST_Segmentize(ST_Intersection(
                           ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s),
                           ST_MakeEnvelope({x0}, {y0}, {x1}, {y1}, 3857)), 2000.0), 2326) AS filter
            ), f AS (
                SELECT {select_list}
                FROM layers.{table} AS t, b
                WHERE t.{geom} && b.filter
            )
            SELECT ST_AsMVT(f.*, {layer}, {ext}, '__mvt_geom', {id_arg}) FROM f WHERE f.__mvt_geom IS NOT NULL
        """).format(
            x0=sql.Literal(HK_3857_BOX[0]), y0=sql.Literal(HK_3857_BOX[1]), x1=sql.Literal(HK_3857_BOX[2]),
            y1=sql.Literal(HK_3857_BOX[3]), select_list=select_list, table=sql.Identifier(self.table), geom=geom,
            layer=sql.Literal(layer), ext=sql.Literal(EXTENT), id_arg=id_arg,
        )

    def _attributes(self) -> list[tuple[str, sql.Composable]]:
        """(name, SQL expression) for each tile attribute; json is text, overlong json is left out."""
        types = self.properties if self.properties is not None else self._column_types()
        if self.id_field and self.id_field not in types:
            types = {self.id_field: "bigint", **types}
        out: list[tuple[str, sql.Composable]] = []
        for name, kind in types.items():
            if kind in _SKIPPED_TYPES or name == self.geom_field:
                continue
            col: sql.Composable = sql.SQL("t.{}").format(sql.Identifier(name))
            if kind in ("json", "jsonb"):
                col = sql.SQL("CASE WHEN length({c}::text) <= {n} THEN {c}::text END").format(
                    c=col, n=sql.Literal(MAX_JSON_CHARS))
            elif kind not in _NATIVE_TYPES:
                col = sql.SQL("{}::text").format(col)
            out.append((name, col))
        return out

    def _column_types(self) -> dict[str, str]:
        """Column name → udt name of the table, when the configuration lists no properties."""
        if self._types is None:
            query = ("select column_name, udt_name from information_schema.columns "
                     "where table_schema = 'layers' and table_name = %s order by ordinal_position")
            try:
                with connect(self._settings) as conn:
                    self._types = {n: t for n, t in conn.execute(query, (self.table,)).fetchall()}
            except DatabaseUnavailableError as exc:
                raise ProviderConnectionError(str(exc)) from exc
            if not self._types:
                raise ProviderQueryError(f"table layers.{self.table} does not exist")
        return dict(self._types)

    # -- metadata -----------------------------------------------------------------------------------

    def _urls(self, server_url: str, dataset: str, tileset: str) -> tuple[str, str]:
        tiles = url_join(server_url, f"collections/{dataset}/tiles/{tileset}", "{tileMatrix}/{tileRow}/{tileCol}?f=mvt")
        return tiles, url_join(server_url, f"collections/{dataset}/tiles/{tileset}/metadata")

    def get_metadata(self, dataset: str, server_url: str, layer: str | None = None, tileset: str | None = None,
                     metadata_format: str | None = None, title: str | None = None,
                     description: str | None = None, keywords: list[str] | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """Tile set metadata; a missing ``f`` means the OGC JSON document."""
        if tileset != WEB_MERCATOR.tileMatrixSet:
            raise ProviderTilesetIdNotFoundError(f"tile matrix set {tileset!r} is not offered; use WebMercatorQuad")
        return dict(super().get_metadata(dataset, server_url, layer, tileset, metadata_format or "JSON", title,
                                         description, keywords, **kwargs))

    def get_html_metadata(self, dataset: str, server_url: str, layer: str, tileset: str, title: str,
                          description: str, keywords: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        """Values for pygeoapi's tile metadata HTML template."""
        tiles, metadata = self._urls(server_url, dataset, tileset)
        return {"id": dataset, "title": title, "tileset": tileset, "collections_path": tiles,
                "json_url": f"{metadata}?f=json"}

    def get_default_metadata(self, dataset: str, server_url: str, layer: str, tileset: str, title: str,
                             description: str, keywords: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        """OGC API – Tiles tile set metadata (JSON)."""
        tiles, _ = self._urls(server_url, dataset, tileset)
        content = TileSetMetadata(title=title, description=description, keywords=keywords, crs=WEB_MERCATOR.crs,
                                  tileMatrixSetURI=WEB_MERCATOR.tileMatrixSetURI, tileMatrixSet=tileset,
                                  mediaTypes=[self.mimetype])
        content.links = [
            LinkType(href=url_join(server_url, "TileMatrixSets", tileset),
                     rel="http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", type_="application/json",
                     title=f"{tileset} tile matrix set definition"),
            LinkType(href=tiles, rel="item", type_=self.mimetype, title=f"{tileset} vector tiles for {layer}"),
        ]
        return dict(content.model_dump(exclude_none=True))

    def get_vendor_metadata(self, dataset: str, server_url: str, layer: str, tileset: str, title: str,
                            description: str, keywords: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        """TileJSON 3.0 (``f=tilejson``)."""
        tiles, _ = self._urls(server_url, dataset, tileset)
        bounds = ",".join(str(v) for v in self.bounds) if self.bounds else None
        center = None
        if self.bounds:
            x0, y0, x1, y1 = self.bounds
            center = f"{(x0 + x1) / 2},{(y0 + y1) / 2},{max(self.min_zoom, min(self.max_zoom, 10))}"
        fields = {name: _TILEJSON_TYPES.get(kind, "String") for name, kind in (self.properties or {}).items()}
        content = MVTTilesJson(name=dataset, tiles=tiles, minzoom=self.min_zoom, maxzoom=self.max_zoom,
                               bounds=bounds, center=center, description=description,
                               vector_layers=[VectorLayers(id=layer, description=description, minzoom=self.min_zoom,
                                                           maxzoom=self.max_zoom, fields=fields)])
        return dict(content.model_dump(exclude_none=True))
