"""Vendored web assets and the pages that use them, on a live `sdi serve`: Swagger UI, ReDoc, the vector-tile
preview and the items map, offline.

The module's server publishes the Lands Department reference points (tests/data/publishing/landsd_reference.yml:
code A at HK1980 Grid E 835411.431 N 817266.016 = 22.294313001 N 114.168562005 E, and B in Central) and
``districts_18``. The two tile matrix sets, as the test computes them: 256-pixel tiles, 2^z x 2^z at zoom z,
WebMercatorQuad from (-pi R, pi R) at 2 pi R / 256 m per pixel at zoom 0 (R = 6378137 m), HK80Grid from
E -4786700, N 8353100 at 156543.0339 m per pixel at zoom 0 (EPSG:2326).

- Without a browser: each vendored library has its licence and version note; every script, stylesheet and
  icon of the pages the server renders (Swagger UI, ReDoc, the tiles preview in both grids), directly or behind
  a proxy, is a file of sdi/web/static served by the server itself, byte for byte; the server's values reach
  the scripts only through data-* attributes escaped by Jinja (inline scripts are the same whatever the base
  URL or the layer's texts, here a layer loaded while serving with markup in its title, abstract and keywords);
  the served grids and tiles put A where the grid's formula says.
- In headless Chromium (every host but 127.0.0.1 unresolvable, a net log of every request; helpers in
  tests/browser.py): Swagger UI and ReDoc draw every operation of the server's OpenAPI document (``--dump-dom``
  after the scripts ran) and request nothing from another host; the tiles page, in both grids, loads its tiles
  from the server without error, draws both features, and draws A at the pixel the grid's formula predicts
  (B where PostGIS has it): ``window.sdiTiles.pixelOf``, hit detection and a screenshot agree within 2 px.
  OpenLayers draws on animation frames, which ``--virtual-time-budget`` hardly advances, so the tiles page is
  driven in real time through the DevTools protocol over a pipe. The items page of ``districts_18`` draws every
  feature returned (tests/publishing/test_pages.py's helpers).

Without Chromium the browser tests are skipped, or fail when ``CI=true`` (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import mapbox_vector_tile
import psycopg
import pytest
import requests

from loaders import load
from loaders.write import drop_layer
from sdi.layerdef import parse_definition
from tests.browser import DevTools, browse, colour_near, external, find_chromium, inline_scripts, loaded_urls, text_of
from tests.conftest import DATA
from tests.live_server import Live, live_layers
from tests.publishing.test_pages import geojson, map_features

STATIC = Path(__file__).resolve().parents[2] / "sdi" / "web" / "static"
#: Vendored library folder → its version, as written in VERSION and inside the main file.
VENDORED = {"swagger-ui": "5.36.0", "redoc": "2.5.4", "openlayers": "10.11.0"}
VERSION_MARKS = {"swagger-ui": ("swagger-ui-bundle.js", 'PACKAGE_VERSION:"5.36.0"'),
                 "redoc": ("redoc.standalone.js", 'ReDoc Version: ","2.5.4"'),
                 "openlayers": ("ol.js", 'VERSION="10.11.0"')}
LAYER, DISTRICTS = "landsd_reference", "districts_18"
TILES_ASSETS = {"vendor/openlayers/ol.css", "vendor/openlayers/ol.js", "js/sdi-tiles.js",
                "vendor/bootstrap/css/bootstrap.min.css", "css/default.css"}
#: Page (path and query) → the files of sdi/web/static that it must load.
PAGE_ASSETS = {
    "/openapi?f=html": {"vendor/swagger-ui/swagger-ui.css", "vendor/swagger-ui/swagger-ui-bundle.js",
                        "vendor/swagger-ui/swagger-ui-standalone-preset.js", "vendor/swagger-ui/favicon-32x32.png",
                        "vendor/swagger-ui/favicon-16x16.png"},
    "/openapi?f=html&ui=redoc": {"vendor/redoc/redoc.standalone.js"},
    f"/collections/{LAYER}/tiles?f=html&tms=WebMercatorQuad": TILES_ASSETS,
    f"/collections/{LAYER}/tiles?f=html&tms=HK80Grid": TILES_ASSETS,
}
CDN_NAMES = ("unpkg", "jsdelivr", "cdnjs", "googleapis", "gstatic", "cdn.redoc.ly", "openstreetmap")
PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sdi.example.gov.hk", "X-Forwarded-Prefix": "/api"}
PROXY_BASE = "https://sdi.example.gov.hk/api"
REFRESH_S = 0.5  #: how often the server's workers check the catalogue (SDI_REFRESH_S)
HOSTILE = "</script><script>alert('x')</script>\"'&<b>"


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


EARTH_RADIUS = 6378137.0
HALF_WORLD = math.pi * EARTH_RADIUS
GRIDS = {"WebMercatorQuad": Grid((-HALF_WORLD, HALF_WORLD), 2 * HALF_WORLD / 256),
         "HK80Grid": Grid((-4786700.0, 8353100.0), 156543.0339)}


def web_mercator(lon: float, lat: float) -> tuple[float, float]:
    return EARTH_RADIUS * math.radians(lon), EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


#: Reference point A in each grid's CRS: the Lands Department's HK80 easting/northing; EPSG:3857 from its WGS 84.
REFERENCE = {"HK80Grid": (835411.431, 817266.016), "WebMercatorQuad": web_mercator(114.168562005, 22.294313001)}


# --- the live server --------------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`sdi serve` over a database with the reference points and the 18 districts."""
    with live_layers(tmp_path_factory.mktemp("assets"), (DISTRICTS,),
                     definitions=[DATA / "publishing" / f"{LAYER}.yml"],
                     extra_env={"SDI_REFRESH_S": str(REFRESH_S)}) as served:
        yield served


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium("the browser tests of Swagger UI, ReDoc, the tiles preview and the items map")


