"""The download cache and the reader under it: one file per (layer, load, format) made once, even by concurrent
callers; a reload gives a new file and removes the old; a reload in the middle of an export starts it again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from loaders import load
from sdi.distribution import cache as cache_module
from sdi.distribution import writers
from sdi.distribution.cache import DownloadCache
from sdi.distribution.source import LoadChanged, open_connection, read_layer
from sdi.distribution.writers import export_layer, sha256_of
from sdi.errors import LayerNotFoundError, ServiceBusyError
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database

pytestmark = pytest.mark.db
LAYER = "traffic_hotzone_streets"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with loaded_database((LAYER, "districts_18", "synthetic_mudflat_elevation"),
                         data_dir=tmp_path_factory.mktemp("cache_store")) as settings:
        yield settings


def reload(settings: Settings, layer_id: str = LAYER) -> None:
    load(read_definition(LAYERS / f"{layer_id}.yml"), settings)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str]]:
    """Every file the cache writes (the real writer, counted)."""
    made: list[tuple[str, int, str]] = []
    real = cache_module.write_file

    def counted(reader: Any, fmt: Any, path: Path) -> Any:
        made.append((reader.layer.id, reader.layer.load_id, fmt.id))
        return real(reader, fmt, path)

    monkeypatch.setattr(cache_module, "write_file", counted)
    return made


def test_a_file_is_made_once_and_found_by_every_worker(db: Settings, tmp_path: Path,
                                                        builds: list[tuple[str, int, str]]) -> None:
    root = tmp_path / "downloads"
    first = DownloadCache(root).ensure(db, "districts_18", "gpkg")
    stat = first.path.stat()
    again = DownloadCache(root).ensure(db, "districts_18", "gpkg")  # another worker: from the disk
    assert again == first and len(builds) == 1
    assert first.path.stat().st_mtime_ns == stat.st_mtime_ns and first.path.stat().st_ino == stat.st_ino
    assert first.path == root / "districts_18" / str(first.load_id) / "districts_18.gpkg"
    recorded = json.loads(first.path.with_name("districts_18.gpkg.json").read_text(encoding="utf-8"))
    assert recorded["size"] == stat.st_size == first.size and recorded["sha256"] == sha256_of(first.path)
    assert recorded["features"] == 18 and recorded["media_type"] == "application/geopackage+sqlite3"


def test_concurrent_requests_make_one_file(db: Settings, tmp_path: Path, builds: list[tuple[str, int, str]]) -> None:
    root, results, errors = tmp_path / "downloads", [], []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        try:
            results.append(DownloadCache(root).ensure(db, "districts_18", "shp"))  # one cache each, like workers
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 4
    assert len(builds) == 1 and len({r.sha256 for r in results}) == 1
    assert sorted(p.name for p in results[0].path.parent.iterdir() if not p.name.startswith(".")) == [
        "districts_18.zip", "districts_18.zip.json"]


def test_a_reload_gives_a_new_file_and_removes_the_old(db: Settings, tmp_path: Path,
                                                        builds: list[tuple[str, int, str]]) -> None:
    cache = DownloadCache(tmp_path / "downloads")
    old = cache.ensure(db, LAYER, "csv")
    other = cache.ensure(db, LAYER, "geojson")
    reload(db)
    new = cache.ensure(db, LAYER, "csv")
    assert new.load_id > old.load_id and new.path != old.path
    assert not old.path.parent.exists() and not other.path.exists()  # the older load's folder, every format
    assert cache.find(LAYER, old.load_id, old.format) is None
    assert cache.find(LAYER, new.load_id, new.format) == new and new.path.exists()
    assert [b[1] for b in builds] == [old.load_id, old.load_id, new.load_id]


def test_the_reader_notices_a_reload_between_pages(db: Settings) -> None:
    with open_connection(db) as conn:
        reader = read_layer(conn, LAYER, page_rows=5)
        pages = reader.tables()
        assert next(pages).num_rows == 5
        reload(db)
        with pytest.raises(LoadChanged):
            list(pages)


def test_an_export_reloaded_midway_starts_again_and_leaves_no_partial_file(db: Settings, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real = writers.WRITERS["csv"]

    def reloading_once(reader: Any, path: Path) -> None:
        started.append(reader.layer.load_id)
        if len(started) == 1:
            pages = reader.texts(sql.SQL("'x'"))
            next(pages)
            path.write_text("partial", encoding="utf-8")
            reload(db)
            list(pages)  # LoadChanged
        real(reader, path)

    monkeypatch.setitem(writers.WRITERS, "csv", reloading_once)
    out = tmp_path / "out.csv"
    written = export_layer(db, LAYER, "csv", out, page_rows=5)
    assert len(started) == 2 and written.load_id == started[1] > started[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert out.read_bytes().count(b"\r\n") == 19 + 1  # the header and every feature of the new load


def test_an_export_reloaded_every_time_gives_up_with_one_line(db: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def always_reloaded(reader: Any, path: Path) -> None:
        reload(db)
        reader.check()

    monkeypatch.setitem(writers.WRITERS, "csv", always_reloaded)
    with pytest.raises(ServiceBusyError, match=f"^{LAYER}: the layer was reloaded while its download was being made"):
        DownloadCache(tmp_path / "downloads").ensure(db, LAYER, "csv")


def test_unknown_and_raster_layers_have_no_downloads(db: Settings, tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "downloads")
    for layer_id in ("no_such_layer", "synthetic_mudflat_elevation"):
        with pytest.raises(LayerNotFoundError, match=f"no vector layer '{layer_id}' is loaded"):
            cache.ensure(db, layer_id, "gpkg")
    assert not (tmp_path / "downloads").exists()
