"""Service-level routes: landing page, conformance, OpenAPI, metadata exports, and the routes pygeoapi answers.

The landing page, coverages, the ``catalogue`` records collection, processes and jobs are pygeoapi's (through
:class:`sdi.web.bridge.Bridge`); items of vector layers go to :mod:`sdi.web.features`. The conformance list is
sdi's own: what its routes implement (pygeoapi 0.21's function also grows a module-level list on every call).
The OpenAPI document is pygeoapi's generator run on the live configuration, cached per catalogue version and
base URL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sdi.catalogue.export import export
from sdi.catalogue.search import MAX_OFFSET as MAX_CATALOGUE_OFFSET
from sdi.crs import CRS84_URI, uri_crs
from sdi.errors import LayerNotFoundError, QueryError
from sdi.publishing.config import CATALOGUE_ID
from sdi.query.params import ITEMS_PARAMETERS, check_parameters, parse_box, parse_datetime, parse_int
from sdi.web import features
from sdi.web.bridge import live_config
from sdi.web.features import client_base, params_of, runtime_of
from sdi.web.http import HTML, JSON, json_bytes, language, negotiate, rebase
from sdi.web.pages import PageContext, render

OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
METADATA = {".xml": ("iso19139", "application/vnd.iso.19139+xml; charset=utf-8"),
            ".jsonld": ("dcat", "application/ld+json; charset=utf-8"),
            ".yml": ("mcf", "application/x-yaml; charset=utf-8")}
MAX_OPENAPI_DOCS = 16
_FEATURES = "http://www.opengis.net/spec/ogcapi-features-{}/1.0/conf/{}"
_CQL2 = "http://www.opengis.net/spec/cql2/1.0/conf/{}"
_TILES = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{}"
COMMON = frozenset({"f", "lang"})
COVERAGE_PARAMETERS = COMMON | {"bbox", "bbox-crs", "datetime", "subset", "subset-crs", "properties",
                                "scale-factor", "scale-axes", "scale-size"}


def conformance_classes() -> list[str]:
    """The conformance classes this server implements."""
    from pygeoapi.api import CONFORMANCE_CLASSES as COMMON_CLASSES
    from pygeoapi.api.coverages import CONFORMANCE_CLASSES as COVERAGES
    from pygeoapi.api.itemtypes import CONFORMANCE_CLASSES_RECORDS as RECORDS
    from pygeoapi.api.processes import CONFORMANCE_CLASSES as PROCESSES

    features_ = [_FEATURES.format(1, c) for c in ("core", "oas30", "html", "geojson")] + [
        _FEATURES.format(2, "crs")] + [_FEATURES.format(3, c) for c in (
            "queryables", "queryables-query-parameters", "filter", "features-filter")] + [
        _FEATURES.format(5, c) for c in ("schemas", "core-roles-features")]
    cql2 = [_CQL2.format(c) for c in ("cql2-text", "cql2-json", "basic-cql2", "advanced-comparison-operators",
                                      "case-insensitive-comparison", "basic-spatial-functions",
                                      "basic-spatial-functions-plus", "spatial-functions", "arithmetic")]
    tiles = [_TILES.format(c) for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "mvt", "oas30",
                                        "html")]
    tms = ["http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
           "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset"]
    processes = [c for c in PROCESSES if not c.endswith("/callback")]  # subscribers are refused
    return sorted({*COMMON_CLASSES, *features_, *cql2, *tiles, *tms, *RECORDS, *COVERAGES, *processes})


async def landing_page(request: Request) -> Response:
    """``GET /``: pygeoapi's landing page under this request's base URL."""
    from pygeoapi.api import landing_page as pygeoapi_landing

    runtime = runtime_of(request)
    check_parameters(params_of(request), COMMON)
    base = client_base(request, runtime)
    return await runtime.state["bridge"].call(request, pygeoapi_landing, base_url=base, lang=language(request),
                                              page=PageContext("landing_page", base))


async def conformance(request: Request) -> Response:
    """``GET /conformance``."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), COMMON)
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    doc = {"conformsTo": conformance_classes()}
    if fmt == "html":
        return await render(runtime, client_base(request, runtime), language(request), "conformance.html", doc)
    return Response(json_bytes(doc), media_type=JSON, headers={"Cache-Control": "public, max-age=3600"})


