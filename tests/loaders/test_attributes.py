"""Attribute normalisation: names, NULLs, Unicode, declared types, primary keys."""

from __future__ import annotations

import unicodedata

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import Point

from loaders.attributes import clean_text, column_names, normalise_attributes, snake_ascii
from loaders.report import LoadReport
from sdi.errors import DataError, LayerDefinitionError
from sdi.layerdef import FieldSpec, parse_definition


def _definition(**extra: object):
    doc = {"id": "t", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c", "licence": "l",
           "source": {"path": "x.geojson"}, **extra}
    return parse_definition(doc, where="t.yml")


def _frame(data: dict[str, list[object]]) -> gpd.GeoDataFrame:
    n = len(next(iter(data.values())))
    return gpd.GeoDataFrame(data, geometry=[Point(830000 + i, 815000) for i in range(n)], crs=2326)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("DCCA_ENG", "dcca_eng"), ("lotNumberEN", "lot_number_en"), ("Road_Length (m)", "road_length_m"),
     ("Licence No.", "licence_no"), ("LATITUDE(N)", "latitude_n"), ("數據集", ""), ("Café", "cafe")],
)
def test_snake_ascii(raw: str, expected: str) -> None:
    assert snake_ascii(raw) == expected


def test_column_names_unique_and_never_reserved() -> None:
    names = column_names(["數據集", "Name", "NAME", "geom", "fid", "1st", "冷門欄", "?"], {}, {"fid"})
    assert names == {"數據集": "dataset_zh", "Name": "name", "NAME": "name_2", "geom": "geom_src", "fid": "fid_src",
                     "1st": "f_1st", "冷門欄": "u51b7_u9580_u6b04_zh", "?": "field_8"}


def test_glossary_ignores_spaces_and_fullwidth_brackets() -> None:
    assert column_names(["地面海拔高度 （米）", "地 址"], {}, set()) == {
        "地面海拔高度 （米）": "ground_elevation_m_zh", "地 址": "address_zh"}


def test_declared_rename_wins() -> None:
    assert column_names(["TCNAME"], {"TCNAME": FieldSpec(name="name_zh")}, set()) == {"TCNAME": "name_zh"}


def test_nan_text_to_null_and_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Café")
    report = LoadReport("t", "x")
    attrs = normalise_attributes(_frame({"a": ["nan", "NaN", "", decomposed, "ok"]}), _definition(), report)
    values = list(attrs.frame["a"])
    assert values[:3] == [None, None, None]
    assert values[3] == "Café" and unicodedata.is_normalized("NFC", values[3])
    assert any("3 text values" in n for n in report.notes)


def test_original_names_kept_in_field_list() -> None:
    attrs = normalise_attributes(_frame({"設施名稱": ["x"], "冷門欄": ["y"], "Easting": ["1"]}), _definition(),
                                 LoadReport("t", "x"))
    assert [(f.name, f.original_name) for f in attrs.fields] == [
        ("fid", "(generated)"), ("facility_name_zh", "設施名稱"), ("u51b7_u9580_u6b04_zh", "冷門欄"),
        ("easting", "Easting")]


def test_numbers_detected_only_when_every_value_parses() -> None:
    frame = _frame({"n": ["1", "2", "nan"], "f": ["1.5", "2", "3"], "code": ["0012", "0013", "0014"],
                    "mixed": ["1", "two", "3"]})
    attrs = normalise_attributes(frame, _definition(), LoadReport("t", "x"))
    types = {f.name: f.type for f in attrs.fields}
    assert types == {"fid": "bigint", "n": "bigint", "f": "double precision", "code": "text", "mixed": "text"}


def test_a_plus_sign_makes_text_only_of_a_telephone_number() -> None:
    """A signed change ('+1.5', '-2') stays a number; an international telephone number stays text."""
    frame = _frame({"change": ["+1.5", "-2", "+0.3"], "whole": ["+3", "-12", "+40"],
                    "contact": ["+852 2511 0690", "+852 2511 0691", "+852 2511 0692"],
                    "line": ["+85225110690", "+85225110691", "+85225110692"]})
    attrs = normalise_attributes(frame, _definition(), LoadReport("t", "x"))
    types = {f.name: f.type for f in attrs.fields}
    assert types == {"fid": "bigint", "change": "double precision", "whole": "bigint", "contact": "text",
                     "line": "text"}
    assert list(attrs.frame["change"]) == [1.5, -2.0, 0.3] and list(attrs.frame["whole"]) == [3, -12, 40]
    assert attrs.frame["contact"].iloc[0] == "+852 2511 0690" and attrs.frame["line"].iloc[0] == "+85225110690"


def test_declared_types_convert_or_fail_clearly() -> None:
    frame = _frame({"d": ["28/1/2022", "16/3/2022"], "b": ["yes", "no"], "i": ["1", "2"]})
    fields = {"d": {"type": "date"}, "b": {"type": "boolean"}, "i": {"type": "float"}}
    attrs = normalise_attributes(frame, _definition(fields=fields), LoadReport("t", "x"))
    assert [str(v) for v in attrs.frame["d"]] == ["2022-01-28", "2022-03-16"]
    assert list(attrs.frame["b"]) == [True, False]
    with pytest.raises(DataError, match=r"fields\.i: value 'x' is not a number"):
        normalise_attributes(_frame({"i": ["1", "x"]}), _definition(fields={"i": {"type": "integer"}}),
                             LoadReport("t", "x"))


def test_unknown_field_key_is_a_definition_error() -> None:
    with pytest.raises(LayerDefinitionError, match=r"fields\.NOPE: no such column"):
        normalise_attributes(_frame({"a": ["1"]}), _definition(fields={"NOPE": {"name": "x"}}), LoadReport("t", "x"))


def test_duplicate_primary_keys_rejected_with_keys_listed() -> None:
    frame = _frame({"lot": ["KTIL 712", "KTIL 713", "KTIL 712", "NKIL 1", "NKIL 1"]})
    with pytest.raises(DataError) as info:
        normalise_attributes(frame, _definition(primary_key="lot"), LoadReport("t", "x"))
    assert "duplicate primary keys in 'lot': KTIL 712, NKIL 1" in str(info.value)


def test_declared_primary_key_used_instead_of_fid() -> None:
    attrs = normalise_attributes(_frame({"lot": ["A", "B"]}), _definition(primary_key="lot"), LoadReport("t", "x"))
    assert attrs.primary_key == "lot" and "fid" not in attrs.frame.columns


def test_lists_become_jsonb() -> None:
    attrs = normalise_attributes(_frame({"uses": [["P", "T"], []]}), _definition(), LoadReport("t", "x"))
    assert {f.name: f.type for f in attrs.fields}["uses"] == "jsonb"
    assert pd.isna(attrs.frame["uses"]).sum() == 0


def test_clean_text_keeps_each_value_on_its_row_when_rows_were_dropped() -> None:
    """After a dropped geometry the frame's index has a gap; cleaned text must stay on its own row."""
    series = pd.Series(["Centre Parc", "nan", "Ftlife Tower", "新明大廈"], index=[0, 2, 5, 9], dtype=object)
    cleaned, nulled = clean_text(series)
    assert cleaned.to_dict() == {0: "Centre Parc", 2: None, 5: "Ftlife Tower", 9: "新明大廈"} and nulled == 1
