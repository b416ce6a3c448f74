"""Layer definitions: the minimal file is enough; every error names the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdi.cli import app
from sdi.errors import LayerDefinitionError, LayerNotFoundError
from sdi.layerdef import read_definition, resolve, validate_files
from tests.conftest import LAYERS, SAMPLE

MINIMAL = """\
id: district_council_2001
title: {en: District Council districts (2001), zh: 區議會分區（2001）}
abstract: {en: Constituency areas, zh: 選區}
custodian: Census and Statistics Department
licence: HKSAR Government data
source:
  path: ../sample/dc_2001/dcca.shp
"""


def test_minimal_definition_is_enough(tmp_path: Path) -> None:
    (tmp_path / "sample" / "dc_2001").mkdir(parents=True)
    (tmp_path / "sample" / "dc_2001" / "dcca.shp").write_bytes(b"x")
    (tmp_path / "layers").mkdir()
    path = tmp_path / "layers" / "district_council_2001.yml"
    path.write_text(MINIMAL, encoding="utf-8")
    d = read_definition(path)
    assert d.title.zh == "區議會分區（2001）"
    assert d.source_path == (tmp_path / "sample" / "dc_2001" / "dcca.shp").resolve()
    assert d.source.crs is None and d.fields == {} and d.primary_key is None and not d.synthetic


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (lambda t: t.replace("custodian: Census and Statistics Department\n", ""), "custodian", "Field required"),
        (lambda t: t.replace("title: {en: District Council districts (2001), zh: 區議會分區（2001）}",
                             "title: [a, b]"), "title", "valid dictionary"),
        (lambda t: t + "geometry_type: Hexagon\n", "geometry_type", "Input should be"),
        (lambda t: t + "colour: red\n", "colour", "unknown key"),
        (lambda t: t.replace("path: ../sample", "pathh: ../sample"), "source.path", "Field required"),
        (lambda t: t + "fields: {NAME: {type: money}}\n", "fields.NAME.type", "Input should be"),
        (lambda t: t.replace("id: district_council_2001", "id: District Council"), "id", "pattern"),
        (lambda t: t.replace("source:\n", "source:\n  encoding: klingon\n"), "source.encoding", "unknown encoding"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, edit: Callable[[str], str], key: str, problem: str) -> None:
    path = tmp_path / "district_council_2001.yml"
    path.write_text(edit(MINIMAL), encoding="utf-8")
    with pytest.raises(LayerDefinitionError) as info:
        read_definition(path)
    message = str(info.value)
    assert f"{path}: {key}: " in message and problem in message
    assert "\n" not in message


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other.yml"
    path.write_text(MINIMAL, encoding="utf-8")
    with pytest.raises(LayerDefinitionError, match="does not match the file name 'other'"):
        read_definition(path)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    path.write_text("id: x\ntitle: {en: [unclosed\n", encoding="utf-8")
    with pytest.raises(LayerDefinitionError, match=r"x.yml: not valid YAML at line"):
        read_definition(path)


def test_resolve_unknown_layer(tmp_path: Path) -> None:
    with pytest.raises(LayerNotFoundError, match="no layer 'nope'"):
        resolve("nope", tmp_path)


def test_validate_reports_every_error(tmp_path: Path) -> None:
    bad1 = tmp_path / "a.yml"
    bad1.write_text(MINIMAL.replace("id: district_council_2001", "id: a").replace("licence: HKSAR Government data\n",
                                                                                  ""), encoding="utf-8")
    bad2 = tmp_path / "b.yml"
    bad2.write_text(MINIMAL.replace("id: district_council_2001", "id: b") + "primary_key: [1]\n", encoding="utf-8")
    missing = tmp_path / "c.yml"
    missing.write_text(MINIMAL.replace("id: district_council_2001", "id: c"), encoding="utf-8")
    good, problems = validate_files([bad1, bad2, missing])
    assert good == []
    assert any(p.startswith(f"{bad1}: licence: ") for p in problems)
    assert any(p.startswith(f"{bad2}: primary_key: ") for p in problems)
    assert any(p.startswith(f"{missing}: source.path: file ") and "does not exist" in p for p in problems)


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["layers", "validate", *map(str, sorted(LAYERS.glob("*.yml")))])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "b.yml"
    bad.write_text(MINIMAL.replace("id: district_council_2001", "id: b").replace("custodian: Census and Statistics "
                                                                                 "Department\n", ""))
    result = runner.invoke(app, ["layers", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"error: {bad}: custodian: Field required" in result.stderr


def test_every_shipped_layer_is_valid_and_points_into_data_sample() -> None:
    good, problems = validate_files(sorted(LAYERS.glob("*.yml")))
    assert problems == []
    assert len(good) >= 7
    for d in good:
        assert d.source_path.is_relative_to(SAMPLE.resolve()), d.id
