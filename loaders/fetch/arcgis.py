"""``service: arcgis``: every feature of an ArcGIS REST layer (MapServer or FeatureServer), into one Esri JSON
file, as the Common Spatial Data Infrastructure (CSDI) portal's services are harvested.

Following the ArcGIS REST API's *Query (Feature Service/Layer)* operation:

1. ``GET <layer>?f=json``: the layer's ``maxRecordCount``, ``objectIdField`` and whether it supports pagination
   (``advancedQueryCapabilities.supportsPagination``).
2. ``GET <layer>/query?where=1=1&returnCountOnly=true&f=json``: how many features there are.
3. ``GET <layer>/query?where=1=1&outFields=*&returnGeometry=true&f=json&orderByFields=<oid> ASC&resultOffset=<n>&
   resultRecordCount=<page>`` while the answer says ``exceededTransferLimit: true``; ``<page>`` is
   ``source.page_size`` or ``SDI_FETCH_PAGE_SIZE``, capped at ``maxRecordCount``. A layer without pagination is read
   by object ids instead (``returnIdsOnly=true``, then ``objectIds=…`` in batches).
4. The pages' features are written after the first page's ``geometryType``, ``spatialReference`` and ``fields``,
   for the loader's Esri JSON reader; the features paged must add up to the count.

ArcGIS answers errors with HTTP 200 and an ``error`` object; those fail the fetch with its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loaders.fetch.http import Client
from loaders.fetch.result import FeatureCollectionWriter, Fetched, finished
from sdi.layerdef import LayerDefinition

_HEAD_KEYS = ("objectIdFieldName", "globalIdFieldName", "geometryType", "spatialReference", "hasZ", "hasM", "fields")
_REFUSED_TYPES = {"Group Layer", "Raster Layer", "Annotation Layer"}


def layer_url(url: str) -> str:
    """The layer's URL: ``url`` without a trailing ``/query`` or ``/``; its query string (a token) is kept."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.lower().endswith("/query"):
        path = path[: -len("/query")]
    query = "&".join(q for q in parts.query.split("&") if q and q.split("=", 1)[0].lower() not in ("f", "where"))
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _query_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path + "/query", parts.query, ""))


def _answer(client: Client, url: str, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON object at ``url``; an ArcGIS ``error`` object (sent with HTTP 200) fails the fetch."""
    data = client.get_json(url, params)
    if not isinstance(data, dict):
        raise client.fail(url, "the answer is not a JSON object")
    error = data.get("error")
    if isinstance(error, dict):
        details = "; ".join(str(d) for d in error.get("details") or [] if d)
        message = " ".join(f"{error.get('message') or 'error'} {details}".split())[:200]
        raise client.fail(url, f"ArcGIS error {error.get('code', '')}: {message}".replace("error : ", "error: "))
    return data


def fetch_layer(definition: LayerDefinition, client: Client, folder: Path) -> Fetched:
    """Page through the layer into ``folder/<layer name>.json`` (Esri JSON).

    Raises
    ------
    FetchError
        A request failed, ArcGIS answered an error, the layer is not a feature layer, a page is malformed, the pages
        exceed ``SDI_FETCH_MAX_PAGES``, or the features paged do not add up to the count.
    """
    url = layer_url(definition.source.url or "")
    meta = _answer(client, url, {"f": "json"})
    if meta.get("type") in _REFUSED_TYPES:
        raise client.fail(url, f"is a {meta['type']}, not a feature layer; name a layer such as …/MapServer/0")
    query = _query_url(url)
    max_records = meta.get("maxRecordCount")
    page = definition.source.page_size or client.settings.fetch_page_size
    if isinstance(max_records, int) and max_records > 0:
        page = min(page, max_records)
    oid = meta.get("objectIdField") or next((f.get("name") for f in meta.get("fields") or []
                                             if isinstance(f, dict) and f.get("type") == "esriFieldTypeOID"), None)
    advanced = meta.get("advancedQueryCapabilities") or {}
    paginates = advanced.get("supportsPagination", meta.get("supportsPagination", True)) is not False
    count = _answer(client, query, {"where": "1=1", "returnCountOnly": "true", "f": "json"}).get("count")
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(meta.get("name") or "layer"))[:100]
    path = folder / f"{name or 'layer'}.json"
    base = {"where": "1=1", "outFields": "*", "returnGeometry": "true", "f": "json"}
    order = {"orderByFields": f"{oid} ASC"} if oid else {}
    batches = None if paginates else _id_batches(client, query, page)
    writer: FeatureCollectionWriter | None = None
    pages = offset = 0
    try:
        while True:
            if pages >= client.settings.fetch_max_pages:
                raise client.fail(url, f"more than {client.settings.fetch_max_pages:,} pages (SDI_FETCH_MAX_PAGES)")
            if batches is None:
                params = {**base, **order, "resultOffset": offset, "resultRecordCount": page}
            else:
                batch = next(batches, None)
                if batch is None:
                    break
                params = {**base, **batch}
            data = _answer(client, query, params)
            pages += 1
            features = data.get("features")
            if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
                raise client.fail(query, "the query answer has no list of features (is this a feature layer?)")
            if writer is None:
                if not data.get("geometryType"):
                    raise client.fail(query, "the query answer has no geometryType: the layer is a table without "
                                             "geometry")
                writer = FeatureCollectionWriter(path, {k: data[k] for k in _HEAD_KEYS if k in data})
            for feature in features:
                writer.write(feature)
            offset += len(features)
            more = bool(data.get("exceededTransferLimit"))
            if more and not features:
                raise client.fail(query, "exceededTransferLimit with no features: the server does not page")
            if batches is None and not more:
                break
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise client.fail(url, "the layer answered no query page")
    if isinstance(count, int) and writer.count != count:
        raise client.fail(url, f"paged {writer.count:,} features but the count query said {count:,}; the layer "
                               f"changed while paging or the server pages wrongly")
    notes = [f"ArcGIS REST layer {meta.get('name')!r} at {url}: {writer.count:,} features in {pages} page(s) of at "
             f"most {page} " + ("by resultOffset" if paginates else "by objectIds (the layer does not paginate)")]
    return finished(path, client=client, features=writer.count, pages=pages, notes=notes)


def _id_batches(client: Client, query: str, page: int) -> Any:
    """``objectIds`` parameters in batches of ``page``, for a layer that does not paginate (one empty batch for
    an empty layer, so that its field list is still read)."""
    ids = _answer(client, query, {"where": "1=1", "returnIdsOnly": "true", "f": "json"}).get("objectIds") or []
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise client.fail(query, "returnIdsOnly answered no list of integer objectIds")
    ids = sorted(ids)
    if not ids:
        yield {"where": "1=0"}
        return
    for start in range(0, len(ids), page):
        yield {"objectIds": ",".join(str(i) for i in ids[start:start + page])}
