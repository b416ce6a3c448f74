"""Hostile sources and settings: one ``error:`` line, quickly, in bounded memory, nothing written, no secret shown.

Every hostile input is built here in ``tmp_path``. Most tests run the real ``sdi`` command in a subprocess in
its own process group, killed when it overruns: before these limits existed several of the inputs hung the
loader (a FIFO) or kept it busy for minutes (a one-line CSV), and the wrapper also reports the command's
peak memory (a KMZ bomb).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import psycopg
import pyogrio
import pytest
import shapely
from typer.testing import CliRunner

from loaders.limits import Limits
from loaders.report import LoadReport
from loaders.tables import read_table
from sdi.cli import app
from sdi.db import redact
from sdi.layerdef import parse_definition
from sdi.settings import Settings
from tests.conftest import DATA, ROOT, db_snapshot

POINTS = DATA / "good" / "landsd_point.geojson"
KML_POINT = (b'<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>D</name><Placemark><name>Pier</name>'
             b"<Point><coordinates>114.1694,22.3193</coordinates></Point></Placemark></Document></kml>")
#: Runs argv[1:], then prints its wall time and peak resident memory (KiB) on stderr after a marker.
_MEASURE = ("import resource, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(f'@@measure {time.perf_counter() - start:.3f} {rss}', file=sys.stderr)\n"
            "sys.exit(code)\n")


@dataclass
class Run:
    """What one ``sdi`` command did."""

    code: int
    stdout: str
    stderr: str  #: without the measurement line
    seconds: float
    peak_mb: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def sdi(*args: str, env: dict[str, str], timeout: float = 90) -> Run:
    """Run ``python -m sdi.cli *args`` in a new process group; kill the group and fail when it overruns."""
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, sys.executable, "-m", "sdi.cli", *args],
                            env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"sdi {' '.join(args)[:100]} was still running after {timeout:.0f} s")
    kept, measured = [], ["0", "0"]
    for line in err.splitlines():
        if line.startswith("@@measure "):
            measured = line.split()[1:]
        else:
            kept.append(line)
    return Run(proc.returncode, out, "\n".join(kept), float(measured[0]), int(measured[1]) / 1024)


def refused(run: Run, *fragments: str) -> str:
    """Assert the command failed with exactly one ``error:`` line holding each fragment; return the line."""
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.code == 1, (run.code, run.stderr[-2000:])
    assert len(run.lines) == 1, run.lines
    line = run.lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {"SDI_DATABASE_URL": settings.database_url, "SDI_DATA_DIR": str(settings.data_dir), **extra}


def _zip(target: Path, members: dict[str, bytes | Path]) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content.read_bytes() if isinstance(content, Path) else content)
    return target


# --- 1. archive members: uncompressed size capped -----------------------------------------------------------


def test_kmz_bomb_is_refused_before_it_is_read(tmp_path: Path, settings: Settings, db: psycopg.Connection,
                                               layer_yaml: Callable[..., Path]) -> None:
    # 300 MiB of KML (a comment of spaces, then one valid placemark) in a ~300 kB KMZ
    kmz = tmp_path / "bomb.kmz"
    with zipfile.ZipFile(kmz, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open("doc.kml", "w", force_zip64=True) as member:
        member.write(KML_POINT[:KML_POINT.index(b"<Placemark>")] + b"<!--")
        for _ in range(300):
            member.write(b" " * (1 << 20))
        member.write(b"-->" + KML_POINT[KML_POINT.index(b"<Placemark>"):])
    assert kmz.stat().st_size < 5_000_000
    before = db_snapshot(db)
    run = sdi("load", str(layer_yaml("kmz_bomb", kmz)), env=_env(settings))
    refused(run, str(kmz), "doc.kml", "268,435,456", "SDI_MAX_MEMBER_BYTES")
    assert run.peak_mb < 600, f"peak memory {run.peak_mb:.0f} MB"
    assert db_snapshot(db) == before


def test_member_size_cap_is_a_setting_for_kmz_and_zip(tmp_path: Path, settings: Settings,
                                                      layer_yaml: Callable[..., Path]) -> None:
    padded_kml = KML_POINT.replace(b"<Document>", b"<Document><!--" + b" " * 3_000_000 + b"-->")
    kmz = _zip(tmp_path / "padded.kmz", {"doc.kml": padded_kml})
    padded_json = POINTS.read_bytes().replace(b'"features"', b" " * 3_000_000 + b'"features"')
    archive = _zip(tmp_path / "padded.zip", {"data/points.geojson": padded_json})
    small = _env(settings, SDI_MAX_MEMBER_BYTES="1000000")
    for source, member in ((kmz, "doc.kml"), (archive, "data/points.geojson")):
        path = layer_yaml(source.stem, source)
        refused(sdi("load", "--dry-run", str(path), env=small), str(source), member, "1,000,000",
                "SDI_MAX_MEMBER_BYTES")
        assert sdi("load", "--dry-run", str(path), env=_env(settings)).code == 0  # under the default


# --- 2. nested archives: depth and total across every level -------------------------------------------------


def _nest(tmp_path: Path, levels: int, *, padding: int = 0) -> Path:
    """``level<levels>.zip`` holding ``level<levels-1>.zip`` ... holding ``points.geojson``; each level may
    also carry ``padding`` bytes of zeros."""
    inner: tuple[str, bytes | Path] = ("points.geojson", POINTS)
    extra: dict[str, bytes | Path] = {"padding.bin": bytes(padding)} if padding else {}
    path = tmp_path
    for level in range(1, levels + 1):
        path = _zip(tmp_path / f"level{level}.zip", {inner[0]: inner[1], **extra})
        inner = (path.name, path)
    return path


def test_archives_nested_deeper_than_the_limit_are_refused(tmp_path: Path, settings: Settings,
                                                           layer_yaml: Callable[..., Path]) -> None:
    (tmp_path / "ok").mkdir()
    ok = sdi("load", "--dry-run", str(layer_yaml("nest_3", _nest(tmp_path / "ok", 3))), env=_env(settings))
    assert ok.code == 0, ok.stderr  # three levels are allowed
    deep = _nest(tmp_path, 30)
    run = sdi("load", "--dry-run", str(layer_yaml("nest_30", deep)), env=_env(settings))
    refused(run, str(deep), "nested more than 3 deep", "SDI_MAX_ARCHIVE_DEPTH")
    assert run.seconds < 30


def test_unzipped_total_is_counted_across_every_level(tmp_path: Path, settings: Settings, db: psycopg.Connection,
                                                      layer_yaml: Callable[..., Path]) -> None:
    # each level unpacks to ~3 MB, under the 5 MB cap on its own; together they pass it
    outer = _nest(tmp_path, 2, padding=3_000_000)
    before = db_snapshot(db)
    run = sdi("load", str(layer_yaml("nest_total", outer)), env=_env(settings, SDI_MAX_UNZIPPED_BYTES="5000000"))
    refused(run, str(outer), "5,000,000", "SDI_MAX_UNZIPPED_BYTES")
    assert db_snapshot(db) == before
    assert sdi("load", "--dry-run", str(layer_yaml("nest_total", outer)), env=_env(settings)).code == 0


# --- 3. tables: no quadratic sniffing -----------------------------------------------------------------------


def test_one_line_csv_of_repeated_names_is_refused_quickly(tmp_path: Path, settings: Settings,
                                                           layer_yaml: Callable[..., Path]) -> None:
    path = tmp_path / "names.csv"
    path.write_text(",".join(["a"] * (128 * 1024)) + "\n", encoding="ascii")  # 256 kB, one line
    assert path.stat().st_size >= 256 * 1024
    run = sdi("load", "--dry-run", str(layer_yaml("names", path)), env=_env(settings), timeout=60)
    refused(run, str(path), "131,072 columns", "2,000", "SDI_MAX_TABLE_COLUMNS")
    definition = parse_definition({"id": "names", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c",
                                   "licence": "l", "source": {"path": str(path)}}, where="names.yml")
    started = time.perf_counter()
    with pytest.raises(ValueError, match="131,072 columns"):
        read_table(path, definition, LoadReport("names", str(path)), Limits())
    assert time.perf_counter() - started < 1.0
    narrow = _env(settings, SDI_MAX_TABLE_COLUMNS="10")
    wide = tmp_path / "wide.csv"
    wide.write_text("EASTING,NORTHING," + ",".join(f"c{i}" for i in range(20)) + "\n835411,817266" + ",1" * 20 + "\n")
    refused(sdi("load", "--dry-run", str(layer_yaml("wide", wide)), env=narrow), "22 columns", "10 allowed")


# --- 4. special files: never opened -------------------------------------------------------------------------


def _gdb_with_fifo(tmp_path: Path) -> Path:
    path = tmp_path / "landsd.gdb"
    frame = gpd.GeoDataFrame({"name": ["Mong Kok"]}, geometry=[shapely.Point(835497.921, 820032.934)], crs=2326)
    pyogrio.write_dataframe(frame, path, layer="places", driver="OpenFileGDB")
    table = sorted(path.glob("a*.gdbtable"))[-1]  # the layer's own table, read by GDAL
    table.unlink()
    os.mkfifo(table)
    return path


def _shapefile_with_fifo_dbf(tmp_path: Path) -> Path:
    path = tmp_path / "places.shp"
    frame = gpd.GeoDataFrame({"name": ["Mong Kok"]}, geometry=[shapely.Point(835497.921, 820032.934)], crs=2326)
    frame.to_file(path)
    path.with_suffix(".dbf").unlink()
    os.mkfifo(path.with_suffix(".dbf"))
    return path


def _zip_with_fifo_member(tmp_path: Path) -> Path:
    path = _zip(tmp_path / "piped.zip", {"points.geojson": POINTS})
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo("points.pipe")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        archive.writestr(info, b"")
    return path


@pytest.mark.parametrize(("make", "where"), [
    (_gdb_with_fifo, "inside the dataset folder is a FIFO"),
    (_shapefile_with_fifo_dbf, "places.dbf beside it is a FIFO"),
    (_zip_with_fifo_member, "member points.pipe is a FIFO"),
], ids=["fifo-in-gdb", "fifo-dbf-sidecar", "fifo-zip-member"])
def test_special_files_in_a_dataset_are_refused_without_blocking(make: Callable[[Path], Path], where: str,
                                                                  tmp_path: Path, settings: Settings,
                                                                  db: psycopg.Connection,
                                                                  layer_yaml: Callable[..., Path]) -> None:
    source = make(tmp_path)
    before = db_snapshot(db)
    run = sdi("load", str(layer_yaml("special", source)), env=_env(settings), timeout=60)
    refused(run, str(source), where, "only regular files are read")
    assert db_snapshot(db) == before


# --- 5. deep nesting and overlong references: one line, no traceback --------------------------------------


def _cli(*args: str, settings: Settings) -> list[str]:
    result = CliRunner().invoke(app, list(args), env={"SDI_DATABASE_URL": settings.database_url})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_deeply_nested_esri_json_and_kml_give_one_line(tmp_path: Path, settings: Settings,
                                                       layer_yaml: Callable[..., Path]) -> None:
    depth = 100_000
    esri = tmp_path / "deep.json"
    esri.write_text('{"geometryType": "esriGeometryPoint", "spatialReference": {"wkid": 2326}, "features": '
                    + "[" * depth + "]" * depth + "}", encoding="ascii")
    kml = tmp_path / "deep.kml"
    kml.write_bytes(KML_POINT.replace(b"<Placemark>", b"<Folder>" * depth + b"<Placemark>")
                    .replace(b"</Placemark>", b"</Placemark>" + b"</Folder>" * depth))
    for source in (esri, kml):
        lines = _cli("load", "--dry-run", str(layer_yaml(source.stem + source.suffix[1:], source)),
                     settings=settings)
        assert len(lines) == 1 and lines[0].startswith(f"error: {source}: ") and "nested too deeply" in lines[0]


def test_layer_file_that_is_a_fifo_or_nested_too_deeply_gives_one_line(tmp_path: Path, settings: Settings) -> None:
    pipe = tmp_path / "pipe.yml"
    os.mkfifo(pipe)
    refused(sdi("load", str(pipe), env=_env(settings), timeout=60), str(pipe), "not a regular file")
    deep = tmp_path / "deep.yml"
    deep.write_text("id: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="ascii")
    lines = _cli("load", str(deep), settings=settings)
    assert lines == [f"error: {deep}: not valid YAML: nested too deeply"]


def test_overlong_layer_references_give_one_line(tmp_path: Path, settings: Settings,
                                                 layer_yaml: Callable[..., Path]) -> None:
    ref = "l" * 300
    lines = _cli("load", ref, settings=settings)
    assert len(lines) == 1 and lines[0].startswith("error: no layer 'lll") and "300 characters" in lines[0]
    assert "not a YAML file, nor a layer id" in lines[0] and ref not in lines[0]
    long_source = layer_yaml("long_source", tmp_path / ("s" * 300 + ".geojson"))
    for command in (["load", str(long_source)], ["layers", "validate", str(long_source)]):
        lines = _cli(*command, settings=settings)
        assert len(lines) == 1 and lines[0].startswith(f"error: {long_source}: source.path"), lines
    long_layer = layer_yaml("long_layer", POINTS, {"layer": "x" * 2_000})
    lines = _cli("load", str(long_layer), settings=settings)
    assert lines == [f"error: {long_layer}: source.layer: String should have at most 1024 characters"]


# --- 6. secrets: no password in any message ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "secret"), [
    ("host=127.0.0.1 port=1 dbname=sdi password=Kw-s3cret", "Kw-s3cret"),
    ("host=127.0.0.1 port=1 password = Kw-s3cret dbname=sdi", "Kw-s3cret"),
    ("host=127.0.0.1 port=1 password='two words' dbname=sdi", "two words"),
    ("host=127.0.0.1 PASSWORD=Kw-s3cret sslpassword=Ssl-s3cret", "s3cret"),
    ("host=127.0.0.1 port=1 password Kw-s3cret", "Kw-s3cret"),
    ("postgresql://127.0.0.1:1/sdi?sslmode=disable&password=Q-s3cret&application_name=x", "Q-s3cret"),
    ("postgresql://127.0.0.1:1/sdi?Password=Q-s3cret", "Q-s3cret"),
    ("postgresql://user:U-s3cret@127.0.0.1:1/sdi?sslpassword=Ssl-s3cret", "s3cret"),
])
def test_redact_masks_every_form_of_password(url: str, secret: str) -> None:
    masked = redact(url)
    assert secret not in masked and "***" in masked
    assert masked.split("***")[0] in url  # the rest is kept


@pytest.mark.parametrize("url", [
    "host=127.0.0.1 port=1 dbname=sdi password=Kw-s3cret-1",
    "host=127.0.0.1 port=1 dbname=sdi password='Kw-s3cret-1 and more'",
    "postgresql://127.0.0.1:1/sdi?password=Kw-s3cret-1",
    "postgresql://user:Kw-s3cret-1%zz@127.0.0.1:1/sdi",  # libpq refuses it, quoting the password
], ids=["keyword", "keyword-quoted", "query", "malformed-url"])
def test_cli_errors_never_show_the_database_password(url: str, tmp_path: Path, layer_yaml: Callable[..., Path]) -> None:
    env = {"SDI_DATABASE_URL": url, "SDI_CONNECT_TIMEOUT": "2"}
    for args in (["db", "init"], ["load", str(layer_yaml("secret", POINTS))]):
        run = sdi(*args, env=env, timeout=60)
        line = refused(run, "***")
        assert "Kw-s3cret-1" not in run.stderr + run.stdout, line
