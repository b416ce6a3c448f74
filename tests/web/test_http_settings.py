"""The web settings that change what `sdi serve` answers, each served for real: a public URL (``SDI_PUBLIC_URL``)
wins over ``Host`` and the proxy headers in every link; CORS allows only the configured origins
(``SDI_CORS_ORIGINS``) or is off (``[]``); the page size defaults to ``SDI_DEFAULT_ITEMS`` and a larger ``limit``
is clamped to ``SDI_MAX_ITEMS`` (README, "Page sizes"). `tests/web/test_http.py` covers the defaults."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sdi.settings import Settings
from tests.conftest import loaded_database
from tests.live_server import sdi_server

pytestmark = pytest.mark.db
PUBLIC = "https://maps.example.gov.hk/sdi"  #: SDI_PUBLIC_URL of the configured server (given with a trailing /)
ALLOWED = "https://apps.example.org"  #: the one origin CORS allows there
DEFAULT_ITEMS, MAX_ITEMS = 5, 7  #: both below the 18 districts
FEATURES = 18
#: What a client (or a proxy in front of it) claims; the configured public URL must win over all of it.
CLAIMED = {"Host": "localhost:8123", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "proxy.example.net",
           "X-Forwarded-Prefix": "/behind"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with loaded_database(("districts_18",), data_dir=tmp_path_factory.mktemp("settings_store")) as settings:
        yield settings


@pytest.fixture(scope="module")
def configured(store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` (1 worker) with a public URL, one CORS origin and small page sizes."""
    env = {"SDI_PUBLIC_URL": PUBLIC + "/", "SDI_CORS_ORIGINS": f'["{ALLOWED}"]',
           "SDI_DEFAULT_ITEMS": str(DEFAULT_ITEMS), "SDI_MAX_ITEMS": str(MAX_ITEMS)}
    with sdi_server(store, tmp_path_factory.mktemp("configured"), workers=1, extra_env=env) as url:
        yield url


