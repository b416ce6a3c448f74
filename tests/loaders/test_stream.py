"""Streamed loads (loaders.stream): a chunked load equals a whole-file load, fails like one, and never half-writes.

Each test loads the same file twice into one test database: whole (``SDI_LOAD_CHUNK_ROWS`` above its
size) and streamed in small chunks, under two layer ids, and compares the tables (columns, types,
geometry type, every row and geometry byte for byte) and the load reports (counts, repairs, drops,
fields, warnings).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import pyogrio
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from loaders.batches import STREAM_SUFFIXES
from loaders.formats import json_flavour
from loaders.pipeline import load
from loaders.report import LoadReport
from sdi.errors import DataError
from sdi.layerdef import LayerDefinition, read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, ROOT, db_snapshot

WHOLE = 10**9


def _streamable(path: Path) -> bool:
    definition = read_definition(path)
    source = definition.source_path
    if source.suffix.lower() not in STREAM_SUFFIXES or not source.is_file():
        return False
    if source.suffix.lower() in (".json", ".geojson") and json_flavour(source) is not None:
        return False
    return int(pyogrio.read_info(source, layer=definition.source.layer)["features"]) > 3


STREAMABLE = sorted(p.stem for p in LAYERS.glob("*.yml") if _streamable(p))


def _with(settings: Settings, rows: int) -> Settings:
    return settings.model_copy(update={"load_chunk_rows": rows})


def _renamed(definition: LayerDefinition, layer_id: str) -> LayerDefinition:
    return definition.model_copy(update={"id": layer_id})


def _table(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """Everything a reader of ``layers.<table>`` can see."""
    columns = conn.execute("select column_name, data_type from information_schema.columns where table_schema ="
                           " 'layers' and table_name = %s order by ordinal_position", (table,)).fetchall()
    geometry = conn.execute("select type, srid from geometry_columns where f_table_schema = 'layers' and"
                            " f_table_name = %s", (table,)).fetchall()
    rows = conn.execute(f'select (to_jsonb(t) - \'geom\')::text, encode(st_asewkb(geom), \'hex\') '
                        f'from layers."{table}" t order by 1, 2').fetchall()
    return {"columns": columns, "geometry": geometry, "rows": rows}


def _report(report: LoadReport) -> dict[str, Any]:
    return {"read": report.features_read, "written": report.features_written, "repaired": dict(report.repaired),
            "dropped": dict(report.dropped), "fields": [(f.name, f.original_name, f.type) for f in report.fields],
            "geometry_type": report.geometry_type, "warnings": sorted(report.warnings),
            "source_sha256": report.source_sha256, "crs": (report.source_crs, report.crs_origin),
            "notes": sorted(_formats_sorted(n) for n in report.notes if not n.startswith("streamed in chunks"))}


def _formats_sorted(note: str) -> str:
    """A note with the list of date formats it names in a fixed order (chunks meet formats in another order)."""
    head, _, formats = note.partition(" (%")
    return f"{head} ({', '.join(sorted(('%' + formats).rstrip(')').split(', ')))})" if formats else note


def _both(definition: LayerDefinition, settings: Settings, rows: int,
          db: psycopg.Connection) -> tuple[dict[str, Any], dict[str, Any], LoadReport]:
    """Load whole and streamed; return (whole, streamed) table-and-report states and the streamed report."""
    whole = load(definition, _with(settings, WHOLE))
    streamed_id = f"{definition.id}_streamed"
    streamed = load(_renamed(definition, streamed_id), _with(settings, rows))
    assert any(n.startswith("streamed in chunks") for n in streamed.notes), "the load was not streamed"
    assert not any(n.startswith("streamed in chunks") for n in whole.notes)
    return ({**_table(db, definition.id), **_report(whole)}, {**_table(db, streamed_id), **_report(streamed)},
            streamed)


@pytest.mark.parametrize("layer_id", STREAMABLE)
def test_a_streamed_sample_layer_equals_its_whole_file_load(layer_id: str, settings: Settings,
                                                            db: psycopg.Connection) -> None:
    definition = read_definition(LAYERS / f"{layer_id}.yml")
    count = int(pyogrio.read_info(definition.source_path, layer=definition.source.layer)["features"])
    whole, streamed, _ = _both(definition, settings, max(2, math.ceil(count / 4)), db)
    assert streamed == whole


def _late_file(path: Path, n: int = 13, crs: int = 2326) -> Path:
    """A GeoPackage whose types, geometry kinds, repairs and drops show up only in its last rows (synthetic)."""
    cells = [box(830_000 + 40 * i, 820_000, 830_030 + 40 * i, 820_030) for i in range(n)]
    geoms: list[Any] = list(cells)
    geoms[-1] = MultiPolygon([cells[-1], box(831_000, 821_000, 831_010, 821_010)])  # Multi* in the last chunk
    geoms[-2] = Polygon([(830_000, 821_000), (830_010, 821_010), (830_010, 821_000), (830_000, 821_010)])  # bow-tie
    geoms[-3] = None  # dropped, late
    late = [None] * (n - 4)
    frame = gpd.GeoDataFrame({
        "code": [f"{i:03d}" for i in range(n)],
        "numbers_then_text": [str(i + 1) for i in range(n - 1)] + ["n/a"],
        "integers_then_decimals": [str(i) for i in range(n - 1)] + ["2.5"],
        "null_then_dates": [*late, "2022-01-28", "16/3/2022", "27 OCTOBER 2021", "2022年1月28日"],
        "dates_then_timestamps": [f"2021-05-0{1 + i % 9}" for i in range(n - 1)] + ["2022-01-28 10:30"],
        "calldate": ["43725"] * (n - 1) + ["28 Jan 2022"],
        "always_integers": [str(10 * i) for i in range(n)],
    }, geometry=geoms, crs=2326).to_crs(crs)
    frame.to_file(path, driver="GPKG", layer="late", engine="pyogrio")
    return path


@pytest.mark.parametrize("crs", [2326, 4326])
def test_types_kinds_repairs_and_drops_of_a_late_chunk_come_out_as_in_a_whole_file_load(
        crs: int, tmp_path: Path, layer_yaml: Any, settings: Settings, db: psycopg.Connection) -> None:
    """In EPSG:4326 the simple polygons are reprojected inside their WKB (loaders.wkbproj), the bow-tie and the
    multipolygon through GEOS; both must come out as a whole-file load makes them."""
    source = _late_file(tmp_path / "late.gpkg", crs=crs)
    definition = read_definition(layer_yaml("late_kinds", source, primary_key="code"))
    whole, streamed, report = _both(definition, settings, 4, db)
    assert streamed == whole
    types = dict(whole["columns"])
    assert types["numbers_then_text"] == "text" and types["calldate"] == "text"
    assert types["integers_then_decimals"] == "double precision" and types["always_integers"] == "bigint"
    assert types["null_then_dates"] == "date" and types["dates_then_timestamps"].startswith("timestamp")
    assert whole["geometry"] == [("MULTIPOLYGON", 2326)]
    assert report.dropped == {"null geometry": 1} and sum(report.repaired.values()) == 1
    assert report.features_read == 13 and report.features_written == 12


def test_duplicate_keys_across_chunks_fail_as_in_a_whole_file_load_and_change_nothing(
        tmp_path: Path, layer_yaml: Any, settings: Settings, db: psycopg.Connection) -> None:
    n = 30
    frame = gpd.GeoDataFrame({"code": [f"K{i % 12:02d}" if i in (3, 15, 27, 8, 20) else f"U{i:03d}" for i in range(n)]},
                             geometry=[shapely.Point(830_000 + i, 820_000) for i in range(n)], crs=2326)
    frame.to_file(tmp_path / "dups.gpkg", driver="GPKG", engine="pyogrio")
    definition = read_definition(layer_yaml("dup_keys", tmp_path / "dups.gpkg", primary_key="code"))
    with pytest.raises(DataError) as whole_error:
        load(definition, _with(settings, WHOLE))
    before = db_snapshot(db)
    with pytest.raises(DataError) as streamed_error:
        load(definition, _with(settings, 5))
    assert str(streamed_error.value) == str(whole_error.value)
    assert "duplicate primary keys in 'code': K03, K08" in str(whole_error.value)
    assert db_snapshot(db) == before


@pytest.mark.parametrize("fail_at", [1, 2, 5, 7])
def test_a_load_stopped_at_any_chunk_leaves_the_previous_version_serving(
        fail_at: int, tmp_path: Path, layer_yaml: Any, settings: Settings, db: psycopg.Connection) -> None:
    source = _late_file(tmp_path / "late.gpkg", n=25)
    definition = read_definition(layer_yaml("stopped", source, primary_key="code"))
    load(definition, _with(settings, WHOLE))
    previous = _table(db, "stopped")
    before = db_snapshot(db)
    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise KeyboardInterrupt  # what Ctrl-C raises: not an SdiError, nothing catches it on the way
    with pytest.raises(KeyboardInterrupt):
        load(definition, _with(settings, 4), progress=progress)
    assert calls == fail_at
    assert _table(db, "stopped") == previous and db_snapshot(db) == before
    assert load(definition, _with(settings, 4)).features_written == previous_count(previous)


def previous_count(state: dict[str, Any]) -> int:
    return len(state["rows"])


def _polygons(path: Path, n: int) -> Path:
    """n synthetic octagons in lon/lat (EPSG:4326) with three attributes, written in one GeoPackage."""
    rng = np.random.default_rng(2326)
    x, y = rng.uniform(812_000, 858_000, n), rng.uniform(808_000, 842_000, n)
    polys = shapely.buffer(shapely.points(x, y), rng.uniform(5, 40, n), quad_segs=2)
    frame = gpd.GeoDataFrame({"parcel_no": [f"SYN {i}" for i in range(n)], "area_class": rng.integers(1, 6, n),
                              "value": np.round(rng.uniform(0, 1e6, n), 2)}, geometry=polys, crs=2326).to_crs(4326)
    frame.to_file(path, driver="GPKG", layer="polygons", engine="pyogrio", use_arrow=True)
    return path


_PEAK = """
import json, sys
from loaders.pipeline import load
from sdi.layerdef import read_definition
from sdi.settings import Settings
settings = Settings()
if sys.argv[2] == "load":
    report = load(read_definition(sys.argv[1]), settings)
    written = report.features_written
