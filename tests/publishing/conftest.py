"""A live `sdi serve` shared by test_ogcapi_features.py and test_clients.py (one database, one server per session).

The database holds the Lands Department reference layer (tests/data/publishing/landsd_reference.yml) and two
sample layers; `sdi publish` writes the pygeoapi files to a temporary folder and `python -m sdi.cli serve` runs
on a free port with 2 workers, always stopped afterwards with bounded timeouts (see test_serve.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from sdi.settings import Settings
from tests.conftest import DATA, loaded_database
from tests.live_server import sdi_server

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
    with loaded_database(SAMPLE_LAYERS, definitions=[DATA / "publishing" / f"{REFERENCE}.yml"],
                         data_dir=data_dir) as settings:
        yield settings


@pytest.fixture(scope="session")
def live(ogc_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`sdi publish` then `sdi serve` on a free port; stopped (SIGTERM, then SIGKILL of its group) afterwards."""
    with sdi_server(ogc_store, tmp_path_factory.mktemp("ogc_serve")) as base:
        yield LiveServer(base, ogc_store)