async def openapi(request: Request) -> Response:
    """``GET /openapi``: the OpenAPI 3.0 document (JSON), or Swagger UI / ReDoc (``f=html``, ``ui=redoc``)."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), COMMON | {"ui"})
    fmt = negotiate(request, {"json": OPENAPI, "html": HTML})
    base, lang = client_base(request, runtime), language(request)
    if fmt == "html":
        template = "openapi/redoc.html" if request.query_params.get("ui") == "redoc" else "openapi/swagger.html"
        return await render(runtime, base, lang, template, {"openapi-document-path": f"{base}/openapi"})
    doc = await openapi_document(runtime, base, lang)
    return Response(doc, media_type=OPENAPI, headers={"Cache-Control": "public, max-age=60"})  # private with a key


async def openapi_document(runtime: Any, base: str, lang: str) -> bytes:
    """The OpenAPI document of the current catalogue for ``base`` (generated once per version, in a thread)."""
    from pygeoapi.openapi import get_oas

    from sdi.web.openapi import add_security, self_contained

    snapshot = runtime.state["registry"].snapshot
    key = (snapshot.version, base)
    cache: dict[tuple[str, str], bytes] = runtime.state.setdefault("openapi", {})
    lock: asyncio.Lock = runtime.state.setdefault("openapi_lock", asyncio.Lock())
    async with lock:
        if key not in cache:
            config = live_config(runtime, snapshot, base, lang)
            doc = await run_in_threadpool(get_oas, config, False)
            doc = add_security(self_contained(doc))
            cache[key] = json_bytes(doc)
            while len(cache) > MAX_OPENAPI_DOCS:
                cache.pop(next(iter(cache)))
    return cache[key]


async def metadata(request: Request) -> Response:
    """``/metadata/{id}.xml`` (ISO 19139), ``.jsonld`` (DCAT JSON-LD) or ``.yml`` (MCF) of a catalogue record."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), set())
    name = str(request.path_params["name"])
    suffix = next((s for s in METADATA if name.endswith(s)), None)
    if suffix is None:
        raise LayerNotFoundError(f"no metadata document {name[:80]!r}; use <id>.xml, <id>.jsonld or <id>.yml")
    fmt, media_type = METADATA[suffix]
    record = await runtime.state["registry"].record(name[: -len(suffix)])
    base = client_base(request, runtime)
    record = record.model_copy(update={"links": [{**link, "href": rebase(link.get("href", ""), base)}
                                                 for link in record.links]})
    return Response(await run_in_threadpool(export, record, fmt), media_type=media_type)


def check_catalogue_query(params: dict[str, str], fields: Any) -> int:
    """Check what pygeoapi would otherwise fail on (with a traceback in the log) before it runs; the offset."""
    if "limit" in params:
        parse_int(params["limit"], "limit", 1)
    offset = parse_int(params["offset"], "offset", 0, MAX_CATALOGUE_OFFSET) if "offset" in params else 0
    if "bbox" in params:
        parse_box(params["bbox"], uri_crs(CRS84_URI))
    if "datetime" in params:
        parse_datetime(params["datetime"])
    for key in (params.get("sortby") or "").split(","):
        name = key.strip().lstrip("+-")
        if "sortby" in params and (not name or name not in fields or name == "q"):
            raise QueryError(f"sortby: cannot sort the catalogue by {name[:60]!r}")
    if len(params.get("q", "")) > 200:
        raise QueryError("q: longer than 200 characters")
    return offset