def page(url: str, headers: dict[str, str] | None = None) -> tuple[str, lxml.html.HtmlElement]:
    """An HTML page of the server: its text and its tree."""
    response = requests.get(url, headers=headers, timeout=60)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    text = response.content.decode("utf-8")
    return text, lxml.html.fromstring(text)


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


@pytest.mark.db
@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind-a-proxy"])
@pytest.mark.parametrize("path", sorted(PAGE_ASSETS))
def test_pages_load_only_vendored_files_of_their_own_server(live: Live, path: str, proxied: bool) -> None:
    base = PROXY_BASE if proxied else live.url
    text = page(f"{live.url}{path}", PROXY if proxied else None)[0]
    urls = loaded_urls(text, f"{base}{path}")
    assert proxied or not external(urls), external(urls)
    assert not [name for name in CDN_NAMES if name in text]
    static = set()
    for url in urls:
        assert url.startswith(f"{base}/static/"), url
        static.add(urlsplit(url).path.removeprefix(urlsplit(base).path + "/static/"))
    assert PAGE_ASSETS[path] <= static, PAGE_ASSETS[path] - static
    for asset in sorted(static):
        assert (STATIC / asset).is_file(), f"{path} loads {asset}, which is not a file of sdi/web/static"
        served = requests.get(f"{live.url}/static/{asset}", timeout=30)
        assert served.status_code == 200 and served.content == (STATIC / asset).read_bytes(), asset


@pytest.mark.db
def test_openapi_pages_pass_the_document_url_in_an_attribute(live: Live) -> None:
    for ui, element in (("", "swagger-ui"), ("&ui=redoc", "redoc")):
        scripts = []
        for base, headers in ((live.url, None), (PROXY_BASE, PROXY)):
            doc = page(f"{live.url}/openapi?f=html{ui}", headers)[1]
            assert doc.get_element_by_id(element).get("data-spec-url") == f"{base}/openapi?f=json"
            scripts.append(inline_scripts(doc))
        assert scripts[0] == scripts[1], f"{element}: the server's values inside a script"
        assert live.url not in " ".join(scripts[0])
        # Swagger UI hides its validator badge (an image from validator.swagger.io) for loopback servers only,
        # so the browser test cannot see it: the option must be in the page
        assert element != "swagger-ui" or "validatorUrl: null" in " ".join(scripts[0])


