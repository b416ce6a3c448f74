"""OGC API – Features clients meet a server that also publishes a raster, and client errors stay out of the log.

A live `sdi serve` (its own database: two vector layers and the synthetic mudflat raster) is read by GDAL's OAPIF
driver as pyogrio bundles it (3.12) and as Debian's `ogrinfo` (gdal-bin, 3.6) ships it, and by OWSLib. The raster
is a coverage collection: listed in /collections without an ``items`` link or ``itemType`` and marked so that GDAL
leaves it out of its feature layers; asking it for items answers a 404 JSON document that names its coverage. The
server log is read at the end: no traceback, and no ERROR line, for any client error.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.live_server import Live, live_layers

RASTER = "synthetic_mudflat_elevation"
VECTORS = ("districts_18", "public_libraries_2013")
TIMEOUT_S = 60
COVERAGE_REL = "http://www.opengis.net/def/rel/ogc/1.0/coverage"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`sdi serve` over a fresh database with :data:`VECTORS` and the raster :data:`RASTER` loaded."""
    with live_layers(tmp_path_factory.mktemp("oapif"), (*VECTORS, RASTER)) as live:
        yield live


def _json(url: str, **params: str) -> Any:
    response = requests.get(url, params=params, timeout=TIMEOUT_S)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response.json()


def _collections(served: Live) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in _json(f"{served.url}/collections", f="json")["collections"]}


def _rels(doc: dict[str, Any]) -> set[str]:
    return {str(link["rel"]) for link in doc["links"]}


# --- the /collections listing ---------------------------------------------------------------------------------------

def test_raster_is_listed_as_a_coverage_collection(served: Live) -> None:
    """OGC API – Common: a coverage has no ``items`` link and no feature ``itemType``; its data link is rel
    .../coverage. ``dataType`` (Common Part 2, Tiles) and GDAL's ``layerDataType`` say it is a coverage."""
    found = _collections(served)
    single = _json(f"{served.url}/collections/{RASTER}", f="json")
    for raster in (found[RASTER], single):
        assert "items" not in _rels(raster)
        assert raster.get("itemType") is None
        assert raster["dataType"] == "coverage" and raster["layerDataType"] == "Coverage"
        assert COVERAGE_REL in _rels(raster)
    for layer in VECTORS:
        assert found[layer]["itemType"] == "feature" and "items" in _rels(found[layer])
        assert "dataType" not in found[layer]


def test_every_link_of_the_raster_answers(served: Live) -> None:
    """No dead link on the raster's description: its schema (the band) is pygeoapi's, its coverage is there."""
    raster = _json(f"{served.url}/collections/{RASTER}", f="json")
    for link in raster["links"]:
        if link["href"].startswith(served.url) and link.get("type") in ("application/json", "application/schema+json",
                                                                        "application/prs.coverage+json"):
            response = requests.get(link["href"], timeout=TIMEOUT_S)
            assert response.status_code == 200, (link, response.status_code, response.text[:200])
    schema = _json(f"{served.url}/collections/{RASTER}/schema", f="json")
    assert schema["properties"] and "geometry" not in schema["properties"]


@pytest.mark.parametrize("path", ["items", "items?limit=10", "items/1", "queryables", "tiles"])
def test_raster_feature_paths_answer_a_clean_404(served: Live, path: str) -> None:
    response = requests.get(f"{served.url}/collections/{RASTER}/{path}", timeout=TIMEOUT_S,
                            headers={"Accept": "application/geo+json, application/json"})
    assert response.status_code == 404, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["code"] == "NotFound"
    assert f"/collections/{RASTER}/coverage" in doc["description"] and "raster" in doc["description"]


# --- real clients ---------------------------------------------------------------------------------------------------

