"""``/collections``, ``/collections/{id}``, ``.../queryables`` and ``.../schema``: live from the catalogue.

Vector layers are described here from the registry (title and description in the requested language, extent,
CRSs, links to items, queryables, schema, tiles, load history and changes (:mod:`sdi.web.history`) and
metadata, all under the request's base URL), with one ``rel="enclosure"`` link per download format
(:mod:`sdi.web.downloads`; ``length`` once the file is made). Rasters (coverages) and the ``catalogue`` records
collection are described by pygeoapi through the bridge; a raster is listed as a coverage collection (no
``items`` link or ``itemType``, :data:`COVERAGE_MARKS`), so that feature clients such as GDAL's OAPIF driver
leave it out instead of asking for items it does not have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sdi.catalogue.models import CatalogueRecord
from sdi.crs import CRS84_URI, SERVED_CRS, STORAGE_CRS_URI
from sdi.distribution.formats import download_links
from sdi.errors import ConfigError, LayerNotFoundError
from sdi.publishing.config import CATALOGUE_ID, collection_description, collection_links
from sdi.query.layer import GEOMETRY_COLUMN, LayerMeta
from sdi.query.params import check_parameters
from sdi.web import preview
from sdi.web.downloads import known_lengths
from sdi.web.features import client_base, params_of, runtime_of
from sdi.web.http import (
    HTML,
    JSON,
    cache_headers,
    etag,
    json_bytes,
    language,
    negotiate,
    not_modified,
    not_modified_response,
)
from sdi.web.pages import PageContext, render
from sdi.web.titles import title_field

FORMATS = {"json": JSON, "html": HTML}
SCHEMA_FORMATS = {"json": "application/schema+json", "html": HTML}
TILESETS_REL = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
TRS = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
GEOMETRY_SCHEMA = {"Point": "https://geojson.org/schema/Point.json",
                   "MultiPoint": "https://geojson.org/schema/MultiPoint.json",
                   "LineString": "https://geojson.org/schema/LineString.json",
                   "MultiLineString": "https://geojson.org/schema/MultiLineString.json",
                   "Polygon": "https://geojson.org/schema/Polygon.json",
                   "MultiPolygon": "https://geojson.org/schema/MultiPolygon.json"}


#: What marks a raster in ``/collections`` as a coverage and not a feature collection: ``dataType`` of OGC API –
#: Common Part 2 and Tiles, and ``layerDataType``, which GDAL's OAPIF driver (3.3 and later) reads to leave the
#: collection out of its feature layers (it has no ``items`` to read).
COVERAGE_MARKS = {"dataType": "coverage", "layerDataType": "Coverage"}


def coverage_collection(doc: Mapping[str, Any]) -> dict[str, Any]:
    """pygeoapi's description of a raster as an OGC API coverage collection: marked with :data:`COVERAGE_MARKS`,
    with no ``itemType`` and no ``items`` link (its data are at ``/coverage``)."""
    links = [link for link in doc.get("links", []) if link.get("rel") != "items"]
    return {**{k: v for k, v in doc.items() if k != "itemType"}, **COVERAGE_MARKS, "links": links}


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def vector_collection(layer: LayerMeta, base: str, lang: str, fmt: str = "json",
                      lengths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The OGC API collection document of a vector layer (``lengths``: sizes of the download files made so far)."""
    record = layer.record
    here = f"{base}/collections/{layer.id}"
    description = collection_description(record)
    links: list[dict[str, Any]] = [
        {"rel": "self" if fmt == "json" else "alternate", "type": JSON, "title": "This collection as JSON",
         "href": f"{here}?f=json"},
        {"rel": "self" if fmt == "html" else "alternate", "type": HTML, "title": "This collection as HTML",
         "href": f"{here}?f=html"},
        {"rel": "root", "type": JSON, "title": "Landing page", "href": f"{base}/?f=json"},
        {"rel": "items", "type": "application/geo+json", "title": "Features as GeoJSON",
         "href": f"{here}/items?f=json"},
        {"rel": "items", "type": HTML, "title": "Features as HTML", "href": f"{here}/items?f=html"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables", "type": "application/schema+json",
         "title": "Queryables", "href": f"{here}/queryables?f=json"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/schema", "type": "application/schema+json",
         "title": "Schema", "href": f"{here}/schema?f=json"},
        {"rel": TILESETS_REL, "type": JSON, "title": "Vector tiles (WebMercatorQuad, HK80Grid)",
         "href": f"{here}/tiles?f=json"},
        {"rel": "version-history", "type": JSON, "title": "Load history", "href": f"{here}/history?f=json"},
        {"rel": "related", "type": JSON, "title": "Features the latest load added, removed and changed",
         "href": f"{here}/changes?f=json"},
        *collection_links(record, base),
        *download_links(here, lengths),
    ]
    extent: dict[str, Any] = {"spatial": {"bbox": [list(record.bbox_crs84 or (113.8, 22.1, 114.5, 22.6))],
                                          "crs": CRS84_URI}}
    if record.temporal_start or record.temporal_end:
        extent["temporal"] = {"interval": [[_iso(record.temporal_start), _iso(record.temporal_end)]], "trs": TRS}
    keywords = record.keywords_zh if lang == "zh" and record.keywords_zh else record.keywords_en
    return {"id": layer.id, "title": record.title(lang), "description": description["zh" if lang == "zh" else "en"],
            "keywords": list(keywords) or [layer.id], "itemType": "feature", "links": links, "extent": extent,
            "crs": list(SERVED_CRS), "storageCrs": STORAGE_CRS_URI,
            "numberMatched": record.feature_count, "synthetic": record.synthetic}


