"""``/collections/{id}/items`` and ``/collections/{id}/items/{fid}``: GeoJSON written by PostgreSQL, sent as is.

The page statement (:func:`sdi.query.statements.page_statement`) returns the features as comma-joined GeoJSON
text in chunks; the route writes them between the FeatureCollection's head and tail without parsing them.
Pages of more than :data:`STREAM_ABOVE` features are streamed chunk by chunk as PostgreSQL produces them.
HTML pages render pygeoapi's items and item templates (sdi's copies) from the same bytes. ``f=csv`` pages are
CSV written by PostgreSQL the same way (:func:`sdi.query.statements.csv_row`: the properties, then the geometry as
WKT in the requested CRS and axis order), UTF-8 with a byte-order mark so that Excel reads Chinese, with the
paging links in a ``Link`` header.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, cast

from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sdi.access.audit import note_features
from sdi.errors import FeatureNotFoundError, QueryError
from sdi.query.layer import LayerMeta
from sdi.query.params import ItemsQuery, Limits, feature_key, parse_item, parse_items
from sdi.query.statements import (
    Statement,
    check_sortable,
    csv_header,
    hits_statement,
    item_statement,
    output_names,
    page_statement,
)
from sdi.web.http import (
    GEOJSON,
    HTML,
    JSON,
    base_url,
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
from sdi.web.runtime import RawText, Runtime
from sdi.web.titles import feature_title, title_field

FORMATS = {"json": GEOJSON, "html": HTML, "csv": "text/csv"}
ITEM_FORMATS = {"json": GEOJSON, "html": HTML}
CSV = "text/csv; charset=utf-8"
BOM = b"\xef\xbb\xbf"  #: the UTF-8 byte-order mark: Excel then reads CSV as UTF-8
STREAM_ABOVE = 1000  #: pages with a larger ``limit`` are streamed


def runtime_of(request: Request) -> Runtime:
    """The worker's :class:`Runtime`."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def params_of(request: Request) -> dict[str, str]:
    """The query parameters, one value each (a parameter repeated with another value is a 400)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params and params[name] != value:
            raise QueryError(f"{name[:60]}: given more than once, with different values")
        params[name] = value
    return params


def client_base(request: Request, runtime: Runtime) -> str:
    """Base URL for links (see :func:`sdi.web.http.base_url`)."""
    return base_url(request, runtime.settings.public_url, runtime.state["forwarded_allow"])


def _links(base: str, layer: LayerMeta, params: dict[str, str], fmt: str, query: ItemsQuery, matched: int,
           returned: int) -> list[dict[str, str]]:
    items = f"{base}/collections/{layer.id}/items"
    keep = {k: v for k, v in params.items() if k not in ("f", "offset", "limit")}
    here = {**keep, "limit": str(query.limit)}
    if query.offset:
        here["offset"] = str(query.offset)
    links = [
        {"rel": "self" if fmt == "json" else "alternate", "type": GEOJSON, "title": "This page as GeoJSON",
         "href": items + query_string({**here, "f": "json"})},
        {"rel": "self" if fmt == "html" else "alternate", "type": HTML, "title": "This page as HTML",
         "href": items + query_string({**here, "f": "html"})},
        {"rel": "collection", "type": JSON, "title": layer.record.title_en,
         "href": f"{base}/collections/{layer.id}"},
    ]
    f = {"f": fmt} if "f" in params else {}
    if query.offset + returned < matched and returned:
        links.append({"rel": "next", "type": FORMATS[fmt], "title": "Next page",
                      "href": items + query_string({**keep, **f, "limit": str(query.limit),
                                                    "offset": str(query.offset + query.limit)})})
    if query.offset > 0:
        prev = max(0, query.offset - query.limit)
        links.append({"rel": "prev", "type": FORMATS[fmt], "title": "Previous page",
                      "href": items + query_string({**keep, **f, "limit": str(query.limit),
                                                    **({"offset": str(prev)} if prev else {})})})
    return links


#: A box larger than this (in square degrees of CRS84, about 500 km²; Hong Kong is 0.3) may scan much of a layer.
HEAVY_BOX_DEG2 = 0.05
HEAVY_OFFSET = 10_000


def is_heavy(query: ItemsQuery) -> bool:
    """Whether a page may make the database scan much of a layer, and so takes a heavy-request slot: a large page,
    a count only, a deep offset, a filter or text search not narrowed by a box, or a box wider than
    :data:`HEAVY_BOX_DEG2`. Small pages round a place and unfiltered pages walking the key are light."""
    if query.limit > STREAM_ABOVE or query.hits or query.offset > HEAVY_OFFSET:
        return True
    if query.bbox is None:
        return query.filter is not None or bool(query.q) or bool(query.equals) or query.datetime is not None
    b = query.bbox
    width, height = b.x1 - b.x0, b.y1 - b.y0
    if not b.crs.geographic:  # metres: about 105 km per degree around Hong Kong
        width, height = width / 105_000, height / 105_000
    return width * height > HEAVY_BOX_DEG2


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def items(request: Request) -> Response:
    """``GET /collections/{id}/items`` of a vector layer."""
    runtime = runtime_of(request)
    layer = await runtime.state["registry"].layer(request.path_params["collection"])
    fmt = negotiate(request, FORMATS)
    params = params_of(request)
    web = runtime.web
    query = parse_items(params, layer, Limits(web.default_items, web.max_items))
    check_sortable(layer, query)
    base, lang = client_base(request, runtime), language(request)
    tag = etag("items", layer.id, layer.load_id, sorted(params.items()), fmt, base, lang)
    if not_modified(request, tag):
        return not_modified_response(tag, web.cache_max_age_s)
    headers = {**cache_headers(tag, web.cache_max_age_s), "Content-Crs": f"<{query.crs.uri}>"}
    if fmt == "csv":
        return await _csv(runtime, base, layer, params, query, headers)
    if query.hits:
        matched = await _hits(runtime, layer, query)
        doc = {"type": "FeatureCollection", "features": [], "numberMatched": matched, "numberReturned": 0,
               "links": _links(base, layer, params, fmt, query, matched, 0), "timeStamp": _now()}
        if fmt == "html":
            return await _html(runtime, base, lang, layer, doc, params, query, headers)
        return Response(json_bytes(doc), media_type=GEOJSON, headers=headers)
    if fmt == "json" and query.limit > STREAM_ABOVE:
        return await _stream(runtime, base, layer, params, query, headers)
    async with runtime.heavy(is_heavy(query)):
        rows = await runtime.fresh(lambda: _page(runtime, layer, query, "json"))
    matched = int(rows[0][0]) if rows else 0
    returned = sum(int(r[1] or 0) for r in rows)
    note_features(returned)
    links = _links(base, layer, params, fmt, query, matched, returned)
    body = b"".join((b'{"type":"FeatureCollection","features":[', b",".join(r[2] for r in rows if r[2]),
                     b'],"numberMatched":', str(matched).encode(), b',"numberReturned":', str(returned).encode(),
                     b',"links":', json_bytes(links), b',"timeStamp":"', _now().encode(), b'"}'))
    if fmt == "html":
        return await _html(runtime, base, lang, layer, json.loads(body), params, query, headers)
    return Response(body, media_type=GEOJSON, headers=headers)


async def _page(runtime: Runtime, layer: LayerMeta, query: ItemsQuery, fmt: str) -> list[tuple[Any, ...]]:
    statement = page_statement(layer, query, fmt)
    async with runtime.connection() as conn:
        cur = conn.cursor()
        cur.adapters.register_loader("text", RawText)
        await cur.execute(statement.query, statement.params)
        return await cur.fetchall()


async def _hits(runtime: Runtime, layer: LayerMeta, query: ItemsQuery) -> int:
    statement = hits_statement(layer, query)

    async def run() -> int:
        async with runtime.connection() as conn:
            row = await (await conn.execute(statement.query, statement.params)).fetchone()
            return int(row[0]) if row else 0

    async with runtime.heavy():
        return await runtime.fresh(run)


async def _stream(runtime: Runtime, base: str, layer: LayerMeta, params: dict[str, str], query: ItemsQuery,
                  headers: dict[str, str]) -> Response:
    """A large page, sent chunk by chunk while PostgreSQL produces it (the connection is held until the end)."""
    first, rows, stack = await _first_chunk(runtime, layer, query, "json")

    async def body() -> AsyncIterator[bytes]:
        returned = int(first[1] or 0)
        try:
            yield b'{"type":"FeatureCollection","features":[' + (first[2] or b"")
            async for row in rows:
                returned += int(row[1] or 0)
                yield b"," + row[2]
        finally:
            await rows.aclose()
            await stack.aclose()
            note_features(returned)
        matched = int(first[0])
        links = _links(base, layer, params, "json", query, matched, returned)
        yield b"".join((b'],"numberMatched":', str(matched).encode(), b',"numberReturned":', str(returned).encode(),
                        b',"links":', json_bytes(links), b',"timeStamp":"', _now().encode(), b'"}'))

    return StreamingResponse(body(), media_type=GEOJSON, headers=headers)


async def _first_chunk(runtime: Runtime, layer: LayerMeta, query: ItemsQuery,
                       fmt: str) -> tuple[Any, AsyncGenerator[Any, None], AsyncExitStack]:
    """The first row of a page statement, the generator of the others and what holds the heavy slot and the
    connection until the generator is closed."""
    statement = page_statement(layer, query, fmt)
    stack = AsyncExitStack()
    try:
        await stack.enter_async_context(runtime.heavy())
        conn = await stack.enter_async_context(runtime.connection())
        cur = conn.cursor()
        cur.adapters.register_loader("text", RawText)
        rows = cast(AsyncGenerator[Any, None], cur.stream(statement.query, statement.params))
        first = await anext(rows)
    except BaseException as exc:
        if not await stack.__aexit__(type(exc), exc, exc.__traceback__):
            raise
        raise
    return first, rows, stack


def link_header(links: list[dict[str, str]]) -> str:
    """An RFC 8288 ``Link`` header of ``links``."""
    return ", ".join(f'<{link["href"]}>; rel="{link["rel"]}"; type="{link["type"]}"' for link in links)


async def _csv(runtime: Runtime, base: str, layer: LayerMeta, params: dict[str, str], query: ItemsQuery,
               headers: dict[str, str]) -> Response:
    """A page as CSV: a header line, then one line per feature (streamed when over :data:`STREAM_ABOVE`)."""
    if query.hits:
        raise QueryError("resulttype: hits is not offered as CSV; use f=json")
    head = BOM + csv_header(output_names(layer, query.properties), not query.skip_geometry).encode("utf-8")

    def with_links(matched: int) -> dict[str, str]:
        returned = max(0, min(query.limit, matched - query.offset))
        note_features(returned)
        links = _links(base, layer, params, "csv", query, matched, returned)
        here = {k: v for k, v in params.items() if k != "f"}
        links.insert(0, {"rel": "self", "type": FORMATS["csv"], "title": "This page as CSV",
                         "href": f"{base}/collections/{layer.id}/items" + query_string({**here, "f": "csv"})})
        return {**headers, "Link": link_header(links)}

    if query.limit <= STREAM_ABOVE:
        async with runtime.heavy(is_heavy(query)):
            rows = await runtime.fresh(lambda: _page(runtime, layer, query, "csv"))
        matched = int(rows[0][0]) if rows else 0
        body = head + b"".join(r[2] for r in rows if r[2])
        return Response(body, media_type=CSV, headers=with_links(matched))
    first, rest, stack = await _first_chunk(runtime, layer, query, "csv")

    async def body_chunks() -> AsyncIterator[bytes]:
        try:
            yield head + (first[2] or b"")
            async for row in rest:
                yield row[2]
        finally:
            await rest.aclose()
            await stack.aclose()

    return StreamingResponse(body_chunks(), media_type=CSV, headers=with_links(int(first[0] or 0)))


async def _html(runtime: Runtime, base: str, lang: str, layer: LayerMeta, doc: dict[str, Any],
                params: dict[str, str], query: ItemsQuery, headers: dict[str, str]) -> Response:
    record = layer.record
    items_path = f"{base}/collections/{layer.id}/items"
    keep = {k: v for k, v in params.items() if k not in ("f", "offset", "limit")}  # bbox, filter, q... kept
    matched = doc.get("numberMatched")
    title = record.title("zh" if lang == "zh" else "en")
    for link in doc["links"]:
        if link["rel"] == "collection":
            link["title"] = title
    data = {**doc, "id": layer.id, "title": title, "description": record.abstract(lang) or "",
            "keywords": record.keywords_zh if lang == "zh" and record.keywords_zh else record.keywords_en,
            "collections_path": f"{base}/collections", "dataset_path": f"{base}/collections/{layer.id}",
            "items_path": items_path, "offset": query.offset,
            "id_field": layer.primary_key, "title_field": await title_field(runtime, layer, lang), "uri_field": None,
            "limit": query.limit,
            "items_all_path": items_path + query_string({**keep, "f": "html", "limit": str(matched)})
            if isinstance(matched, int) else None}
    return await render(runtime, base, lang, "collections/items/index.html", data, _html_headers(headers))


def _with_title(statement: Statement, layer: LayerMeta, field: str | None) -> Statement:
    """``statement`` (one feature's GeoJSON text) with a second column: the feature's ``field`` as text, read from
    the table by the same key (``NULL`` without a title field), so that naming the feature needs no parse of its
    GeoJSON."""
    value: sql.Composable = sql.SQL("null::text")
    if field is not None:
        value = sql.SQL("(select n.{field}::text from {table} as n where n.{key} = %(id)s)").format(
            field=sql.Identifier(field), table=sql.Identifier("layers", layer.id),
            key=sql.Identifier(layer.primary_key))
    return Statement(sql.SQL("select f.*, {value} from ({inner}) as f").format(value=value, inner=statement.query),
                     statement.params)


def _html_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "Content-Crs"}


async def item(request: Request) -> Response:
    """``GET /collections/{id}/items/{fid}`` of a vector layer."""
    runtime = runtime_of(request)
    layer = await runtime.state["registry"].layer(request.path_params["collection"])
    fmt = negotiate(request, ITEM_FORMATS)
    params = params_of(request)
    query = parse_item(params, layer)
    fid = str(request.path_params["fid"])
    key = feature_key(layer, fid)
    if key is None:
        raise FeatureNotFoundError(f"no feature {fid[:80]!r} in {layer.id}")
    base, lang = client_base(request, runtime), language(request)
    tag = etag("item", layer.id, layer.load_id, fid, sorted(params.items()), fmt, base, lang)
    if not_modified(request, tag):
        return not_modified_response(tag, runtime.web.cache_max_age_s)
    field = await title_field(runtime, layer, lang)
    statement = _with_title(item_statement(layer, key, query), layer, field)

    async def run() -> tuple[bytes, bytes | None] | None:
        async with runtime.connection() as conn:
            cur = conn.cursor()
            cur.adapters.register_loader("text", RawText)
            await cur.execute(statement.query, statement.params)
            row = await cur.fetchone()
            return (row[0], row[1]) if row else None

    found = await runtime.fresh(run)
    if found is None:
        raise FeatureNotFoundError(f"no feature {fid[:80]!r} in {layer.id}")
    feature, title_value = found
    note_features(1)
    here = f"{base}/collections/{layer.id}/items/{request.path_params['fid']}"
    extra = query_string({k: v for k, v in params.items() if k != "f"})
    name = feature_title(title_value.decode("utf-8") if title_value is not None else None, fid)
    links = [
        {"rel": "self" if fmt == "json" else "alternate", "type": GEOJSON, "title": f"{name} as GeoJSON",
         "href": here + (extra + "&" if extra else "?") + "f=json"},
        {"rel": "self" if fmt == "html" else "alternate", "type": HTML, "title": f"{name} as HTML",
         "href": here + (extra + "&" if extra else "?") + "f=html"},
        {"rel": "collection", "type": JSON, "title": layer.record.title_en,
         "href": f"{base}/collections/{layer.id}"},
    ]
    body = feature[:-1] + b',"links":' + json_bytes(links) + b"}"
    headers = {**cache_headers(tag, runtime.web.cache_max_age_s), "Content-Crs": f"<{query.crs.uri}>"}
    if fmt == "html":
        links = [{**link, "title": layer.record.title(lang)} if link["rel"] == "collection" else link
                 for link in links]
        data = {**json.loads(feature), "links": links, "title": name,
                "collections_path": f"{base}/collections", "dataset_path": f"{base}/collections/{layer.id}",
                "items_path": f"{base}/collections/{layer.id}/items", "id_field": layer.primary_key,
                "title_field": field, "uri_field": None, "collection_title": layer.record.title(lang)}
        return await render(runtime, base, lang, "collections/items/item.html", data, _html_headers(headers))
    return Response(body, media_type=GEOJSON, headers=headers)
