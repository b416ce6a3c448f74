"""A live `sdi serve` shared by test_ogcapi_features.py and test_clients.py (one database, one server per session).

The database holds the Lands Department reference layer (tests/data/publishing/landsd_reference.yml) and two
sample layers; `sdi publish` writes the pygeoapi files to a temporary folder and `python -m sdi.cli serve` runs
on a free port with 2 workers, always stopped afterwards with bounded timeouts (see test_serve.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import requests

from loaders import load
from sdi.layerdef import read_definition
from sdi.publishing.config import publish
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, ROOT, fresh_database
from tests.publishing.test_serve import START_TIMEOUT_S, _free_port, _serve_command, _stop

REFERENCE = "landsd_reference"
SAMPLE_LAYERS = ("public_libraries_2013", "districts_18")
OGC_LAYERS = (REFERENCE, *SAMPLE_LAYERS)


@dataclass(frozen=True)
class LiveServer:
    """The base URL of the running API and the settings of the database it serves."""

    url: str
    settings: Settings

    def stored_points(self, layer: str) -> dict[str, tuple[float, float]]:
        """``{feature id: (easting, northing)}`` of a point layer, read from PostGIS (st_x, st_y)."""
        with psycopg.connect(self.settings.database_url) as conn:
            pk = conn.execute("select primary_key from sdi.layer where id = %s", (layer,)).fetchone()
            assert pk is not None, layer
            rows = conn.execute(psycopg.sql.SQL("select {}::text, st_x(geom), st_y(geom) from {}").format(
                psycopg.sql.Identifier(pk[0]), psycopg.sql.Identifier("layers", layer))).fetchall()
        return {str(fid): (float(x), float(y)) for fid, x, y in rows}


@pytest.fixture(scope="session")
def ogc_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A fresh database with the reference layer and the sample layers loaded."""
    data_dir = tmp_path_factory.mktemp("ogc_store")
    with fresh_database() as url:
        settings = Settings(database_url=url, layers_dir=LAYERS, data_dir=data_dir)
        load(read_definition(DATA / "publishing" / f"{REFERENCE}.yml"), settings)
        for layer in SAMPLE_LAYERS:
            load(read_definition(LAYERS / f"{layer}.yml"), settings)
        yield settings


@pytest.fixture(scope="session")
def live(ogc_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`sdi publish` then `sdi serve` on a free port; stopped (SIGTERM, then SIGKILL of its group) afterwards."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("ogc_serve")
    published = publish(ogc_store, output_dir=folder, public_url=base)
    env = {**os.environ, "SDI_DATABASE_URL": ogc_store.database_url, "SDI_DATA_DIR": str(ogc_store.data_dir),
           "SDI_PUBLIC_URL": base, "SDI_PYGEOAPI_CONFIG": str(published.config), "PYTHONPATH": str(ROOT)}
    env.pop("PYGEOAPI_CONFIG", None)
    env.pop("PYGEOAPI_OPENAPI", None)
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(_serve_command(port), env=env, cwd=str(folder), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"sdi serve exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
                try:
                    if requests.get(f"{base}/conformance?f=json", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"sdi serve did not answer within {START_TIMEOUT_S} s: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield LiveServer(base, ogc_store)
        finally:
            _stop(proc)
