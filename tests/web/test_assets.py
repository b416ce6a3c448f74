"""Vendored web assets and the pages that use them: Swagger UI, ReDoc and the vector-tile preview, offline.

The three templates (sdi/web/templates/openapi/swagger.html, openapi/redoc.html, collections/tiles/index.html)
are rendered with pygeoapi's own renderer by a throwaway Starlette app in a thread (not the project's server),
which also serves sdi/web/static at /static, a small OpenAPI document at /openapi, and Mapbox vector tiles of
a few features around Central in both tile matrix sets, made by PostGIS (ST_AsMVT) in a throwaway database:
WebMercatorQuad from ST_TileEnvelope and HK80Grid from the Lands Department grid's formula (origin E -4786700,
N 8353100, 156543.0339 m / 2^z per pixel, 256-pixel tiles, in EPSG:2326).

- Without a browser: each vendored library has its licence and version note, every script, stylesheet and icon
  of the rendered pages is a file of sdi/web/static served by the page's own server, and the server's values
  reach the scripts only through data-* attributes escaped by Jinja (inline scripts are static).
- In headless Chromium (every host but 127.0.0.1 unresolvable, a net log of every request; as in
  tests/publishing/test_pages.py): Swagger UI and ReDoc draw the operations of the document (``--dump-dom``
  after the scripts ran); the tiles page loads its tiles without error in both grids, draws every feature, and
  draws the Lands Department reference point (E 835411.431 N 817266.016 = 22.294313001 N 114.168562005 E) at
  the pixel that the grid's formula predicts: ``window.sdiTiles.pixelOf`` and a screenshot of the map agree.
  OpenLayers draws on animation frames, which ``--virtual-time-budget`` hardly advances, so the tiles page is
  driven in real time through the DevTools protocol over a pipe (``--remote-debugging-pipe``, no WebSocket).

Without Chromium the browser tests are skipped, or fail when ``CI=true`` (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import mapbox_vector_tile
import numpy as np
import psycopg
import pytest
import requests
import uvicorn
from PIL import Image
from pygeoapi import l10n
from pygeoapi.util import render_j2_template
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.conftest import fresh_database

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "sdi" / "web" / "templates"
STATIC = ROOT / "sdi" / "web" / "static"
#: Vendored library folder → its version, as written in VERSION and inside the main file.
VENDORED = {"swagger-ui": "5.36.0", "redoc": "2.5.4", "openlayers": "10.11.0"}
VERSION_MARKS = {"swagger-ui": ("swagger-ui-bundle.js", 'PACKAGE_VERSION:"5.36.0"'),
                 "redoc": ("redoc.standalone.js", 'ReDoc Version: ","2.5.4"'),
                 "openlayers": ("ol.js", 'VERSION="10.11.0"')}
#: The files of sdi/web/static that each page must load.
PAGE_ASSETS = {
    "openapi/swagger.html": {"vendor/swagger-ui/swagger-ui.css", "vendor/swagger-ui/swagger-ui-bundle.js",
                             "vendor/swagger-ui/swagger-ui-standalone-preset.js",
                             "vendor/swagger-ui/favicon-32x32.png", "vendor/swagger-ui/favicon-16x16.png"},
    "openapi/redoc.html": {"vendor/redoc/redoc.standalone.js"},
    "collections/tiles/index.html": {"vendor/openlayers/ol.css", "vendor/openlayers/ol.js", "js/sdi-tiles.js",
                                     "vendor/bootstrap/css/bootstrap.min.css", "css/default.css"},
}
CDN_NAMES = ("unpkg", "jsdelivr", "cdnjs", "googleapis", "gstatic", "cdn.redoc.ly", "openstreetmap")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
COLLECTION = "sdi_test_features"
TITLE = "HK SDI test API"
BROWSER_TIMEOUT_S = 90
WINDOW = (1280, 2000)  # tall enough for the whole tiles page, so that the sticky footer does not cover the map
#: Flags that work in a container as root, with no first-run, sync, update or other background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio",
                  "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate"]


# --- the two tile matrix sets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A tile matrix set of 256-pixel tiles, 2^z x 2^z at zoom z, from a top-left origin."""

    origin: tuple[float, float]  # (x, y) = (easting, northing) in the grid's CRS, metres
    resolution0: float  # metres per pixel at zoom 0

    def resolution(self, z: float) -> float:
        return self.resolution0 / 2**z

    def pixel(self, x: float, y: float, z: float) -> tuple[float, float]:
        """The pixel of (x, y) at zoom z, counted from the grid's top-left corner (column, row order)."""
        return (x - self.origin[0]) / self.resolution(z), (self.origin[1] - y) / self.resolution(z)

    def tile(self, x: float, y: float, z: int) -> tuple[int, int]:
        """(tileCol, tileRow) of the tile holding (x, y)."""
        px, py = self.pixel(x, y, z)
        return math.floor(px / 256), math.floor(py / 256)

    def envelope(self, z: int, col: int, row: int) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a tile: easting x0 + c*s ... + s, northing y0 - r*s ... - s."""
        size = 256 * self.resolution(z)
        xmin, ymax = self.origin[0] + col * size, self.origin[1] - row * size
        return xmin, ymax - size, xmin + size, ymax


EARTH_RADIUS = 6378137.0
HALF_WORLD = math.pi * EARTH_RADIUS
GRIDS = {"WebMercatorQuad": Grid((-HALF_WORLD, HALF_WORLD), 2 * HALF_WORLD / 256),
         "HK80Grid": Grid((-4786700.0, 8353100.0), 156543.0339)}


def web_mercator(lon: float, lat: float) -> tuple[float, float]:
    return EARTH_RADIUS * math.radians(lon), EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


#: The Lands Department's reference point, in each grid's CRS (HK80 easting/northing; EPSG:3857 from its WGS 84).
REFERENCE_HK80 = (835411.431, 817266.016)
REFERENCE = {"HK80Grid": REFERENCE_HK80, "WebMercatorQuad": web_mercator(114.168562005, 22.294313001)}

# --- sample data: three tables, three MVT layers, seven features around Central (EPSG:2326) ---------------


def _box(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


#: MVT layer name → {feature id: (name, WKT in EPSG:2326)}. Points are 700+ m apart, polygon edges 800+ m away
#: from the reference point, so that at the zoom of the page each point is drawn alone.
SAMPLE = {
    "points": {1: ("reference", "POINT({} {})".format(*REFERENCE_HK80)), 2: ("north-east", "POINT(835900 817900)"),
               3: ("south-west", "POINT(834800 816900)"), 4: ("south-east", "POINT(836300 816600)")},
    "lines": {21: ("a line", "LINESTRING(834500 817800, 835300 818300)")},
    "areas": {31: ("area north-east", _box(836000, 817900, 836600, 818400)),
              32: ("area south-west", _box(834000, 815800, 834600, 816300))},
}
N_FEATURES = sum(len(features) for features in SAMPLE.values())


def load_sample(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for layer, features in SAMPLE.items():
            conn.execute(f"create table web_{layer} (id integer primary key, name text, geom geometry(Geometry, 2326))")
            for fid, (name, wkt) in features.items():
                conn.execute(f"insert into web_{layer} values (%s, %s, ST_GeomFromText(%s, 2326))", (fid, name, wkt))


def sample_extent(database_url: str) -> tuple[list[float], list[float]]:
    """([minlon, minlat, maxlon, maxlat], [easting, northing] of the centre) of the sample, from PostGIS."""
    union = " union all ".join(f"select geom from web_{layer}" for layer in SAMPLE)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"""with e as (select ST_Extent(geom) as hk80, ST_Extent(ST_Transform(geom, 4326)) as crs84
                                          from ({union}) g)
                               select ST_XMin(crs84), ST_YMin(crs84), ST_XMax(crs84), ST_YMax(crs84),
                                      (ST_XMin(hk80) + ST_XMax(hk80)) / 2, (ST_YMin(hk80) + ST_YMax(hk80)) / 2
                               from e""").fetchone()
    assert row is not None
    return [float(v) for v in row[:4]], [float(v) for v in row[4:]]


def make_tile(database_url: str, tms: str, z: int, row: int, col: int) -> bytes:
    """The MVT of tile (z, row, col): one layer per sample table, features with ids; b'' when empty."""
    if tms == "HK80Grid":
        envelope, geom = "ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 2326)", "geom"
        params: dict[str, Any] = dict(zip(("x0", "y0", "x1", "y1"), GRIDS[tms].envelope(z, col, row), strict=True))
    else:
        envelope, geom = "ST_TileEnvelope(%(z)s, %(x)s, %(y)s)", "ST_Transform(geom, 3857)"
        params = {"z": z, "x": col, "y": row}
    params["margin"] = 256 * GRIDS[tms].resolution(z) * 64 / 4096  # the 64-unit buffer of ST_AsMVTGeom
    layers = [f"""(select coalesce(ST_AsMVT(q, '{layer}', 4096, 'geom', 'id'), ''::bytea) from (
                     select * from (select id, name, ST_AsMVTGeom({geom}, e.env, 4096, 64, true) as geom
                                    from web_{layer}, e where {geom} && ST_Expand(e.env, %(margin)s)) f
                     where geom is not null) q)""" for layer in SAMPLE]
    with psycopg.connect(database_url) as conn:
        row_ = conn.execute(f"with e as (select {envelope} as env) select {' || '.join(layers)}", params).fetchone()
    assert row_ is not None
    return bytes(row_[0])


# --- rendering the templates with pygeoapi's renderer ----------------------------------------------------------


def render(template: str, data: dict[str, Any], base: str, **server: Any) -> str:
    """A page rendered as pygeoapi renders it, with sdi/web/templates before pygeoapi's own templates."""
    templates = {"path": str(TEMPLATES), "static": str(STATIC)}
    config = {
        "server": {"url": base, "encoding": "utf-8", "language": "en-US", "templates": templates,
                   "map": {"url": "", "attribution": ""}, "limits": {"default_items": 10}, **server},
        "metadata": {"identification": {"title": "HK SDI", "description": "Hong Kong SDI test", "keywords": ["hk"]},
                     "contact": {"email": "sdi@example.org"}},
    }
    cache = getattr(l10n, "_cfg_cache", {})  # pygeoapi keeps the first translated config of each locale
    cache.clear()
    try:
        return render_j2_template(config, templates, template, data, "en")
    finally:
        cache.clear()


