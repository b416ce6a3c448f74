"""``service: ogcapi``: every feature of an OGC API – Features collection, into one GeoJSON file.

1. ``GET <collection>?f=json``: the collection's description; when its ``crs`` list offers EPSG:2326 (the SDI's
   storage CRS, OGC API – Features Part 2), features are asked for in it, so no coordinate is transformed twice.
2. ``GET <collection>/items?f=json&limit=<page>[&crs=…]``, then each ``rel=next`` link until there is none. The page
   asked for is ``source.page_size`` or ``SDI_FETCH_PAGE_SIZE`` (servers serve at most their maximum, and say how
   to go on in their ``next`` link); a server that refuses the default page size with a ``400`` is asked again
   without ``limit``.
3. Coordinates in a north-first CRS (EPSG:2326 is northing, easting in the EPSG registry, as the ``Content-Crs``
   header says) are written easting first. A feature's ``id`` is kept as the property ``id`` unless the
   properties already have one. When the first page gives ``numberMatched``, the features paged must add up to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

from loaders.fetch.http import Client, FetchError
from loaders.fetch.result import FeatureCollectionWriter, Fetched, finished, geojson_head, plain_feature
from sdi.crs import CRS84_URI, HK_GRID, crs_uri, uri_crs
from sdi.errors import CrsError
from sdi.layerdef import LayerDefinition

_JSON_TYPES = ("application/geo+json", "application/json", "application/vnd.geo+json")


def collection_url(definition: LayerDefinition) -> str:
    """The collection's URL: ``source.url`` itself, or ``source.url`` + ``/collections/<collection>``."""
    url = definition.source.url
    assert url is not None
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if definition.source.collection is not None:
        path = f"{path}/collections/{quote(definition.source.collection, safe='')}"
    elif path.endswith("/items"):
        path = path[: -len("/items")]
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _with_query(url: str, params: dict[str, Any]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _next_link(page: dict[str, Any], base: str) -> str | None:
    for link in page.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and isinstance(link.get("href"), str):
            kind = str(link.get("type") or "application/geo+json").split(";")[0].strip()
            if kind in _JSON_TYPES:
                return urljoin(base, link["href"])
    return None


def _content_crs(header: str | None) -> str | None:
    """The URI of a ``Content-Crs`` header (``<http://…/EPSG/0/2326>``)."""
    if not header:
        return None
    match = re.match(r"\s*<([^>]+)>", header)
    return match.group(1) if match else header.strip()


def fetch_collection(definition: LayerDefinition, client: Client, folder: Path) -> Fetched:
    """Page through the collection into ``folder/<collection id>.geojson``.

    Raises
    ------
    FetchError
        A request failed, an answer is not a GeoJSON FeatureCollection, a ``next`` link loops, the pages exceed
        ``SDI_FETCH_MAX_PAGES``, or the features paged do not add up to ``numberMatched``.
    """
    base = collection_url(definition)
    about = client.get_json(_with_query(base, {"f": "json"}))
    if not isinstance(about, dict):
        raise client.fail(base, "the collection's description is not a JSON object")
    collection_id = str(about.get("id") or base.rstrip("/").rsplit("/", 1)[-1])
    offered = [str(c) for c in about.get("crs") or [] if isinstance(c, str)]
    if "#/crs" in offered:  # Part 2: "the CRSs listed for all collections", at /collections
        parent = client.get_json(_with_query(base.rsplit("/", 1)[0], {"f": "json"}))
        offered += [str(c) for c in (parent.get("crs") if isinstance(parent, dict) else None) or []
                    if isinstance(c, str)]
    storage = crs_uri(HK_GRID)
    wanted = storage if any(_is_storage(c) for c in offered) else None
    page_size = definition.source.page_size or client.settings.fetch_page_size
    params: dict[str, Any] = {"f": "json", "limit": page_size}
    if wanted:
        params["crs"] = wanted
    url: str | None = _with_query(f"{base}/items", params)
    path = folder / f"{_file_stem(collection_id)}.geojson"
    notes = [f"OGC API collection {collection_id!r} at {base}: features asked for in "
             f"{'EPSG:2326' if wanted else 'CRS84'}, {page_size} per page"]
    seen: set[str] = set()
    pages, matched, north_first = 0, None, False
    with FeatureCollectionWriter(path, geojson_head(f"EPSG:{HK_GRID}" if wanted else None)) as out:
        while url is not None:
            if url in seen:
                raise client.fail(url, "the next link leads back to a page already fetched")
            if pages >= client.settings.fetch_max_pages:
                raise client.fail(url, f"more than {client.settings.fetch_max_pages:,} pages (SDI_FETCH_MAX_PAGES)")
            seen.add(url)
            page, response_crs = _page(client, url, retry_without_limit=pages == 0
                                       and definition.source.page_size is None)
            pages += 1
            if pages == 1:
                matched = page.get("numberMatched") if isinstance(page.get("numberMatched"), int) else None
                served = response_crs or (wanted or CRS84_URI)
                north_first = _north_first(client, url, served)
                if _is_storage(served) != bool(wanted):
                    raise client.fail(url, f"asked for {wanted or CRS84_URI} but the server answered in {served}")
            try:
                for raw in page["features"]:
                    out.write(plain_feature(raw, swap=north_first))
            except ValueError as exc:
                raise client.fail(url, f"not a GeoJSON FeatureCollection: {exc}") from None
            url = _next_link(page, url)
            if not page["features"]:
                break
    if matched is not None and out.count != matched:
        raise client.fail(base, f"paged {out.count:,} features but the server said numberMatched {matched:,}; "
                                f"the collection changed while paging or the server pages wrongly")
    notes.append(f"{out.count:,} features in {pages} page(s)")
    return finished(path, client=client, features=out.count, pages=pages, notes=notes)


def _is_storage(uri: str) -> bool:
    try:
        return uri_crs(uri).srid == HK_GRID
    except CrsError:
        return False


def _north_first(client: Client, url: str, served: str) -> bool:
    try:
        return uri_crs(served).north_first
    except CrsError:
        raise client.fail(url, f"answered in a CRS the loader cannot use ({served[:80]})") from None


def _page(client: Client, url: str, *, retry_without_limit: bool) -> tuple[dict[str, Any], str | None]:
    """One items page and its ``Content-Crs``; a ``400`` to the first page's default ``limit`` is retried without
    it (servers may refuse a ``limit`` over their maximum)."""
    try:
        body, response = client.get_bytes(url)
    except FetchError as exc:
        if retry_without_limit and ": HTTP 400" in str(exc):
            parts = urlsplit(url)
            query = "&".join(q for q in parts.query.split("&") if not q.startswith("limit="))
            return _page(client, urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")),
                         retry_without_limit=False)
        raise
    try:
        page = json.loads(body)
    except (ValueError, RecursionError):
        raise client.fail(url, "the items page is not JSON") from None
    if not isinstance(page, dict) or not isinstance(page.get("features"), list):
        raise client.fail(url, "the items page is not a GeoJSON FeatureCollection (no features list)")
    return page, _content_crs(response.headers.get("Content-Crs"))


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:100] or "collection"
