"""OGC API – Processes `data-centre-site-selection` through a live `sdi serve` (real HTTP, jobs in PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import requests
from pygeoapi.process.base import ProcessorExecuteError
from pygeoapi.util import JobStatus, RequestedProcessExecutionMode

from sdi.db import connect
from sdi.planning import site_selection
from sdi.publishing.jobs import SdiJobManager
from sdi.publishing.process import PROCESS_ID, PROCESSOR
from sdi.settings import Settings
from tests.live_server import free_port, sdi_server, wait_for_job
from tests.planning.sites_db import planning_database

pytestmark = pytest.mark.db
INPUTS: dict[str, Any] = {"weights": {"substation": 4, "area": 1}, "limit": 8}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """The planning layers in a fresh database, published and served by `sdi serve`."""
    with planning_database(tmp_path_factory.mktemp("process_store")) as settings, \
            sdi_server(settings, tmp_path_factory.mktemp("process_serve")) as base:
        yield base, settings


@pytest.fixture(scope="module")
def sync_result(live: tuple[str, Settings]) -> dict[str, Any]:
    base, _ = live
    response = requests.post(f"{base}/processes/{PROCESS_ID}/execution", json={"inputs": INPUTS}, timeout=300)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def _execute(base: str, inputs: Any) -> requests.Response:
    return requests.post(f"{base}/processes/{PROCESS_ID}/execution", json={"inputs": inputs}, timeout=300)


def _ranking(collection: dict[str, Any]) -> list[tuple[int, str, float]]:
    return [(int(f["properties"]["rank"]), str(f["properties"]["site"]), round(float(f["properties"]["score"]), 6))
            for f in collection["features"]]


def test_process_is_listed_and_described(live: tuple[str, Settings]) -> None:
    base, _ = live
    listed = requests.get(f"{base}/processes", params={"f": "json"}, timeout=30).json()
    assert PROCESS_ID in [p["id"] for p in listed["processes"]]
    doc = requests.get(f"{base}/processes/{PROCESS_ID}", params={"f": "json"}, timeout=30).json()
    assert set(doc["inputs"]) == {"district", "weights", "min_area_m2", "criteria", "limit", "engine"}
    assert all(i["minOccurs"] == 0 for i in doc["inputs"].values())
    assert doc["inputs"]["engine"]["schema"]["enum"] == ["postgis", "geopandas", "dask"]
    assert set(doc["outputs"]) == {"sites"}
    assert "async-execute" in doc["jobControlOptions"] and "sync-execute" in doc["jobControlOptions"]
    zh = requests.get(f"{base}/processes/{PROCESS_ID}", params={"f": "json", "lang": "zh-HK"}, timeout=30).json()
    assert zh["title"] == "數據中心選址" and doc["title"] == "Data-centre site selection"
    assert "synthetic" in doc["description"]


def test_sync_execution_equals_the_library(live: tuple[str, Settings], sync_result: dict[str, Any]) -> None:
    _, settings = live
    expected = site_selection(settings=settings, weights=INPUTS["weights"], limit=INPUTS["limit"])
    assert sync_result["type"] == "FeatureCollection"
    got = _ranking(sync_result)
    assert got == [(int(r), str(s), round(float(v), 6)) for r, s, v in
                   zip(expected["rank"], expected["site"], expected["score"], strict=True)]
    assert len(got) == INPUTS["limit"]
    with connect(settings) as conn:
        synthetic = [r[0] for r in conn.execute("select id from sdi.layer where synthetic order by id").fetchall()]
    assert sync_result["synthetic_layers"] == [i for i in synthetic if i in expected.attrs["layers"]]
    assert "synthetic_lots" in sync_result["synthetic_layers"]
    props = sync_result["features"][0]["properties"]
    assert {c for c in expected.columns if c.startswith("why_")} <= set(props)
    frame = gpd.GeoDataFrame.from_features(sync_result["features"], crs=4326)
    box = frame.geometry.bounds
    assert box.minx.ge(113.8).all() and box.maxx.le(114.5).all()  # longitude first (RFC 7946)
    moved = frame.to_crs(2326).geometry.centroid.distance(expected.geometry.centroid.reset_index(drop=True))
    assert moved.max() < 0.01


def test_async_job_is_stored_and_gives_the_sync_result(live: tuple[str, Settings],
                                                       sync_result: dict[str, Any]) -> None:
    base, settings = live
    response = requests.post(f"{base}/processes/{PROCESS_ID}/execution", json={"inputs": INPUTS},
                             headers={"Prefer": "respond-async"}, timeout=60)
    assert response.status_code == 201, response.text
    location = response.headers["Location"]
    job_id = location.rstrip("/").rsplit("/", 1)[1]
    assert location == f"{base}/jobs/{job_id}"
    status = wait_for_job(location)
    assert status["status"] == "successful", status
    results = requests.get(f"{location}/results", params={"f": "json"}, timeout=30)
    assert results.status_code == 200, results.text
    assert results.json() == sync_result
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("select process_id, status, progress, location from sdi.jobs where identifier = %s",
                           (job_id,)).fetchone()
    assert row is not None and row[:3] == (PROCESS_ID, "successful", 100)
    result_file = Path(row[3])
    assert result_file.is_file() and result_file.is_relative_to(settings.data_dir.resolve() / "jobs")

    assert str(uuid.UUID(job_id)) == job_id and uuid.UUID(job_id).version == 4  # random, not time-based
    listed = requests.get(f"{base}/jobs", params={"f": "json"}, timeout=30).json()
    assert listed["jobs"] == []  # an anonymous caller sees no job list: the id is the capability
    dismissed = requests.delete(location, timeout=30)
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["status"] == "dismissed"
    assert requests.get(location, params={"f": "json"}, timeout=30).status_code == 404
    assert not result_file.exists()
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select count(*) from sdi.jobs where identifier = %s", (job_id,)).fetchone() == (0,)


def test_min_area_overrides_the_constraint(live: tuple[str, Settings], sync_result: dict[str, Any]) -> None:
    base, _ = live
    areas = [f["properties"]["area_m2"] for f in sync_result["features"]]
    threshold = float(np.median(areas))
    response = _execute(base, {**INPUTS, "min_area_m2": threshold})
    assert response.status_code == 200, response.text
    got = response.json()["features"]
    assert got and all(f["properties"]["area_m2"] >= threshold for f in got)
    kept = [f["properties"]["site"] for f in sync_result["features"] if f["properties"]["area_m2"] >= threshold]
    assert [f["properties"]["site"] for f in got][: len(kept)] == kept  # same order, small lots removed


def test_engine_input_is_passed_on(live: tuple[str, Settings]) -> None:
    base, settings = live
    response = _execute(base, {"engine": "geopandas", "limit": 4, "district": "kwun tong"})
    assert response.status_code == 200, response.text
    expected = site_selection(settings=settings, engine="geopandas", limit=4, district="kwun tong")
    assert [f["properties"]["site"] for f in response.json()["features"]] == expected["site"].tolist()
    assert {f["properties"]["district"] for f in response.json()["features"]} <= {"KWUN TONG"}


BAD = [
    ({"weights": {"substation": "abc"}}, "weights.substation"),
    ({"weights": {"no_such_score": 1}}, "no_such_score"),
    ({"limt": 5}, "'limt'"),
    ({"limit": 0}, "limit"),
    ({"min_area_m2": "big"}, "min_area_m2"),
    ({"engine": "spark"}, "spark"),
    ({"criteria": {"id": "x"}}, "criteria"),
    ({"district": "Atlantis"}, "Atlantis"),
]


@pytest.mark.parametrize(("inputs", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_400_with_the_message(live: tuple[str, Settings], inputs: dict[str, Any], message: str) -> None:
    base, settings = live
    with psycopg.connect(settings.database_url) as conn:
        jobs_before = conn.execute("select count(*) from sdi.jobs").fetchone()
    for headers in ({}, {"Prefer": "respond-async"}):  # checked before any job starts, asynchronous or not
        response = requests.post(f"{base}/processes/{PROCESS_ID}/execution", json={"inputs": inputs},
                                 headers=headers, timeout=300)
        assert response.status_code == 400, response.text
        doc = response.json()
        assert doc["code"] == "InvalidParameterValue"
        assert message in doc["description"] and "\n" not in doc["description"], doc
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select count(*) from sdi.jobs").fetchone() == jobs_before  # no job was made


def test_server_side_failure_keeps_its_status(settings: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A synchronous execution failing on the server's side (database down) is a 503, not pygeoapi's 400."""
    manager = SdiJobManager({"name": "test", "connection": settings.database_url, "output_dir": str(tmp_path),
                             "processes": {PROCESS_ID: {"type": "process", "processor": {"name": PROCESSOR}}}})
    monkeypatch.setenv("SDI_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/sdi")
    with pytest.raises(ProcessorExecuteError) as caught:
        manager.execute_process(PROCESS_ID, {"limit": 1})
    assert caught.value.http_status_code == 503 and "unreachable" in caught.value.message
    # in the background the failure is only recorded (nothing raised in the job's thread)
    job_id, _, _, status, _ = manager.execute_process(PROCESS_ID, {"limit": 1},
                                                       execution_mode=RequestedProcessExecutionMode.respond_async)
    assert status == JobStatus.accepted
    deadline = time.monotonic() + 30
    while manager.get_job(job_id)["status"] in ("accepted", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("select process_id, status, message from sdi.jobs order by created").fetchall()
    assert [r[:2] for r in rows] == [(PROCESS_ID, "failed")] * 2
    assert "unreachable" in rows[1][2]


def test_reader_roles_may_write_jobs_and_the_audit_log_and_nothing_else(settings: Settings,
                                                                        db: psycopg.Connection) -> None:
    writable = db.execute(
        "select table_schema || '.' || table_name, privilege_type from information_schema.role_table_grants"
        " where grantee = %s and privilege_type <> 'SELECT' order by 1, 2", (settings.reader_role,)).fetchall()
    assert writable == [("sdi.access_log", "INSERT"), ("sdi.jobs", "DELETE"), ("sdi.jobs", "INSERT"),
                        ("sdi.jobs", "UPDATE")]
    public = db.execute(  # the role every request's identity acts through (sdi.access.roles)
        "select table_schema || '.' || table_name, privilege_type from information_schema.role_table_grants"
        " where grantee = 'sdi_anon' and privilege_type <> 'SELECT' order by 1, 2").fetchall()
    assert public == [("sdi.jobs", "DELETE"), ("sdi.jobs", "INSERT"), ("sdi.jobs", "UPDATE")]
