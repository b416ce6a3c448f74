"""pygeoapi ``tile`` provider for ``layers.<id>``: a thin adapter over :mod:`sdi.query.tms`.

``sdi serve`` answers tiles itself (:mod:`sdi.web.tiles`); this adapter is what pygeoapi's OpenAPI generator
sees, and what stock pygeoapi runs with a configuration written by ``sdi publish``
(``sdi.publishing.tiles.tile_provider`` writes the block)::

    providers:
      - type: tile
        name: sdi.publishing.mvt.SdiMVTProvider
        data: env                      # SDI_DATABASE_URL; or a libpq URL
        options:
          table: public_libraries_2013 # layers.<table>
          zoom: {min: 0, max: 20}
          schemes: [WebMercatorQuad, HK80Grid]
          bounds: [113.8, 22.1, 114.5, 22.6]   # optional, CRS84, for TileJSON
        format: {name: pbf, mimetype: application/vnd.mapbox-vector-tile}

Each tile is the one statement of :func:`sdi.query.tms.tile_statement`. An empty tile is ``None`` (pygeoapi
answers 204). pygeoapi builds a provider per request; the constructor does not touch the database. Served by
sdi, the definition carries the worker's ``runtime`` and SQL runs on its pool.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from pygeoapi.models.provider.base import LinkType, TileMatrixSetEnumType, TileSetMetadata
from pygeoapi.models.provider.mvt import MVTTilesJson, VectorLayers
from pygeoapi.provider.base import ProviderConnectionError, ProviderInvalidQueryError, ProviderQueryError
from pygeoapi.provider.base_mvt import BaseMVTProvider
from pygeoapi.provider.tile import ProviderTileNotFoundError, ProviderTilesetIdNotFoundError
from pygeoapi.util import url_join

from sdi.access.roles import as_public
from sdi.db import connect
from sdi.errors import DatabaseUnavailableError, FeatureNotFoundError, QueryError, ServiceBusyError
from sdi.query.layer import LayerMeta
from sdi.query.tms import BUFFER, EXTENT, grid, grids, tile_index, tile_statement
from sdi.settings import Settings

LOGGER = logging.getLogger(__name__)
_TILEJSON_TYPES = {"integer": "Number", "bigint": "Number", "float": "Number", "double precision": "Number",
                   "boolean": "Boolean"}
__all__ = ["BUFFER", "EXTENT", "SdiMVTProvider"]


class SdiMVTProvider(BaseMVTProvider):
    """Vector tiles (WebMercatorQuad, HK80Grid) of one ``layers.<table>`` table, made by PostGIS."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        options: dict[str, Any] = dict(provider_def.get("options") or {})
        self.options = options
        try:
            self.table = str(options["table"])
        except KeyError:
            raise ProviderConnectionError("the tile provider needs options.table") from None
        self.runtime = provider_def.get("runtime")
        props = options.get("properties")
        self.properties: dict[str, str] | None = (
            None if props is None else {str(k): str(v) for k, v in props.items()} if isinstance(props, dict)
            else {str(k): "text" for k in props})
        zoom = options.get("zoom") or {}
        self.min_zoom = int(zoom.get("min", 0))
        self.max_zoom = int(zoom.get("max", 20))
        options.setdefault("zoom", {"min": self.min_zoom, "max": self.max_zoom})
        options.setdefault("schemes", list(grids()))
        self.bounds: list[float] | None = options.get("bounds")
        data = self.data
        self._data = None if data in (None, "", "env") else str(data)
        self._service_url = ""
        self._service_metadata_url = ""

    def __repr__(self) -> str:
        return f"<SdiMVTProvider> layers.{self.table}"

    def _connection_settings(self) -> Settings:
        """Settings naming the database, read when a tile is made outside ``sdi serve`` (not per request)."""
        return Settings() if self._data is None else Settings(database_url=self._data)

    # -- pygeoapi interface -------------------------------------------------------------------------

    def get_layer(self) -> str:
        """Return the MVT layer name: the table (layer id)."""
        return self.table

    def get_tiling_schemes(self) -> list[TileMatrixSetEnumType]:
        """Return the tile matrix sets offered: WebMercatorQuad and the Lands Department's HK80Grid."""
        out = []
        for g in grids().values():
            doc = g.document()
            out.append(TileMatrixSetEnumType(
                tileMatrixSet=g.id, tileMatrixSetURI=g.uri or f"{g.id}", crs=str(doc["crs"]),
                title=str(doc.get("title") or g.id), orderedAxes=list(doc.get("orderedAxes") or []),
                wellKnownScaleSet=str(doc.get("wellKnownScaleSet") or ""), tileMatrices=list(doc["tileMatrices"])))
        return out

    def get_tiles_service(self, baseurl: str | None = None, servicepath: str | None = None,
                          dirpath: str | None = None, tile_type: str | None = None) -> dict[str, Any]:
        """Return the tile service links (tiles, tileset list and metadata) for ``servicepath``."""
        self._service_url = servicepath or ""
        return dict(self.get_tms_links())

    def get_fields(self) -> dict[str, Any]:
        """Return the configured properties (the tile attributes) as a name → type-hint mapping."""
        return dict(self.properties or {})

    def _layer(self) -> LayerMeta:
        if self.runtime is not None:
            found = self.runtime.state["registry"].snapshot.layers.get(self.table)
        else:
            try:
                with connect(self._connection_settings()) as conn:
                    found = LayerMeta.read(as_public(conn), self.table)
            except DatabaseUnavailableError as exc:
                raise ProviderConnectionError(str(exc)) from exc
        if not isinstance(found, LayerMeta):
            raise ProviderQueryError(f"table layers.{self.table} is not a loaded vector layer")
        return found

    def get_tiles(self, layer: str | None = None, tileset: str | None = None, z: Any = None, y: Any = None,
                  x: Any = None, format_: str | None = None) -> bytes | None:
        """Return one encoded tile (made by :func:`sdi.query.tms.tile_statement`), or ``None`` when empty.

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
        try:
            g = grid(str(tileset))
        except FeatureNotFoundError as exc:
            raise ProviderTilesetIdNotFoundError(str(exc)) from None
        try:
            zi, yi, xi = (tile_index(str(v), n) for v, n in ((z, "z"), (y, "y"), (x, "x")))
        except QueryError:
            raise ProviderInvalidQueryError(f"tile indices must be integers, not {z}/{y}/{x}") from None
        if not self.min_zoom <= zi <= self.max_zoom:
            raise ProviderTileNotFoundError(f"zoom {zi} is outside {self.min_zoom}–{self.max_zoom}")
        try:
            statement, params = tile_statement(self._layer(), g, zi, yi, xi)
        except FeatureNotFoundError as exc:
            raise ProviderTileNotFoundError(str(exc)) from None
        try:
            if self.runtime is not None:
                row = self.runtime.run_sync(self._pooled(statement, params))
            else:
                with connect(self._connection_settings()) as conn:
                    row = as_public(conn).execute(statement, params, binary=True).fetchone()
        except (DatabaseUnavailableError, ServiceBusyError) as exc:
            raise ProviderConnectionError(str(exc)) from exc
        except psycopg.Error as exc:
            LOGGER.error("tile %s/%s/%s of %s failed: %s", zi, yi, xi, self.table, exc)
            raise ProviderQueryError(f"tile query on layers.{self.table} failed") from exc
        tile = bytes(row[0]) if row and row[0] is not None else b""
        return tile or None

    async def _pooled(self, statement: Any, params: dict[str, Any]) -> Any:
        async with self.runtime.connection() as conn:  # type: ignore[union-attr]
            return await (await conn.execute(statement, params, binary=True)).fetchone()

    # -- metadata -----------------------------------------------------------------------------------

    def _urls(self, server_url: str, dataset: str, tileset: str) -> tuple[str, str]:
        tiles = url_join(server_url, f"collections/{dataset}/tiles/{tileset}", "{tileMatrix}/{tileRow}/{tileCol}?f=mvt")
        return tiles, url_join(server_url, f"collections/{dataset}/tiles/{tileset}/metadata")

    def get_metadata(self, dataset: str, server_url: str, layer: str | None = None, tileset: str | None = None,
                     metadata_format: str | None = None, title: str | None = None,
                     description: str | None = None, keywords: list[str] | None = None,
                     **kwargs: Any) -> dict[str, Any]:
        """Tile set metadata; a missing ``f`` means the OGC JSON document."""
        if tileset not in grids():
            raise ProviderTilesetIdNotFoundError(f"tile matrix set {tileset!r} is not offered")
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
        g = grid(tileset)
        content = TileSetMetadata(title=title, description=description, keywords=keywords,
                                  crs=str(g.document()["crs"]), tileMatrixSetURI=g.uri or tileset,
                                  tileMatrixSet=tileset,
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