def openapi_data(base: str) -> dict[str, Any]:
    return {"openapi-document-path": f"{base}/openapi"}


def tiles_data(base: str, bounds: list[float] | None = None, centre: list[float] | None = None,
               **overrides: Any) -> dict[str, Any]:
    """The context of collections/tiles/index.html, as the project's route gives it."""
    dataset = f"{base}/collections/{COLLECTION}"
    tilesets = [{"id": tms, "title": title, "tiles": f"{dataset}/tiles/{tms}/{{z}}/{{y}}/{{x}}?f=mvt",
                 "tilejson": f"{dataset}/tiles/{tms}?f=tilejson", "metadata": f"{dataset}/tiles/{tms}/metadata",
                 "tms": f"{base}/TileMatrixSets/{tms}"}
                for tms, title in (("WebMercatorQuad", "Web Mercator"), ("HK80Grid", "Hong Kong 1980 Grid"))]
    return {"id": COLLECTION, "title": "Test features", "description": "Points, a line and polygons in Central",
            "keywords": ["test", "Central"], "collections_path": f"{base}/collections", "dataset_path": dataset,
            "minzoom": 0, "maxzoom": 18, "bounds": bounds, "center_hk80": centre, "tilesets": tilesets,
            **overrides}


def parse(page: str, base: str) -> lxml.html.HtmlElement:
    doc = lxml.html.fromstring(page)
    doc.make_links_absolute(base)
    return doc


