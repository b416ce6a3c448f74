"""OGC API – Features through a live `sdi serve` (CRS axis order, exact boxes, paging, filters), and the thin
pygeoapi adapter (sdi.publishing.features) under stock pygeoapi with the same layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyproj
import pytest
import requests

from tests.conftest import DATA
from tests.live_server import pygeoapi_server
from tests.publishing.conftest import LiveServer

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}".format
LANDSD_EN = (835411.431, 817266.016)  # easting, northing
LANDSD_LONLAT = (114.168562005, 22.294313001)
CENTRAL_CRS84 = [114.150, 22.276, 114.165, 22.290]  # lon/lat box around Central
M_PER_DEG_LAT, M_PER_DEG_LON = 110_770.0, 102_900.0  # at 22.3° N


def landsd(features: list[dict[str, Any]]) -> list[float]:
    return next(f for f in features if f["properties"]["code"] == "A")["geometry"]["coordinates"]


def close_deg(got: list[float], lat_lon: tuple[float, float]) -> None:
    assert abs(got[0] - lat_lon[0]) * M_PER_DEG_LAT < 0.01 and abs(got[1] - lat_lon[1]) * M_PER_DEG_LON < 0.01, got


@pytest.fixture(scope="module")
def server(live: LiveServer) -> str:
    """The live `sdi serve` of this test session (tests/publishing/conftest.py)."""
    return live.url


def get(url: str, **params: Any) -> requests.Response:
    return requests.get(url, params={"f": "json", **params}, timeout=30)


def test_http_crs_axis_order_and_content_crs(server: str) -> None:
    items = f"{server}/collections/landsd_reference/items"
    r = get(items)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Crs"] == f"<{CRS84}>"
    lon, lat = landsd(r.json()["features"])
    assert abs(lon - LANDSD_LONLAT[0]) * M_PER_DEG_LON < 0.01 and abs(lat - LANDSD_LONLAT[1]) * M_PER_DEG_LAT < 0.01
    r = get(items, crs=EPSG(4326))
    assert r.headers["Content-Crs"] == f"<{EPSG(4326)}>"
    close_deg(landsd(r.json()["features"]), (LANDSD_LONLAT[1], LANDSD_LONLAT[0]))
    r = get(items, crs=EPSG(2326))
    assert r.headers["Content-Crs"] == f"<{EPSG(2326)}>"
    assert landsd(r.json()["features"]) == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)
    fid = next(f["id"] for f in r.json()["features"] if f["properties"]["code"] == "A")
    one = get(f"{items}/{fid}", crs=EPSG(2326))
    assert one.status_code == 200 and one.headers["Content-Crs"] == f"<{EPSG(2326)}>"
    assert one.json()["geometry"]["coordinates"] == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)
    assert get(f"{items}/999999").status_code == 404
    assert get(items, crs="http://www.opengis.net/def/crs/EPSG/0/2000").status_code == 400


def test_http_bbox_crs84_and_bbox_crs_2326_agree(server: str) -> None:
    items = f"{server}/collections/public_libraries_2013/items"
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    to_grid = pyproj.Transformer.from_crs(4326, 2326, always_xy=True)
    e0, n0 = to_grid.transform(lon0, lat0)
    e1, n1 = to_grid.transform(lon1, lat1)
    a = get(items, bbox=",".join(map(str, CENTRAL_CRS84)), limit=1000).json()
    b = get(items, bbox=f"{n0},{e0},{n1},{e1}", **{"bbox-crs": EPSG(2326)}, limit=1000).json()
    assert 0 < a["numberMatched"] < 260
    assert {f["id"] for f in a["features"]} == {f["id"] for f in b["features"]}
    assert a["numberMatched"] == b["numberMatched"] == len(a["features"])


def test_http_paging_follows_next_to_the_end(server: str) -> None:
    url: str | None = f"{server}/collections/public_libraries_2013/items?f=json&limit=50&skipGeometry=true"
    ids: list[int] = []
    matched = None
    while url:
        body = requests.get(url, timeout=30).json()
        matched = body["numberMatched"]
        ids += [f["id"] for f in body["features"]]
        url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
    assert matched == 260 and len(ids) == 260 == len(set(ids))


def test_http_filter_sortby_properties_and_errors(server: str) -> None:
    items = f"{server}/collections/landsd_reference/items"
    r = get(items, filter="name_zh = '中環'")
    assert r.status_code == 200, r.text
    assert [f["properties"]["code"] for f in r.json()["features"]] == ["B"]
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    poly = f"POLYGON(({lon0} {lat0}, {lon1} {lat0}, {lon1} {lat1}, {lon0} {lat1}, {lon0} {lat0}))"
    r = get(items, filter=f"INTERSECTS(geom, {poly})")
    assert [f["properties"]["code"] for f in r.json()["features"]] == ["B"]
    r = get(items, sortby="-code", properties="code", skipGeometry="true")
    assert [f["properties"] for f in r.json()["features"]] == [{"code": "B"}, {"code": "A"}]
    assert all(f["geometry"] is None for f in r.json()["features"])
    r = get(items, code="A")
    assert [f["properties"]["code"] for f in r.json()["features"]] == ["A"] and r.json()["numberMatched"] == 1
    assert get(items, filter="code = = 'A'").status_code == 400
    assert get(items, filter="nope = 1").status_code == 400
    assert get(items, sortby="nope").status_code == 400
    districts = get(f"{server}/collections/districts_18/items", limit=20, crs=EPSG(2326)).json()
    assert districts["numberMatched"] == 18 == len(districts["features"])


def test_http_a_wide_lonlat_box_is_exact(server: str) -> None:
    """pygeoapi's two-corner transform of a wide lon/lat box misses metres at its edges; sdi's box does not."""
    south = LANDSD_LONLAT[1] - 2 / M_PER_DEG_LAT
    r = get(f"{server}/collections/landsd_reference/items", bbox=f"113.8,{south!r},114.5,22.6")
    assert [f["properties"]["code"] for f in r.json()["features"]] == ["A"]


# --- the adapter under stock pygeoapi ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stock(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pygeoapi's own Starlette app serving the same layers through sdi.publishing.features; stopped afterwards."""
    template = (DATA / "publishing" / "pygeoapi-config.yml").read_text(encoding="utf-8")
    with pygeoapi_server(lambda port: template.replace("${PORT}", str(port)), tmp_path_factory.mktemp("pygeoapi"),
                         live.settings.database_url) as base:
        yield base


def test_adapter_under_stock_pygeoapi(stock: str) -> None:
    items = f"{stock}/collections/landsd_reference/items"
    r = get(items, crs=EPSG(2326))
    assert r.status_code == 200, r.text
    assert landsd(r.json()["features"]) == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)
    fid = next(f["id"] for f in r.json()["features"] if f["properties"]["code"] == "A")
    one = get(f"{items}/{fid}", crs=EPSG(4326))
    assert one.status_code == 200
    close_deg(one.json()["geometry"]["coordinates"], (LANDSD_LONLAT[1], LANDSD_LONLAT[0]))
    assert get(f"{items}/999999").status_code == 404
    r = get(items, filter="name_zh = '中環'")
    assert [f["properties"]["code"] for f in r.json()["features"]] == ["B"]
    page = get(f"{stock}/collections/public_libraries_2013/items", limit=7, offset=7).json()
    assert page["numberMatched"] == 260 and len(page["features"]) == 7
    assert get(items, filter="nope = 1").status_code == 400