@pytest.fixture(scope="module")
def no_cors(store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` (1 worker) with CORS turned off."""
    with sdi_server(store, tmp_path_factory.mktemp("no_cors"), workers=1, extra_env={"SDI_CORS_ORIGINS": "[]"}) as url:
        yield url


def get(url: str, **kwargs: Any) -> requests.Response:
    answer = requests.get(url, timeout=30, **kwargs)
    assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text[:300]}"
    return answer


def _hrefs(doc: Any) -> list[str]:
    """Every ``href`` in a JSON document."""
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == "href" and isinstance(v, str)] + \
            [h for v in doc.values() for h in _hrefs(v)]
    if isinstance(doc, list):
        return [h for v in doc for h in _hrefs(v)]
    return []


# --- a public URL -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/collections", "/collections/districts_18",
                                  "/collections/districts_18/items?limit=2", "/collections/districts_18/items/1",
                                  "/collections/districts_18/tiles"])
def test_a_public_url_wins_over_host_and_proxy_headers_in_json_links(configured: str, path: str) -> None:
    doc = get(f"{configured}{path}" + ("&" if "?" in path else "?") + "f=json", headers=CLAIMED).json()
    own = [h for h in _hrefs(doc) if "opengis.net" not in h and "github.com" not in h]  # not the API's links
    assert own and all(h.rstrip("/") == PUBLIC or h.startswith((PUBLIC + "/", PUBLIC + "?")) for h in own), own
    assert not [h for h in _hrefs(doc) if "localhost" in h or "proxy.example" in h or "/behind" in h]


def test_a_public_url_wins_in_html_openapi_and_queryables(configured: str) -> None:
    page = get(f"{configured}/collections/districts_18?f=html", headers=CLAIMED).text
    assert f'href="{PUBLIC}/static/' in page and f'"{PUBLIC}/collections/districts_18/items"' in page
    openapi = get(f"{configured}/openapi?f=json", headers=CLAIMED)
    assert openapi.json()["servers"][0]["url"] == PUBLIC
    queryables = get(f"{configured}/collections/districts_18/queryables?f=json", headers=CLAIMED).json()
    assert queryables["$id"] == f"{PUBLIC}/collections/districts_18/queryables"
    for text in (page, openapi.text):
        assert "localhost:8123" not in text and "proxy.example.net" not in text


# --- CORS -------------------------------------------------------------------------------------------------------


def test_cors_answers_only_the_configured_origin(configured: str) -> None:
    items = f"{configured}/collections/districts_18/items"
    allowed = get(f"{items}?f=json&limit=1", headers={"Origin": ALLOWED})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED  # echoed, not "*"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    other = get(f"{items}?f=json&limit=1", headers={"Origin": "https://elsewhere.example.org"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = {"Access-Control-Request-Method": "GET"}
    ok = requests.options(items, headers={"Origin": ALLOWED, **preflight}, timeout=30)
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == ALLOWED
    refused = requests.options(items, headers={"Origin": "https://elsewhere.example.org", **preflight}, timeout=30)
    assert refused.status_code == 400 and "Access-Control-Allow-Origin" not in refused.headers


def test_cors_off(no_cors: str) -> None:
    items = f"{no_cors}/collections/districts_18/items"
    answer = get(f"{items}?f=json&limit=1", headers={"Origin": ALLOWED})
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    preflight = requests.options(items, headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
                                 timeout=30)
    assert preflight.status_code == 405
    assert "GET" in preflight.headers["Allow"]  # RFC 9110: a 405 names the methods the resource has
    assert preflight.json()["code"] == "MethodNotAllowed"
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


# --- page sizes -------------------------------------------------------------------------------------------------


def _page(url: str) -> tuple[list[Any], dict[str, Any], str | None]:
    """A page's feature ids, its counts and its next link."""
    doc = get(url).json()
    nexts = [link["href"] for link in doc["links"] if link["rel"] == "next"]
    assert len(nexts) <= 1
    return ([f["id"] for f in doc["features"]],
            {k: doc[k] for k in ("numberReturned", "numberMatched")}, nexts[0] if nexts else None)


def _local(href: str, base: str) -> str:
    """A link of the configured server (written under its public URL) as this test reaches the server."""
    assert href.startswith(PUBLIC + "/"), href
    return base + href.removeprefix(PUBLIC)


def test_the_default_page_size_and_next_links_walk_the_layer(configured: str) -> None:
    url: str | None = f"{PUBLIC}/collections/districts_18/items?f=json"
    ids: list[Any] = []
    pages = 0
    while url is not None:
        page, counts, url = _page(_local(url, configured))
        pages += 1
        assert counts == {"numberReturned": len(page), "numberMatched": FEATURES}
        assert len(page) == (DEFAULT_ITEMS if url is not None else FEATURES - DEFAULT_ITEMS * (pages - 1))
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert query["limit"] == [str(DEFAULT_ITEMS)] and query["offset"] == [str(DEFAULT_ITEMS * pages)]
        ids += page
    assert pages == math.ceil(FEATURES / DEFAULT_ITEMS) and len(set(ids)) == FEATURES


@pytest.mark.parametrize("limit", [MAX_ITEMS + 1, 100, 10_000])
def test_a_limit_above_the_maximum_is_clamped(configured: str, limit: int) -> None:
    items = f"{configured}/collections/districts_18/items?f=json"
    page, counts, following = _page(f"{items}&limit={limit}")
    assert counts == {"numberReturned": MAX_ITEMS, "numberMatched": FEATURES}
    assert page == _page(f"{items}&limit={MAX_ITEMS}")[0]
    assert following is not None and parse_qs(urlsplit(following).query)["limit"] == [str(MAX_ITEMS)]
    assert parse_qs(urlsplit(following).query)["offset"] == [str(MAX_ITEMS)]


def test_openapi_documents_the_configured_page_sizes(configured: str) -> None:
    openapi = get(f"{configured}/openapi?f=json").json()
    parameters = openapi["paths"]["/collections/districts_18/items"]["get"]["parameters"]
    limit = next(p for p in parameters if p.get("name") == "limit")["schema"]
    assert limit["default"] == DEFAULT_ITEMS and limit["maximum"] == MAX_ITEMS