def test_pyogrio_gdal_lists_only_feature_collections(served: Live) -> None:
    """pyogrio's GDAL (in a child process, so that every message it prints is seen): no error, no raster."""
    script = ("import json, sys, pyogrio\n"
              "url = 'OAPIF:' + sys.argv[1]\n"
              "layers = {name: kind for name, kind in pyogrio.list_layers(url)}\n"
              "counts = {name: pyogrio.read_info(url, layer=name, force_feature_count=True)['features']"
              " for name in layers}\n"
              "print(json.dumps({'gdal': pyogrio.__gdal_version_string__, 'layers': layers, 'counts': counts}))\n")
    run = subprocess.run([sys.executable, "-c", script, served.url], capture_output=True, text=True,
                         timeout=TIMEOUT_S * 2, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "error" not in run.stderr.lower(), run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert RASTER not in result["layers"]
    assert {"districts_18": "MultiPolygon", "public_libraries_2013": "Point"}.items() <= result["layers"].items()
    assert result["counts"]["districts_18"] == 18 and result["counts"]["public_libraries_2013"] > 200


def _ogrinfo() -> str:
    path = shutil.which("ogrinfo")
    if path is None:
        pytest.skip("ogrinfo (Debian's gdal-bin) is not installed; scripts/setup.sh installs it as root")
    return path


@pytest.mark.parametrize("args", [["-so"], ["-so", "-al"]], ids=["layers", "every-layer-summary"])
def test_ogrinfo_prints_no_error(served: Live, args: list[str]) -> None:
    """Debian's ogrinfo (GDAL 3.6): the layer list, and each layer's summary (count, extent, fields)."""
    run = subprocess.run([_ogrinfo(), *args, f"OAPIF:{served.url}"], capture_output=True, text=True,
                         timeout=TIMEOUT_S * 2, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-2000:]
    assert "ERROR" not in out and "HTTP error" not in out, out[-2000:]
    assert RASTER not in out
    for layer in VECTORS:
        assert layer in out


def test_owslib_tells_features_from_coverages(served: Live) -> None:
    from owslib.ogcapi.coverages import Coverages
    from owslib.ogcapi.features import Features

    features = Features(served.url, timeout=TIMEOUT_S).feature_collections()
    assert set(VECTORS) <= set(features) and RASTER not in features
    assert Coverages(served.url, timeout=TIMEOUT_S).coverages() == [RASTER]


@pytest.mark.parametrize("asked", ["GTiff", "gtiff"])
def test_coverage_as_geotiff(served: Live, asked: str, tmp_path: Path) -> None:
    """The GeoTIFF link the pages and the README give (``f=GTiff``) answers a raster rasterio reads, in any case."""
    import rasterio

    response = requests.get(f"{served.url}/collections/{RASTER}/coverage", params={"f": asked}, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text[:300]
    (tmp_path / "c.tif").write_bytes(response.content)
    with rasterio.open(tmp_path / "c.tif") as tif:
        assert tif.driver == "GTiff" and tif.crs is not None and tif.width > 1 and tif.height > 1


# --- client errors leave no traceback -----------------------------------------------------------------------------

CLIENT_ERRORS = {  # path -> the status it must answer
    "collections/districts_18/items?bbox=114,22": 400,
    "collections/districts_18/items?bbox=a,b,c,d": 400,
    "collections/districts_18/items?filter=name_en%20LIKE": 400,
    "collections/districts_18/items?filter=nope%3D1": 400,
    "collections/districts_18/items?datetime=2020-13-45": 400,
    "collections/districts_18/items?f=bogus": 400,
    "collections/no_such_layer/items": 404,
    "collections/no_such_layer": 404,
    f"collections/{RASTER}/items": 404,
    f"collections/{RASTER}/items/1": 404,
    f"collections/{RASTER}/coverage?subset=nope(1:2)": 400,
    f"collections/{RASTER}/coverage?properties=nope": 400,
    f"collections/{RASTER}/coverage?f=bogus": 400,
    "collections/catalogue/items?filter=a%3D": 400,
    "collections/catalogue/items?f=bogus": 400,
    "collections/catalogue/items/no_such_record": 404,
    "processes/no_such_process": 404,
    "?f=xml": 400,
}


def test_client_errors_leave_no_traceback_or_error_in_the_log(served: Live) -> None:
    """Each client error answers its 4xx as JSON; the server log then holds no traceback and no ERROR line (a
    client's mistake is not the server's error; pygeoapi's own ERROR lines for them are dropped)."""
    for path, status in CLIENT_ERRORS.items():
        response = requests.get(f"{served.url}/{path}", timeout=TIMEOUT_S, headers={"Accept": "application/json"})
        assert response.status_code == status, (path, response.status_code, response.text[:200])
        assert response.json()["description"], path
    log = served.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log and "ERROR:" not in log, log[-3000:]


def test_a_client_error_leaves_one_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    from sdi.web.bridge import note_client_error

    with caplog.at_level(logging.DEBUG, logger="sdi.web"):
        note_client_error(400, "/collections/x/items", {"code": "InvalidParameterValue",
                                                        "description": "Invalid provider type"})
    lines = [r for r in caplog.records if r.name == "sdi.web"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert "400" in lines[0].getMessage() and "Invalid provider type" in lines[0].getMessage()


def test_held_pygeoapi_records_are_written_for_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """The filter holds pygeoapi's records during a call; they are written when the answer is a 5xx."""
    from sdi.web.bridge import HELD_LOGS, _release, hold

    record = logging.LogRecord("pygeoapi.api", logging.ERROR, __file__, 1, "provider failed", None, None)
    held: list[logging.LogRecord] = []
    token = HELD_LOGS.set(held)
    try:
        assert hold(record) and hold(record) and held == [record]  # two handlers' filters: held once
        assert not hold(logging.LogRecord("sdi.web", logging.ERROR, __file__, 1, "x", None, None))
    finally:
        HELD_LOGS.reset(token)
    assert not hold(record)
    with caplog.at_level(logging.ERROR, logger="pygeoapi.api"):
        _release(held)
    assert [r.getMessage() for r in caplog.records] == ["provider failed"]
