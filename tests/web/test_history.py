"""A layer's load history and what its loads changed, from a live `sdi serve`: ``/collections/{id}/history`` and
``/collections/{id}/changes`` (ids, paging, earlier loads), their ETags across a reload, and 404s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import requests
import shapely
import yaml

from loaders import load
from loaders.report import LoadReport
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, fresh_database
from tests.live_server import sdi_server

pytestmark = pytest.mark.db
KEYED, NUMBERED, UNKEYED = "history_keyed", "history_numbered", "history_unkeyed"
RASTER = "synthetic_dem"


@dataclass
class Live:
    url: str
    settings: Settings
    folder: Path
    loads: dict[str, list[int]]


def _features(n: int = 10, drop: tuple[int, ...] = (), move: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [{"code": f"A{i:02d}", "num": i, "name": f"name {i}",
             "geometry": shapely.box(835000 + 100 * i + (5 if i in move else 0), 817000,
                                     835050 + 100 * i + (5 if i in move else 0), 817050)}
            for i in range(n) if i not in drop]


def load_version(live_folder: Path, settings: Settings, layer_id: str, features: list[dict[str, Any]],
                 key: str | None) -> LoadReport:
    """Write ``features`` as a new source version of ``layer_id`` and load it."""
    path = live_folder / f"{layer_id}_{time.monotonic_ns()}.gpkg"
    gpd.GeoDataFrame([{k: v for k, v in f.items() if k != "geometry"} for f in features],
                     geometry=[f["geometry"] for f in features], crs=2326).to_file(path, driver="GPKG")
    doc = {"id": layer_id, "title": {"en": f"History test {layer_id}", "zh": "歷史測試"},
           "abstract": {"en": "Loaded twice by a test."}, "custodian": "Test Department", "licence": "test data",
           "source": {"path": str(path)}, **({"primary_key": key} if key else {})}
    definition = live_folder / f"{layer_id}.yml"
    definition.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load(read_definition(definition), settings)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Three layers each loaded twice (the second version drops A03 and A07 and moves A05) and a raster, served
    live."""
    folder = tmp_path_factory.mktemp("history_layers")
    with fresh_database() as url:
        settings = Settings(database_url=url, data_dir=tmp_path_factory.mktemp("history_store"))
        loads: dict[str, list[int]] = {}
        for layer_id, key in ((KEYED, "code"), (NUMBERED, "num"), (UNKEYED, None)):
            for features in (_features(), _features(drop=(3, 7), move=(5,))):
                report = load_version(folder, settings, layer_id, features, key)
                assert report.load_id is not None
                loads.setdefault(layer_id, []).append(report.load_id)
        raster = load(read_definition(LAYERS / f"{RASTER}.yml"), settings)
        assert raster.load_id is not None
        loads[RASTER] = [raster.load_id]
        with sdi_server(settings, tmp_path_factory.mktemp("history_serve"), workers=1,
                        extra_env={"SDI_REFRESH_S": "0.5"}) as base:
            yield Live(base, settings, folder, loads)


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)


def test_the_collection_links_to_its_history_and_changes(live: Live) -> None:
    doc = get(f"{live.url}/collections/{KEYED}?f=json").json()
    links = {link["rel"]: link["href"] for link in doc["links"] if link["rel"] in ("version-history", "related")}
    assert links == {"version-history": f"{live.url}/collections/{KEYED}/history?f=json",
                     "related": f"{live.url}/collections/{KEYED}/changes?f=json"}


def test_history_lists_the_loads_newest_first(live: Live) -> None:
    response = get(f"{live.url}/collections/{KEYED}/history")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    first, second = live.loads[KEYED]
    assert [entry["load_id"] for entry in doc["loads"]] == [second, first]
    assert doc["numberMatched"] == 2 and doc["current_load_id"] == second
    latest, earliest = doc["loads"]
    assert latest["status"] == "loaded" and latest["current"] and not earliest["current"]
    assert {k: latest["changes"][k] for k in ("added", "removed", "changed", "changed_geometry",
                                              "changed_attributes", "unchanged")} == {
        "added": 0, "removed": 2, "changed": 1, "changed_geometry": 1, "changed_attributes": 0, "unchanged": 7}
    assert latest["features_written"] == 8 and latest["reason"] is None and earliest["changes"] is None
    assert latest["links"][0]["href"] == f"{live.url}/collections/{KEYED}/changes?load={second}"
    assert latest["finished_at"].endswith("Z")
    page = get(f"{live.url}/collections/{KEYED}/history?limit=1&offset=1").json()
    assert [entry["load_id"] for entry in page["loads"]] == [first]
    assert {link["rel"] for link in page["links"]} >= {"prev"} and "next" not in {link["rel"] for link in page["links"]}


def test_the_collection_page_links_to_its_history_page(live: Live) -> None:
    page = get(f"{live.url}/collections/{KEYED}?f=html").text
    assert f'href="{live.url}/collections/{KEYED}/history?f=html"' in page


