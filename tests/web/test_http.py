"""HTTP as clients expect it from a live `sdi serve`: live publishing, links from the request, ETags and 304,
compression, CORS, the tile cache across reloads, and vector tiles in the Lands Department's HK80 grid."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import mapbox_vector_tile
import morecantile
import psycopg
import pytest
import requests

from loaders import load
from loaders.write import drop_layer
from sdi.layerdef import read_definition
from sdi.query.tms import EXTENT, HK80_CELL_SIZE, HK80_ORIGIN
from tests.conftest import DATA, loaded_database
from tests.live_server import LiveFolder, sdi_server

pytestmark = pytest.mark.db
LANDSD_EN = (835411.431, 817266.016)  #: HK1980 Grid easting, northing of the Lands Department reference point
REFRESH_S = 0.5  #: the test server's SDI_REFRESH_S


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFolder]:
    """A database with the reference points and the districts, served by `sdi serve` (checks every 0.5 s)."""
    data_dir = tmp_path_factory.mktemp("http_store")
    with loaded_database(("districts_18",), definitions=[DATA / "publishing" / "landsd_reference.yml"],
                         data_dir=data_dir) as settings, \
            sdi_server(settings, tmp_path_factory.mktemp("http_serve"),
                       extra_env={"SDI_REFRESH_S": str(REFRESH_S)}) as base:
        yield LiveFolder(base, settings, tmp_path_factory.mktemp("http_layers"))


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def _layer_yaml(folder: Path, layer_id: str) -> Path:
    path = folder / f"{layer_id}.yml"
    path.write_text(
        f"id: {layer_id}\ntitle: {{en: Live publishing test {layer_id}, zh: 即時發佈測試}}\n"
        "abstract: {en: Two points loaded while the server runs.}\ncustodian: Test Department\nlicence: test data\n"
        f"source: {{path: {(DATA / 'good' / 'landsd_point.geojson').resolve()}}}\n", encoding="utf-8")
    return path


# --- live publishing --------------------------------------------------------------------------------------------


def test_a_layer_loaded_while_serving_is_published_and_a_dropped_one_is_gone(live: LiveFolder) -> None:
    layer = "live_points"
    assert get(f"{live.url}/collections/{layer}?f=json").status_code == 404
    load(read_definition(_layer_yaml(live.folder, layer)), live.settings)
    started = time.monotonic()
    collection = get(f"{live.url}/collections/{layer}?f=json")  # an unknown id makes the worker check at once
    assert collection.status_code == 200, collection.text
    assert time.monotonic() - started < 5
    assert collection.json()["title"] == f"Live publishing test {layer}"
    items = get(f"{live.url}/collections/{layer}/items?f=json")
    assert items.status_code == 200, items.text
    assert items.json()["numberMatched"] == 2
    ids = wait_for(lambda: {c["id"] for c in get(f"{live.url}/collections?f=json").json()["collections"]} >= {layer})
    assert ids, "the new layer is listed in /collections"
    assert wait_for(lambda: f"/collections/{layer}/items" in get(f"{live.url}/openapi?f=json").json()["paths"])
    assert get(f"{live.url}/collections/{layer}?f=html").status_code == 200
    tile = get(f"{live.url}/collections/{layer}/tiles/HK80Grid/0/0/0?f=mvt")
    assert tile.status_code == 200 and mapbox_vector_tile.decode(tile.content)[layer]["features"]

    with psycopg.connect(live.settings.database_url) as conn, conn.transaction():
        drop_layer(conn, layer, live.settings)
    for path in (f"/collections/{layer}", f"/collections/{layer}/items", f"/collections/{layer}/items/1",
                 f"/collections/{layer}/tiles/HK80Grid/0/0/0?f=mvt"):
        url = f"{live.url}{path}" + ("" if "?" in path else "?f=json")
        assert wait_for(lambda u=url: get(u).status_code == 404), path
    assert wait_for(lambda: layer not in {c["id"] for c in get(f"{live.url}/collections?f=json").json()["collections"]})
    assert wait_for(lambda: f"/collections/{layer}/items" not in get(f"{live.url}/openapi?f=json").json()["paths"])


def test_a_reload_changes_the_etag_and_the_cached_tiles(live: LiveFolder) -> None:
    layer = "live_reload"
    path = _layer_yaml(live.folder, layer)
    load(read_definition(path), live.settings)
    tile = morecantile.tms.get("WebMercatorQuad").tile(114.1686, 22.2943, 12)  # holds the reference point A
    url = f"{live.url}/collections/{layer}/tiles/WebMercatorQuad/12/{tile.y}/{tile.x}?f=mvt"
    assert wait_for(lambda: get(url).status_code == 200)
    first = get(url)
    again = get(url)
    assert first.content == again.content and first.headers["ETag"] == again.headers["ETag"]
    items = get(f"{live.url}/collections/{layer}/items?f=json")
    # reload from a source with one point moved: the same ids, another geometry
    doc = json.loads((DATA / "good" / "landsd_point.geojson").read_text(encoding="utf-8"))
    doc["features"][0]["geometry"]["coordinates"][0] += 0.01
    moved = live.folder / "moved.geojson"
    moved.write_text(json.dumps(doc), encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8").replace(str((DATA / "good" / "landsd_point.geojson").resolve()),
                                                             str(moved)), encoding="utf-8")
    load(read_definition(path), live.settings)
    changed = wait_for(lambda: get(url).headers.get("ETag") != first.headers["ETag"])
    assert changed, "the tile's ETag follows the layer's load"
    time.sleep(2 * REFRESH_S)  # every worker has seen the reload by now
    for _ in range(6):  # whichever worker answers: the new tile, never the cached one of the old load
        answer = get(url)
        assert answer.headers["ETag"] != first.headers["ETag"] and answer.content != first.content
    after = get(f"{live.url}/collections/{layer}/items?f=json")
    assert after.headers["ETag"] != items.headers["ETag"]
    assert after.json()["features"][0]["geometry"] != items.json()["features"][0]["geometry"]


# --- links from the request ------------------------------------------------------------------------------------


def test_links_follow_the_host_and_a_trusted_proxy(live: LiveFolder) -> None:
    port = live.url.rsplit(":", 1)[1]
    plain = get(f"{live.url}/collections/districts_18/items?f=json&limit=1").json()
    assert all(link["href"].startswith(f"http://127.0.0.1:{port}/") for link in plain["links"])
    by_host = get(f"{live.url}/collections/districts_18?f=json", headers={"Host": f"localhost:{port}"}).json()
    local = [link["href"] for link in by_host["links"] if link["rel"] != "license"]
    assert local and all(href.startswith(f"http://localhost:{port}/") for href in local), local
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sdi.example.gov.hk", "X-Forwarded-Prefix": "/api"}
    behind = get(f"{live.url}/collections/districts_18/items?f=json&limit=1", headers=proxied).json()
    hrefs = [link["href"] for link in behind["links"]]
    assert hrefs and all(h.startswith("https://sdi.example.gov.hk/api/collections/districts_18") for h in hrefs), hrefs
    landing = get(f"{live.url}/?f=json", headers=proxied).json()
    assert all(link["href"].startswith("https://sdi.example.gov.hk/api") for link in landing["links"]
               if link["rel"] != "about")
    page = get(f"{live.url}/collections/districts_18?f=html", headers=proxied).text
    assert 'href="https://sdi.example.gov.hk/api/static/' in page
    bad = get(f"{live.url}/collections/districts_18?f=json", headers={"Host": "evil.example<script>"}).json()
    assert all("<" not in link["href"] for link in bad["links"])


# --- caching, compression, CORS --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/collections/districts_18/items?f=json&limit=3",
                                  "/collections/districts_18/items/1?f=json",
                                  "/collections/districts_18?f=json",
                                  "/collections/districts_18/tiles/WebMercatorQuad/10/446/836?f=mvt"])
def test_etag_and_304(live: LiveFolder, path: str) -> None:
    first = get(f"{live.url}{path}")
    assert first.status_code == 200, first.text[:300]
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and "max-age=" in first.headers["Cache-Control"]
    second = get(f"{live.url}{path}", headers={"If-None-Match": tag})
    assert second.status_code == 304 and second.content == b"" and second.headers["ETag"] == tag
    assert get(f"{live.url}{path}", headers={"If-None-Match": 'W/"other"'}).status_code == 200
    other = path.replace("limit=3", "limit=4").replace("items/1", "items/2").replace("836", "837")
    if other != path:
        assert get(f"{live.url}{other}").headers.get("ETag") != tag


@pytest.mark.parametrize(("coding", "decode"), [("gzip", gzip.decompress), ("br", brotli.decompress)])
@pytest.mark.parametrize("path", ["/collections/districts_18/items?f=json&limit=18",
                                  "/collections/districts_18/tiles/WebMercatorQuad/10/446/836?f=mvt"])
def test_compression(live: LiveFolder, path: str, coding: str, decode: Any) -> None:
    plain = get(f"{live.url}{path}", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    raw = requests.get(f"{live.url}{path}", headers={"Accept-Encoding": coding}, timeout=30, stream=True)
    assert raw.headers["Content-Encoding"] == coding
    body = raw.raw.read()
    assert len(body) < len(plain.content)
    if path.endswith("mvt"):
        assert decode(body) == plain.content
    else:  # the same document but for its timeStamp
        assert {**json.loads(decode(body)), "timeStamp": 0} == {**plain.json(), "timeStamp": 0}
    assert "Accept-Encoding" in raw.headers["Vary"]


def test_large_pages_stream_and_compress(live: LiveFolder) -> None:
    url = f"{live.url}/collections/districts_18/items?f=json&limit=5000"
    plain = get(url).json()
    assert plain["numberReturned"] == 18 == len(plain["features"]) == plain["numberMatched"]
    raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=30, stream=True)
    assert raw.headers.get("Transfer-Encoding") == "chunked" and raw.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw.raw.read()))["features"] == plain["features"]


def test_cors(live: LiveFolder) -> None:
    origin = "https://apps.example.org"
    answer = get(f"{live.url}/collections/districts_18/items?f=json&limit=1", headers={"Origin": origin})
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", origin)
    assert "ETag" in answer.headers.get("Access-Control-Expose-Headers", "")
    preflight = requests.options(f"{live.url}/collections/districts_18/items",
                                 headers={"Origin": origin, "Access-Control-Request-Method": "GET"}, timeout=30)
    assert preflight.status_code == 200 and "GET" in preflight.headers["Access-Control-Allow-Methods"]


def test_documented_limits(live: LiveFolder) -> None:
    openapi = get(f"{live.url}/openapi?f=json").json()
    params = openapi["paths"]["/collections/districts_18/items"]["get"]["parameters"]
    limit = next(p for p in params if p.get("name") == "limit")["schema"]
    assert limit["default"] == 1000 and limit["maximum"] == 10_000
    body = get(f"{live.url}/collections/districts_18/items?f=json").json()
    assert body["numberReturned"] == 18  # the default page holds a small layer whole


# --- HK80Grid ------------------------------------------------------------------------------------------------


def test_hk80_grid_definition(live: LiveFolder) -> None:
    doc = get(f"{live.url}/TileMatrixSets/HK80Grid?f=json").json()
    assert doc["crs"].endswith("/EPSG/0/2326") and doc["orderedAxes"] == ["N", "E"]
    for z in (0, 10, 20):
        matrix = doc["tileMatrices"][z]
        assert matrix["id"] == str(z) and matrix["tileWidth"] == matrix["tileHeight"] == 256
        assert matrix["cellSize"] == pytest.approx(156_543.0339 / 2 ** z)
        assert matrix["pointOfOrigin"] == [8_353_100.0, -4_786_700.0]  # northing, easting: the CRS's axis order
        assert matrix["cornerOfOrigin"] == "topLeft" and matrix["matrixWidth"] == 2 ** z
    listed = get(f"{live.url}/TileMatrixSets?f=json").json()["tileMatrixSets"]
    assert {s["id"] for s in listed} == {"WebMercatorQuad", "HK80Grid"}
    tilesets = get(f"{live.url}/collections/landsd_reference/tiles?f=json").json()["tilesets"]
    assert {t["tileMatrixSetId"] for t in tilesets} == {"WebMercatorQuad", "HK80Grid"}
    tilejson = get(f"{live.url}/collections/landsd_reference/tiles/HK80Grid?f=tilejson").json()
    assert tilejson["tiles"][0].endswith("/tiles/HK80Grid/{z}/{y}/{x}?f=mvt") and tilejson["crs"].endswith("/2326")


@pytest.mark.parametrize("z", [12, 16, 19])
def test_the_reference_point_is_at_the_pixel_the_grid_puts_it(live: LiveFolder, z: int) -> None:
    """E 835411.431, N 817266.016 lies in the tile and at the MVT position computed from the grid definition."""
    east, north = LANDSD_EN
    size = HK80_CELL_SIZE * 256 / 2 ** z  # metres per tile
    col_f, row_f = (east - HK80_ORIGIN[0]) / size, (HK80_ORIGIN[1] - north) / size
    col, row = int(col_f), int(row_f)
    tile = get(f"{live.url}/collections/landsd_reference/tiles/HK80Grid/{z}/{row}/{col}?f=mvt")
    assert tile.status_code == 200, tile.text[:300]
    features = mapbox_vector_tile.decode(tile.content, default_options={"y_coord_down": True})["landsd_reference"]
    point = next(f for f in features["features"] if f["properties"]["code"] == "A")
    x, y = point["geometry"]["coordinates"]
    assert abs(x - (col_f - col) * EXTENT) <= 0.5 and abs(y - (row_f - row) * EXTENT) <= 0.5, (x, y)
    neighbour = get(f"{live.url}/collections/landsd_reference/tiles/HK80Grid/{z}/{row}/{col + 2}?f=mvt")
    assert neighbour.status_code == 204  # nothing two tiles east


def test_tiles_outside_the_grid_or_malformed(live: LiveFolder) -> None:
    base = f"{live.url}/collections/landsd_reference/tiles"
    assert get(f"{base}/HK80Grid/21/0/0?f=mvt").status_code == 404
    assert get(f"{base}/HK80Grid/2/0/4?f=mvt").status_code == 404
    assert get(f"{base}/WorldCRS84Quad/1/0/0?f=mvt").status_code == 404
    assert get(f"{base}/HK80Grid/a/0/0?f=mvt").status_code == 400
    assert get(f"{base}/HK80Grid/1/0/0?f=png").status_code == 400
