"""OGC API – Tiles for vector layers, in ``WebMercatorQuad`` and the Lands Department's ``HK80Grid``.

``/TileMatrixSets[/{id}]`` publish the grids (OGC 2D Tile Matrix Set JSON); ``/collections/{id}/tiles`` lists
a layer's tilesets, ``.../tiles/{tms}`` (also ``.../tiles/{tms}/metadata``) describes one (OGC tileset JSON,
TileJSON 3.0 with ``f=tilejson``, or a preview page), and ``.../tiles/{tms}/{z}/{row}/{col}`` answers the
Mapbox Vector Tile made by one SQL statement (:func:`sdi.query.tms.tile_statement`), or ``204`` when no feature
touches it. Tiles are cached per worker (:mod:`sdi.web.tilecache`) with their compressed copies, keyed by the
layer's load id, and carry an ETag derived from it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sdi.query.layer import LayerMeta
from sdi.query.params import check_parameters
from sdi.query.tms import Grid, grid, grids, tile_index, tile_statement
from sdi.web.compress import choose_coding, encode
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
from sdi.web.pages import render
from sdi.web.runtime import Runtime

MVT = "application/vnd.mapbox-vector-tile"
HEAVY_TILE_M = 8_000.0  #: tiles wider than this (zoom 12 and below) may gather much of a layer: a heavy request
TILING_SCHEME_REL = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
_TILEJSON_TYPES = {"integer": "Number", "number": "Number", "boolean": "Boolean"}


def _tile_template(base: str, layer_id: str, tms: str, ogc: bool = True) -> str:
    cells = "{tileMatrix}/{tileRow}/{tileCol}" if ogc else "{z}/{y}/{x}"
    return f"{base}/collections/{layer_id}/tiles/{tms}/{cells}?f=mvt"


def _tileset_links(base: str, layer_id: str, g: Grid) -> list[dict[str, Any]]:
    here = f"{base}/collections/{layer_id}/tiles/{g.id}"
    return [
        {"rel": "self", "type": JSON, "title": f"{g.id} tileset", "href": f"{here}?f=json"},
        {"rel": "alternate", "type": "application/vnd.mapbox.tile+json", "title": "TileJSON",
         "href": f"{here}?f=tilejson"},
        {"rel": TILING_SCHEME_REL, "type": JSON, "title": f"{g.id} tile matrix set definition",
         "href": f"{base}/TileMatrixSets/{g.id}"},
        {"rel": "item", "type": MVT, "title": f"{g.id} vector tiles of {layer_id}", "templated": True,
         "href": _tile_template(base, layer_id, g.id)},
    ]


def tileset_document(layer: LayerMeta, g: Grid, base: str, lang: str) -> dict[str, Any]:
    """The OGC API – Tiles tileset metadata of ``layer`` in grid ``g``."""
    record = layer.record
    doc: dict[str, Any] = {
        "title": f"{record.title(lang)} ({g.id})", "description": record.abstract(lang) or "",
        "dataType": "vector", "crs": _crs_uri(g),
        "tileMatrixSetId": g.id, "tileMatrixSet": f"{base}/TileMatrixSets/{g.id}",
        "mediaTypes": [MVT], "links": _tileset_links(base, layer.id, g),
        "layers": [{"id": layer.id, "dataType": "vector", "geometryType": record.geometry_type,
                    "propertiesSchema": {"type": "object", "properties": layer.schema()}}],
        "minzoom": 0, "maxzoom": g.max_zoom,
    }
    if g.uri:
        doc["tileMatrixSetURI"] = g.uri
    else:
        doc["tileMatrixSetURI"] = f"{base}/TileMatrixSets/{g.id}"
    if record.bbox_crs84:
        doc["boundingBox"] = {"lowerLeft": list(record.bbox_crs84[:2]), "upperRight": list(record.bbox_crs84[2:]),
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    return doc


def _crs_uri(g: Grid) -> str:
    return f"http://www.opengis.net/def/crs/EPSG/0/{g.srid}"


def tilejson(layer: LayerMeta, g: Grid, base: str, lang: str) -> dict[str, Any]:
    """TileJSON 3.0 (for grids other than WebMercatorQuad, ``crs`` and ``tileMatrixSet`` say which grid)."""
    record = layer.record
    fields = {name: _TILEJSON_TYPES.get(schema["type"], "String") for name, schema in layer.schema().items()}
    doc: dict[str, Any] = {"tilejson": "3.0.0", "name": layer.id, "description": record.title(lang),
                           "tiles": [_tile_template(base, layer.id, g.id, ogc=False)], "minzoom": 0,
                           "maxzoom": g.max_zoom, "scheme": "xyz",
                           "attribution": record.attribution or record.custodian,
                           "vector_layers": [{"id": layer.id, "fields": fields, "minzoom": 0, "maxzoom": g.max_zoom}]}
    if record.bbox_crs84:
        x0, y0, x1, y1 = record.bbox_crs84
        doc["bounds"] = [x0, y0, x1, y1]
        doc["center"] = [(x0 + x1) / 2, (y0 + y1) / 2, 10]
    if g.id != "WebMercatorQuad":
        doc["crs"] = _crs_uri(g)
        doc["tileMatrixSet"] = f"{base}/TileMatrixSets/{g.id}"
    return doc


async def tile_matrix_sets(request: Request) -> Response:
    """``GET /TileMatrixSets``."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    base, lang = client_base(request, runtime), language(request)
    doc = {"tileMatrixSets": [
        {"id": g.id, "title": g.tms.title, "crs": _crs_uri(g), **({"uri": g.uri} if g.uri else {}),
         "links": [{"rel": "self", "type": JSON, "title": g.id, "href": f"{base}/TileMatrixSets/{g.id}?f=json"}]}
        for g in grids().values()],
        "links": [{"rel": "self", "type": JSON, "title": "Tile matrix sets", "href": f"{base}/TileMatrixSets?f=json"}]}
    if fmt == "html":
        return await render(runtime, base, lang, "tilematrixsets/index.html", doc)
    return Response(json_bytes(doc), media_type=JSON, headers={"Cache-Control": "public, max-age=86400"})


