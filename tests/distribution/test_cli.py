"""`sdi export ID --format gpkg|shp|csv|geojson|parquet --output FILE`: the download files, offline; one line for
each mistake, and nothing written then."""

from __future__ import annotations

from pathlib import Path

import pyogrio
import pytest
from click.testing import Result
from typer.testing import CliRunner

from sdi.cli import app
from sdi.distribution.formats import FORMATS
from tests.distribution.conftest import Sample
from tests.live_server import free_port

pytestmark = pytest.mark.db


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["export", *args], env={"SDI_DATABASE_URL": database_url})


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_writes_each_format(sample: Sample, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"libraries.{FORMATS[fmt].extension}"
    result = run(sample.settings.database_url, "public_libraries_2013", "--format", fmt, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("wrote 260 features of public_libraries_2013 (load ")
    if fmt == "parquet":
        import geopandas as gpd

        frame = gpd.read_parquet(out)
    else:
        frame = pyogrio.read_dataframe(out, layer="public_libraries_2013" if fmt in ("gpkg", "shp") else None)
    assert len(frame) == 260 and "香港中央圖書館" in set(frame["name_zh"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary files left


def test_export_names_the_file_after_the_layer_by_default(sample: Sample, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(sample.settings.database_url, "districts_18", "-f", "shp")
    assert result.exit_code == 0, result.output
    assert pyogrio.read_info(tmp_path / "districts_18.zip", layer="districts_18")["features"] == 18


@pytest.mark.parametrize(("args", "message"), [
    (["districts_18", "--format", "xls"], "error: --format: expected one of gpkg, shp, csv, geojson, parquet, "
                                          "got 'xls'"),
    (["no_such_layer", "--format", "csv"], "error: no vector layer 'no_such_layer' is loaded"),
    (["districts_18", "--format", "shp", "--output", "{tmp}/d.shp"],
     "error: --output: the Shapefile export is a zip (.shp, .dbf, .prj, .cpg, fields.csv); name it d.zip"),
    (["districts_18", "--output", "{tmp}/missing/d.gpkg"], "error: --output: folder '{tmp}/missing' does not exist"),
    (["districts_18", "--output", "{tmp}"], "error: --output: '{tmp}' is a folder; name a file"),
])
def test_mistakes_are_one_line_and_write_nothing(sample: Sample, tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    (tmp_path / "keep.csv").write_text("old", encoding="utf-8")
    result = run(sample.settings.database_url, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1
    assert result.stderr.strip() == message.replace("{tmp}", str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.csv"]


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/sdi"
    result = run(url, "districts_18", "--output", str(tmp_path / "d.gpkg"))
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: database ") and "unreachable" in result.stderr
    assert "secret" not in result.stderr and not list(tmp_path.iterdir())
