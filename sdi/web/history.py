"""``/collections/{id}/history`` and ``/collections/{id}/changes``: a layer's loads and what each one changed.

* ``history`` lists the layer's loads, newest first (``sdi.load_history``): load id, status (``loaded``;
  ``skipped`` or ``failed`` for attempts that left the layer as it was), times, feature counts, the change counts
  against the previous version (:mod:`loaders.changes`) and the reason of an attempt, each loaded one with a link
  to its changes. JSON, or HTML (``collections/history.html``). Paged with ``limit`` (default 100, at most
  1,000) and ``offset``. Its ETag derives from the newest history row of the layer (attempts do not change
  the layer's load id), read by the same statement.
* ``changes`` answers the ids added, removed and changed by the layer's latest load (the live version), or by
  an earlier one with ``load=<id>``, with their counts and the load they were compared with
  (``previous_load_id``), so an app holding that version can update its copy: delete ``removed``, fetch
  ``added`` and ``changed`` from ``/items/{id}``. ``limit`` (default 10,000, at most 100,000) and ``offset``
  page each of the three lists alike. ``feature_ids`` is ``null`` when the ids are not available: the layer
  has no primary key (``ids: "unkeyed"``), the load changed more than 100,000 features (``"over_limit"``), its
  ids were pruned (``"pruned"``: only the latest 30 loads keep them), or there was nothing to compare with (a
  first load, a raster): the app should then read the whole collection again. The ETag derives from the
  layer's load id (a ``304`` costs no database work).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sdi.catalogue.models import CatalogueRecord
from sdi.errors import LayerNotFoundError
from sdi.publishing.config import CATALOGUE_ID
from sdi.query.layer import INTEGER_TYPES
from sdi.query.params import check_parameters, parse_int
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
    query_string,
)
from sdi.web.pages import render
from sdi.web.runtime import Runtime

HISTORY_LIMITS = (100, 1_000)  #: default and maximum loads per history page
CHANGES_LIMITS = (10_000, 100_000)  #: default and maximum ids per list per changes page
MAX_OFFSET = 10_000_000
CHANGE_KINDS = ("added", "removed", "changed")
VERSION_HISTORY_REL = "version-history"  #: IANA link relation
CHANGES_REL = "related"

HISTORY_SQL = """
select t.matched, t.newest, h.* from
  (select count(*) as matched, max(load_id) as newest from sdi.load_history where layer_id = %(id)s) t
  left join lateral (
    select load_id, status, started_at, finished_at, features_read, features_written, changes, reason
    from sdi.load_history where layer_id = %(id)s order by load_id desc limit %(limit)s offset %(offset)s) h on true
"""

CHANGES_SQL = """
select h.load_id, h.status, h.started_at, h.finished_at, h.features_written, h.changes,
""" + ",\n".join(
    f"  array(select feature_id from sdi.load_changes c where c.load_id = h.load_id and c.change = '{kind}'"
    f" order by feature_id limit %(limit)s offset %(offset)s) as {kind}" for kind in CHANGE_KINDS) + """
from sdi.load_history h
where h.layer_id = %(id)s and h.load_id = coalesce(%(load)s::bigint, (select load_id from sdi.layer where id = %(id)s))
"""


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return None


def _page(params: dict[str, str], limits: tuple[int, int]) -> tuple[int, int]:
    """``limit`` (clamped to the maximum) and ``offset``."""
    limit = limits[0] if params.get("limit") is None else min(parse_int(params["limit"], "limit", 1), limits[1])
    offset = 0 if params.get("offset") is None else parse_int(params["offset"], "offset", 0, MAX_OFFSET)
    return limit, offset


async def _record(runtime: Runtime, collection_id: str) -> CatalogueRecord:
    """The published layer (vector or raster) ``collection_id``; 404 for the catalogue or an unknown id."""
    if collection_id == CATALOGUE_ID:
        raise LayerNotFoundError(f"collection {CATALOGUE_ID!r} has no load history")
    record: CatalogueRecord = await runtime.state["registry"].record(collection_id)
    return record


def _paging_links(here: str, fmt: str, types: dict[str, str], limit: int, offset: int, more: bool,
                  extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    keep = {**(extra or {}), "limit": str(limit)}
    links = []
    if more:
        links.append({"rel": "next", "type": types[fmt], "title": "Next page",
                      "href": here + query_string({**keep, "offset": str(offset + limit), "f": fmt})})
    if offset > 0:
        prev = max(0, offset - limit)
        links.append({"rel": "prev", "type": types[fmt], "title": "Previous page",
                      "href": here + query_string({**keep, **({"offset": str(prev)} if prev else {}), "f": fmt})})
    return links


def _load_entry(row: dict[str, Any], here: str, current: int | None) -> dict[str, Any]:
    entry = {"load_id": row["load_id"], "status": row["status"], "current": row["load_id"] == current,
             "started_at": _iso(row["started_at"]), "finished_at": _iso(row["finished_at"]),
             "features_read": row["features_read"], "features_written": row["features_written"],
             "changes": row["changes"], "reason": row["reason"], "links": []}
    if row["status"] == "loaded":
        entry["links"].append({"rel": CHANGES_REL, "type": JSON, "title": "Features this load added, removed and "
                               "changed", "href": f"{here}/changes?load={row['load_id']}"})
    return entry


def _current_load(runtime: Runtime, record: CatalogueRecord) -> int | None:
    """The load id of the live version (vector layers from the registry; rasters from their lineage)."""
    layer = runtime.state["registry"].snapshot.layers.get(record.id)
    if layer is not None:
        return int(layer.load_id)
    value = record.lineage.get("load_id")
    return int(value) if isinstance(value, int) else None


async def history(request: Request) -> Response:
    """``GET /collections/{id}/history``: the layer's loads, newest first (JSON or HTML)."""
    runtime = runtime_of(request)
    collection_id = str(request.path_params["collection"])
    params = params_of(request)
    check_parameters(params, {"f", "lang", "limit", "offset"})
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    limit, offset = _page(params, HISTORY_LIMITS)
    base, lang = client_base(request, runtime), language(request)
    record = await _record(runtime, collection_id)
    rows = await runtime.fetch_dicts(HISTORY_SQL, {"id": record.id, "limit": limit, "offset": offset})
    matched, newest = int(rows[0]["matched"]), rows[0]["newest"]
    current = _current_load(runtime, record)
    tag = etag("history", record.id, newest, matched, current, fmt, base, lang, limit, offset)
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    here = f"{base}/collections/{record.id}"
    loads = [_load_entry(r, here, current) for r in rows if r["load_id"] is not None]
    links: list[dict[str, Any]] = [
        {"rel": "self" if fmt == "json" else "alternate", "type": JSON, "title": "Load history as JSON",
         "href": f"{here}/history" + query_string({"limit": limit, "offset": offset or None, "f": "json"})},
        {"rel": "self" if fmt == "html" else "alternate", "type": HTML, "title": "Load history as HTML",
         "href": f"{here}/history" + query_string({"limit": limit, "offset": offset or None, "f": "html"})},
        {"rel": "collection", "type": JSON, "title": record.title(lang), "href": f"{here}?f=json"},
        {"rel": CHANGES_REL, "type": JSON, "title": "Features the latest load added, removed and changed",
         "href": f"{here}/changes?f=json"},
        *_paging_links(f"{here}/history", fmt, {"json": JSON, "html": HTML}, limit, offset,
                       offset + len(loads) < matched and bool(loads)),
    ]
    doc = {"id": record.id, "title": record.title(lang), "current_load_id": current, "loads": loads,
           "numberMatched": matched, "numberReturned": len(loads), "links": links}
    headers = cache_headers(tag, runtime.web.cache_max_age_s)
    if fmt == "html":
        data = {**doc, "collections_path": f"{base}/collections", "dataset_path": here}
        return await render(runtime, base, lang, "collections/history.html", data, headers)
    return Response(json_bytes(doc), media_type=JSON, headers=headers)


