"""`sdi.connect` and `sdi.remote.connect` return equal GeoDataFrames for the same layer and query.

Attributes, dtypes, column order, index and CRS must be identical. Geometries must match vertex by vertex
within the API's GeoJSON precision: the server rounds coordinates to 2 decimals in metres and 7 in degrees
(``sdi/publishing/features.py``), so each axis may differ by half a unit of the last digit and a vertex by
that times √2. The local read is checked against PostGIS directly too, so "equal" cannot mean "equally wrong".
"""

from __future__ import annotations

import math

import geopandas as gpd
import pandas as pd
import psycopg
import pytest
import shapely
from pandas.testing import assert_frame_equal
from psycopg import sql

from sdi.client.local import LocalClient
from sdi.client.remote import RemoteClient
from tests.client.conftest import Pair

pytestmark = pytest.mark.db

#: Largest vertex difference after the API's rounding (half a unit of the last decimal on each axis, times √2).
TOLERANCE = {2326: 0.005 * math.sqrt(2) + 1e-9, 4326: 0.5e-7 * math.sqrt(2) + 1e-12}
CENTRAL_LONLAT = (114.14, 22.27, 114.20, 22.30)  #: Central / Wan Chai / Causeway Bay
KOWLOON_GRID = (833_000.0, 817_000.0, 840_000.0, 823_000.0)  #: x/y in EPSG:2326


def assert_same_frame(local: gpd.GeoDataFrame, remote: gpd.GeoDataFrame) -> None:
    """Equal attributes, dtypes, columns, index and CRS; geometries equal within the API's precision."""
    assert list(local.columns) == list(remote.columns)
    assert local.geometry.name == remote.geometry.name == "geometry"
    assert_frame_equal(pd.DataFrame(local.drop(columns="geometry")), pd.DataFrame(remote.drop(columns="geometry")))
    assert local.crs == remote.crs
    epsg = local.crs.to_epsg()
    assert (local.geom_type == remote.geom_type).all()
    assert local.geom_equals_exact(remote, tolerance=TOLERANCE[epsg]).all()


QUERIES = [
    pytest.param("public_libraries_2013", {}, id="points-all"),
    pytest.param("public_libraries_2013", {"where": "district = 'KWUN TONG'"}, id="points-where"),
    pytest.param("public_libraries_2013", {"bbox": CENTRAL_LONLAT, "crs": "EPSG:4326"}, id="points-bbox-4326"),
    pytest.param("public_libraries_2013", {"bbox": KOWLOON_GRID, "columns": ["name_zh", "fid", "district"]},
                 id="points-bbox-2326-columns"),
    pytest.param("districts_18", {}, id="polygons-chinese"),
    pytest.param("districts_18", {"crs": 4326, "where": "name_zh LIKE '%區'", "columns": ["name_zh"]},
                 id="polygons-4326-chinese-where"),
    pytest.param("districts_18", {"bbox": KOWLOON_GRID, "where": "shape_are > 10000000"}, id="polygons-bbox-where"),
    pytest.param("industrial_special_waivers", {"where": "user_en LIKE '%Information Technology%'"}, id="dates"),
    pytest.param("buildings_with_carparks", {"bbox": KOWLOON_GRID}, id="json-columns"),
    pytest.param("traffic_hotzone_streets", {"crs": "EPSG:4326"}, id="lines-4326"),
    pytest.param("weather_stations", {"crs": "EPSG:4326"}, id="timestamps"),
    pytest.param("public_libraries_2013", {"limit": 25, "where": "fid > 100"}, id="limit"),
    pytest.param("districts_18", {"where": "INTERSECTS(geom, POINT(114.1694 22.2783))", "columns": ["name_en"]},
                 id="spatial-filter"),
    pytest.param("districts_18", {"where": "S_INTERSECTS(geom, POINT(114.1694 22.2783)) OR CASEI(name_en) = "
                                           "CASEI('Kwun Tong')", "columns": ["name_en"]}, id="cql2-text-filter"),
]


@pytest.mark.parametrize(("layer", "query"), QUERIES)
def test_local_and_remote_are_equal(pair: Pair, layer: str, query: dict[str, object]) -> None:
    local = pair.local.read(layer, **query)  # type: ignore[arg-type]
    remote = pair.remote.read(layer, **query)  # type: ignore[arg-type]
    assert len(local) > 0, "the query should select something"
    assert_same_frame(local, remote)
    assert isinstance(local.index, pd.RangeIndex)


def _stored(pair: Pair, layer: str, epsg: int) -> gpd.GeoDataFrame:
    """All features straight from PostGIS (st_transform in SQL), ordered by fid."""
    with psycopg.connect(pair.settings.database_url) as conn:
        rows = conn.execute(sql.SQL("select fid, st_asbinary(st_transform(geom, %s)) from {} order by fid").format(
            sql.Identifier("layers", layer)), (epsg,)).fetchall()
    return gpd.GeoDataFrame({"fid": [r[0] for r in rows]}, geometry=shapely.from_wkb([r[1] for r in rows]),
                            crs=f"EPSG:{epsg}")