def test_history_as_html(live: Live) -> None:
    response = get(f"{live.url}/collections/{KEYED}/history?f=html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    text = response.text
    assert "History test history_keyed" in text and f"changes?load={live.loads[KEYED][1]}" in text
    assert "(geometry 1, attributes 0)" in text and "live</span>" in text


def test_changes_of_the_latest_load(live: Live) -> None:
    doc = get(f"{live.url}/collections/{KEYED}/changes").json()
    first, second = live.loads[KEYED]
    assert doc["load_id"] == second and doc["previous_load_id"] == first and doc["current"]
    assert doc["ids"] == "recorded"
    assert doc["feature_ids"] == {"added": [], "removed": ["A03", "A07"], "changed": ["A05"]}
    assert doc["changes"]["removed"] == 2 and doc["changes"]["unchanged"] == 7
    numbered = get(f"{live.url}/collections/{NUMBERED}/changes").json()
    assert numbered["feature_ids"] == {"added": [], "removed": [3, 7], "changed": [5]}  # integer keys stay numbers


def test_changes_are_paged(live: Live) -> None:
    doc = get(f"{live.url}/collections/{KEYED}/changes?limit=1").json()
    assert doc["feature_ids"] == {"added": [], "removed": ["A03"], "changed": ["A05"]}
    (following,) = [link["href"] for link in doc["links"] if link["rel"] == "next"]
    rest = get(following).json()
    assert rest["feature_ids"] == {"added": [], "removed": ["A07"], "changed": []}
    assert "next" not in {link["rel"] for link in rest["links"]}


def test_changes_of_an_earlier_load_and_of_an_unkeyed_layer(live: Live) -> None:
    first = live.loads[KEYED][0]
    doc = get(f"{live.url}/collections/{KEYED}/changes?load={first}").json()
    assert doc["load_id"] == first and not doc["current"]
    assert doc["changes"] is None and doc["feature_ids"] is None and "read the whole collection" in doc["description"]
    unkeyed = get(f"{live.url}/collections/{UNKEYED}/changes").json()
    assert unkeyed["ids"] == "unkeyed" and unkeyed["feature_ids"] is None
    assert {k: unkeyed["changes"][k] for k in ("added", "removed", "changed", "unchanged")} == {
        "added": 1, "removed": 3, "changed": None, "unchanged": 7}


def test_a_rasters_history_has_no_changes(live: Live) -> None:
    history = get(f"{live.url}/collections/{RASTER}/history").json()
    assert [(entry["load_id"], entry["changes"]) for entry in history["loads"]] == [(live.loads[RASTER][0], None)]
    assert history["loads"][0]["current"]
    changes = get(f"{live.url}/collections/{RASTER}/changes").json()
    assert changes["load_id"] == live.loads[RASTER][0] and changes["feature_ids"] is None


def test_unknown_layers_loads_and_parameters(live: Live) -> None:
    for path in ("/collections/no_such_layer/history", "/collections/no_such_layer/changes",
                 "/collections/catalogue/history", f"/collections/{KEYED}/changes?load={live.loads[NUMBERED][0]}",
                 f"/collections/{KEYED}/changes?load=999999"):
        response = get(live.url + path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "NotFound"
    for path in (f"/collections/{KEYED}/history?limt=5", f"/collections/{KEYED}/changes?load=x",
                 f"/collections/{KEYED}/changes?limit=0", f"/collections/{KEYED}/changes?f=html"):
        assert get(live.url + path).status_code == 400, path


def test_a_reload_changes_the_etags(live: Live) -> None:
    urls = [f"{live.url}/collections/{KEYED}/history", f"{live.url}/collections/{KEYED}/changes"]
    tags = [get(url).headers["ETag"] for url in urls]
    for url, tag in zip(urls, tags, strict=True):
        assert get(url, headers={"If-None-Match": tag}).status_code == 304
    features = [*_features(drop=(3, 7), move=(5,)),
                {"code": "A10", "num": 10, "name": "new", "geometry": shapely.box(836500, 817000, 836550, 817050)}]
    report = load_version(live.folder, live.settings, KEYED, features, "code")
    deadline = time.monotonic() + 10
    while get(urls[1]).json()["load_id"] != report.load_id:  # the worker sees the reload within SDI_REFRESH_S
        assert time.monotonic() < deadline, "the reload was not served"
        time.sleep(0.2)
    for url, tag in zip(urls, tags, strict=True):
        response = get(url, headers={"If-None-Match": tag})
        assert response.status_code == 200 and response.headers["ETag"] != tag
    doc = get(urls[1]).json()
    assert doc["feature_ids"] == {"added": ["A10"], "removed": [], "changed": []}
    assert doc["previous_load_id"] == live.loads[KEYED][1]
    history = get(urls[0]).json()
    assert history["numberMatched"] == 3 and history["loads"][0]["load_id"] == report.load_id
