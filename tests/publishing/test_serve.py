"""`sdi serve` (2 workers): the read-only role, SDI's parameter rules, metadata exports, clean start-up errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml

from sdi.layerdef import read_definition
from sdi.publishing.app import APPLICATION_NAME, reader_url
from sdi.settings import Settings
from tests.conftest import LAYERS, ROOT, loaded_database
from tests.live_server import free_port, sdi_server

LAYER_IDS = ("districts_18", "landslide_incidents", "weather_stations")
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data_dir = tmp_path_factory.mktemp("store")
    with loaded_database(LAYER_IDS, data_dir=data_dir) as settings:
        yield settings


@pytest.fixture(scope="module")
def server(store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` on a free port with 2 workers; always stopped afterwards."""
    with sdi_server(store, tmp_path_factory.mktemp("serve")) as base:
        yield base


def get(url: str, **params: Any) -> requests.Response:
    return requests.get(url, params={"f": "json", **params}, timeout=30)


def test_landing_page_and_conformance(server: str) -> None:
    landing = get(f"{server}/")
    assert landing.status_code == 200, landing.text
    assert any(link["rel"] == "conformance" for link in landing.json()["links"])
    conformance = get(f"{server}/conformance")
    assert conformance.status_code == 200
    assert conformance.json()["conformsTo"]


def test_collections_list_layers_and_catalogue(server: str) -> None:
    response = get(f"{server}/collections")
    assert response.status_code == 200, response.text
    ids = {c["id"] for c in response.json()["collections"]}
    assert {*LAYER_IDS, "catalogue"} <= ids
    chinese = get(f"{server}/collections/districts_18", lang="zh-HK")
    assert chinese.status_code == 200
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese.json()["title"])


def test_catalogue_search(server: str) -> None:
    response = get(f"{server}/collections/catalogue/items", q="landslide")
    assert response.status_code == 200, response.text
    assert "landslide_incidents" in [f["id"] for f in response.json()["features"]]
    filtered = get(f"{server}/collections/catalogue/items", kind="vector", limit=50)  # a queryable: allowed
    assert filtered.status_code == 200, filtered.text
    assert filtered.json()["numberMatched"] == len(LAYER_IDS)


@pytest.mark.parametrize(("path", "param"), [
    ("/collections", "foo"),
    ("/", "bar"),
    ("/collections/catalogue/items", "limt"),
    ("/collections/districts_18/items", "not_a_column"),
    ("/collections/districts_18", "limit"),
])
def test_unknown_query_parameter_is_400_naming_it(server: str, path: str, param: str) -> None:
    response = get(f"{server}{path}", **{param: "1"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "InvalidParameterValue"
    assert repr(param) in body["description"]


def test_metadata_documents(server: str) -> None:
    xml = requests.get(f"{server}/metadata/districts_18.xml", timeout=30)
    assert xml.status_code == 200, xml.text
    assert "xml" in xml.headers["content-type"]
    root = ET.fromstring(xml.content)
    assert root.tag.endswith("MD_Metadata")
    assert read_definition(LAYERS / "districts_18.yml").title.en in xml.text
    jsonld = requests.get(f"{server}/metadata/districts_18.jsonld", timeout=30)
    assert jsonld.status_code == 200
    assert jsonld.headers["content-type"].startswith("application/ld+json")
    assert jsonld.json()["@id"]
    mcf = requests.get(f"{server}/metadata/districts_18.yml", timeout=30)  # the records link it too
    assert mcf.status_code == 200 and mcf.headers["content-type"].startswith("application/x-yaml")
    assert yaml.safe_load(mcf.text)["metadata"]["identifier"] == "districts_18"
    for missing in ("/metadata/no_such_layer.xml", "/metadata/no_such_layer.yml", "/metadata/districts_18.txt"):
        response = requests.get(f"{server}{missing}", timeout=30)
        assert response.status_code == 404, missing
        assert response.json()["code"] == "NotFound"
    assert requests.get(f"{server}/metadata/districts_18.xml?f=json", timeout=30).status_code == 400


def test_server_connects_as_the_reader_role(server: str, store: Settings) -> None:
    """Hold a lock on sdi.layer so the server's query waits, and look at who is waiting."""
    result: dict[str, Any] = {}

    def request() -> None:
        result["response"] = get(f"{server}/collections/catalogue/items", q="landslide")

    with psycopg.connect(store.database_url) as admin:
        admin.execute("lock table sdi.layer in access exclusive mode")
        worker = threading.Thread(target=request, daemon=True)
        worker.start()
        users: list[tuple[str, str]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not users:
            with psycopg.connect(store.database_url, autocommit=True) as probe:
                users = probe.execute(
                    "select usename, application_name from pg_stat_activity where datname = current_database()"
                    " and backend_type = 'client backend' and pid <> pg_backend_pid() and wait_event_type = 'Lock'"
                ).fetchall()
            time.sleep(0.2)
        admin.rollback()
    worker.join(timeout=30)
    assert users, "the server never queried sdi.layer"
    assert {u for u, _ in users} == {store.reader_role}
    assert {a for _, a in users} == {APPLICATION_NAME}
    assert result["response"].status_code == 200


def test_reader_url() -> None:
    url = reader_url("postgresql:///sdi_x", "sdi_reader", "p@ss/word")
    assert url == "postgresql://sdi_reader:p%40ss%2Fword@127.0.0.1/sdi_x?application_name=hk-sdi-api"
    tcp = reader_url("postgresql://me:secret@db.example:6543/sdi?sslmode=require", "ro", None)
    assert tcp == "postgresql://ro@db.example:6543/sdi?application_name=hk-sdi-api&sslmode=require"
    assert psycopg.conninfo.conninfo_to_dict(url)["password"] == "p@ss/word"


def test_serve_refuses_a_missing_config_and_a_busy_port(store: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "SDI_DATABASE_URL": store.database_url, "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([sys.executable, "-m", "sdi.cli", "serve", "--port", str(free_port()), "--config",
                              str(tmp_path / "missing.yml")], env=env, cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]  # one line
    assert "missing.yml" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run([sys.executable, "-m", "sdi.cli", "serve", "--port", str(port)], env=env,
                               cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1
    assert f"--port {port}" in taken.stderr and "serving" not in taken.stderr and "Traceback" not in taken.stderr


def test_wide_lonlat_bbox_is_exact_through_the_server(server: str, store: Settings) -> None:
    """A wide CRS84 box whose south edge runs 2 m south of a station finds it (pygeoapi alone would not)."""
    import psycopg
    from pyproj import Transformer

    with psycopg.connect(store.database_url) as conn:
        east, north, fid = conn.execute("select st_x(geom), st_y(geom), fid from layers.weather_stations "
                                        "order by st_x(geom) limit 1").fetchone()  # type: ignore[misc]
    _, lat = Transformer.from_crs(2326, 4326, always_xy=True).transform(east, north)
    bbox = f"113.75,{lat - 2 / 110_760},114.50,22.60"
    body = get(f"{server}/collections/weather_stations/items", bbox=bbox, limit=100, f="json").json()
    assert fid in [f["id"] for f in body["features"]]
