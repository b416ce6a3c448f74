"""Real OGC API – Features clients read the live `sdi serve` (tests/publishing/conftest.py ``live``).

OWSLib (``owslib.ogcapi.features.Features``), GDAL's OAPIF driver through pyogrio and geopandas, and schemathesis
fuzzing the collection paths of the OpenAPI document (no 5xx).
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pyogrio
import pytest
import requests
from pyproj import CRS, Transformer

from tests.publishing.conftest import OGC_LAYERS, REFERENCE, SAMPLE_LAYERS, LiveServer

CM_IN_DEGREES = 1e-7  #: ~1.1 cm of latitude
CENTRAL_CRS84 = [114.150, 22.275, 114.175, 22.300]  #: holds the reference point A and Central (B)
TIMEOUT_S = 30


def _stored_lonlat(live: LiveServer, layer: str) -> dict[str, tuple[float, float]]:
    to_lonlat = Transformer.from_crs(2326, 4326, always_xy=True)
    return {fid: to_lonlat.transform(e, n) for fid, (e, n) in live.stored_points(layer).items()}


# --- OWSLib -----------------------------------------------------------------------------------------------------

def test_owslib_collections(live: LiveServer) -> None:
    from owslib.ogcapi.features import Features

    api = Features(live.url, timeout=TIMEOUT_S)
    assert {c["id"] for c in api.collections()["collections"]} >= set(OGC_LAYERS)
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in api.conformance()["conformsTo"]
    collection = api.collection(REFERENCE)
    assert collection["id"] == REFERENCE
    assert collection["storageCrs"] == "http://www.opengis.net/def/crs/EPSG/0/2326"
    assert api.collection_queryables(REFERENCE)["properties"].keys() >= {"code", "name"}


def test_owslib_items_limit_and_bbox(live: LiveServer) -> None:
    from owslib.ogcapi.features import Features

    api = Features(live.url, timeout=TIMEOUT_S)
    page = api.collection_items("public_libraries_2013", limit=3)
    assert page["numberReturned"] == len(page["features"]) == 3
    assert page["numberMatched"] == len(live.stored_points("public_libraries_2013"))
    inside = api.collection_items(REFERENCE, bbox=CENTRAL_CRS84)
    assert sorted(f["properties"]["code"] for f in inside["features"]) == ["A", "B"]
    only_a = api.collection_items(REFERENCE, bbox=[114.165, 22.290, 114.170, 22.297])
    assert [f["properties"]["code"] for f in only_a["features"]] == ["A"]
    want = _stored_lonlat(live, REFERENCE)[str(only_a["features"][0]["id"])]
    lon, lat = only_a["features"][0]["geometry"]["coordinates"]
    assert abs(lon - want[0]) <= CM_IN_DEGREES and abs(lat - want[1]) <= CM_IN_DEGREES
    item = api.collection_item(REFERENCE, str(only_a["features"][0]["id"]))
    assert item["properties"]["code"] == "A"


# --- GDAL OAPIF through pyogrio / geopandas -----------------------------------------------------------------------

def test_gdal_lists_the_collections(live: LiveServer) -> None:
    layers = dict(pyogrio.list_layers(f"OAPIF:{live.url}"))
    assert {REFERENCE: "Point", "public_libraries_2013": "Point"}.items() <= layers.items()
    assert "districts_18" in layers


@pytest.mark.parametrize("open_options", [{}, {"CRS": "EPSG:2326"}], ids=["storage-crs-default", "crs-option"])
def test_gdal_reads_hk1980(live: LiveServer, open_options: dict[str, str]) -> None:
    """GDAL (>= 3.7) serves the advertised storageCrs by default; CRS=EPSG:2326 asks for it explicitly.

    pyogrio passes extra keyword arguments of read_dataframe as dataset open options.
    """
    frame = pyogrio.read_dataframe(f"OAPIF:{live.url}", layer=REFERENCE, **open_options)
    assert CRS.from_user_input(frame.crs).to_epsg() == 2326
    want = live.stored_points(REFERENCE)
    assert len(frame) == len(want) == 2
    for fid, geom in zip(frame["fid"], frame.geometry, strict=True):
        east, north = want[str(fid)]
        assert abs(geom.x - east) <= 0.01 and abs(geom.y - north) <= 0.01, (geom, east, north)
    a = frame[frame["code"] == "A"].geometry.iloc[0]
    assert abs(a.x - 835411.431) <= 0.01 and abs(a.y - 817266.016) <= 0.01  # the LandsD values


def test_geopandas_reads_crs84_in_lonlat_order(live: LiveServer) -> None:
    frame = gpd.read_file(f"OAPIF:{live.url}", layer=REFERENCE, engine="pyogrio", CRS="OGC:CRS84")
    assert CRS.from_user_input(frame.crs) == CRS.from_user_input("OGC:CRS84")
    want = _stored_lonlat(live, REFERENCE)
    for fid, geom in zip(frame["fid"], frame.geometry, strict=True):
        assert abs(geom.x - want[str(fid)][0]) <= CM_IN_DEGREES and abs(geom.y - want[str(fid)][1]) <= CM_IN_DEGREES
    a = frame[frame["code"] == "A"].geometry.iloc[0]
    assert abs(a.x - 114.168562005) <= CM_IN_DEGREES and abs(a.y - 22.294313001) <= CM_IN_DEGREES


def test_geopandas_reads_every_feature_across_pages(live: LiveServer) -> None:
    """GDAL follows `next` links (PAGE_SIZE=5 forces several pages): every feature once, in EPSG:2326."""
    frame = gpd.read_file(f"OAPIF:{live.url}", layer="public_libraries_2013", engine="pyogrio", PAGE_SIZE="5")
    want = live.stored_points("public_libraries_2013")
    assert len(frame) == len(want) > 5
    ids = [str(v) for v in frame[frame.columns[0]]] if "fid" not in frame else [str(v) for v in frame["fid"]]
    assert sorted(ids) == sorted(want)
    assert CRS.from_user_input(frame.crs).to_epsg() == 2326


def test_gdal_bbox_filter(live: LiveServer) -> None:
    """A spatial filter in the layer CRS (EPSG:2326, x = easting) reaches the server as a bbox."""
    to_grid = Transformer.from_crs(4326, 2326, always_xy=True)
    e0, n0 = to_grid.transform(114.165, 22.290)
    e1, n1 = to_grid.transform(114.170, 22.297)
    frame = pyogrio.read_dataframe(f"OAPIF:{live.url}", layer=REFERENCE, bbox=(e0, n0, e1, n1))
    assert list(frame["code"]) == ["A"]


# --- schemathesis -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_no_server_errors(live: LiveServer, mode: str) -> None:
    """Generated GET requests to /collections/{id}, its items and items/{featureId}: never a 5xx (bounded: 10
    examples per operation and mode, derandomized so that a run is repeatable; the empty `sortby` that pygeoapi
    answers with a 500 is test_ogcapi_features.py::test_empty_sortby_is_400)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.generation import GenerationMode

    raw = requests.get(f"{live.url}/openapi", params={"f": "json"}, timeout=TIMEOUT_S).json()
    layers = "|".join((REFERENCE, *SAMPLE_LAYERS))
    schema = schemathesis.openapi.from_dict(raw).include(
        method="GET", path_regex=rf"^/collections/({layers})(/items(/\{{featureId\}})?)?$")
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    errors: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3 * len(OGC_LAYERS)
    for operation in operations:

        @settings(max_examples=10, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=generation))
        def call(case: Any) -> None:
            nonlocal calls
            response = case.call(base_url=live.url, timeout=TIMEOUT_S)
            calls += 1
            if response.status_code >= 500:
                errors.append(f"{response.status_code} {response.request.url}: {response.text[:200]}")

        call()
    assert calls >= len(operations)
    assert not errors, "\n".join(errors[:10])