async def items(request: Request) -> Response:
    """``GET /collections/{id}/items``: sdi's for vector layers, pygeoapi's records for the catalogue."""
    if request.path_params["collection"] != CATALOGUE_ID:
        return await features.items(request)
    from pygeoapi.api.itemtypes import get_collection_items

    from sdi.catalogue.records_provider import FIELDS

    runtime = runtime_of(request)
    params = params_of(request)
    check_parameters(params, ITEMS_PARAMETERS, FIELDS)
    offset = check_catalogue_query(params, FIELDS)
    base = client_base(request, runtime)
    page = PageContext("get_collection_items", base, CATALOGUE_ID, offset=offset)
    return await runtime.state["bridge"].call(request, get_collection_items, CATALOGUE_ID, base_url=base,
                                              lang=language(request), page=page)


async def item(request: Request) -> Response:
    """``GET /collections/{id}/items/{fid}``."""
    if request.path_params["collection"] != CATALOGUE_ID:
        return await features.item(request)
    from pygeoapi.api.itemtypes import get_collection_item

    runtime = runtime_of(request)
    check_parameters(params_of(request), COMMON)
    base = client_base(request, runtime)
    return await runtime.state["bridge"].call(request, get_collection_item, CATALOGUE_ID,
                                              str(request.path_params["fid"]), base_url=base, lang=language(request),
                                              page=PageContext("get_collection_item", base, CATALOGUE_ID,
                                                               title="HK SDI catalogue"))


def check_coverage_numbers(params: dict[str, str], extent: tuple[float, float, float, float] | None) -> None:
    """400 for what pygeoapi's rasterio provider answers with a 500: a ``bbox`` that is not four finite longitude/
    latitude numbers or misses the coverage (``extent``, CRS84), a ``bbox-crs`` other than CRS84, a ``subset``
    with a non-finite number."""
    if params.get("bbox-crs") not in (None, CRS84_URI):
        raise QueryError(f"bbox-crs: coverages take bbox in {CRS84_URI} (longitude, latitude)")
    if "bbox" in params:
        box = parse_box(params["bbox"], uri_crs(CRS84_URI))
        if extent is not None and (box.x0 > extent[2] or box.x1 < extent[0] or box.y0 > extent[3]
                                   or box.y1 < extent[1]):
            raise QueryError(f"bbox: {params['bbox'][:80]!r} misses the coverage "
                             f"({', '.join(f'{v:.4f}' for v in extent)})")
    subset = params.get("subset", "").lower()
    if any(word in subset for word in ("nan", "inf")):
        raise QueryError(f"subset: {params['subset'][:80]!r} holds a number that is not finite")


async def coverage(request: Request) -> Response:
    """``GET /collections/{id}/coverage`` of a raster layer (pygeoapi's rasterio provider)."""
    from pygeoapi.api.coverages import get_collection_coverage

    runtime = runtime_of(request)
    params = params_of(request)
    check_parameters(params, COVERAGE_PARAMETERS)
    collection_id = str(request.path_params["collection"])
    record = await runtime.state["registry"].record(collection_id)
    if record.kind != "raster":
        raise LayerNotFoundError(f"collection {collection_id!r} has no coverage")
    asked = (params.get("f") or "").strip().lower()
    if asked == "html" or (not asked and negotiate(request, {"json": "application/prs.coverage+json",
                                                             "html": HTML}) == "html"):  # sdi/web/preview.py
        from sdi.web.preview import coverage_page

        return await coverage_page(request)
    check_coverage_numbers(params, record.bbox_crs84)
    return await runtime.state["bridge"].call(request, get_collection_coverage, collection_id,
                                              base_url=client_base(request, runtime), lang=language(request),
                                              formats=("GTiff", "json", "CoverageJSON"))


async def processes(request: Request) -> Response:
    """``GET /processes`` and ``/processes/{id}``."""
    from pygeoapi.api.processes import describe_processes

    runtime = runtime_of(request)
    check_parameters(params_of(request), COMMON | {"limit"})
    process = request.path_params.get("process")
    base = client_base(request, runtime)
    return await runtime.state["bridge"].call(request, describe_processes, *([process] if process else []),
                                              base_url=base, lang=language(request),
                                              page=PageContext("describe_processes", base))
