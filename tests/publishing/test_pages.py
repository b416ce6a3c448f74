"""pygeoapi's HTML pages: offline (every asset from the server itself), a map of the features, bilingual titles.

The session's live `sdi serve` (``live`` in tests/publishing/conftest.py) serves two sample layers. The
plain tests (requests only) run everywhere: titles in English and with ``?lang=zh-HK``, no script,
stylesheet, icon or image from another host, and the vendored assets served. The browser tests load the
collection, items and item pages in headless Chromium (``--dump-dom`` after the page's scripts have run)
with every host but 127.0.0.1 unresolvable and a network log, and check that Leaflet drew one SVG path per
feature returned and that the page requested nothing from another host. Without Chromium they are skipped,
or fail when ``CI=true`` (``scripts/setup.sh`` installs Debian's ``chromium`` as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import lxml.html
import pytest
import requests

from sdi.layerdef import read_definition
from sdi.web.settings import WebSettings
from tests.conftest import LAYERS

if TYPE_CHECKING:
    from tests.publishing.conftest import LiveServer

POLYGONS, POINTS = "districts_18", "public_libraries_2013"
LAYER_IDS = (POLYGONS, POINTS)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
BROWSER_TIMEOUT_S = 90
#: Flags that work in a container as root, with no first-run, sync, update or other background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio",
                  "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate"]


def _title(layer: str, lang: str) -> str:
    title = read_definition(LAYERS / f"{layer}.yml").title
    return str(title.zh if lang == "zh" else title.en)


@pytest.fixture(scope="module")
def server(live: LiveServer) -> str:
    """The session's live `sdi serve` (tests/publishing/conftest.py), which serves both layers."""
    missing = set(LAYER_IDS) - {c["id"] for c in geojson(f"{live.url}/collections")["collections"]}
    assert not missing, f"the live server does not publish {sorted(missing)}"
    return live.url


def html(url: str, **params: Any) -> str:
    response = requests.get(url, params={"f": "html", **params}, timeout=30)
    assert response.status_code == 200, f"{response.url}: {response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    return response.content.decode("utf-8")  # the page declares <meta charset="utf-8">, the header may not


def geojson(url: str, **params: Any) -> dict[str, Any]:
    response = requests.get(url, params={"f": "json", **params}, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def first_id(server: str, layer: str) -> str:
    return str(geojson(f"{server}/collections/{layer}/items", limit=1)["features"][0]["id"])


def page_urls(server: str) -> list[str]:
    """The landing, collections, collection, items and item pages (both layers)."""
    urls = [f"{server}/", f"{server}/collections"]
    for layer in LAYER_IDS:
        urls += [f"{server}/collections/{layer}", f"{server}/collections/{layer}/items",
                 f"{server}/collections/{layer}/items/{first_id(server, layer)}"]
    return urls


def loaded_urls(page: str, base: str) -> list[str]:
    """Absolute URLs of what a browser loads by itself: scripts, stylesheets, icons, images, frames, media."""
    doc = lxml.html.fromstring(page)
    doc.make_links_absolute(base)
    urls = [el.get("src") for el in doc.xpath("//script[@src] | //img[@src] | //iframe[@src] | //source[@src]"
                                               " | //video[@src] | //audio[@src] | //embed[@src]")]
    for link in doc.xpath("//link[@href]"):
        rels = set((link.get("rel") or "").lower().split())
        if rels & {"stylesheet", "icon", "shortcut", "preload", "modulepreload", "prefetch", "manifest",
                   "apple-touch-icon"}:
            urls.append(link.get("href"))
    return [u for u in urls if u]


def external(urls: list[str]) -> list[str]:
    return [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss", "")
            and (urlsplit(u).hostname or "127.0.0.1") not in LOOPBACK]


# --- without a browser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "params"), [("en", {}), ("zh", {"lang": "zh-HK"})])
def test_collection_and_items_pages_show_the_title_in_the_language_asked(server: str, lang: str,
                                                                         params: dict[str, str]) -> None:
    other = "zh" if lang == "en" else "en"
    for layer in LAYER_IDS:
        for path in (f"/collections/{layer}", f"/collections/{layer}/items"):
            doc = lxml.html.fromstring(html(f"{server}{path}", **params))
            heading = " ".join(doc.xpath("string(//h1)").split())
            assert heading == _title(layer, lang), (path, params, heading)
            assert _title(layer, other) not in heading
    listing = html(f"{server}/collections", **params)
    assert all(_title(layer, lang) in listing for layer in LAYER_IDS)


def test_pages_load_nothing_from_other_hosts(server: str) -> None:
    for url in page_urls(server):
        for lang in ({}, {"lang": "zh-HK"}):
            page = html(url, **lang)
            urls = loaded_urls(page, url)
            assert not external(urls), (url, lang, external(urls))
            assert "unpkg.com" not in page and "cdnjs" not in page and "jsdelivr" not in page, url
            assert "tile.openstreetmap.org" not in page, url


def test_pages_use_the_vendored_assets_and_the_server_serves_them(server: str) -> None:
    items = html(f"{server}/collections/{POLYGONS}/items")
    urls = set(loaded_urls(items, f"{server}/collections/{POLYGONS}/items"))
    needed = {f"{server}/static/vendor/leaflet/leaflet.js", f"{server}/static/vendor/leaflet/leaflet.css",
              f"{server}/static/vendor/bootstrap/css/bootstrap.min.css", f"{server}/static/js/sdi-map.js",
              f"{server}/static/css/default.css"}
    assert needed <= urls, needed - urls
    for url in sorted(needed | {f"{server}/static/img/logo.png", f"{server}/static/vendor/leaflet/images/layers.png",
                                f"{server}/static/vendor/leaflet/images/marker-icon.png"}):
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, url
        assert response.content, url
    assert "1.9.4" in requests.get(f"{server}/static/vendor/leaflet/leaflet.js", timeout=30).text


# --- in a headless browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    reason = ("headless Chromium is not installed (as root: apt-get install -y chromium; scripts/setup.sh does "
              "this); the browser tests of the HTML pages cannot run")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def browse(chromium: str, url: str, tmp_path: Path) -> tuple[lxml.html.HtmlElement, list[str]]:
    """Load ``url`` in headless Chromium; the DOM after its scripts ran, and every URL it requested.

    Every host but 127.0.0.1 is unresolvable (``--host-resolver-rules``), so a page that needs the internet
    fails visibly; ``--log-net-log`` records every request, to check that none was even attempted.
    ``--virtual-time-budget`` lets the page's timers and fetches finish before the DOM is dumped.
    """
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    netlog = tmp_path / f"netlog-{time.monotonic_ns()}.json"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}",
               "--net-log-capture-mode=Default", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--window-size=1280,1024", "--virtual-time-budget=15000", "--dump-dom", url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started (start_new_session=True)
        proc.communicate(timeout=10)
        pytest.fail(f"chromium did not finish loading {url} within {BROWSER_TIMEOUT_S} s")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # helper processes left behind, if any
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0 and "<html" in text, f"chromium failed on {url}: {err.decode()[-2000:]}"
    return lxml.html.fromstring(text), requested_urls(netlog)


