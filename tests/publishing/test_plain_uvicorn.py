"""The app under plain ``uvicorn sdi.publishing.app:app`` (no `sdi serve`) given the owner's URL connects only as
the read-only role: the worker's lifespan switches roles itself (``sdi.web.app._reader``), which `sdi serve`
never exercises, because it hands its workers the reader's URL already."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from sdi.publishing.app import APPLICATION_NAME
from sdi.settings import Settings
from sdi.web.reader import is_reader_url
from tests.conftest import ROOT, loaded_database
from tests.live_server import free_port, running

pytestmark = pytest.mark.db
#: Variables of the developer's shell that would change what the app serves (as `tests.live_server.sdi_server`).
CLEARED = ("PYGEOAPI_CONFIG", "PYGEOAPI_OPENAPI", "SDI_PUBLIC_URL", "SDI_SERVER_CONFIG", "SDI_PYGEOAPI_CONFIG")


def _backends(conn: psycopg.Connection) -> set[tuple[int, str, str]]:
    """Every other client connection to this database: (pid, role, application_name)."""
    rows = conn.execute("select pid, usename, application_name from pg_stat_activity where datname ="
                        " current_database() and backend_type = 'client backend' and pid <> pg_backend_pid()")
    return {(int(pid), str(user), str(app)) for pid, user, app in rows.fetchall()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with loaded_database(("districts_18",), data_dir=tmp_path_factory.mktemp("plain_store")) as settings:
        yield settings


def test_plain_uvicorn_with_the_owner_url_connects_only_as_the_reader(store: Settings, tmp_path: Path) -> None:
    assert not is_reader_url(store.database_url, store.reader_role), "the test must hand the app the owner's URL"
    with psycopg.connect(store.database_url, autocommit=True) as probe:
        before = {pid for pid, _, _ in _backends(probe)}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(SDI_DATABASE_URL=store.database_url, SDI_DATA_DIR=str(store.data_dir), PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "uvicorn", "sdi.publishing.app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning"]
        with running(command, env=env, cwd=tmp_path, ready_url=f"{base}/conformance?f=json",
                     log=tmp_path / "server.log"):
            items = requests.get(f"{base}/collections/districts_18/items?f=json&limit=2", timeout=30)
            assert items.status_code == 200, items.text[:300]
            assert items.json()["numberMatched"] == 18 and items.json()["numberReturned"] == 2
            search = requests.get(f"{base}/collections/catalogue/items?f=json&q=district", timeout=30)
            assert search.status_code == 200 and search.json()["numberMatched"] >= 1
            server = {(user, app) for pid, user, app in _backends(probe) if pid not in before}
    assert server, "the server holds no connection to the database (its pool keeps at least one)"
    assert server == {(store.reader_role, APPLICATION_NAME)}, server