async def _other_collection(request: Request, collection_id: str, base: str, lang: str) -> dict[str, Any]:
    from pygeoapi.api import describe_collections

    runtime = runtime_of(request)
    return await runtime.state["bridge"].document(request, describe_collections, collection_id,
                                                  base_url=base, lang=lang)


async def collections(request: Request) -> Response:
    """``GET /collections``: every vector layer, raster and the catalogue."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    fmt = negotiate(request, FORMATS)
    base, lang = client_base(request, runtime), language(request)
    snapshot = runtime.state["registry"].snapshot
    lengths = {layer_id: known_lengths(runtime, layer) for layer_id, layer in snapshot.layers.items()}
    tag = etag("collections", snapshot.version, fmt, base, lang, sorted((k, sorted(v.items()))
                                                                         for k, v in lengths.items()))
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    docs = [await _other_collection(request, CATALOGUE_ID, base, lang)]
    for layer_id, record in sorted(snapshot.records.items()):
        layer = snapshot.layers.get(layer_id)
        if layer is not None:
            docs.append(vector_collection(layer, base, lang, lengths=lengths.get(layer_id)))
        elif record.kind == "raster":
            try:
                docs.append(coverage_collection(await _other_collection(request, layer_id, base, lang)))
            except Exception:  # a raster whose file is missing is not published (pygeoapi says 404/500)
                continue
    here = f"{base}/collections"
    doc = {"collections": docs, "links": [
        {"rel": "self" if fmt == "json" else "alternate", "type": JSON, "title": "Collections as JSON",
         "href": f"{here}?f=json"},
        {"rel": "self" if fmt == "html" else "alternate", "type": HTML, "title": "Collections as HTML",
         "href": f"{here}?f=html"}]}
    headers = cache_headers(tag, runtime.web.cache_max_age_s)
    if fmt == "html":
        return await render(runtime, base, lang, "collections/index.html", {**doc, "collections_path": here},
                            headers)
    return Response(json_bytes(doc), media_type=JSON, headers=headers)


async def collection(request: Request) -> Response:
    """``GET /collections/{id}``."""
    runtime = runtime_of(request)
    collection_id = str(request.path_params["collection"])
    check_parameters(params_of(request), {"f", "lang"})
    fmt = negotiate(request, FORMATS)
    base, lang = client_base(request, runtime), language(request)
    registry = runtime.state["registry"]
    if collection_id == CATALOGUE_ID:
        layer: LayerMeta | None = None
        record: CatalogueRecord | None = None
    else:
        record = await registry.record(collection_id)
        layer = registry.snapshot.layers.get(collection_id)
        if layer is None and record.kind != "raster":
            raise LayerNotFoundError(f"no collection {collection_id[:80]!r}")
    version = layer.load_id if layer is not None else registry.snapshot.version
    lengths = known_lengths(runtime, layer) if layer is not None else {}
    tag = etag("collection", collection_id, version, fmt, base, lang, sorted(lengths.items()))
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    headers = cache_headers(tag, runtime.web.cache_max_age_s)
    if layer is None and record is not None and fmt == "html":  # a raster's page, with its preview
        return await preview.collection_page(request, record, base, lang, headers)
    if layer is None:  # the catalogue or a raster: pygeoapi's description (and page)
        from pygeoapi.api import describe_collections

        if record is not None and fmt == "json":  # a raster, as a coverage collection (else pygeoapi's answer)
            with contextlib.suppress(ConfigError):
                doc = coverage_collection(await _other_collection(request, collection_id, base, lang))
                return Response(json_bytes(doc), media_type=JSON, headers=headers)

        return await runtime.state["bridge"].call(request, describe_collections, collection_id, base_url=base,
                                                  lang=lang, page=PageContext("describe_collections", base,
                                                                                collection_id))
    doc = vector_collection(layer, base, lang, fmt, lengths)
    if fmt == "html":
        data = {**doc, "collections_path": f"{base}/collections", "dataset_path": f"{base}/collections/{layer.id}",
                "title_field": await title_field(runtime, layer, lang)}
        return await render(runtime, base, lang, "collections/collection.html", data, headers)
    return Response(json_bytes(doc), media_type=JSON, headers=headers)


def queryables_document(layer: LayerMeta, base: str, lang: str, which: str) -> dict[str, Any]:
    """JSON Schema of a layer's queryables (``which="queryables"``) or of its features (``"schema"``)."""
    properties: dict[str, Any] = {}
    geometry_type = layer.record.geometry_type or ""
    geometry: dict[str, Any] = {"title": "geometry", "x-ogc-role": "primary-geometry",
                                "format": f"geometry-{geometry_type.lower() or 'any'}"}
    if geometry_type in GEOMETRY_SCHEMA:
        geometry["$ref"] = GEOMETRY_SCHEMA[geometry_type]
    properties[GEOMETRY_COLUMN] = geometry
    descriptions = {str(f.get("name")): f for f in layer.record.fields}
    for name, schema in layer.schema().items():
        entry: dict[str, Any] = {"title": name, **schema}
        field = descriptions.get(name, {})
        text = field.get("description_zh" if lang == "zh" else "description_en") or field.get("description_en")
        if text:
            entry["description"] = text
        if name == layer.primary_key and which == "schema":
            entry["x-ogc-role"] = "id"
        if layer.time_field == name:
            entry["x-ogc-role"] = "primary-instant"
        properties[name] = entry
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{base}/collections/{layer.id}/{which}", "type": "object",
            "title": layer.record.title(lang), "properties": properties, "additionalProperties": which == "schema"}


