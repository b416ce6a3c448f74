"""OGC API – Features: SdiFeatureProvider directly, then through a real pygeoapi server under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyproj
import pytest
import requests
from pygeoapi.api.itemtypes import create_crs_transform_spec
from pygeoapi.provider.base import ProviderInvalidQueryError, ProviderItemNotFoundError
from pygeoapi.util import modify_pygeofilter, transform_bbox
from pygeofilter.parsers.ecql import parse as parse_ecql

import sdi.publishing.features as features
from sdi.publishing.features import SdiFeatureProvider
from tests.conftest import DATA, loaded_database
from tests.live_server import pygeoapi_server

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}".format
STORAGE = EPSG(2326)
CRS_LIST = [CRS84, EPSG(2326), EPSG(4326), EPSG(3857)]
LANDSD_EN = (835411.431, 817266.016)  # easting, northing
LANDSD_LONLAT = (114.168562005, 22.294313001)
CENTRAL_CRS84 = [114.150, 22.276, 114.165, 22.290]  # lon/lat box around Central
M_PER_DEG_LAT, M_PER_DEG_LON = 110_770.0, 102_900.0  # at 22.3° N


@pytest.fixture(scope="module")
def features_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database holding the LandsD points, the public libraries and the 18 districts."""
    with loaded_database(("public_libraries_2013", "districts_18"),
                         definitions=[DATA / "publishing" / "landsd_reference.yml"],
                         data_dir=tmp_path_factory.mktemp("store")) as settings:
        yield settings.database_url


def provider(url: str, table: str) -> SdiFeatureProvider:
    return SdiFeatureProvider({"type": "feature", "name": "sdi.publishing.features.SdiFeatureProvider", "data": url,
                               "table": table, "id_field": "fid", "geom_field": "geom", "storage_crs": STORAGE,
                               "crs": list(CRS_LIST)})


def spec(p: SdiFeatureProvider, crs: str | None) -> Any:
    return create_crs_transform_spec({"storage_crs": STORAGE, "crs": list(CRS_LIST)}, crs)


def landsd(features: list[dict[str, Any]]) -> list[float]:
    return next(f for f in features if f["properties"]["code"] == "A")["geometry"]["coordinates"]


def close_deg(got: list[float], lat_lon: tuple[float, float]) -> None:
    assert abs(got[0] - lat_lon[0]) * M_PER_DEG_LAT < 0.01 and abs(got[1] - lat_lon[1]) * M_PER_DEG_LON < 0.01, got


# --- the provider directly -------------------------------------------------------------------------------


@pytest.mark.parametrize("crs", [None, CRS84, EPSG(4326), EPSG(2326), EPSG(3857)])
def test_landsd_point_in_every_crs_in_that_crs_axis_order(features_url: str, crs: str | None) -> None:
    p = provider(features_url, "landsd_reference")
    got = landsd(p.query(crs_transform_spec=spec(p, crs))["features"])
    lon, lat = LANDSD_LONLAT
    if crs in (None, CRS84):
        assert abs(got[0] - lon) * M_PER_DEG_LON < 0.01 and abs(got[1] - lat) * M_PER_DEG_LAT < 0.01, got
        assert len(str(got[0]).split(".")[1]) <= 7
    elif crs == EPSG(4326):
        close_deg(got, (lat, lon))
    elif crs == EPSG(2326):
        assert got == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)  # northing first
    else:
        x, y = pyproj.Transformer.from_crs(2326, 3857, always_xy=True).transform(*LANDSD_EN)
        assert got == pytest.approx([x, y], abs=0.02)


def test_get_by_id_and_unknown_id(features_url: str) -> None:
    p = provider(features_url, "landsd_reference")
    page = p.query()
    fid = next(f["id"] for f in page["features"] if f["properties"]["code"] == "A")
    one = p.get(fid, crs_transform_spec=spec(p, EPSG(2326)))
    assert one["type"] == "Feature" and one["id"] == fid
    assert one["geometry"]["coordinates"] == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)
    assert p.get(str(fid))["properties"]["code"] == "A"  # ids arrive as text from the URL
    for bad in (999999, "abc"):
        with pytest.raises(ProviderItemNotFoundError):
            p.get(bad)