@pytest.mark.db
@pytest.mark.parametrize("tms", sorted(GRIDS))
def test_served_grids_and_tiles_put_the_reference_point_where_the_formula_does(live: Live, tms: str) -> None:
    grid = GRIDS[tms]
    matrix = requests.get(f"{live.url}/TileMatrixSets/{tms}?f=json", timeout=30).json()["tileMatrices"][0]
    north, west = matrix["pointOfOrigin"] if tms == "HK80Grid" else matrix["pointOfOrigin"][::-1]
    assert (west, north) == pytest.approx(grid.origin, abs=1e-6) and matrix["cornerOfOrigin"] == "topLeft"
    assert matrix["cellSize"] == pytest.approx(grid.resolution0, rel=1e-12) and matrix["tileWidth"] == 256
    for z in (12, 15, 17):
        col, row = grid.tile(*REFERENCE[tms], z)
        response = requests.get(f"{live.url}/collections/{LAYER}/tiles/{tms}/{z}/{row}/{col}?f=mvt", timeout=30)
        assert response.status_code == 200, (z, row, col, response.status_code)
        layer = mapbox_vector_tile.decode(response.content, default_options={"y_coord_down": True})[LAYER]
        point = next(f for f in layer["features"] if f["properties"]["code"] == "A")
        px, py = grid.pixel(*REFERENCE[tms], z)
        expected = ((px - 256 * col) * 16, (py - 256 * row) * 16)  # 4096 units per 256-pixel tile
        assert point["geometry"]["coordinates"] == pytest.approx(expected, abs=1), (tms, z)


@pytest.mark.db
def test_tiles_page_passes_values_in_escaped_attributes_and_has_no_inline_script(live: Live) -> None:
    """A layer with markup in its title, abstract and keywords, loaded while serving (dropped afterwards)."""
    hostile = "hostile_texts"
    source = (DATA / "good" / "landsd_point.geojson").resolve()
    definition = parse_definition({"id": hostile, "title": {"en": HOSTILE, "zh": HOSTILE},
                                   "abstract": {"en": HOSTILE, "zh": HOSTILE}, "keywords": [HOSTILE],
                                   "custodian": "Test Department", "licence": "test data",
                                   "source": {"path": str(source)}}, where="test")
    load(definition, live.settings)
    try:
        doc = page(f"{live.url}/collections/{hostile}/tiles?f=html")[1]
    finally:
        with psycopg.connect(live.settings.database_url) as conn, conn.transaction():
            drop_layer(conn, hostile, live.settings)
        time.sleep(3 * REFRESH_S)  # every worker has seen the drop: the other tests see the module's two layers
    plain = page(f"{live.url}/collections/{LAYER}/tiles?f=html")[1]
    assert inline_scripts(doc) == inline_scripts(plain), "server values inside a script"
    assert len(inline_scripts(doc)) == 1, "only _base.html's static JSON-LD loader"  # nothing from this template
    assert not doc.xpath("//b"), "markup from the layer reached the page"
    assert HOSTILE in doc.xpath("string(//h1)") and HOSTILE in text_of(doc, "//section[@id='collection']//p")
    assert HOSTILE in text_of(doc, "//span[contains(@class, 'badge')]")

    box = plain.get_element_by_id("tiles-map")
    bbox = geojson(f"{live.url}/collections/{LAYER}")["extent"]["spatial"]["bbox"][0]
    assert [float(v) for v in box.get("data-bounds").split(",")] == pytest.approx(bbox, abs=1e-9)
    with psycopg.connect(live.settings.database_url) as conn:
        centre = conn.execute(f"select (st_xmin(e) + st_xmax(e)) / 2, (st_ymin(e) + st_ymax(e)) / 2 "
                              f"from (select st_extent(geom) as e from layers.{LAYER}) x").fetchone()
    assert [float(v) for v in box.get("data-center-hk80").split(",")] == pytest.approx(centre, abs=0.01)
    assert (box.get("data-minzoom"), box.get("data-maxzoom")) == ("0", "20")
    assert [box.get(f"data-{n}") for n in ("base-map-url", "hk80-map-url")] == ["", ""], "no base map configured"
    assert box.get("data-no-base-map") == "No base map (offline)"
    options = plain.xpath("//select[@id='tilingScheme']/option")
    assert [o.get("value") for o in options] == ["WebMercatorQuad", "HK80Grid"]
    for option in options:
        tilejson = requests.get(f"{live.url}/collections/{LAYER}/tiles/{option.get('value')}?f=tilejson",
                                timeout=30).json()
        assert option.get("data-tiles") == tilejson["tiles"][0]
    assert plain.get_element_by_id("metadata_link").get("href") == options[0].get("data-metadata")


