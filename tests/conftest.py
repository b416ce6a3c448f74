"""Shared fixtures: a real PostGIS database per test run, layer YAML helpers, sample paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loaders import load
from sdi.db import init_db
from sdi.layerdef import read_definition
from sdi.settings import Settings

pytest_plugins = ["tests._require_db", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = ROOT / "data" / "sample"
LAYERS = ROOT / "layers"


def _server_url() -> str:
    """The server the test databases are created on: SDI_TEST_SERVER_URL, else SDI_DATABASE_URL's."""
    return os.environ.get("SDI_TEST_SERVER_URL") or os.environ.get("SDI_DATABASE_URL") or "postgresql:///sdi"


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create a new, initialised database (extensions, roles, schemas, migrations); drop it afterwards."""
    name = f"sdi_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin_url = _with_dbname(_server_url(), "postgres")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"database tests need a PostgreSQL server ({admin_url}): {exc}".strip())
    with admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = _with_dbname(_server_url(), name)
    try:
        init_db(Settings(database_url=url))
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextmanager
def loaded_database(layer_ids: Iterable[str] = (), *, definitions: Iterable[Path] = (),
                    **settings: Any) -> Iterator[Settings]:
    """A :func:`fresh_database` with the YAML files ``definitions`` and then ``layers/<id>.yml`` of each id in
    ``layer_ids`` loaded, in that order; yields its :class:`Settings` (``layers_dir`` = ``layers/`` and the
    given ``settings`` fields)."""
    with fresh_database() as url:
        store = Settings(database_url=url, layers_dir=LAYERS, **settings)
        for path in [*definitions, *(LAYERS / f"{layer}.yml" for layer in layer_ids)]:
            load(read_definition(path), store)
        yield store


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new, initialised database for this test run."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for the test database, the repository's layers and a scratch data directory."""
    return Settings(database_url=database_url, layers_dir=LAYERS, data_dir=tmp_path / "store",
                    copy_chunk_rows=100)


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def layer_yaml(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<tmp>/layers/<id>.yml`` for a source file; extra keys are merged in."""

    def write(layer_id: str, source: Path | str, source_keys: dict[str, Any] | None = None, **extra: Any) -> Path:
        folder = tmp_path / "layers"
        folder.mkdir(exist_ok=True)
        src: dict[str, Any] = {"path": str(source), **(source_keys or {})}
        doc = {
            "id": layer_id,
            "title": {"en": f"Test layer {layer_id}", "zh": "測試圖層"},
            "abstract": {"en": "A layer written by a test.", "zh": "測試"},
            "custodian": "Test Department",
            "licence": "test data",
            "source": src,
            **extra,
        }
        path = folder / f"{layer_id}.yml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        return path

    return write


def db_snapshot(conn: psycopg.Connection) -> tuple[Any, ...]:
    """What a failed load must not change: tables in schema layers, layer rows, load-history rows."""
    tables = conn.execute(
        "select table_name from information_schema.tables where table_schema = 'layers' order by 1").fetchall()
    layers = conn.execute("select id, load_id, feature_count from sdi.layer order by id").fetchall()
    history = conn.execute("select count(*), max(load_id) from sdi.load_history").fetchone()
    return tuple(tables), tuple(layers), history