def loaded_urls(doc: lxml.html.HtmlElement) -> list[str]:
    """Absolute URLs of what a browser loads by itself: scripts, stylesheets, icons, images, frames, media."""
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


def inline_scripts(doc: lxml.html.HtmlElement) -> list[str]:
    return [script.text_content() for script in doc.xpath("//script[not(@src)]")]


# --- without a browser ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", sorted(VENDORED))
def test_vendored_library_has_licence_version_note_and_no_source_maps(folder: str) -> None:
    path = STATIC / "vendor" / folder
    assert (path / "LICENSE").stat().st_size > 500, f"{folder}: no LICENSE"
    assert VENDORED[folder] in (path / "VERSION").read_text(encoding="utf-8"), f"{folder}: VERSION"
    main, mark = VERSION_MARKS[folder]
    assert mark in (path / main).read_text(encoding="utf-8"), f"{folder}/{main} is not version {VENDORED[folder]}"
    assert not list(path.rglob("*.map")), "source maps are not shipped"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 3_000_000, f"{folder} is {size} bytes"


@pytest.mark.parametrize("template", sorted(PAGE_ASSETS))
def test_pages_load_only_vendored_files_of_their_own_server(template: str) -> None:
    base = "http://127.0.0.1:8123/sdi"  # a base URL with a path, as behind a proxy
    data = openapi_data(base) if template.startswith("openapi/") else tiles_data(base, [114.1, 22.2, 114.2, 22.3])
    page = render(template, data, base)
    urls = loaded_urls(parse(page, base))
    assert not external(urls), external(urls)
    assert not [name for name in CDN_NAMES if name in page]
    static = set()
    for url in urls:
        assert url.startswith(f"{base}/static/"), url
        path = urlsplit(url).path.removeprefix(urlsplit(base).path + "/static/")
        assert (STATIC / path).is_file(), f"{template} loads {url}, which is not a file of sdi/web/static"
        static.add(path)
    assert PAGE_ASSETS[template] <= static, PAGE_ASSETS[template] - static