# --- in a headless browser -----------------------------------------------------------------------------------

def openapi(live: Live) -> dict[str, Any]:
    response = requests.get(f"{live.url}/openapi?f=json", timeout=60)
    assert response.status_code == 200, response.text[:500]
    return dict(response.json())


def operation_summaries(document: dict[str, Any]) -> list[str]:
    return [operation["summary"] for path in document["paths"].values()
            for method, operation in path.items() if method in ("get", "put", "post", "delete", "options")]


def assert_offline(live: Live, requested: list[str], path: str) -> None:
    """Nothing requested from another host, every script and stylesheet of the page requested."""
    assert not external(requested), external(requested)
    for asset in PAGE_ASSETS[path]:
        if not asset.endswith(".png"):  # favicons: Chromium fetches them lazily, if at all, in headless mode
            assert f"{live.url}/static/{asset}" in requested, (asset, requested)


@pytest.mark.db
def test_openapi_document_is_self_contained(live: Live) -> None:
    refs = re.findall(r'"\$ref": ?"([^"]*)"', requests.get(f"{live.url}/openapi?f=json", timeout=60).text)
    assert not {ref.split("#")[0] for ref in refs if not ref.startswith("#")}


@pytest.mark.db
def test_swagger_ui_page_shows_the_operations_offline(live: Live, chromium: str, tmp_path: Path) -> None:
    """The overview, operations collapsed (Swagger UI resolves an operation's $refs when it is expanded)."""
    document = openapi(live)
    doc, requested = browse(chromium, f"{live.url}/openapi?f=html", tmp_path)
    assert doc.xpath("//div[@id='swagger-ui']//div[contains(@class, 'swagger-ui')]"), "Swagger UI did not start"
    assert document["info"]["title"] in text_of(doc, "//*[contains(@class, 'info')]//*[contains(@class, 'title')]")
    shown = [" ".join(el.text_content().split())
             for el in doc.xpath("//*[contains(@class, 'opblock-summary-description')]")]
    assert sorted(shown) == sorted(operation_summaries(document)), "one block per operation"
    assert f"{live.url}/openapi?f=json" in requested
    assert not doc.xpath("//*[contains(@class, 'validator')]"), "no validator badge"
    assert_offline(live, requested, "/openapi?f=html")


@pytest.mark.db
def test_swagger_ui_expands_every_operation_offline(live: Live, chromium: str, tmp_path: Path) -> None:
    count = len(operation_summaries(openapi(live)))
    browser = DevTools(chromium, tmp_path)
    try:
        session = browser.open(f"{live.url}/openapi?f=html")
        browser.wait_for(session, f"document.querySelectorAll('.opblock').length === {count}")
        browser.evaluate(session, "document.querySelectorAll('.opblock-summary-control').forEach((e) => e.click())")
        browser.wait_for(session, f"document.querySelectorAll('.opblock.is-open .responses-table').length === {count}")
        time.sleep(1)  # the $refs of the expanded operations are being resolved
    finally:
        requested = browser.close()
    assert not browser.exceptions, browser.exceptions
    assert not external(requested), external(requested)