@pytest.mark.parametrize("epsg", [2326, 4326])
def test_coordinates_come_back_in_x_y_order(pair: Pair, epsg: int) -> None:
    """EPSG:2326 is northing-first and EPSG:4326 latitude-first in the registry; frames are x/y like PostGIS."""
    stored = _stored(pair, "public_libraries_2013", epsg)
    for client in (pair.local, pair.remote):
        frame = client.read("public_libraries_2013", crs=f"EPSG:{epsg}", columns=["fid"])
        assert frame["fid"].tolist() == stored["fid"].tolist()
        assert frame.geom_equals_exact(stored, tolerance=TOLERANCE[epsg]).all()
    east, north = pair.local.read("public_libraries_2013", limit=1).geometry.iloc[0].coords[0]
    assert 800_000 < east < 870_000 and 800_000 < north < 850_000


def test_bbox_is_x_y_in_the_requested_crs(pair: Pair) -> None:
    """The same area as a lon/lat box and as a grid box selects the same features (x/y order in both)."""
    lonlat = pair.remote.read("public_libraries_2013", bbox=CENTRAL_LONLAT, crs="EPSG:4326", columns=["fid"])
    grid = pair.local.read("public_libraries_2013", bbox=(832_500, 814_500, 838_500, 818_000), columns=["fid"])
    inside = lonlat.geometry.within(shapely.box(*CENTRAL_LONLAT))
    assert len(lonlat) > 0 and inside.all()
    assert set(grid["fid"]) & set(lonlat["fid"])


def test_paging_across_many_pages(pair: Pair) -> None:
    """Small pages (keyset locally, `next` links remotely) return exactly what one big page returns."""
    whole = pair.local.read("public_libraries_2013")
    local = LocalClient(pair.settings, page_size=7).read("public_libraries_2013", progress=False)
    remote_client = RemoteClient(pair.remote.url, page_size=11)
    requests_made: list[str] = []
    remote_client._http.session.hooks["response"].append(lambda r, *a, **k: requests_made.append(r.url))
    remote = remote_client.read("public_libraries_2013", progress=False)
    assert len(whole) == 260
    assert_same_frame(whole, local)
    assert_same_frame(whole, remote)
    pages = [u for u in requests_made if "/items" in u]
    assert len(pages) == math.ceil(260 / 11)
    assert all("limit=11" in u for u in pages)


def test_limit_across_pages(pair: Pair) -> None:
    local = LocalClient(pair.settings, page_size=7).read("public_libraries_2013", limit=30)
    remote = RemoteClient(pair.remote.url, page_size=7).read("public_libraries_2013", limit=30)
    assert len(local) == 30
    assert_same_frame(local, remote)
    assert local["fid"].tolist() == sorted(pair.local.read("public_libraries_2013")["fid"])[:30]


def test_dtypes_follow_the_column_types(pair: Pair) -> None:
    frame = pair.remote.read("industrial_special_waivers", limit=5)
    assert str(frame["fid"].dtype) == "Int64"
    assert str(frame["execution_date_zh"].dtype) == "datetime64[ns]"
    assert frame["user_en"].dtype == object
    districts = pair.local.read("districts_18", columns=["shape_are", "name_zh"])
    assert list(districts.columns) == ["shape_are", "name_zh", "geometry"]
    assert districts["shape_are"].dtype == "float64"
    stations = pair.remote.read("weather_stations", columns=["last_update"])
    assert str(stations["last_update"].dtype) == "datetime64[ns]" and stations["last_update"].notna().all()


def test_empty_result_is_equal_too(pair: Pair) -> None:
    local = pair.local.read("districts_18", where="name_en = 'ATLANTIS'")
    remote = pair.remote.read("districts_18", where="name_en = 'ATLANTIS'")
    assert len(local) == len(remote) == 0
    assert list(local.columns) == list(remote.columns)
    assert dict(local.dtypes.astype(str)) == dict(remote.dtypes.astype(str))


def test_progress_bar_counts_features(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    """A read over several pages shows a bar that ends at the number of features; progress=False shows none."""
    for client in (RemoteClient(pair.remote.url, page_size=50), LocalClient(pair.settings, page_size=50)):
        client.read("public_libraries_2013", progress=True)
        err = capsys.readouterr().err
        assert "public_libraries_2013" in err and err.rstrip().endswith("features/s]")
        assert "260/260" in err.rstrip().splitlines()[-1].split("\r")[-1]
        client.read("public_libraries_2013", progress=False)
        assert capsys.readouterr().err == ""