def test_counts_paging_and_hits(features_url: str) -> None:
    p = provider(features_url, "public_libraries_2013")
    assert p.query(resulttype="hits") == {"type": "FeatureCollection", "features": [], "numberMatched": 260,
                                          "numberReturned": 0}
    seen: list[int] = []
    for offset in range(0, 300, 70):
        page = p.query(offset=offset, limit=70)
        assert page["numberMatched"] == 260
        assert page["numberReturned"] == len(page["features"])
        seen += [f["id"] for f in page["features"]]
    assert seen == sorted(seen) and len(set(seen)) == 260
    assert p.query(offset=1000)["features"] == []


def test_fields_sortby_properties_select_and_skip_geometry(features_url: str) -> None:
    p = provider(features_url, "public_libraries_2013")
    assert p.fields["fid"] == {"type": "integer"} and p.fields["easting"] == {"type": "number"}
    assert p.fields["name_zh"] == {"type": "string"} and "geom" not in p.fields
    names = [f["properties"]["english_name"] for f in p.query(limit=300, sortby=[
        {"property": "english_name", "order": "-"}])["features"]]
    assert names == sorted(names, reverse=True)
    district = p.query(limit=1)["features"][0]["properties"]["district"]
    page = p.query(limit=300, properties=[("district", district)], select_properties=["district", "english_name"],
                   skip_geometry=True)
    assert 0 < page["numberMatched"] == len(page["features"]) < 260
    assert all(f["geometry"] is None and set(f["properties"]) == {"district", "english_name"}
               and f["properties"]["district"] == district for f in page["features"])
    with pytest.raises(ProviderInvalidQueryError):
        p.query(properties=[("fid", "not-a-number")])
    with pytest.raises(ProviderInvalidQueryError):
        p.query(sortby=[{"property": "nope", "order": "+"}])
    assert p.query(q="central", limit=300)["numberMatched"] >= 1


def _bbox_ids(p: SdiFeatureProvider, bbox: list[float], bbox_crs: str) -> set[int]:
    storage_bbox = transform_bbox(bbox, bbox_crs, STORAGE)  # exactly what pygeoapi hands the provider
    return {f["id"] for f in p.query(bbox=storage_bbox, limit=1000)["features"]}


def test_bbox_in_crs84_and_in_hk1980_northing_first_select_the_same(features_url: str) -> None:
    p = provider(features_url, "public_libraries_2013")
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    to_grid = pyproj.Transformer.from_crs(4326, 2326, always_xy=True)
    e0, n0 = to_grid.transform(lon0, lat0)
    e1, n1 = to_grid.transform(lon1, lat1)
    in_crs84 = _bbox_ids(p, CENTRAL_CRS84, CRS84)
    assert 0 < len(in_crs84) < 260
    assert _bbox_ids(p, [n0, e0, n1, e1], EPSG(2326)) == in_crs84  # bbox-crs=EPSG:2326: northing first (OGC)
    assert _bbox_ids(p, [lat0, lon0, lat1, lon1], EPSG(4326)) == in_crs84
    points = provider(features_url, "landsd_reference").query(bbox=transform_bbox(CENTRAL_CRS84, CRS84, STORAGE))
    assert [f["properties"]["code"] for f in points["features"]] == ["B"]


def test_raw_bbox_from_the_web_layer_is_exact(features_url: str) -> None:
    """pygeoapi's two-corner transform of a wide lon/lat box misses metres at its edges; the raw box does not."""
    p = provider(features_url, "landsd_reference")
    # a wide box whose southern parallel runs 2 m south of the LandsD point: in the grid that parallel bows
    # north away from the central meridian, so the rectangle through the box's two corners starts north of it
    bbox = [113.80, LANDSD_LONLAT[1] - 2 / M_PER_DEG_LAT, 114.50, 22.60]
    two_corner = transform_bbox(bbox, CRS84, STORAGE)  # what pygeoapi hands the provider
    assert p.query(bbox=two_corner)["features"] == []  # the information pygeoapi loses
    for raw in ((tuple(bbox), CRS84), ((bbox[1], bbox[0], bbox[3], bbox[2]), EPSG(4326))):
        token = features.RAW_BBOX.set(raw)
        try:
            assert [f["properties"]["code"] for f in p.query(bbox=two_corner)["features"]] == ["A"]
        finally:
            features.RAW_BBOX.reset(token)


