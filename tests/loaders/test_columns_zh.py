"""Bilingual column names and identifier columns (issue 16, "Columns").

The 2013 GeoInfo Map CSVs (extracts in tests/data/public_facility_csv_2013, see its README) label every
column twice, in English and in Chinese. Each is loaded into PostGIS and checked against the file itself:
no ``field_<n>`` column, each Chinese twin named ``<english>_zh``, and telephone and fax numbers stored as
text exactly as the file spells them.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import psycopg
import pytest
import shapely

from loaders.attributes import column_names, is_identifier, normalise_attributes
from loaders.glossary import composed_name, glossary_name, twin_columns, twin_name
from loaders.pipeline import load
from loaders.report import LoadReport
from sdi.layerdef import parse_definition, read_definition
from sdi.settings import Settings
from tests.conftest import ROOT
from tests.loaders.test_stream import _both

FACILITIES = ROOT / "tests" / "data" / "public_facility_csv_2013"
CSVS = sorted(FACILITIES.glob("*/*.csv"))
CJK = re.compile(r"[\u3400-\u9fff]")
IDENTIFIERS = ("TELEPHONE", "FAX NUMBER")


def _source(path: Path) -> pd.DataFrame:
    """The file as text, read independently of the loader (the format its README describes)."""
    table = pd.read_csv(path, encoding="utf-16", sep="\t", dtype=str, keep_default_na=False)
    return table.drop(columns=[c for c in table.columns if c.startswith("Unnamed:")])


def _expected_twin(english: str) -> str:
    """``ENGLISH NAME`` → ``name_zh``, ``FAX NUMBER`` → ``fax_number_zh``, ``WI-FI COVERAGE`` → ``wi_fi_coverage_zh``.

    Written apart from the loader: the English label in snake case, without its language word, and ``_zh``.
    """
    words = re.sub(r"[^0-9a-z]+", "_", english.lower()).strip("_")
    return re.sub(r"^english_", "", words) + "_zh"


def _columns(db: psycopg.Connection, table: str) -> dict[str, str]:
    return dict(db.execute("select column_name, data_type from information_schema.columns where table_schema ="
                           " 'layers' and table_name = %s order by ordinal_position", (table,)).fetchall())


def test_every_file_in_the_source_folder_has_an_extract() -> None:
    assert [p.relative_to(FACILITIES).as_posix() for p in CSVS] == [
        "fixed/LIBRARY_LCSD_20131213.csv", "original/AQMN_EPD_20131213.csv", "original/CTRY_PARK_AFCD_20131213.csv",
        "original/DO_NGO_EPD_20131213.csv", "original/GOVWIFI_OGCIO_20131213.csv",
        "original/HOSPITAL_HA_20131213.csv", "original/LIBRARY_LCSD_20131213.csv",
        "original/MAR_PARK_AFCD_20131213.csv", "original/PO_HKPost_20131213.csv"]


@pytest.mark.parametrize("path", CSVS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_2013_department_csv_loads_with_readable_names_and_telephones_as_text(
        path: Path, layer_yaml: Any, settings: Settings, db: psycopg.Connection) -> None:
    layer_id = "pf_" + re.sub(r"[^a-z0-9]+", "_", f"{path.parent.name}_{path.stem}".lower())
    report = load(read_definition(layer_yaml(layer_id, path)), settings)
    source = _source(path)
    columns = _columns(db, layer_id)
    by_original = {f.original_name: f.name for f in report.fields}

    assert not [c for c in columns if re.fullmatch(r"field_\d+", c)], columns
    assert set(by_original) == {"(generated)", *source.columns}  # every source column, under its original name
    headers = list(source.columns)
    twins = [(e, z) for e, z in itertools.pairwise(headers) if not CJK.search(e) and CJK.search(z)]
    assert len(twins) == len(headers) // 2  # every Chinese column stands right after its English twin
    for english, chinese in twins:
        assert by_original[chinese] == _expected_twin(english), (english, chinese)
        assert by_original[chinese] in columns

    rows = db.execute(f'select * from layers."{layer_id}" order by fid').fetchall()
    names = [c.name for c in db.execute(f'select * from layers."{layer_id}" limit 0').description or []]
    for original in (*IDENTIFIERS, *(z for e, z in twins if e in IDENTIFIERS)):
        column = by_original[original]
        assert columns[column] == "text", (original, columns[column])
        stored = [row[names.index(column)] for row in rows]
        assert stored == [v or None for v in source[original]]  # spaces, brackets and digits as in the file


def test_the_telephone_numbers_of_the_extracts_are_not_all_blank() -> None:
    """The per-file test above is only as good as the values it compares: they show every form."""
    values = {v for p in CSVS for v in _source(p)["TELEPHONE"] if v}
    assert "1823" in values and "28170018" in values  # digits only: integers before issue 16
    assert any(re.fullmatch(r"\d{4} \d{4}", v) for v in values)
    assert any(v.startswith("(852) ") for v in values)


def _frame(data: dict[str, list[Any]]) -> gpd.GeoDataFrame:
    n = len(next(iter(data.values())))
    return gpd.GeoDataFrame(data, geometry=[shapely.Point(830_000 + i, 815_000) for i in range(n)], crs=2326)


def _definition(**extra: object) -> Any:
    doc = {"id": "t", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c", "licence": "l",
           "source": {"path": "x.geojson"}, **extra}
    return parse_definition(doc, where="t.yml")


def test_identifiers_stay_text_by_name_and_by_value_and_a_declared_type_wins() -> None:
    """Synthetic values: leading zeros, plus signs and spaces are kept; a declared type still converts."""
    frame = _frame({
        "Tel No.": ["28170018", "21234567", "39000000"],
        "傳真號碼": ["28170019", "21234568", "39000001"],
        "Postal Code": ["0012", "1234", "999"],
        "contact": ["+852 2817 0018", "+85221234567", "+852 3900 0000"],
        "ref": ["0012", "0013", "0099"],
        "spaced": ["2511 0690", "2817 0018", "3900 0000"],
        "beds": ["12", "140", "7"],
        "Total Number": ["3", "4", "5"],
        "FAX": ["28170019", "21234568", "39000001"],
    })
    report = LoadReport("t", "x")
    attrs = normalise_attributes(frame, _definition(fields={"FAX": {"type": "integer"}}), report)
    types = {f.original_name: f.type for f in attrs.fields}
    assert types == {"(generated)": "bigint", "Tel No.": "text", "傳真號碼": "text", "Postal Code": "text",
                     "contact": "text", "ref": "text", "spaced": "text", "beds": "bigint",
                     "Total Number": "bigint", "FAX": "bigint"}
    assert list(attrs.frame["tel_no"]) == ["28170018", "21234567", "39000000"]
    assert list(attrs.frame["postal_code"]) == ["0012", "1234", "999"]
    assert list(attrs.frame["contact"]) == ["+852 2817 0018", "+85221234567", "+852 3900 0000"]
    assert any(n.startswith("3 identifier columns") and "Tel No., 傳真號碼, Postal Code" in n for n in report.notes)


@pytest.mark.parametrize(("names", "expected"), [
    (["TELEPHONE"], True), (["聯絡電話"], True), (["Licence No."], True), (["Lot Number"], True),
    (["DCCA_CODE"], True), (["x", "fax_number_zh"], True), (["郵編"], True),
    (["EASTING"], False), (["Total Number"], False), (["NO_OF_BEDS"], False), (["No."], False),
    (["Lot Area"], False), (["OBJECTID"], False), (["數目"], False),
])
def test_identifier_names(names: list[str], expected: bool) -> None:
    assert is_identifier(*names) is expected


def test_twins_side_by_side_in_blocks_and_in_mixed_labels() -> None:
    geodata_store = ["GMID", "Northing", "Easting", "Dataset", "Facility Name", "Address", "數據集", "設施名稱", "地址",
                     "Telephone", "聯絡電話", "LATITUDE(N)", "北緯", "Last Update"]
    assert column_names(geodata_store, {}, set()) == {
        "GMID": "gmid", "Northing": "northing", "Easting": "easting", "Dataset": "dataset",
        "Facility Name": "facility_name", "Address": "address", "數據集": "dataset_zh", "設施名稱": "facility_name_zh",
        "地址": "address_zh", "Telephone": "telephone", "聯絡電話": "telephone_zh", "LATITUDE(N)": "latitude_n",
        "北緯": "latitude_n_zh", "Last Update": "last_update"}
    wifi = ["ENGLISH NAME", "中文名稱", "WI-FI COVERAGE", "WI-FI 覆蓋範圍"]
    assert list(column_names(wifi, {}, set()).values()) == ["english_name", "name_zh", "wi_fi_coverage",
                                                            "wi_fi_coverage_zh"]
    bilingual_labels = ["Name 名稱", "Address 地址"]  # one column each, labelled in both languages
    assert list(column_names(bilingual_labels, {}, set()).values()) == ["name", "address"]


def test_a_lone_chinese_column_is_no_twin_and_a_declared_english_name_carries_over() -> None:
    assert twin_columns(["OBJECTID", "名稱", "地址"]) == {}
    assert column_names(["OBJECTID", "名稱", "冷門欄"], {}, set()) == {
        "OBJECTID": "objectid", "名稱": "name_zh", "冷門欄": "u51b7_u9580_u6b04_zh"}
    specs = {"ENGLISH CATEGORY": parse_definition(
        {"id": "t", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c", "licence": "l",
         "source": {"path": "x.csv"}, "fields": {"ENGLISH CATEGORY": {"name": "kind"}}}, where="t.yml"
    ).fields["ENGLISH CATEGORY"]}
    assert column_names(["ENGLISH CATEGORY", "中文類別", "ENGLISH NAME", "中文名稱"], specs, set()) == {
        "ENGLISH CATEGORY": "kind", "中文類別": "kind_zh", "ENGLISH NAME": "english_name", "中文名稱": "name_zh"}


def test_names_from_the_glossary_or_composed_word_by_word() -> None:
    assert glossary_name("就讀學生性別") == "student_gender_zh" and glossary_name("中文 類別") == "category_zh"
    assert composed_name("回收機構名稱") == "recycling_organisation_name_zh"
    assert composed_name("郵政局地址") == "post_office_address_zh"  # the longest term first
    assert composed_name("冷門欄") == "u51b7_u9580_u6b04_zh" == composed_name("冷 門 欄")
    assert composed_name("()") == "" and twin_name("name_en") == "name_zh" and twin_name("english") == "english_zh"


def test_a_streamed_load_keeps_identifiers_and_twins_as_a_whole_load_does(
        tmp_path: Path, layer_yaml: Any, settings: Settings, db: psycopg.Connection) -> None:
    """Synthetic GeoPackage whose telephone-like values change form only in the last chunk."""
    n = 13
    frame = _frame({
        "ENGLISH NAME": [f"Site {i}" for i in range(n)],
        "中文名稱": [f"地點{i}" for i in range(n)],
        "TELEPHONE": [str(28170000 + i) for i in range(n)],
        "聯絡電話": [str(28170000 + i) for i in range(n)],
        "contact": [str(21230000 + i) for i in range(n - 1)] + ["+852 2123 0012"],
        "ref": [str(100 + i) for i in range(n - 1)] + ["0112"],
        "beds": [str(i) for i in range(n)],
    })
    frame.to_file(tmp_path / "sites.gpkg", driver="GPKG", engine="pyogrio")
    definition = read_definition(layer_yaml("pf_streamed_ids", tmp_path / "sites.gpkg"))
    whole, streamed, _ = _both(definition, settings, 4, db)
    assert streamed == whole
    assert dict(whole["columns"]) == {"fid": "bigint", "english_name": "text", "name_zh": "text", "telephone": "text",
                                      "telephone_zh": "text", "contact": "text", "ref": "text", "beds": "bigint",
                                      "geom": "USER-DEFINED"}