@pytest.mark.db
def test_redoc_page_shows_the_operations_offline(live: Live, chromium: str, tmp_path: Path) -> None:
    document = openapi(live)
    doc, requested = browse(chromium, f"{live.url}/openapi?f=html&ui=redoc", tmp_path)
    assert f"{live.url}/openapi?f=json" in requested
    assert_offline(live, requested, "/openapi?f=html&ui=redoc")
    assert doc.xpath("//div[@id='redoc']//div[contains(@class, 'redoc-wrap')]"), "ReDoc did not start"
    assert document["info"]["title"] in text_of(doc, "//h1")
    headings = {" ".join(el.text_content().split()) for el in doc.xpath("//h2")}
    assert set(operation_summaries(document)) <= headings, set(operation_summaries(document)) - headings
    menu = text_of(doc, "//*[contains(@class, 'menu-content')]")
    assert all(summary in menu for summary in operation_summaries(document))


#: What the tiles page shows once drawn: the map's data-sdi-* attributes, its view, window.sdiTiles.pixelOf of
#: each point given (code → coordinates in the map's CRS), the codes of the features drawn at that pixel (the
#: vector tile layer's hit detection on its drawn pixels), the map's place in the page.
MAP_STATE_JS = """(async (points) => {
  const box = document.getElementById('tiles-map'), map = window.sdiTiles.map, view = map.getView();
  const attributes = {};
  for (const attribute of box.attributes) { attributes[attribute.name] = attribute.value; }
  const layer = map.getAllLayers().filter((candidate) => candidate instanceof ol.layer.VectorTile)[0];
  const pixels = {}, hits = {};
  for (const [code, xy] of Object.entries(points)) {
    pixels[code] = window.sdiTiles.pixelOf(xy[0], xy[1]);
    hits[code] = (await layer.getFeatures(pixels[code])).map((feature) => feature.get('code'));
  }
  const rect = map.getViewport().getBoundingClientRect();
  const attribution = box.querySelector('.ol-attribution');
  return {attributes, center: view.getCenter(), resolution: view.getResolution(), zoom: view.getZoom(),
          size: map.getSize(), pixels, hits, attribution: attribution ? attribution.textContent : '',
          rect: [rect.left + window.scrollX, rect.top + window.scrollY, rect.width, rect.height]};
})(__POINTS__)"""
MAP_DRAWN_JS = ("(document.getElementById('tiles-map') || {getAttribute: () => null})"
                ".getAttribute('data-sdi-rendered') || document.querySelector('[data-sdi-error]')")
POINT_RGB = (0xC0, 0x39, 0x2B)  # the fill of points in static/js/sdi-tiles.js, opaque


def stored_points(live: Live, tms: str) -> dict[str, tuple[float, float]]:
    """Code → the layer's points as PostGIS has them in the grid's CRS (EPSG:2326, or 3857 by ST_Transform)."""
    geom = "geom" if tms == "HK80Grid" else "ST_Transform(geom, 3857)"
    with psycopg.connect(live.settings.database_url) as conn:
        rows = conn.execute(f"select code, ST_X({geom}), ST_Y({geom}) from layers.{LAYER}").fetchall()
    return {str(code): (float(x), float(y)) for code, x, y in rows}