def _cql(text: str, filter_crs: str = CRS84) -> Any:
    return modify_pygeofilter(parse_ecql(text), filter_crs_uri=filter_crs, storage_crs_uri=STORAGE,
                              geometry_column_name="geom")


def test_cql_filters(features_url: str) -> None:
    p = provider(features_url, "landsd_reference")

    def codes(text: str, crs: str = CRS84) -> list[str]:
        return sorted(f["properties"]["code"] for f in p.query(filterq=_cql(text, crs))["features"])

    assert codes("name_zh = '中環'") == ["B"]
    assert codes("code <> 'B' AND name LIKE 'Lands%'") == ["A"]
    assert codes("code IN ('A', 'B') AND NOT code = 'A'") == ["B"]
    assert codes("fid BETWEEN 1 AND 2") == ["A", "B"]
    assert codes("name IS NULL OR name ILIKE 'central'") == ["B"]
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    poly84 = f"POLYGON(({lon0} {lat0}, {lon1} {lat0}, {lon1} {lat1}, {lon0} {lat1}, {lon0} {lat0}))"
    assert codes(f"INTERSECTS(geom, {poly84})") == ["B"]
    assert codes(f"WITHIN(geometry, {poly84})") == ["B"]
    assert codes(f"DISJOINT(geom, {poly84})") == ["A"]
    e, n = LANDSD_EN  # a 2 m square around the LandsD point, in EPSG:2326 axis order (northing easting)
    square = f"POLYGON(({n - 1} {e - 1}, {n - 1} {e + 1}, {n + 1} {e + 1}, {n + 1} {e - 1}, {n - 1} {e - 1}))"
    assert codes(f"INTERSECTS(geom, {square})", EPSG(2326)) == ["A"]
    page = p.query(filterq=_cql("code = 'A'"), resulttype="hits")
    assert page["numberMatched"] == 1
    districts = provider(features_url, "districts_18")
    hit = districts.query(filterq=_cql(f"CONTAINS(geom, POINT({LANDSD_LONLAT[0]} {LANDSD_LONLAT[1]}))"))
    assert [f["properties"]["name_en"] for f in hit["features"]] == ["YAU TSIM MONG"]
    for bad in ("nope = 1", "code = 1"):
        with pytest.raises(ProviderInvalidQueryError):
            p.query(filterq=_cql(bad))


def test_one_statement_per_page(features_url: str) -> None:
    p = provider(features_url, "public_libraries_2013")
    p.query(limit=1)  # metadata cached
    calls: list[Any] = []
    original = features.SdiFeatureProvider._run

    def counting(self: SdiFeatureProvider, statement: Any, params: dict[str, Any]) -> Any:
        calls.append(statement)
        return original(self, statement, params)

    features.SdiFeatureProvider._run = counting  # type: ignore[method-assign]
    try:
        p.query(limit=5, filterq=_cql("district = 'Central & Western'"), sortby=[{"property": "fid", "order": "-"}])
    finally:
        features.SdiFeatureProvider._run = original  # type: ignore[method-assign]
    assert len(calls) == 1


# --- through pygeoapi ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(features_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pygeoapi's Starlette app under uvicorn serving the three layers; stopped afterwards."""
    template = (DATA / "publishing" / "pygeoapi-config.yml").read_text(encoding="utf-8")
    with pygeoapi_server(lambda port: template.replace("${PORT}", str(port)), tmp_path_factory.mktemp("pygeoapi"),
                         features_url) as base:
        yield base


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
