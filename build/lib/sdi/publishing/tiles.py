"""OGC API – Tiles and Coverages blocks for pygeoapi.

:func:`tile_provider` writes the ``tile`` provider block of a vector layer: Mapbox Vector Tiles in
WebMercatorQuad and HK80Grid, made in PostGIS by :class:`sdi.publishing.mvt.SdiMVTProvider` (``ST_AsMVT``).
:func:`coverage_provider` writes pygeoapi's stock ``rasterio`` coverage block for a raster layer's
Cloud Optimized GeoTIFF (EPSG:2326). Neither touches the database: they read the catalogue record.
"""

from __future__ import annotations

from typing import Any

from loaders.raster import cog_path
from sdi.catalogue.models import CatalogueRecord
from sdi.settings import Settings

MVT_PROVIDER = "sdi.publishing.mvt.SdiMVTProvider"
MVT_FORMAT = {"name": "pbf", "mimetype": "application/vnd.mapbox-vector-tile"}
MIN_ZOOM = 0
MAX_ZOOM = 20  #: 20 is ~0.15 m per pixel, finer than any source survey in the SDI
ID_FIELD = "fid"  #: the loaders' generated feature id (bigint, source order)


def raster_path(record: CatalogueRecord, settings: Settings) -> str:
    """The absolute path of a raster layer's COG: ``<SDI_DATA_DIR>/rasters/<id>.tif``."""
    return str(cog_path(record.id, settings).resolve())


def tile_provider(record: CatalogueRecord, settings: Settings) -> dict[str, Any] | None:
    """The pygeoapi ``tile`` provider block for a vector layer, or ``None`` when tiles are not offered.

    Parameters
    ----------
    record
        The layer's catalogue record.
    settings
        Settings (unused; the provider reads ``SDI_DATABASE_URL`` itself, ``data: env``).

    Returns
    -------
    dict or None
        ``None`` for rasters and for layers without geometry; otherwise a block serving
        ``/collections/<id>/tiles/WebMercatorQuad/{z}/{y}/{x}?f=mvt`` from ``layers.<id>``.
    """
    if record.kind != "vector" or not record.geometry_type:
        return None
    properties = {str(f["name"]): str(f.get("type") or "text") for f in record.fields if f.get("name")}
    options: dict[str, Any] = {
        "table": record.id,
        "geom_field": "geom",
        "properties": properties,
        "zoom": {"min": MIN_ZOOM, "max": MAX_ZOOM},
        "schemes": ["WebMercatorQuad", "HK80Grid"],
    }
    if ID_FIELD in properties and properties[ID_FIELD] in ("integer", "bigint"):
        options["id_field"] = ID_FIELD
    if record.bbox_crs84:
        options["bounds"] = [float(v) for v in record.bbox_crs84]
    return {"type": "tile", "name": MVT_PROVIDER, "data": "env", "options": options, "format": dict(MVT_FORMAT)}


def coverage_provider(record: CatalogueRecord, settings: Settings) -> dict[str, Any] | None:
    """The pygeoapi ``coverage`` provider block for a raster layer, or ``None`` when not offered.

    Parameters
    ----------
    record
        The layer's catalogue record.
    settings
        Settings giving ``SDI_DATA_DIR``, under which the loader wrote ``rasters/<id>.tif``.

    Returns
    -------
    dict or None
        ``None`` for vector layers and when the COG is missing; otherwise pygeoapi's ``rasterio``
        provider over the COG (absolute path).
    """
    if record.kind != "raster":
        return None
    if not cog_path(record.id, settings).is_file():
        return None
    path = raster_path(record, settings)
    return {
        "type": "coverage",
        "name": "rasterio",
        "data": path,
        "options": {"DATA_ENCODING": "COG"},
        "format": {"name": "GTiff", "mimetype": "application/x-geotiff"},
    }
