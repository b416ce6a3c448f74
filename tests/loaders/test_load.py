"""Loads into a real PostGIS: tables, types, indexes, history, accuracy, atomic replacement."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import pytest
from pyproj import Transformer

from loaders import load
from loaders.formats import RASTER_SUFFIXES
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, ROOT

SAMPLE_LAYERS = sorted(p.stem for p in LAYERS.glob("*.yml")
                       if read_definition(p).source_path.suffix.lower() not in RASTER_SUFFIXES)


@pytest.mark.parametrize("layer_id", SAMPLE_LAYERS)
def test_sample_layer_loads(layer_id: str, settings: Settings, db: psycopg.Connection) -> None:
    definition = read_definition(LAYERS / f"{layer_id}.yml")
    report = load(definition, settings)
    count = db.execute(f'select count(*) from layers."{layer_id}"').fetchone()
    assert count == (report.features_written,)
    assert report.features_written == report.features_read - report.features_dropped
    gtype, srid = db.execute(
        "select type, srid from geometry_columns where f_table_schema = 'layers' and f_table_name = %s",
        (layer_id,)).fetchone()  # type: ignore[misc]
    assert srid == 2326 and gtype == report.geometry_type.upper()
    indexes = {r[0] for r in db.execute("select indexdef from pg_indexes where schemaname = 'layers' "
                                        "and tablename = %s", (layer_id,))}
    assert any("USING gist (geom)" in i for i in indexes) and any("UNIQUE" in i for i in indexes)
    history = db.execute("select layer_id, features_written, source_sha256, report->>'source_crs' "
                         "from sdi.load_history where load_id = %s", (report.load_id,)).fetchone()
    assert history == (layer_id, report.features_written, report.source_sha256, report.source_crs)
    row = db.execute("select feature_count, load_id, st_srid(extent) from sdi.layer where id = %s",
                     (layer_id,)).fetchone()
    assert row == (report.features_written, report.load_id, 2326)
    invalid = db.execute(f'select count(*) from layers."{layer_id}" where not st_isvalid(geom)').fetchone()
    assert invalid == (0,)


def test_big5_names_correct_in_postgis(settings: Settings, db: psycopg.Connection) -> None:
    load(read_definition(LAYERS / "district_council_2001.yml"), settings)
    names = [r[0] for r in db.execute("select dcca_chin from layers.district_council_2001")]
    assert "南昌北" in names
    assert not any(0xE000 <= ord(c) <= 0xF8FF or c == "\ufffd" for n in names for c in n)


@pytest.mark.parametrize(("source", "extra"), [
    ("landsd_point.geojson", {}),
    ("landsd_point_2326.csv", {"source_keys": {"crs": "EPSG:2326"}}),
])
def test_loaded_coordinates_match_landsd_within_1cm(source: str, extra: dict[str, object], settings: Settings,
                                                   db: psycopg.Connection, layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("landsd_ref", DATA / "good" / source, primary_key="code" if "geojson" in source else "Code",
                      **extra)
    load(read_definition(path), settings)
    pk = "code"
    x, y = db.execute(f"select st_x(geom), st_y(geom) from layers.landsd_ref where {pk} = 'A'").fetchone()  # type: ignore[misc]
    assert math.hypot(x - 835411.431, y - 817266.016) <= 0.01
    # and back to WGS84 in PostGIS agrees with pyproj's EPSG:1825 conversion of the stored point
    lon, lat = Transformer.from_crs(2326, 4326, always_xy=True).transform(x, y)
    assert abs(lat - 22.294313001) * 110_760 <= 0.01 and abs(lon - 114.168562005) * 103_000 <= 0.01


def test_reload_replaces_table_and_keeps_history(settings: Settings, db: psycopg.Connection) -> None:
    definition = read_definition(LAYERS / "oil_storage_installations.yml")
    first = load(definition, settings)
    second = load(definition, settings)
    assert second.load_id is not None and first.load_id is not None and second.load_id > first.load_id
    assert db.execute("select count(*) from layers.oil_storage_installations").fetchone() == (23,)
    assert db.execute("select count(*) from sdi.load_history where layer_id = 'oil_storage_installations'"
                      ).fetchone()[0] >= 2  # type: ignore[index]
    assert db.execute("select load_id from sdi.layer where id = 'oil_storage_installations'").fetchone() == (
        second.load_id,)
    leftovers = db.execute("select count(*) from pg_tables where schemaname = 'layers' and tablename like '\\_load%'")
    assert leftovers.fetchone() == (0,)


def test_dry_run_writes_nothing(settings: Settings, db: psycopg.Connection, layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("dry_probe", DATA / "good" / "landsd_point.geojson")
    report = load(read_definition(path), settings, dry_run=True)
    assert report.features_read == 2 and report.features_written == 0 and report.load_id is None
    assert db.execute("select to_regclass('layers.dry_probe')").fetchone() == (None,)


def _points_file(path: Path, n: int, offset: float) -> Path:
    rng = np.random.default_rng(7)
    xs, ys = rng.uniform(820000, 850000, n) + offset, rng.uniform(810000, 830000, n)
    frame = gpd.GeoDataFrame({"v": np.arange(n)}, geometry=gpd.points_from_xy(xs, ys), crs=2326)
    frame.to_file(path, driver="GPKG")
    return path


def test_failure_mid_copy_leaves_previous_version_readable(settings: Settings, db: psycopg.Connection,
                                                           layer_yaml: Callable[..., Path], tmp_path: Path) -> None:
    path = layer_yaml("atomic_probe", _points_file(tmp_path / "v1.gpkg", 300, 0.0))
    v1 = load(read_definition(path), settings)
    path = layer_yaml("atomic_probe", _points_file(tmp_path / "v2.gpkg", 1000, 5.0))
    seen_mid_load: list[tuple[int, float]] = []

    def fail_half_way(done: int, total: int) -> None:
        # another session reads the live table while the load is in flight: still version 1
        with psycopg.connect(settings.database_url) as other:
            seen_mid_load.append(other.execute("select count(*), min(st_x(geom)) from layers.atomic_probe"
                                               ).fetchone())  # type: ignore[arg-type]
        if done >= total // 2:
            raise RuntimeError("injected failure mid-COPY")

    with pytest.raises(RuntimeError, match="injected failure"):
        load(read_definition(path), settings, progress=fail_half_way)
    assert seen_mid_load and all(n == 300 for n, _ in seen_mid_load)
    assert db.execute("select count(*) from layers.atomic_probe").fetchone() == (300,)
    assert db.execute("select load_id, feature_count from sdi.layer where id = 'atomic_probe'").fetchone() == (
        v1.load_id, 300)
    assert db.execute("select max(load_id) from sdi.load_history where layer_id = 'atomic_probe'").fetchone() == (
        v1.load_id,)
    assert db.execute("select to_regclass('layers._load_atomic_probe')").fetchone() == (None,)


def test_killed_load_leaves_previous_version(settings: Settings, db: psycopg.Connection,
                                             layer_yaml: Callable[..., Path], tmp_path: Path) -> None:
    path = layer_yaml("kill_probe", _points_file(tmp_path / "v1.gpkg", 200, 0.0))
    v1 = load(read_definition(path), settings)
    path = layer_yaml("kill_probe", _points_file(tmp_path / "v2.gpkg", 400_000, 5.0))
    env = {**os.environ, "SDI_DATABASE_URL": settings.database_url, "SDI_COPY_CHUNK_ROWS": "2000"}
    proc = subprocess.Popen([sys.executable, "-m", "sdi.cli", "load", str(path)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        copying = False
        while time.monotonic() < deadline and proc.poll() is None:
            row = db.execute("select tuples_processed from pg_stat_progress_copy p join pg_stat_activity a "
                             "using (pid) where a.datname = current_database()").fetchone()
            if row and row[0] > 0:
                copying = True
                break
            time.sleep(0.02)
        assert copying, "the load never reached COPY"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for _ in range(200):  # the server notices the dead client and rolls back
        if db.execute("select count(*) from pg_stat_progress_copy").fetchone() == (0,):
            break
        time.sleep(0.05)
    assert db.execute("select count(*) from layers.kill_probe").fetchone() == (200,)
    assert db.execute("select load_id from sdi.layer where id = 'kill_probe'").fetchone() == (v1.load_id,)
    assert db.execute("select to_regclass('layers._load_kill_probe')").fetchone() == (None,)


def test_binary_copy_round_trips_every_type(settings: Settings, db: psycopg.Connection,
                                            layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("all_types", DATA / "good" / "all_types.geojson",
                      fields={"opened": {"type": "date"}, "updated": {"type": "timestamp"}})
    report = load(read_definition(path), settings)
    assert report.geometry_type == "MultiPolygon"
    types = dict(db.execute("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'layers' and table_name = 'all_types'").fetchall())
    assert types == {"fid": "bigint", "name": "text", "count": "bigint", "ratio": "double precision",
                     "open": "boolean", "opened": "date", "updated": "timestamp without time zone",
                     "uses": "jsonb", "note": "text", "geom": "USER-DEFINED"}
    rows = db.execute("select fid, name, count, ratio, open, opened::text, updated::text, uses, note, "
                      "st_geometrytype(geom), st_numgeometries(geom), st_srid(geom) from layers.all_types "
                      "order by fid").fetchall()
    assert rows[0] == (1, "深水埗區", 12, 0.25, True, "2022-01-28", "2022-03-16 08:30:00", ["P", "T"],
                       'quote " and\nnewline\ttab', "ST_MultiPolygon", 1, 2326)
    assert rows[1] == (2, None, None, None, False, None, None, [], None, "ST_MultiPolygon", 2, 2326)