def _typed_ids(ids: list[str], integer_key: bool) -> list[Any]:
    """Ids as the items endpoint shows them: numbers for an integer key, else text."""
    if integer_key and all(i.lstrip("-").isdigit() for i in ids):
        return [int(i) for i in ids]
    return list(ids)


async def changes(request: Request) -> Response:
    """``GET /collections/{id}/changes[?load=<id>]``: the ids a load added, removed and changed (JSON)."""
    runtime = runtime_of(request)
    collection_id = str(request.path_params["collection"])
    params = params_of(request)
    check_parameters(params, {"f", "lang", "load", "limit", "offset"})
    negotiate(request, {"json": JSON})
    limit, offset = _page(params, CHANGES_LIMITS)
    load = None if params.get("load") is None else parse_int(params["load"], "load", 1)
    base, lang = client_base(request, runtime), language(request)
    record = await _record(runtime, collection_id)
    current = _current_load(runtime, record)
    tag = etag("changes", record.id, current, load, limit, offset, base, lang)
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    async with runtime.heavy(needed=limit > CHANGES_LIMITS[0]):  # the live version as this worker serves it
        rows = await runtime.fetch_dicts(CHANGES_SQL, {"id": record.id, "load": load if load is not None else current,
                                                       "limit": limit, "offset": offset})
    if not rows:
        raise LayerNotFoundError(f"collection {record.id!r} has no load {load}" if load is not None
                                 else f"collection {record.id!r} has no load history")
    row = rows[0]
    counts: dict[str, Any] | None = row["changes"]
    available = counts is not None and counts.get("ids") == "recorded"
    layer = runtime.state["registry"].snapshot.layers.get(record.id)
    integer_key = layer is not None and layer.key_type in INTEGER_TYPES
    here = f"{base}/collections/{record.id}"
    feature_ids = {k: _typed_ids(row[k], integer_key) for k in CHANGE_KINDS} if available else None
    more = available and counts is not None and any(offset + limit < int(counts.get(k) or 0) for k in CHANGE_KINDS)
    selector = {"load": str(row["load_id"])} if load is not None else {}
    links: list[dict[str, Any]] = [
        {"rel": "self", "type": JSON, "title": "These changes",
         "href": f"{here}/changes" + query_string({**selector, "limit": limit, "offset": offset or None,
                                                   "f": "json"})},
        {"rel": "collection", "type": JSON, "title": record.title(lang), "href": f"{here}?f=json"},
        {"rel": VERSION_HISTORY_REL, "type": JSON, "title": "Load history", "href": f"{here}/history?f=json"},
        {"rel": "items", "type": "application/geo+json", "title": "Features", "href": f"{here}/items?f=json"},
        *_paging_links(f"{here}/changes", "json", {"json": JSON}, limit, offset, more, selector),
    ]
    doc = {"id": record.id, "load_id": row["load_id"], "current": row["load_id"] == current,
           "previous_load_id": counts.get("previous_load_id") if counts else None, "status": row["status"],
           "finished_at": _iso(row["finished_at"]), "features_written": row["features_written"], "changes": counts,
           "ids": counts.get("ids") if counts else None, "feature_ids": feature_ids, "limit": limit,
           "offset": offset, "links": links}
    if not available:
        doc["description"] = ("the ids of this load's changes are not available (see 'ids'); "
                              "read the whole collection again")
    return Response(json_bytes(doc), media_type=JSON, headers=cache_headers(tag, runtime.web.cache_max_age_s))
