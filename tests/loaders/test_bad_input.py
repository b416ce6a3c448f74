"""Bad input through `sdi load`: one line naming the file and the problem, exit 1, database unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from sdi.cli import app
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, db_snapshot

BAD = DATA / "bad"


def _run(settings: Settings, *args: str, url: str | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["load", *args], env={"SDI_DATABASE_URL": url or settings.database_url})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.fixture
def loaded(settings: Settings) -> Settings:
    """A database with one sample layer loaded, so 'unchanged' means something."""
    code, lines = _run(settings, str(LAYERS / "oil_storage_installations.yml"))
    assert code == 0, lines
    return settings


CASES = [
    ("missing_file", lambda tmp: tmp / "nowhere.shp", {}, "does not exist"),
    ("directory_not_file", lambda tmp: tmp, {}, "is not a file"),
    ("unknown_format", lambda tmp: BAD / "unknown_format.xyz", {}, "not a readable vector file"),
    ("empty_file", lambda tmp: BAD / "empty.geojson", {}, "file is empty (0 bytes)"),
    ("not_json", lambda tmp: BAD / "not_json.geojson", {}, "not a readable vector file"),
    ("outside_hk", lambda tmp: BAD / "outside_hk.geojson", {}, "outside Hong Kong"),
    ("lonlat_declared_2326", lambda tmp: BAD / "lonlat_declared_2326.geojson", {},
     "look like longitude/latitude (EPSG:4326), not EPSG:2326"),
    ("swapped_lonlat", lambda tmp: BAD / "swapped_lonlat.geojson", {}, "axes swapped"),
    ("no_crs", lambda tmp: BAD / "no_crs.csv", {}, "has no CRS and its coordinates do not imply one; set source.crs"),
    ("duplicate_keys", lambda tmp: BAD / "duplicate_keys.geojson", {"primary_key": "lot"},
     "duplicate primary keys in 'lot': KTIL 712, NKIL 1"),
    ("mixed_families", lambda tmp: BAD / "mixed_families.geojson", {}, "mixed geometry types"),
    ("proj_string_crs", lambda tmp: DATA / "good" / "landsd_point.geojson",
     {"source_keys": {"crs": "+proj=longlat +datum=WGS84"}}, "PROJ strings are refused"),
]


@pytest.mark.parametrize(("name", "source", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_source(name: str, source: Callable[[Path], Path], extra: dict[str, object], message: str,
                    loaded: Settings, db: psycopg.Connection, layer_yaml: Callable[..., Path],
                    tmp_path: Path) -> None:
    before = db_snapshot(db)
    path = layer_yaml(name, source(tmp_path), **extra)
    code, lines = _run(loaded, str(path))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0]
    assert str(path) in lines[0] or source(tmp_path).name in lines[0]
    assert db_snapshot(db) == before


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("custodian: Test Department\n", ""), "custodian: Field required"),
    (lambda text: text.replace("licence: test data", "licence: [1, 2]"), "licence: Input should be a valid string"),
])
def test_bad_yaml(edit: Callable[[str], str], message: str, loaded: Settings, db: psycopg.Connection,
                  layer_yaml: Callable[..., Path]) -> None:
    before = db_snapshot(db)
    path = layer_yaml("bad_yaml", DATA / "good" / "landsd_point.geojson")
    path.write_text(edit(path.read_text("utf-8")), encoding="utf-8")
    code, lines = _run(loaded, str(path))
    assert code == 1 and len(lines) == 1
    assert lines[0] == f"error: {path}: {message}" or lines[0].startswith(f"error: {path}: {message}")
    assert db_snapshot(db) == before


def test_unknown_layer_id(loaded: Settings) -> None:
    code, lines = _run(loaded, "no_such_layer")
    assert code == 1 and lines == [f"error: no layer 'no_such_layer': no file {LAYERS / 'no_such_layer.yml'}"]


def test_database_down(settings: Settings) -> None:
    code, lines = _run(settings, str(LAYERS / "oil_storage_installations.yml"), url="postgresql://127.0.0.1:1/sdi")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: database postgresql://127.0.0.1:1/sdi is unreachable")


def test_one_bad_layer_does_not_stop_the_others(settings: Settings, db: psycopg.Connection,
                                                layer_yaml: Callable[..., Path]) -> None:
    bad = layer_yaml("broken_one", BAD / "outside_hk.geojson")
    good = layer_yaml("good_one", DATA / "good" / "landsd_point.geojson")
    code, lines = _run(settings, str(bad), str(good))
    assert code == 1
    assert lines[0].startswith("error: ") and "outside Hong Kong" in lines[0]
    assert "1 of 2 layer(s) failed" in lines[-1]
    assert db.execute("select count(*) from layers.good_one").fetchone() == (2,)
    assert db.execute("select to_regclass('layers.broken_one')").fetchone() == (None,)
