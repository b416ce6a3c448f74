"""Tables with coordinates: encodings, delimiters, xlsx sheets, column names, DMS, grid vs lat/lon cross-check."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pandas as pd
import psycopg
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from loaders import load
from loaders.report import LoadReport
from loaders.tables import (
    CROSSCHECK_TOLERANCE_M,
    TABLE_SUFFIXES,
    classify_column,
    detect_delimiter,
    detect_encoding,
    find_coordinate_columns,
    read_table,
)
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition, parse_definition, read_definition
from sdi.settings import Settings
from tests.conftest import DATA, SAMPLE

TABLES = DATA / "tables"
TO_WGS84 = Transformer.from_crs(2326, 4326, always_xy=True)


def _definition(path: Path, **source: object) -> LayerDefinition:
    return parse_definition({"id": "t", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c",
                             "licence": "l", "source": {"path": str(path), **source}}, where="t.yml")


def _read(path: Path, **source: object) -> tuple[pd.DataFrame, LoadReport]:
    report = LoadReport("t", str(path))
    return read_table(path, _definition(path, **source), report), report


@pytest.mark.parametrize(("path", "rows", "columns"), [
    (TABLES / "AQMN_EPD_20131213.csv", 15, 22),
    (TABLES / "MAR_PARK_AFCD_20131213.csv", 4, 20),
    (TABLES / "HOSPITAL_HA_20131213.csv", 45, 22),
    (SAMPLE / "public_facilities" / "LIBRARY_LCSD_20131213.csv", 260, 24),
])
def test_public_facility_csvs(path: Path, rows: int, columns: int) -> None:
    frame, report = _read(path)
    assert report.encoding == "utf-16" and any("delimiter '\\t'" in n for n in report.notes)
    assert len(frame) == rows and len(frame.columns) == columns + 1  # + geometry; trailing-tab column dropped
    assert not any(c.startswith("Unnamed") for c in frame.columns)
    assert frame.crs is None and frame.geometry.notna().all()
    assert (frame.geometry.x == frame["EASTING"].astype(float)).all()
    assert (frame.geometry.y == frame["NORTHING"].astype(float)).all()
    assert (frame["EASTING"] == frame["坐標東"]).all() and frame["中文名稱"].str.len().gt(0).all()
    assert not report.warnings


def test_library_name_with_seven_quoted_tabs_stays_one_field() -> None:
    frame, _ = _read(SAMPLE / "public_facilities" / "LIBRARY_LCSD_20131213.csv")
    row = frame[frame["中文名稱"] == "慈樂社區居民聯會"].iloc[0]
    name = "Tsz Lok Community Residents' Association"
    assert row["ENGLISH NAME"] == name + "\t" * 7 + name
    assert (row["EASTING"], row["NORTHING"], row["地區"]) == ("838715", "823082", "黃大仙")


def test_xlsx_with_chinese_headers_picks_the_only_filled_sheet(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "說明"  # an empty first sheet
    data = book.create_sheet("設施")
    data.append(["名稱", "東坐標 (米)", "北坐標 (米)", "電話", "開放日期"])
    data.append(["中環碼頭", 834101, 816664, "2868 1234", "2021-01-19"])
    data.append(["長洲", 820779.5, 806967, 12345678, "2021-01-20"])
    path = tmp_path / "facilities.xlsx"
    book.save(path)
    frame, report = _read(path)
    assert list(frame.columns[:5]) == ["名稱", "東坐標 (米)", "北坐標 (米)", "電話", "開放日期"]
    assert frame.geometry.x.tolist() == [834101.0, 820779.5] and frame.geometry.y.tolist() == [816664.0, 806967.0]
    assert frame["電話"].tolist() == ["2868 1234", "12345678"]  # mixed text and number: kept as text
    assert any("sheet '設施'" in n for n in report.notes) and any("電話" in n for n in report.notes)


def test_xlsx_sheet_choice(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    for title, east in (("2013", 834101), ("2014", 834102)):
        sheet = book.create_sheet(title)
        sheet.append(["EASTING", "NORTHING"])
        sheet.append([east, 816664])
    book.remove(book["Sheet"])
    path = tmp_path / "two.xlsx"
    book.save(path)
    with pytest.raises(SourceFormatError, match=r"two\.xlsx has 2 non-empty sheets \(2013, 2014\); set source\.layer"):
        _read(path)
    frame, _ = _read(path, layer="2014")
    assert frame.geometry.x.tolist() == [834102.0]
    with pytest.raises(SourceFormatError, match=r"source\.layer '2015': no such sheet in two\.xlsx"):
        _read(path, layer="2015")
    assert {".xlsx", ".csv", ".tsv", ".txt"} <= TABLE_SUFFIXES


def test_big5_csv(tmp_path: Path) -> None:
    path = tmp_path / "big5.csv"
    path.write_bytes("名稱,坐標東,坐標北\n深水埗區議會,836400,820600\n九龍城,837900,819800\n".encode("big5hkscs"))
    frame, report = _read(path)
    assert report.encoding == "big5hkscs" and frame["名稱"].tolist() == ["深水埗區議會", "九龍城"]
    assert frame.geometry.x.tolist() == [836400.0, 837900.0]


def test_utf16_be_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "be.txt"
    path.write_bytes("NAME\tEASTING\tNORTHING\r\n長洲\t820779\t806967\r\n".encode("utf-16-be"))
    frame, report = _read(path)
    assert report.encoding == "utf-16-be" and frame["NAME"].tolist() == ["長洲"]
    assert (frame.geometry.x[0], frame.geometry.y[0]) == (820779.0, 806967.0)
    assert detect_encoding("a\tb".encode("utf-16-le"))[0] == "utf-16-le"


def test_utf8_bom_semicolons_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    text = 'name;x;y;note\n"Pier; Central";834101;816664;"line one\nline two, with comma"\nPeak;833000;815000;\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    frame, report = _read(path)
    assert report.encoding == "utf-8-sig" and frame.columns[0] == "name"
    assert frame["note"].tolist() == ["line one\nline two, with comma", ""]
    assert frame["name"].tolist() == ["Pier; Central", "Peak"]
    assert frame.geometry.x.tolist() == [834101.0, 833000.0]


def test_detect_delimiter_ignores_quoted_tabs_and_commas() -> None:
    assert detect_delimiter('"a\t1,2"\t"b"\t"c"\n"x\t\t"\t"y,z"\t"w"\n') == "\t"
    assert detect_delimiter("a,b;c,d\n1,2;3,4\n5,6;7,8\n") == ","


def _grid_and_lonlat_table(path: Path, shift_row: int | None, shift_m: float) -> list[tuple[float, float]]:
    points = [(834101.0, 816664.0), (820779.0, 806967.0), (828872.0, 839306.0), (848874.0, 813793.0)]
    lines = ["NAME,EASTING,NORTHING,LATITUDE,LONGITUDE"]
    for i, (e, n) in enumerate(points):
        lon, lat = TO_WGS84.transform(e + (shift_m if i == shift_row else 0.0), n)
        lines.append(f"P{i},{e},{n},{lat:.8f},{lon:.8f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return points


def test_grid_and_lonlat_cross_check_flags_the_row_40_m_off(tmp_path: Path) -> None:
    path = tmp_path / "both.csv"
    points = _grid_and_lonlat_table(path, shift_row=2, shift_m=40.0)
    frame, report = _read(path)
    assert list(zip(frame.geometry.x, frame.geometry.y, strict=True)) == points  # geometry from the grid pair
    assert frame["coord_mismatch"].tolist() == [False, False, True, False]
    assert 39.9 <= frame["coord_mismatch_m"][2] <= 40.1 and frame["coord_mismatch_m"].drop(2).max() < 0.01
    warning = next(w for w in report.warnings if "coord_mismatch" in w)
    assert warning.startswith("1 of 4 rows") and "max 40.0 m" in warning and "EPSG:1825" in warning
    assert f"more than {CROSSCHECK_TOLERANCE_M:g} m" in warning


def test_cross_check_agreeing_rows_is_a_note(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    _grid_and_lonlat_table(path, shift_row=None, shift_m=0.0)
    frame, report = _read(path)
    assert not frame["coord_mismatch"].any() and not report.warnings
    assert any(n.startswith("cross-checked 'LATITUDE'/'LONGITUDE'") for n in report.notes)


def test_cross_check_skipped_when_grid_declared_in_another_crs(tmp_path: Path) -> None:
    path = tmp_path / "utm.csv"
    _grid_and_lonlat_table(path, shift_row=0, shift_m=100.0)
    frame, report = _read(path, crs="EPSG:32649")
    assert "coord_mismatch" not in frame.columns and any("skipped" in n for n in report.notes)


def test_weather_stations_dms_cross_check() -> None:
    # real HKO stations: DMS to whole seconds (±21 m), and two stations really are 74 m and 118 m off
    frame, report = _read(TABLES / "weather_stations_dms.csv")
    flagged = set(frame.loc[frame["coord_mismatch"].fillna(False), "Facility Name"])
    assert flagged == {"Clear Water Bay", "Kau Sai Chau"}
    assert frame.set_index("Facility Name")["coord_mismatch_m"]["Kau Sai Chau"] == pytest.approx(117.6, abs=0.5)
    assert any(w.startswith("2 of 6 rows") and "up to 21 m for the rounding" in w for w in report.warnings)


def test_dms_only_table_gives_decimal_degrees(tmp_path: Path) -> None:
    path = tmp_path / "dms.csv"
    path.write_text("站名,LATITUDE(N),LONGITUDE(E)\n雙魚河,\"22°29'36\"\"\",\"114°06'18\"\"\"\n"
                    "南,22 29 36.5 N,114°06.3'E\n", encoding="utf-8")
    frame, report = _read(path)
    assert frame.geometry.x[0] == pytest.approx(114.105)
    assert frame.geometry.y[0] == pytest.approx(22 + 29 / 60 + 36 / 3600)
    assert frame.geometry.x[1] == pytest.approx(114.105) and frame.geometry.y[1] == pytest.approx(22.493472, abs=1e-6)
    assert frame.crs is None and any("4 degrees-minutes-seconds values" in n for n in report.notes)


def test_swapped_lat_lon_columns_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "swapped.csv"
    path.write_text("name,lat,lon\nA,114.1,22.3\nB,114.2,22.4\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match=r"column 'lat' holds values up to 114\.2, beyond 90.*"
                                                r"look swapped; set source\.coordinates: \{x: lat, y: lon\}"):
        _read(path)


def test_swapped_grid_columns_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "swapped_grid.csv"
    path.write_text("name,EASTING,NORTHING\nA,816664,834101\nB,806967,875000\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match="fit Hong Kong only with the axes swapped"):
        _read(path)


def test_rows_without_usable_coordinates_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,X,Y\nA,834101,816664\nB,N/A,816000\nC,,\n,,\n", encoding="utf-8")
    frame, report = _read(path)
    assert len(frame) == 4 and not report.dropped  # the normaliser drops and counts rows without geometry
    assert frame.geometry.isna().tolist() == [False, True, True, True]
    assert "1 blank rows (every field empty): no geometry, dropped as null geometries" in report.notes
    assert any(w.startswith("2 rows have no usable coordinates in 'X'/'Y'; first value that is not a coordinate: "
                            "'N/A'") for w in report.warnings)


def test_no_coordinate_columns_says_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "half.csv"
    path.write_text("name,EASTING,height\nA,834101,3\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match=r"no coordinate columns found.*found only 'EASTING'"):
        _read(path)


@pytest.mark.parametrize(("name", "role"), [
    ("EASTING", ("grid", "x")), ("Easting (m)", ("grid", "x")), ("坐標北", ("grid", "y")),
    ("東坐標（米）", ("grid", "x")), ("HK1980 Northing", ("grid", "y")), ("hk80_e", ("grid", "x")),
    ("LATITUDE(N)", ("lonlat", "y")),
    ("LONGITUDE(E)", ("lonlat", "x")), ("緯度", ("lonlat", "y")), ("經度 (度)", ("lonlat", "x")),
    ("北緯", ("lonlat", "y")),
    ("lat_dd", ("lonlat", "y")), ("Lng", ("lonlat", "x")), ("POINT_X", ("xy", "x")), ("yCoord", ("xy", "y")),
    ("X坐標", ("xy", "x")), ("Long Name", None), ("e", None), ("Exit", None), ("Latitude Hotel", None),
    ("Eastern District", None), ("TEXT", None),
])
def test_classify_column(name: str, role: tuple[str, str] | None) -> None:
    assert classify_column(name) == role


X_NAMES = {"grid": ["EASTING", "Easting", "east", "坐標東", "東坐標", "座標東", "HK1980 Easting"],
           "lonlat": ["LONGITUDE", "Longitude", "lon", "lng", "long", "經度", "東經"],
           "xy": ["X", "x", "x_coord", "POINT_X", "X坐標"]}
Y_NAMES = {"grid": ["NORTHING", "Northing", "north", "坐標北", "北坐標", "座標北", "HK1980 Northing"],
           "lonlat": ["LATITUDE", "Latitude", "lat", "緯度", "北緯"],
           "xy": ["Y", "y", "y_coord", "POINT_Y", "Y坐標"]}
UNITS = ["", " (m)", "(m)", " [m]", " (HK1980)", "（米）", " (deg)", "(N)", "(E)", " (WGS84)", "_m"]
OTHER = ["ENGLISH NAME", "中文名稱", "ADDRESS", "地址", "DISTRICT", "區域", "Long Name", "Exit", "Text", "TELEPHONE",
         "Opening Hours", "Lot No.", "Latitude Hotel", "Eastern District", "Remarks", "GMID", "Date", "Type (m)"]
COORDINATE_WORDS = {"x", "y", "e", "n", "lat", "lon", "lng", "long", "east", "north", "easting", "northing",
                    "latitude", "longitude"}


def _decorate(name: str, case: str, unit: str, pad: str) -> str:
    cased = {"upper": name.upper(), "lower": name.lower(), "title": name.title(), "as": name}[case]
    return f"{pad}{cased}{unit}{pad}"


decoration = st.tuples(st.sampled_from(["upper", "lower", "title", "as"]), st.sampled_from(UNITS),
                       st.sampled_from(["", " ", "  "]))
other_names = st.lists(st.one_of(st.sampled_from(OTHER), st.text("abcdefghijkmopqrsuvz_ ", min_size=2, max_size=12)),
                       max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["grid", "lonlat", "xy"]), st.data(), decoration, decoration, other_names, st.randoms())
def test_property_the_right_pair_is_found(kind: str, data: st.DataObject, dx: tuple[str, str, str],
                                          dy: tuple[str, str, str], others: list[str], rnd: object) -> None:
    x = _decorate(data.draw(st.sampled_from(X_NAMES[kind])), *dx)
    y = _decorate(data.draw(st.sampled_from(Y_NAMES[kind])), *dy)
    assume(all(o.strip().lower() not in COORDINATE_WORDS for o in others) and x not in others and y not in others)
    columns = [*others, x, y]
    rnd.shuffle(columns)  # type: ignore[attr-defined]
    assert find_coordinate_columns(columns) == (x, y, kind)


@settings(max_examples=100, deadline=None)
@given(other_names)
def test_property_names_without_coordinates_give_none(others: list[str]) -> None:
    assume(all(o.strip().lower() not in COORDINATE_WORDS for o in others))
    assert find_coordinate_columns(others) is None


@given(st.sampled_from(X_NAMES["grid"]), st.sampled_from(Y_NAMES["grid"]), st.sampled_from(X_NAMES["lonlat"]),
       st.sampled_from(Y_NAMES["lonlat"]))
def test_property_grid_wins_over_lonlat(gx: str, gy: str, lx: str, ly: str) -> None:
    assert find_coordinate_columns([ly, lx, "NAME", gy, gx]) == (gx, gy, "grid")


def test_load_table_end_to_end(settings: Settings, db: psycopg.Connection, layer_yaml: Callable[..., Path],
                               tmp_path: Path) -> None:
    report = load(read_definition(layer_yaml("hospitals_2013", TABLES / "HOSPITAL_HA_20131213.csv")), settings)
    assert (report.features_written, report.source_crs, report.crs_origin) == (45, "EPSG:2326", "inferred")
    rows = db.execute("select easting, northing, st_x(geom), st_y(geom) from layers.hospitals_2013").fetchall()
    assert len(rows) == 45 and all(math.isclose(e, x) and math.isclose(n, y) for e, n, x, y in rows)
    path = tmp_path / "both.csv"
    _grid_and_lonlat_table(path, shift_row=1, shift_m=40.0)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("P9,830000,820000,,\n")  # no lat/lon: not checked, NULL flag
    load(read_definition(layer_yaml("both_pairs", path)), settings)
    types: dict[str, str] = dict(db.execute("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'layers' and table_name = 'both_pairs'").fetchall())
    assert types["coord_mismatch"] == "boolean" and types["coord_mismatch_m"] == "double precision"
    flagged = db.execute("select name from layers.both_pairs where coord_mismatch").fetchall()
    assert flagged == [("P1",)]
    unchecked = db.execute("select name from layers.both_pairs where coord_mismatch is null").fetchall()
    assert unchecked == [("P9",)]