else:
    import pyogrio
    from loaders import pipeline, stream, batches  # the same imports, nothing loaded
    written = 0
# VmHWM: this process's own peak (getrusage's maxrss starts from the parent's size: Linux keeps it across exec)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak_kb / 1024, "written": written}))
"""


def _peak(definition: Path, settings: Settings, rows: int, what: str = "load") -> dict[str, float]:
    env = {**os.environ, "SDI_DATABASE_URL": settings.database_url, "SDI_DATA_DIR": str(settings.data_dir),
           "SDI_LAYERS_DIR": str(definition.parent), "SDI_LOAD_CHUNK_ROWS": str(rows)}
    out = subprocess.run([sys.executable, "-c", _PEAK, str(definition), what], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_memory_of_a_streamed_load_stays_bounded(tmp_path: Path, layer_yaml: Any, settings: Settings) -> None:
    """A streamed load of 150,000 polygons in chunks of 5,000 stays within 150 MB of the interpreter with sdi
    imported; the same file loaded whole needs more than that (so the ceiling is one a whole-file load breaks)."""
    source = _polygons(tmp_path / "big.gpkg", 150_000)
    definition = layer_yaml("big_polygons", source, synthetic=True)
    baseline = _peak(definition, settings, 5_000, what="imports")["peak_mb"]
    streamed = _peak(definition, settings, 5_000)
    whole = _peak(definition, settings, WHOLE)
    assert streamed["written"] == whole["written"] == 150_000
    ceiling = baseline + 150
    assert streamed["peak_mb"] < ceiling, f"streamed: peak at {streamed['peak_mb']:.0f} MB (ceiling {ceiling:.0f})"
    assert whole["peak_mb"] > ceiling, f"the whole-file load peaked at {whole['peak_mb']:.0f} MB: raise the file size"


def test_a_streamed_load_killed_mid_copy_leaves_the_previous_version(tmp_path: Path, layer_yaml: Any,
                                                                      settings: Settings,
                                                                      db: psycopg.Connection) -> None:
    """``kill -9`` of ``sdi load`` while its COPY runs: the previous version serves on, no session is left behind."""
    source = _polygons(tmp_path / "kill.gpkg", 60_000)
    definition = layer_yaml("killed", source, synthetic=True)
    load(read_definition(definition), _with(settings, WHOLE))
    state = "select count(*), md5(string_agg(fid || ':' || st_astext(geom), ',' order by fid)) from layers.killed"
    previous = db.execute(state).fetchone()
    before = db_snapshot(db)
    env = {**os.environ, "SDI_DATABASE_URL": settings.database_url, "SDI_DATA_DIR": str(settings.data_dir),
           "SDI_LAYERS_DIR": str(definition.parent), "SDI_LOAD_CHUNK_ROWS": "2000"}
    proc = subprocess.Popen([sys.executable, "-m", "sdi.cli", "load", "killed"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        copied = 0
        while time.monotonic() < deadline and proc.poll() is None:
            row = db.execute("select coalesce(max(tuples_processed), 0) from pg_stat_progress_copy").fetchone()
            copied = int(row[0]) if row else 0
            if copied >= 8_000:
                break
            time.sleep(0.02)
        assert proc.poll() is None and copied >= 8_000, "the load ended before it could be killed mid-COPY"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while db.execute("select count(*) from pg_stat_progress_copy").fetchone()[0] and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.1)
    assert db.execute("select count(*) from pg_stat_progress_copy").fetchone()[0] == 0  # type: ignore[index]
    assert db.execute(state).fetchone() == previous
    assert db_snapshot(db) == before