@pytest.mark.db
@pytest.mark.parametrize("tms", sorted(GRIDS))
def test_tiles_page_draws_the_features_where_the_grid_puts_them(live: Live, chromium: str, tms: str,
                                                                tmp_path: Path) -> None:
    """A where the Lands Department's coordinates and the grid's formula put it; B where PostGIS has it."""
    points = {**stored_points(live, tms), "A": REFERENCE[tms]}
    path = f"/collections/{LAYER}/tiles?f=html&tms={tms}"
    browser = DevTools(chromium, tmp_path)
    try:
        session = browser.open(f"{live.url}{path}")
        browser.wait_for(session, MAP_DRAWN_JS)
        state = browser.evaluate(session, MAP_STATE_JS.replace("__POINTS__", json.dumps(points)))
        image = browser.screenshot(session, *state["rect"])
    finally:
        requested = browser.close()
    attributes = state["attributes"]
    assert not browser.exceptions, browser.exceptions
    assert "data-sdi-error" not in attributes, attributes["data-sdi-error"]
    assert attributes["data-sdi-rendered"] == "true" and attributes["data-sdi-tms"] == tms

    # every tile fetched from the server in this grid, without error; every feature of the layer drawn once
    prefix = f"{live.url}/collections/{LAYER}/tiles/"
    tiles = [(r, tuple(int(v) for v in urlsplit(r.url).path.split("/")[-3:])) for r in browser.responses
             if r.url.startswith(prefix)]
    assert tiles, "no tile was requested"
    assert {r.url.removeprefix(prefix).split("/")[0] for r, _ in tiles} == {tms}
    assert all(r.status in (200, 204) for r, _ in tiles), [r for r, _ in tiles]
    assert attributes["data-sdi-tile-errors"] == "0"
    assert attributes["data-sdi-tiles-loaded"] == str(len(tiles))
    matched = geojson(f"{live.url}/collections/{LAYER}/items")["numberMatched"]
    assert attributes["data-sdi-features"] == str(matched) == str(len(points))

    # the view: on the layer, at one of the grid's zoom levels, whose tiles were the ones fetched
    grid, z = GRIDS[tms], state["zoom"]
    assert z == int(z) and state["resolution"] == pytest.approx(grid.resolution(z), rel=1e-9)
    assert 13 <= z <= 17, "fitted to the two points (about 1.1 km by 1.4 km)"
    assert {cell[0] for _, cell in tiles} == {z}
    assert (z, *grid.tile(*REFERENCE[tms], z)[::-1]) in {cell for _, cell in tiles}, "A's tile was not fetched"

    # where the grid's formula puts each point on the map: pixelOf, hit detection and the screenshot agree
    width, height = state["size"]
    assert image.size == (round(width), round(height)), (image.size, state["size"])
    centre = grid.pixel(state["center"][0], state["center"][1], z)
    for code, xy in points.items():
        point = grid.pixel(*xy, z)
        expected = (point[0] - centre[0] + width / 2, point[1] - centre[1] + height / 2)
        assert 20 < expected[0] < width - 20 and 20 < expected[1] < height - 20, (code, expected)
        assert state["pixels"][code] == pytest.approx(expected, abs=2), f"window.sdiTiles.pixelOf, {code}"
        drawn_x, drawn_y, drawn_pixels = colour_near(image, expected, POINT_RGB)
        assert drawn_pixels >= 40, f"{code}: no point drawn near the predicted pixel {expected}"
        assert math.dist((drawn_x, drawn_y), expected) <= 2, (code, (drawn_x, drawn_y), expected)
        assert state["hits"][code] == [code], (code, state["hits"][code])

    assert "No base map (offline)" in state["attribution"]
    assert_offline(live, requested, path)


@pytest.mark.db
def test_items_page_draws_every_district_offline(live: Live, chromium: str, tmp_path: Path) -> None:
    returned = geojson(f"{live.url}/collections/{DISTRICTS}/items")["numberReturned"]
    assert returned == 18
    doc, requested = browse(chromium, f"{live.url}/collections/{DISTRICTS}/items?f=html", tmp_path)
    paths = map_features(doc, "items-map")
    assert len(paths) == returned, (len(paths), returned)
    container = doc.get_element_by_id("items-map")
    assert container.get("data-sdi-rendered") == container.get("data-sdi-number-returned") == str(returned)
    assert all(p.get("d") and p.get("d") != "M0 0" for p in paths), "features drawn without coordinates"
    assert f"{live.url}/static/vendor/leaflet/leaflet.js" in requested, requested
    assert not external(requested), external(requested)
