"""Previews of raster layers (coverages) for the HTML pages: a small PNG drawn on the server with a colour ramp.

The raster is read at a reduced size (a COG's overviews serve that), reprojected to WebMercator (so that the
image lies on the pages' Leaflet map by its corners' longitudes and latitudes), and drawn with
:data:`RAMP` between the 2nd and 98th percentiles of its valid cells (no-data and NaN cells transparent). A
raster of three or more 8-bit bands is drawn as RGB from its first three. Previews are kept per layer and load in
the worker (:func:`layer_preview`: one drawing per layer and load, failures remembered too) and reach the pages
as ``data:`` URLs (once per page: the map's overlay reuses the ``<img>``'s source), so that they need no route
of their own and work offline.

``/collections/{id}/coverage?f=html`` (:func:`coverage_page`) is the coverage's page: the preview on a map, its
grid (size, cell size, CRS, value range) and links to the coverage as GeoTIFF and CoverageJSON.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sdi.catalogue.models import CatalogueRecord
from sdi.errors import LayerNotFoundError
from sdi.web.runtime import Runtime

LOGGER = logging.getLogger("sdi.web")
MAX_SIZE = 512  #: longest side of a preview, in pixels
#: Colour ramp (value from 0 to 1, RGB) of one-band previews: low green, yellow, brown, high near white.
RAMP = ((0.0, (26, 150, 65)), (0.25, (166, 217, 106)), (0.5, (255, 255, 191)), (0.75, (196, 136, 76)),
        (1.0, (245, 245, 245)))
_CACHE = "coverage_previews"
_CACHE_SIZE = 16


@dataclass(frozen=True)
class Preview:
    """A raster's preview image and what the page says about the raster."""

    png: bytes  #: the image (PNG, RGBA)
    bounds: tuple[float, float, float, float]  #: the image's west, south, east, north (longitude, latitude)
    width: int  #: the raster's size in cells
    height: int
    bands: int
    crs: str  #: the raster's CRS, e.g. ``EPSG:2326``
    resolution: tuple[float, float]  #: cell size in the raster's CRS units
    minimum: float | None  #: the ramp's ends (2nd and 98th percentile; ``None``: no valid cell, or RGB)
    maximum: float | None
    ramp: tuple[tuple[float, tuple[int, int, int]], ...] = RAMP

    @property
    def data_url(self) -> str:
        """The image as a ``data:image/png;base64,...`` URL."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def ramp_css(self) -> str:
        """The colour ramp as a CSS ``linear-gradient`` (for the legend)."""
        stops = ", ".join(f"rgb{rgb} {value * 100:.0f}%" for value, rgb in self.ramp)
        return f"linear-gradient(to right, {stops})"

    def page_data(self) -> dict[str, Any]:
        """What the templates read (``data['preview']``)."""
        return {"url": self.data_url, "bounds": list(self.bounds), "width": self.width, "height": self.height,
                "bands": self.bands, "crs": self.crs, "resolution": list(self.resolution),
                "minimum": self.minimum, "maximum": self.maximum, "ramp_css": self.ramp_css}


def colourise(values: np.ndarray, valid: np.ndarray, low: float, high: float) -> np.ndarray:
    """RGBA (``uint8``, height × width × 4) of a 2-D array by :data:`RAMP` between ``low`` and ``high``;
    cells not ``valid`` transparent."""
    span = high - low if high > low else 1.0
    scaled = np.clip((np.where(valid, values, low) - low) / span, 0.0, 1.0)
    stops = np.array([s for s, _ in RAMP])
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.interp(scaled, stops, [rgb[channel] for _, rgb in RAMP]).round().astype(np.uint8)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def render_preview(path: str, max_size: int = MAX_SIZE) -> Preview:
    """The preview of the raster file at ``path`` (at most ``max_size`` pixels on its longer side).

    Raises
    ------
    LayerNotFoundError
        When the file cannot be read as a raster.
    """
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform, reproject, transform_bounds

    try:
        with rasterio.open(path) as src:
            rgb = src.count >= 3 and all(dt == "uint8" for dt in src.dtypes[:3])
            bands = [1, 2, 3] if rgb else [1]
            factor = max(1.0, max(src.width, src.height) / (2 * max_size))
            shape = (len(bands), max(1, round(src.height / factor)), max(1, round(src.width / factor)))
            data = src.read(bands, out_shape=shape, masked=True, resampling=Resampling.average).astype("float32")
            small = src.transform @ src.transform.scale(src.width / shape[2], src.height / shape[1])
            source = np.where(np.ma.getmaskarray(data), np.nan, np.ma.getdata(data)).astype("float32")
            info = (src.width, src.height, src.count, src.crs, (abs(src.res[0]), abs(src.res[1])))
            crs = src.crs
    except RasterioError as exc:
        raise LayerNotFoundError(f"the raster file of this coverage cannot be read: {exc}") from exc
    if crs is None:
        raise LayerNotFoundError("the raster file of this coverage has no CRS, so it cannot be placed on a map")
    left, bottom, right, top = array_bounds(shape[1], shape[2], small)
    dst_crs = "EPSG:3857"
    transform, width, height = calculate_default_transform(crs, dst_crs, shape[2], shape[1], left, bottom, right,
                                                           top)
    scale = max(width, height) / max_size
    if scale > 1:
        width, height = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
        transform, width, height = calculate_default_transform(crs, dst_crs, shape[2], shape[1], left, bottom,
                                                               right, top, dst_width=width, dst_height=height)
    out = np.full((len(bands), height, width), np.nan, dtype="float32")
    reproject(source, out, src_transform=small, src_crs=crs, src_nodata=np.nan, dst_transform=transform,
              dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    valid: np.ndarray = np.asarray(~np.isnan(out).any(axis=0))
    low: float | None
    high: float | None
    if rgb:
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = np.nan_to_num(np.moveaxis(out, 0, -1)).clip(0, 255).round().astype(np.uint8)
        rgba[..., 3] = np.where(valid, 255, 0)
        low = high = None
    else:
        cells = out[0][valid]
        low, high = ((float(np.percentile(cells, 2)), float(np.percentile(cells, 98))) if cells.size
                     else (None, None))
        rgba = colourise(out[0], valid, low or 0.0, high or 1.0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=True)
    west, south, east, north = transform_bounds(dst_crs, "EPSG:4326",
                                                *array_bounds(height, width, transform))
    epsg = crs.to_epsg() if crs else None
    return Preview(png=buffer.getvalue(), bounds=(west, south, east, north), width=info[0], height=info[1],
                   bands=info[2], crs=f"EPSG:{epsg}" if epsg else str(crs), resolution=info[4],
                   minimum=low, maximum=high)


def raster_file(runtime: Runtime, record: CatalogueRecord) -> str:
    """The file a raster layer is served from (as pygeoapi's coverage provider reads it).

    Raises
    ------
    LayerNotFoundError
        When the layer is not a raster or its file is missing.
    """
    from sdi.publishing.tiles import coverage_provider

    provider = coverage_provider(record, runtime.settings)
    if provider is None:
        raise LayerNotFoundError(f"collection {record.id!r} has no coverage")
    return str(provider["data"])


async def drawn_once(state: dict[str, Any], key: tuple[str, str], draw: Callable[[], Preview],
                     name: str) -> Preview:
    """``draw()`` (in a thread) once per ``key`` in this worker, kept in ``state`` (at most :data:`_CACHE_SIZE`):
    simultaneous first requests wait for one drawing (a lock per key), and a failure is remembered as a
    :class:`LayerNotFoundError` (raised again, not drawn again) until the key changes.

    Raises
    ------
    LayerNotFoundError
        When the raster cannot be read or drawn (any other error is logged with its traceback).
    """
    cache: dict[tuple[str, str], Preview | LayerNotFoundError] = state.setdefault(_CACHE, {})
    locks: dict[tuple[str, str], asyncio.Lock] = state.setdefault(_CACHE + "_locks", {})
    if key not in cache:
        async with locks.setdefault(key, asyncio.Lock()):
            if key not in cache:
                try:
                    cache[key] = await run_in_threadpool(draw)
                except LayerNotFoundError as exc:
                    cache[key] = exc
                except Exception:  # a raster that rasterio reads but cannot reproject, say: logged, remembered
                    LOGGER.warning("the preview of %s cannot be drawn", name, exc_info=True)
                    cache[key] = LayerNotFoundError(f"the preview of coverage {name!r} cannot be drawn; "
                                                    "see the server log")
                while len(cache) > _CACHE_SIZE:
                    locks.pop(oldest := next(iter(cache)), None)
                    cache.pop(oldest)
    found = cache[key]
    if isinstance(found, LayerNotFoundError):
        raise LayerNotFoundError(str(found))
    return found


async def layer_preview(runtime: Runtime, record: CatalogueRecord) -> Preview:
    """The preview of a raster layer, drawn once per load in this worker (:func:`drawn_once`)."""
    path = raster_file(runtime, record)
    return await drawn_once(runtime.state, (record.id, record.loaded_at.isoformat()),
                            lambda: render_preview(path), record.id)


async def coverage_page(request: Request) -> Response:
    """``GET /collections/{id}/coverage?f=html``: the coverage's preview on a map, its grid and its formats."""
    from pygeoapi.api import describe_collections

    from sdi.web.features import client_base, runtime_of
    from sdi.web.http import cache_headers, etag, language, not_modified, not_modified_response
    from sdi.web.pages import render

    runtime = runtime_of(request)
    collection_id = str(request.path_params["collection"])
    record = await runtime.state["registry"].record(collection_id)
    if record.kind != "raster":
        raise LayerNotFoundError(f"collection {collection_id!r} has no coverage")
    base, lang = client_base(request, runtime), language(request)
    tag = etag("coverage", collection_id, record.loaded_at, base, lang)  # Vary: Accept (HTML or CoverageJSON)
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    doc = await runtime.state["bridge"].document(request, describe_collections, collection_id, base_url=base,
                                                 lang=lang)
    preview = await layer_preview(runtime, record)
    here = f"{base}/collections/{collection_id}"
    data = {**doc, "collections_path": f"{base}/collections", "dataset_path": here,
            "coverage_path": f"{here}/coverage", "preview": preview.page_data(),
            "links": [*doc.get("links", []),
                      {"rel": "alternate", "type": "application/prs.coverage+json", "title": "CoverageJSON",
                       "href": f"{here}/coverage?f=json"}]}
    return await render(runtime, base, lang, "collections/coverage.html", data,
                        cache_headers(tag, runtime.web.cache_max_age_s))


async def collection_page(request: Request, record: CatalogueRecord, base: str, lang: str,
                          headers: dict[str, str]) -> Response:
    """``GET /collections/{id}?f=html`` of a raster layer: pygeoapi's description with the preview."""
    from pygeoapi.api import describe_collections

    from sdi.web.features import runtime_of
    from sdi.web.pages import render

    runtime = runtime_of(request)
    doc = await runtime.state["bridge"].document(request, describe_collections, record.id, base_url=base, lang=lang)
    here = f"{base}/collections/{record.id}"
    data = {**doc, "itemType": "coverage", "collections_path": f"{base}/collections", "dataset_path": here,
            "coverage_path": f"{here}/coverage",
            "preview": (await layer_preview(runtime, record)).page_data()}
    return await render(runtime, base, lang, "collections/collection.html", data, headers)