HOSTILE = "</script><script>alert('x')</script>\"'&<b>"


def test_openapi_pages_pass_the_document_url_in_an_escaped_attribute() -> None:
    for template, element in (("openapi/swagger.html", "swagger-ui"), ("openapi/redoc.html", "redoc")):
        plain = parse(render(template, openapi_data("http://127.0.0.1:1"), "http://127.0.0.1:1"), "http://x")
        hostile_data = {"openapi-document-path": f"http://127.0.0.1:1/{HOSTILE}"}
        doc = parse(render(template, hostile_data, "http://127.0.0.1:1"), "http://x")
        assert doc.get_element_by_id(element).get("data-spec-url") == f"http://127.0.0.1:1/{HOSTILE}?f=json"
        assert inline_scripts(doc) == inline_scripts(plain), f"{template}: server values inside a script"
        assert not doc.xpath("//b"), "markup from the document path reached the page"
        # Swagger UI hides its validator badge (an image from validator.swagger.io) for loopback servers only,
        # so the browser test cannot see it: the option must be in the page
        assert template != "openapi/swagger.html" or "validatorUrl: null" in " ".join(inline_scripts(plain))


def test_tiles_page_passes_values_in_escaped_attributes_and_has_no_inline_script() -> None:
    base = "http://127.0.0.1:1"
    hk80 = {"url": f"{base}/hk80/{{z}}/{{x}}/{{y}}.png", "attribution": f"&copy; Lands Department {HOSTILE}"}
    wm = {"url": f"{base}/wm/{{z}}/{{x}}/{{y}}.png", "attribution": "&copy; <a href='https://x.example'>OSM</a>"}
    data = tiles_data(base, [114.1, 22.2, 114.2, 22.3], [835000.5, 817000.25], title=HOSTILE, description=HOSTILE,
                      keywords=[HOSTILE])
    data["tilesets"][1]["tiles"] += f"&x={HOSTILE}"
    doc = parse(render("collections/tiles/index.html", data, base, map=wm, map_hk80=hk80), base)
    plain = parse(render("collections/tiles/index.html", tiles_data(base), base), base)
    assert inline_scripts(doc) == inline_scripts(plain), "server values inside a script"
    assert len(inline_scripts(doc)) == 1, "only _base.html's static JSON-LD loader"  # nothing from this template
    assert not doc.xpath("//b"), "markup from the data reached the page"
    box = doc.get_element_by_id("tiles-map")
    assert box.get("data-bounds") == "114.1,22.2,114.2,22.3"
    assert box.get("data-center-hk80") == "835000.5,817000.25"
    assert (box.get("data-minzoom"), box.get("data-maxzoom")) == ("0", "18")
    assert (box.get("data-hk80-map-url"), box.get("data-hk80-map-attribution")) == (hk80["url"], hk80["attribution"])
    assert (box.get("data-base-map-url"), box.get("data-base-map-attribution")) == (wm["url"], wm["attribution"])
    assert box.get("data-no-base-map") == "No base map (offline)"
    options = doc.xpath("//select[@id='tilingScheme']/option")
    assert [o.get("value") for o in options] == ["WebMercatorQuad", "HK80Grid"]
    assert options[1].get("data-tiles") == data["tilesets"][1]["tiles"]
    assert doc.get_element_by_id("metadata_link").get("href") == data["tilesets"][0]["metadata"]
    assert HOSTILE in doc.xpath("string(//h1)")
    # without bounds, centre or base maps the attributes are empty, not "None"
    box = plain.get_element_by_id("tiles-map")
    assert [box.get(f"data-{n}") for n in ("bounds", "center-hk80", "base-map-url", "hk80-map-url")] == [""] * 4