async def tile_matrix_set(request: Request) -> Response:
    """``GET /TileMatrixSets/{id}``: the OGC 2D Tile Matrix Set document."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    g = grid(str(request.path_params["tms"]))
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    doc = g.document()
    if fmt == "html":
        base, lang = client_base(request, runtime), language(request)
        return await render(runtime, base, lang, "tilematrixsets/tilematrixset.html", doc)
    return Response(json_bytes(doc), media_type=JSON, headers={"Cache-Control": "public, max-age=86400"})


async def tilesets(request: Request) -> Response:
    """``GET /collections/{id}/tiles``: the layer's tilesets (JSON) or the tiles preview page (HTML)."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang", "tms"})
    layer = await runtime.state["registry"].layer(str(request.path_params["collection"]))
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    base, lang = client_base(request, runtime), language(request)
    sets = [{"title": f"{layer.record.title(lang)} ({g.id})", "tileMatrixSetId": g.id, "dataType": "vector",
             "crs": _crs_uri(g), "tileMatrixSetURI": g.uri or f"{base}/TileMatrixSets/{g.id}",
             "links": _tileset_links(base, layer.id, g)} for g in grids().values()]
    links = [{"rel": "self", "type": JSON, "title": "Tilesets", "href": f"{base}/collections/{layer.id}/tiles?f=json"},
             {"rel": "alternate", "type": HTML, "title": "Tiles preview",
              "href": f"{base}/collections/{layer.id}/tiles?f=html"},
             *[{"rel": "item", "type": MVT, "title": f"{g.id} vector tiles", "templated": True,
                "href": _tile_template(base, layer.id, g.id)} for g in grids().values()]]
    if fmt == "html":
        record = layer.record
        data = {"id": layer.id, "title": record.title(lang), "description": record.abstract(lang) or "",
                "keywords": record.keywords_zh if lang == "zh" and record.keywords_zh else record.keywords_en,
                "collections_path": f"{base}/collections", "dataset_path": f"{base}/collections/{layer.id}",
                "minzoom": 0, "maxzoom": max(g.max_zoom for g in grids().values()),
                "bounds": list(record.bbox_crs84) if record.bbox_crs84 else None,
                "center_hk80": ([(record.bbox_2326[0] + record.bbox_2326[2]) / 2,
                                 (record.bbox_2326[1] + record.bbox_2326[3]) / 2] if record.bbox_2326 else None),
                "tilesets": [{"id": g.id, "title": g.tms.title or g.id, "tiles": _tile_template(base, layer.id, g.id,
                                                                                              ogc=False),
                              "tilejson": f"{base}/collections/{layer.id}/tiles/{g.id}?f=tilejson",
                              "metadata": f"{base}/collections/{layer.id}/tiles/{g.id}?f=json",
                              "tms": f"{base}/TileMatrixSets/{g.id}"} for g in grids().values()]}
        return await render(runtime, base, lang, "collections/tiles/index.html", data)
    return Response(json_bytes({"links": links, "tilesets": sets}), media_type=JSON)