def requested_urls(netlog: Path) -> list[str]:
    """Every http(s)/ws(s) URL the page requested, from a Chromium net log.

    The page's requests are ``URL_REQUEST_START_JOB`` events of the main frame or with the page's origin as
    initiator; Chromium's own background requests (update checks, network time, accounts: initiator
    "not an origin", blocked by ``--host-resolver-rules`` anyway) are not the page's and are left out.
    """
    try:
        log = json.loads(netlog.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        pytest.fail(f"cannot read Chromium's net log {netlog}: {exc}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or not isinstance(params.get("url"), str):
            continue
        if params.get("request_type") == "main frame" or params.get("initiator", "not an origin") != "not an origin":
            urls.add(params["url"])
    return sorted(u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss"))


def map_features(doc: lxml.html.HtmlElement, map_id: str) -> list[lxml.html.HtmlElement]:
    maps = doc.xpath(f"//div[@id='{map_id}']")
    assert maps, f"no #{map_id} in the page"
    container = maps[0]
    assert "leaflet-container" in (container.get("class") or ""), "Leaflet did not set up the map"
    assert not container.get("data-sdi-error"), container.get("data-sdi-error")
    return [p for p in container.iter() if isinstance(p.tag, str) and p.tag.endswith("path")
            and "leaflet-interactive" in (p.get("class") or "").split()]


@pytest.mark.parametrize("layer", LAYER_IDS)
def test_items_page_draws_every_feature_returned_offline(server: str, chromium: str, layer: str,
                                                         tmp_path: Path) -> None:
    url = f"{server}/collections/{layer}/items?f=html&limit=50"
    returned = geojson(f"{server}/collections/{layer}/items", limit=50)["numberReturned"]
    assert returned > 0
    doc, requested = browse(chromium, url, tmp_path)
    paths = map_features(doc, "items-map")
    assert len(paths) == returned, (len(paths), returned)
    container = doc.xpath("//div[@id='items-map']")[0]
    assert container.get("data-sdi-rendered") == str(returned)
    assert container.get("data-sdi-number-returned") == str(returned)
    assert all(p.get("d") and p.get("d") != "M0 0" for p in paths), "features drawn without coordinates"
    assert " ".join(doc.xpath("string(//h1)").split()) == _title(layer, "en")
    assert any(u.startswith(f"{server}/static/vendor/leaflet/leaflet.js") for u in requested), requested
    assert not external(requested), external(requested)


@pytest.mark.parametrize("layer", LAYER_IDS)
def test_collection_page_map_shows_features_and_chinese_title(server: str, chromium: str, layer: str,
                                                                tmp_path: Path) -> None:
    default_limit = WebSettings.model_fields["default_items"].default  # SDI_DEFAULT_ITEMS
    returned = geojson(f"{server}/collections/{layer}/items", limit=default_limit)["numberReturned"]
    doc, requested = browse(chromium, f"{server}/collections/{layer}?f=html&lang=zh-HK", tmp_path)
    paths = map_features(doc, "collection-map")
    assert len(paths) == returned, (len(paths), returned)
    assert doc.xpath("//div[@id='collection-map']")[0].get("data-sdi-rendered") == str(returned)
    assert " ".join(doc.xpath("string(//h1)").split()) == _title(layer, "zh")
    assert not external(requested), external(requested)


def test_item_page_draws_the_feature_offline(server: str, chromium: str, tmp_path: Path) -> None:
    fid = first_id(server, POLYGONS)
    doc, requested = browse(chromium, f"{server}/collections/{POLYGONS}/items/{fid}?f=html&lang=zh-HK", tmp_path)
    assert len(map_features(doc, "items-map")) == 1
    assert not external(requested), external(requested)
