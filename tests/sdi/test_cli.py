"""The `sdi` command line: load summary, dry run, JSON, --all, db init, and the skipped-test guard."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from sdi.cli import app
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, ROOT


def _invoke(settings: Settings, *args: str, layers_dir: Path = LAYERS):
    env = {"SDI_DATABASE_URL": settings.database_url, "SDI_LAYERS_DIR": str(layers_dir)}
    return CliRunner().invoke(app, list(args), env=env)


def test_load_prints_summary(settings: Settings) -> None:
    result = _invoke(settings, "load", "district_council_2001")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "district_council_2001: loaded 390 features into layers.district_council_2001" in out
    assert "read 390, written 390, repaired 2, dropped 0" in out
    assert "EPSG:2326 (inferred)" in out and "big5hkscs" in out and "seconds" in out


def test_dry_run_prints_report_and_writes_nothing(settings: Settings, db: psycopg.Connection,
                                                  layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("cli_dry", DATA / "good" / "landsd_point.geojson")
    result = _invoke(settings, "load", "--dry-run", "--json", str(path))
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["dry_run"] and report["features_read"] == 2 and report["features_written"] == 0
    assert "Hong Kong 1980 to WGS 84 (1)" in report["transformation"]
    assert db.execute("select to_regclass('layers.cli_dry')").fetchone() == (None,)


def test_load_all_continues_past_a_broken_definition(settings: Settings, db: psycopg.Connection,
                                                     layer_yaml: Callable[..., Path], tmp_path: Path) -> None:
    layer_yaml("all_good", DATA / "good" / "landsd_point.geojson")
    broken = layer_yaml("all_broken", DATA / "good" / "landsd_point.geojson")
    broken.write_text(broken.read_text("utf-8").replace("licence: test data\n", ""), encoding="utf-8")
    result = _invoke(settings, "load", "--all", layers_dir=tmp_path / "layers")
    assert result.exit_code == 1
    assert f"error: {broken}: licence: Field required" in result.stderr
    assert "1 of 2 layer(s) failed" in result.stderr
    assert db.execute("select count(*) from layers.all_good").fetchone() == (2,)


def test_load_needs_a_layer(settings: Settings) -> None:
    result = _invoke(settings, "load")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: name at least one layer id or YAML file, or use --all"


def test_db_init_is_idempotent_and_layers_list(settings: Settings) -> None:
    assert "none (up to date)" in _invoke(settings, "db", "init").stdout
    _invoke(settings, "load", "oil_storage_installations")
    listed = json.loads(_invoke(settings, "layers", "list", "--json").stdout)
    row = next(r for r in listed if r["id"] == "oil_storage_installations")
    assert row["feature_count"] == 23 and row["geometry_type"] == "Point" and not row["synthetic"]


def test_a_skipped_database_test_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('import pytest\npytest_plugins = ["tests._require_db"]\n'
                          '@pytest.fixture\ndef database_url():\n    pytest.skip("no server")\n')
    pytester.makepyfile(test_x="def test_needs_db(database_url):\n    pass\n\ndef test_plain():\n    pass\n")
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    pytester._monkeypatch.setenv("PYTHONPATH", env_path)
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*1 database test(s) were skipped*"])


def test_layers_drop_removes_table_and_record_but_keeps_history(settings: Settings, db: psycopg.Connection,
                                                                layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("drop_probe", DATA / "good" / "landsd_point.geojson")
    assert _invoke(settings, "load", str(path)).exit_code == 0
    result = _invoke(settings, "layers", "drop", "drop_probe", "--yes")
    assert result.exit_code == 0 and "dropped layers.drop_probe" in result.stdout
    assert db.execute("select to_regclass('layers.drop_probe')").fetchone() == (None,)
    assert db.execute("select count(*) from sdi.layer where id = 'drop_probe'").fetchone() == (0,)
    assert db.execute("select count(*) from sdi.load_history where layer_id = 'drop_probe'").fetchone() == (1,)
    again = _invoke(settings, "layers", "drop", "drop_probe", "--yes")
    assert again.exit_code == 1 and again.stderr.strip() == "error: no loaded layer 'drop_probe'"