async def tileset(request: Request) -> Response:
    """``GET /collections/{id}/tiles/{tms}`` (and ``.../metadata``): tileset JSON, TileJSON or the preview."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    layer = await runtime.state["registry"].layer(str(request.path_params["collection"]))
    g = grid(str(request.path_params["tms"]))
    fmt = negotiate(request, {"json": JSON, "tilejson": "application/vnd.mapbox.tile+json", "html": HTML})
    base, lang = client_base(request, runtime), language(request)
    if fmt == "html":
        return await tilesets(request)
    doc = tileset_document(layer, g, base, lang) if fmt == "json" else tilejson(layer, g, base, lang)
    return Response(json_bytes(doc), media_type=JSON)


async def tile(request: Request) -> Response:
    """``GET /collections/{id}/tiles/{tms}/{z}/{row}/{col}``: one Mapbox Vector Tile (204 when empty)."""
    runtime = runtime_of(request)
    params = params_of(request)
    layer = await runtime.state["registry"].layer(str(request.path_params["collection"]))
    g = grid(str(request.path_params["tms"]))
    check_parameters(params, {"f"})
    if params.get("f", "mvt") not in ("mvt", "pbf"):
        negotiate(request, {"mvt": MVT})
    z = tile_index(str(request.path_params["z"]), "tileMatrix")
    row = tile_index(str(request.path_params["row"]), "tileRow")
    col = tile_index(str(request.path_params["col"]), "tileCol")
    g.bounds(z, row, col)  # 404 outside the matrix
    tag = etag("tile", layer.id, layer.load_id, g.id, z, row, col)
    max_age = runtime.web.cache_max_age_s
    if not_modified(request, tag):
        return not_modified_response(tag, max_age)
    cache = runtime.state["tiles"]
    key = (layer.id, layer.load_id, g.id, z, row, col)
    entry = cache.get(key)
    if entry is None:
        x0, _, x1, _ = g.bounds(z, row, col)
        async with runtime.heavy(x1 - x0 > HEAVY_TILE_M):
            data = await runtime.fresh(lambda: _make_tile(runtime, layer, g, z, row, col))
        entry = cache.put(key, data)
    headers = cache_headers(tag, max_age)
    if not entry.data:
        return Response(status_code=204, headers=headers)
    coding = choose_coding(request.headers.get("accept-encoding", ""))
    if coding is None:
        return Response(entry.data, media_type=MVT, headers=headers)
    encoded = entry.encoded.get(coding)
    if encoded is None:
        encoded = encode(entry.data, coding)
        cache.add_encoding(key, entry, coding, encoded)
    return Response(encoded, media_type=MVT, headers={**headers, "Content-Encoding": coding})


async def _make_tile(runtime: Runtime, layer: LayerMeta, g: Grid, z: int, row: int, col: int) -> bytes:
    statement, params = tile_statement(layer, g, z, row, col)
    async with runtime.connection() as conn:
        result = await (await conn.execute(statement, params, binary=True)).fetchone()
    return bytes(result[0]) if result and result[0] else b""