async def queryables(request: Request) -> Response:
    """``GET /collections/{id}/queryables`` and ``.../schema`` (the catalogue's from pygeoapi)."""
    runtime = runtime_of(request)
    collection_id = str(request.path_params["collection"])
    which = "schema" if request.url.path.rstrip("/").endswith("/schema") else "queryables"
    base, lang = client_base(request, runtime), language(request)
    record = runtime.state["registry"].snapshot.records.get(collection_id)
    raster = record is not None and record.kind == "raster" and which == "schema"  # a coverage's: its bands
    if collection_id == CATALOGUE_ID or raster:
        from pygeoapi.api import get_collection_schema
        from pygeoapi.api.itemtypes import get_collection_queryables

        function, name = ((get_collection_schema, "get_collection_schema") if which == "schema"
                          else (get_collection_queryables, "get_collection_queryables"))
        title = (await runtime.state["registry"].record(collection_id)).title(lang) if raster else "HK SDI catalogue"
        return await runtime.state["bridge"].call(request, function, collection_id, base_url=base, lang=lang,
                                                  page=PageContext(name, base, collection_id, title=title))
    check_parameters(params_of(request), {"f", "lang", "profile"})
    layer = await runtime.state["registry"].layer(collection_id)
    fmt = negotiate(request, SCHEMA_FORMATS)
    tag = etag(which, layer.id, layer.load_id, fmt, base, lang)
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    doc = queryables_document(layer, base, lang, which)
    headers = cache_headers(tag, runtime.web.cache_max_age_s)
    if fmt == "html":
        data = {**doc, "id": layer.id, "collections_path": f"{base}/collections",
                "dataset_path": f"{base}/collections/{layer.id}"}
        return await render(runtime, base, lang, f"collections/{which}.html", data, headers)
    return Response(json_bytes(doc), media_type="application/schema+json", headers=headers)
