"""Every reader path the sample layers use, on the real sample files in data/sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loaders import normalise, read
from loaders.report import LoadReport
from sdi.layerdef import read_definition
from tests.conftest import LAYERS, SAMPLE

PUA = range(0xE000, 0xF900)


def _read(layer_id: str) -> tuple[LoadReport, object]:
    definition = read_definition(LAYERS / f"{layer_id}.yml")
    report = LoadReport(layer_id, str(definition.source_path))
    frame, epsg = read(definition, report)
    return report, normalise(frame, epsg, definition, report)


def test_shapefile_without_shx_or_prj_and_big5_dbf() -> None:
    report, layer = _read("district_council_2001")
    assert report.features_read == 390
    assert report.crs_origin == "inferred" and report.source_crs == "EPSG:2326"
    assert report.encoding == "big5hkscs"
    assert any(".shx was missing" in n for n in report.notes)
    assert not (SAMPLE / "dc_2001" / "dcca.shx").exists(), "the source folder must not be written to"
    names = list(layer.frame["dcca_chin"])  # type: ignore[attr-defined]
    assert "南昌北" in names and "大坑東及又一村" in names
    assert not any(ord(c) in PUA or c == "\ufffd" for n in names for c in n)
    assert report.repaired == {"invalid geometry repaired (ring self-intersection)": 2}


def test_big5_dbf_table_reads_sham_shui_po(tmp_path: Path) -> None:
    # dc_land.dbf (LDID 0x4F): GDAL's CP950 gives 深水鶧; the big5hkscs path must give 深水埗區.
    import pyogrio

    from loaders.read import _decode_latin1_columns

    frame = pyogrio.read_dataframe(SAMPLE / "dc_2001" / "dc_land.dbf", encoding="ISO-8859-1", read_geometry=False)
    _decode_latin1_columns(frame, "big5hkscs")
    assert "深水埗區" in set(frame["DC_CHIN"])
    assert "\u9da7" not in "".join(frame["DC_CHIN"])


def test_shapefile_wgs84_with_cpg_and_invalid_polygon() -> None:
    report, layer = _read("districts_18")
    assert (report.source_crs, report.crs_origin, report.encoding) == ("EPSG:4326", "file", "utf-8")
    assert "Hong Kong 1980 to WGS 84 (1)" in report.transformation
    assert layer.geometry_type == "MultiPolygon"  # type: ignore[attr-defined]
    assert report.repaired["invalid geometry repaired (ring self-intersection)"] == 1
    assert "5 single parts written as one-part MultiPolygon (the layer mixes single and multi parts)" in report.notes
    wts = layer.frame[layer.frame["name_en"] == "WONG TAI SIN"]  # type: ignore[attr-defined]
    assert wts["name_zh"].iloc[0] == "黃大仙區"
    assert 9.2e6 < wts.geometry.area.iloc[0] < 9.4e6  # true area in EPSG:2326, not the shipped Web-Mercator m²
    assert {g.geom_type for g in layer.geometries()} == {"MultiPolygon"}  # type: ignore[attr-defined]


def test_geopackage_in_hk1980() -> None:
    report, layer = _read("traffic_hotzone_streets")
    assert (report.source_crs, report.crs_origin, report.driver) == ("EPSG:2326", "file", "GPKG")
    assert report.transformation.startswith("none")
    assert layer.geometry_type == "MultiLineString"  # type: ignore[attr-defined]
    assert report.features_read == 19 == len(layer.frame)  # type: ignore[attr-defined]
    assert "name_zh" in layer.frame.columns  # type: ignore[attr-defined]


def test_shapefile_in_utm49n() -> None:
    report, layer = _read("landslide_incidents")
    assert report.source_crs == "EPSG:32649"
    assert report.features_read == 622 == len(layer.frame)  # type: ignore[attr-defined]
    assert "objectid" in layer.frame.columns  # type: ignore[attr-defined]


@pytest.mark.parametrize("layer_id", ["oil_storage_installations", "industrial_special_waivers"])
def test_geojson_crs84_with_chinese_columns_and_nan_text(layer_id: str) -> None:
    report, layer = _read(layer_id)
    assert report.source_crs == "EPSG:4326" and report.driver == "GeoJSON"
    frame = layer.frame  # type: ignore[attr-defined]
    assert not (frame.select_dtypes("object") == "nan").any().any()
    assert all(f.name.isascii() for f in layer.fields)  # type: ignore[attr-defined]
    originals = {f.original_name for f in layer.fields}  # type: ignore[attr-defined]
    assert any(not o.isascii() for o in originals) or layer_id == "industrial_special_waivers"


def test_utf16_tab_separated_csv_with_grid_columns() -> None:
    report, layer = _read("public_libraries_2013")
    assert report.encoding == "utf-16" and report.features_read == 260
    frame = layer.frame  # type: ignore[attr-defined]
    # a quoted name with embedded tabs stays one field; coordinates are the EASTING/NORTHING pair
    assert (frame.geometry.x == frame["easting"]).all() and (frame.geometry.y == frame["northing"]).all()
    assert any("delimiter '\\t'" in n for n in report.notes)


def test_missing_dbf_gives_geometry_only_layer_with_warning(tmp_path: Path) -> None:
    shutil.copy(SAMPLE / "dc_2001" / "dcca.shp", tmp_path / "dcca.shp")
    from sdi.layerdef import parse_definition

    definition = parse_definition({
        "id": "geom_only", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c", "licence": "l",
        "source": {"path": str(tmp_path / "dcca.shp"), "crs": "EPSG:2326"}}, where="geom_only.yml")
    report = LoadReport("geom_only", "x")
    frame, epsg = read(definition, report)
    layer = normalise(frame, epsg, definition, report)
    assert len(layer.frame) == 390 and list(layer.frame.columns) == ["fid", "geom"]
    assert any(".dbf is missing" in w for w in report.warnings)