# --- the throwaway server ------------------------------------------------------------------------------------------

OPENAPI = {
    "openapi": "3.0.2",
    "info": {"title": TITLE, "version": "1.0.0", "description": "A small document for the page tests."},
    "paths": {
        "/collections": {"get": {
            "summary": "List the collections", "operationId": "getCollections", "tags": ["Collections"],
            "responses": {"200": {"description": "The collections",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": {"get": {
            "summary": "Fetch a vector tile", "operationId": "getTile", "tags": ["Tiles"],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": t}}
                           for n, t in (("collectionId", "string"), ("tileMatrixSetId", "string"),
                                        ("tileMatrix", "integer"), ("tileRow", "integer"), ("tileCol", "integer"))],
            "responses": {"200": {"description": "A Mapbox vector tile",
                                  "content": {"application/vnd.mapbox-vector-tile": {}}},
                          "204": {"description": "No feature in the tile"}}}},
    },
}
OPERATIONS = ("List the collections", "Fetch a vector tile")

@dataclass(frozen=True)
class TileRequest:
    tms: str
    z: int
    row: int
    col: int
    status: int


class Site:
    """The throwaway server's app and what it was asked: [(path?query, status)]."""

    def __init__(self, url: str, database_url: str | None) -> None:
        self.url, self.database_url = url, database_url
        self.log: list[tuple[str, int]] = []
        self.bounds: list[float] | None = None
        self.centre: list[float] | None = None
        if database_url:
            self.bounds, self.centre = sample_extent(database_url)

    def tile_requests(self) -> list[TileRequest]:
        prefix = f"/collections/{COLLECTION}/tiles/"
        found = []
        for target, status in list(self.log):
            path = urlsplit(target).path
            if path.startswith(prefix) and path.count("/") == prefix.count("/") + 3:
                tms, z, row, col = path.removeprefix(prefix).split("/")
                found.append(TileRequest(tms, int(z), int(row), int(col), status))
        return found

    def app(self) -> Callable[..., Any]:
        def openapi(request: Request) -> Response:
            if request.query_params.get("f") == "html":
                template = "openapi/redoc.html" if request.query_params.get("ui") == "redoc" else "openapi/swagger.html"
                return HTMLResponse(render(template, openapi_data(self.url), self.url))
            return JSONResponse({**OPENAPI, "servers": [{"url": self.url}]},
                                media_type="application/vnd.oai.openapi+json;version=3.0")

        def tiles_page(request: Request) -> Response:
            if request.path_params["cid"] != COLLECTION or request.query_params.get("f") != "html":
                return JSONResponse({"code": "NotFound"}, status_code=404)
            return HTMLResponse(render("collections/tiles/index.html", tiles_data(self.url, self.bounds, self.centre),
                                       self.url))

        def tile(request: Request) -> Response:
            tms, z, row, col = (request.path_params[k] for k in ("tms", "z", "row", "col"))
            if (tms not in GRIDS or request.path_params["cid"] != COLLECTION or self.database_url is None
                    or not 0 <= z <= 20 or not (0 <= row < 2**z and 0 <= col < 2**z)):
                return JSONResponse({"code": "NotFound"}, status_code=404)
            content = make_tile(self.database_url, tms, z, row, col)
            return Response(content, media_type="application/vnd.mapbox-vector-tile",
                            status_code=200 if content else 204)

        app = Starlette(routes=[
            Route("/openapi", openapi),
            Route("/collections/{cid}/tiles", tiles_page),
            Route("/collections/{cid}/tiles/{tms}/{z:int}/{row:int}/{col:int}", tile),
            Mount("/static", StaticFiles(directory=STATIC)),
        ])

        async def logged(scope: dict[str, Any], receive: Any, send: Any) -> None:
            status: list[int] = []

            async def send_and_note(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            await app(scope, receive, send_and_note)
            if scope["type"] == "http":
                query = scope.get("query_string", b"").decode()
                self.log.append((scope["path"] + (f"?{query}" if query else ""), status[0] if status else 0))

        return logged


@contextlib.contextmanager
def serving(database_url: str | None) -> Iterator[Site]:
    """The throwaway app under uvicorn in a thread, on a free loopback port; stopped afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = Site(f"http://127.0.0.1:{sock.getsockname()[1]}", database_url)
    server = uvicorn.Server(uvicorn.Config(site.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
        yield site
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def openapi_site() -> Iterator[Site]:
    with serving(None) as site:
        yield site


@pytest.fixture(scope="module")
def tile_site() -> Iterator[Site]:
    with fresh_database() as database_url:
        load_sample(database_url)
        with serving(database_url) as site:
            yield site


# --- in a headless browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    reason = ("headless Chromium is not installed (as root: apt-get install -y chromium; scripts/setup.sh does "
              "this); the browser tests of the Swagger UI, ReDoc and tiles pages cannot run")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def browse(chromium: str, url: str, tmp_path: Path) -> tuple[lxml.html.HtmlElement, list[str]]:
    """Load ``url`` in headless Chromium; the DOM after its scripts ran, and every URL it requested.

    Every host but 127.0.0.1 is unresolvable (``--host-resolver-rules``) and ``--log-net-log`` records every
    request, so that a request to another host shows even though it cannot succeed.
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
    """Every http(s)/ws(s) URL the page requested (``URL_REQUEST_START_JOB`` events of the page, not Chromium's)."""
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


class DevTools:
    """Headless Chromium driven through the DevTools protocol over a pipe, in real time.

    With ``--remote-debugging-pipe`` the browser reads NUL-terminated JSON commands on its fd 3 and writes
    answers and events on its fd 4 (set up by ``bash``: ``sh`` takes one-digit fd numbers only). The net log is
    complete once the browser has closed: :meth:`close` gives the URLs the pages requested.
    """

    def __init__(self, chromium: str, tmp_path: Path) -> None:
        stamp = time.monotonic_ns()
        self.netlog = tmp_path / f"netlog-{stamp}.json"
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile-{stamp}'}",
                   f"--log-net-log={self.netlog}", "--net-log-capture-mode=Default",
                   "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                   "--force-device-scale-factor=1", "--remote-debugging-pipe", "about:blank"]
        browser_in, self._to_browser = os.pipe()
        self._from_browser, browser_out = os.pipe()
        with (tmp_path / f"chromium-{stamp}.log").open("wb") as log:
            shell = f'exec "$@" 3<&{browser_in} 4>&{browser_out}'  # the pipes' ends as the browser's fds 3 and 4
            self.proc = subprocess.Popen(["bash", "-c", shell, "bash", *command], pass_fds=(browser_in, browser_out),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        os.close(browser_in)
        os.close(browser_out)
        self._buffer = b""
        self._last_id = 0
        self.exceptions: list[str] = []  # uncaught JavaScript errors of the pages

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    pytest.fail(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    pytest.fail(f"chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("method") == "Runtime.exceptionThrown":
                details = answer["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
            if answer.get("id") == self._last_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return dict(answer.get("result", {}))

    def open(self, url: str) -> str:
        """A new tab loading ``url``; its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = str(self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])
        self.call("Runtime.enable", session=session)
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 45) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(session, expression)):
            if time.monotonic() > deadline:
                pytest.fail(f"still false after {timeout} s: {expression} (page errors: {self.exceptions})")
            time.sleep(0.2)
        return value

    def screenshot(self, session: str, x: float, y: float, width: float, height: float) -> Image.Image:
        """The page's pixels in a rectangle of CSS pixels, inside the window (capturing beyond it would resize
        the page, and OpenLayers would draw again)."""
        assert y + height <= WINDOW[1] and x + width <= WINDOW[0], "the map is not inside the window"
        clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        shot = self.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": False},
                         session=session)
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")

    def close(self) -> list[str]:
        """Close the browser (bounded waits); every URL the pages requested."""
        with contextlib.suppress(OSError):  # no answer awaited: the browser closes the pipe as it exits
            os.write(self._to_browser, b'{"id": 0, "method": "Browser.close"}\0')
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started (start_new_session=True)
        self.proc.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        return requested_urls(self.netlog)


#: What the tiles page shows once drawn: the map's data-sdi-* attributes, its view, window.sdiTiles.pixelOf of
#: the reference point, the names of the features drawn at that pixel (the vector tile layer's hit detection on
#: its drawn pixels), the map's place in the page.
MAP_STATE_JS = """(async () => {
  const box = document.getElementById('tiles-map'), map = window.sdiTiles.map, view = map.getView();
  const attributes = {};
  for (const attribute of box.attributes) { attributes[attribute.name] = attribute.value; }
  const reference = __REFERENCE__[box.getAttribute('data-sdi-tms')];
  const pixel = window.sdiTiles.pixelOf(reference[0], reference[1]);
  const layer = map.getAllLayers().filter((candidate) => candidate instanceof ol.layer.VectorTile)[0];
  const names = (await layer.getFeatures(pixel)).map((feature) => feature.get('name'));
  const rect = map.getViewport().getBoundingClientRect();
  const attribution = box.querySelector('.ol-attribution');
  return {attributes, center: view.getCenter(), resolution: view.getResolution(), zoom: view.getZoom(),
          size: map.getSize(), pixel, names, attribution: attribution ? attribution.textContent : '',
          rect: [rect.left + window.scrollX, rect.top + window.scrollY, rect.width, rect.height]};
})()""".replace("__REFERENCE__", json.dumps(REFERENCE))

POINT_RGB = (0xC0, 0x39, 0x2B)  # the fill of points in static/js/sdi-tiles.js, opaque


def drawn_point_near(image: Image.Image, pixel: tuple[float, float], radius: int = 12) -> tuple[float, float, int]:
    """Centroid (x, y) and count of the point-coloured pixels within ``radius`` of ``pixel``."""
    rgb = np.asarray(image, dtype=int)
    x0, y0 = max(0, round(pixel[0]) - radius), max(0, round(pixel[1]) - radius)
    window = rgb[y0:round(pixel[1]) + radius + 1, x0:round(pixel[0]) + radius + 1]
    ys, xs = np.nonzero(np.abs(window - np.array(POINT_RGB)).sum(axis=2) < 24)
    if not len(xs):
        return math.nan, math.nan, 0
    return float(x0 + xs.mean() + 0.5), float(y0 + ys.mean() + 0.5), len(xs)


def assert_offline(site: Site, requested: list[str], template: str) -> None:
    """Nothing requested from another host, every asset of the page requested and served."""
    assert not external(requested), external(requested)
    for asset in PAGE_ASSETS[template]:
        if asset.endswith(".png"):
            continue  # favicons: Chromium fetches them lazily, if at all, in headless mode
        assert f"{site.url}/static/{asset}" in requested, (asset, requested)
        assert (f"/static/{asset}", 200) in site.log, asset


def text_of(doc: lxml.html.HtmlElement, xpath: str) -> str:
    return " ".join(" ".join(el.text_content().split()) for el in doc.xpath(xpath))


def test_swagger_ui_page_shows_the_operations_offline(openapi_site: Site, chromium: str, tmp_path: Path) -> None:
    doc, requested = browse(chromium, f"{openapi_site.url}/openapi?f=html", tmp_path)
    assert doc.xpath("//div[@id='swagger-ui']//div[contains(@class, 'swagger-ui')]"), "Swagger UI did not start"
    assert TITLE in text_of(doc, "//*[contains(@class, 'info')]//*[contains(@class, 'title')]")
    blocks = doc.xpath("//*[contains(concat(' ', @class, ' '), ' opblock ')]")
    assert len(blocks) == len(OPERATIONS), "one block per operation"
    summaries = text_of(doc, "//*[contains(@class, 'opblock-summary-description')]")
    assert all(op in summaries for op in OPERATIONS), summaries
    assert f"{openapi_site.url}/openapi?f=json" in requested
    assert not doc.xpath("//*[contains(@class, 'validator')]"), "no validator badge"
    assert_offline(openapi_site, requested, "openapi/swagger.html")


def test_redoc_page_shows_the_operations_offline(openapi_site: Site, chromium: str, tmp_path: Path) -> None:
    doc, requested = browse(chromium, f"{openapi_site.url}/openapi?f=html&ui=redoc", tmp_path)
    assert doc.xpath("//div[@id='redoc']//div[contains(@class, 'redoc-wrap')]"), "ReDoc did not start"
    assert TITLE in text_of(doc, "//h1")
    headings = text_of(doc, "//h2")
    assert all(op in headings for op in OPERATIONS), headings
    assert all(op in text_of(doc, "//*[contains(@class, 'menu-content')]") for op in OPERATIONS)
    assert f"{openapi_site.url}/openapi?f=json" in requested
    assert_offline(openapi_site, requested, "openapi/redoc.html")


@pytest.mark.db
@pytest.mark.parametrize("tms", sorted(GRIDS))
def test_test_server_tiles_follow_the_grid(tile_site: Site, tms: str) -> None:
    """The tiles this test serves put the reference point where the grid's formula says (4096 units per tile)."""
    grid = GRIDS[tms]
    for z in (10, 14, 17):
        col, row = grid.tile(*REFERENCE[tms], z)
        response = requests.get(f"{tile_site.url}/collections/{COLLECTION}/tiles/{tms}/{z}/{row}/{col}", timeout=30)
        assert response.status_code == 200, (z, row, col, response.status_code)
        layers = mapbox_vector_tile.decode(response.content, default_options={"y_coord_down": True})
        assert set(layers) <= set(SAMPLE) and "points" in layers
        points = {f["id"]: f for f in layers["points"]["features"]}
        px, py = grid.pixel(*REFERENCE[tms], z)
        x, y = points[1]["geometry"]["coordinates"]
        assert (x, y) == pytest.approx(((px - 256 * col) * 16, (py - 256 * row) * 16), abs=1), (tms, z)
        assert points[1]["properties"]["name"] == "reference"
    far = requests.get(f"{tile_site.url}/collections/{COLLECTION}/tiles/{tms}/14/0/0", timeout=30)
    assert far.status_code == 204 and not far.content


@pytest.mark.db
@pytest.mark.parametrize("tms", sorted(GRIDS))
def test_tiles_page_draws_the_features_where_the_grid_puts_them(tile_site: Site, chromium: str, tms: str,
                                                                tmp_path: Path) -> None:
    tile_site.log.clear()
    query = "f=html" if tms == "WebMercatorQuad" else f"f=html&tms={tms}"  # the first tile set is the default
    browser = DevTools(chromium, tmp_path)
    try:
        page = browser.open(f"{tile_site.url}/collections/{COLLECTION}/tiles?{query}")
        browser.wait_for(page, "(document.getElementById('tiles-map') || {getAttribute: () => null})"
                               ".getAttribute('data-sdi-rendered') || document.querySelector('[data-sdi-error]')")
        state = browser.evaluate(page, MAP_STATE_JS)
        image = browser.screenshot(page, *state["rect"])
    finally:
        requested = browser.close()
    attributes = state["attributes"]
    assert not browser.exceptions, browser.exceptions
    assert "data-sdi-error" not in attributes, attributes["data-sdi-error"]
    assert attributes["data-sdi-rendered"] == "true"
    assert attributes["data-sdi-tms"] == tms

    # every tile fetched from this grid, without error; every feature drawn once
    tiles = tile_site.tile_requests()
    assert tiles, "no tile was requested"
    assert {t.tms for t in tiles} == {tms}
    assert all(t.status in (200, 204) for t in tiles), tiles
    assert attributes["data-sdi-tile-errors"] == "0"
    assert attributes["data-sdi-tiles-loaded"] == str(len(tiles))
    assert attributes["data-sdi-features"] == str(N_FEATURES)

    # the view: on the sample, at one of the grid's zoom levels, whose tiles were the ones fetched
    grid, z = GRIDS[tms], state["zoom"]
    assert z == int(z) and state["resolution"] == pytest.approx(grid.resolution(z), rel=1e-9)
    assert 12 <= z <= 16, "fitted to the sample (about 2.6 km across)"
    assert {t.z for t in tiles} == {z}
    col, row = grid.tile(*REFERENCE[tms], z)
    assert (z, row, col) in {(t.z, t.row, t.col) for t in tiles}, "the reference point's tile was not fetched"

    # where the grid's formula puts the reference point on the map: pixelOf and the screenshot agree
    width, height = state["size"]
    assert image.size == (round(width), round(height)), (image.size, state["size"])
    centre, point = grid.pixel(*state["center"], z), grid.pixel(*REFERENCE[tms], z)
    expected = (point[0] - centre[0] + width / 2, point[1] - centre[1] + height / 2)
    assert 20 < expected[0] < width - 20 and 20 < expected[1] < height - 20
    assert state["pixel"] == pytest.approx(expected, abs=2), "window.sdiTiles.pixelOf"
    drawn_x, drawn_y, drawn_pixels = drawn_point_near(image, expected)
    assert drawn_pixels >= 40, f"no point drawn near the predicted pixel {expected}"
    assert math.dist((drawn_x, drawn_y), expected) <= 2, ((drawn_x, drawn_y), expected)
    assert "reference" in state["names"], state["names"]

    assert "No base map (offline)" in state["attribution"]
    assert_offline(tile_site, requested, "collections/tiles/index.html")
