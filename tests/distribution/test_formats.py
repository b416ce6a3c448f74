"""Each download format of each vector sample layer reads back with pyogrio (GDAL), or pyarrow for GeoParquet, with
the same count, keys, attribute values (Chinese intact) and geometry within 1 cm of what PostGIS holds."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pyogrio
import pytest

from sdi.distribution.formats import FORMATS
from sdi.distribution.shapefile import TEXT_BYTES
from sdi.query.layer import LayerMeta
from tests.distribution.conftest import (
    NAMED,
    VECTOR_LAYERS,
    Sample,
    layer_meta,
    max_distance,
    postgis_rows,
    same,
    shapefile_mapping,
    wkb_of,
)

pytestmark = pytest.mark.db
CJK = re.compile(r"[\u3400-\u9fff]")
TOLERANCE_M = 0.01


def read_back(path: Path, fmt: str, layer: LayerMeta) -> tuple[list[str], list[dict[str, Any]], list[bytes], int]:
    """(keys, properties, WKB geometries, their SRID) of a download, read the way its users would."""
    key = layer.primary_key
    if fmt == "parquet":
        import geopandas as gpd
        import pyarrow.parquet as pq

        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
        frame = gpd.read_parquet(path)
        assert frame.crs.to_epsg() == 2326
        srid = 2326
    elif fmt == "geojson":
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["type"] == "FeatureCollection" and "crs" not in doc  # RFC 7946: WGS 84 longitude/latitude
        frame = pyogrio.read_dataframe(path, DATE_AS_STRING=True)
        srid = 4326
    elif fmt == "csv":
        frame = pyogrio.read_dataframe(path)  # GDAL takes the geometry from the column named wkt
        srid = 2326
    elif fmt == "shp":
        frame = pyogrio.read_dataframe(path, layer=layer.id)
        assert pyogrio.read_info(path, layer=layer.id)["crs"] == "EPSG:2326"
        names, _ = shapefile_mapping(path)
        frame = frame.rename(columns=names)
        srid = 2326
    else:
        assert pyogrio.read_info(path, layer=layer.id)["crs"] == "EPSG:2326"
        frame = pyogrio.read_dataframe(path, layer=layer.id, fid_as_index=True)
        if key not in frame.columns:  # the integer key is the GeoPackage's FID
            frame[key] = frame.index
        srid = 2326
    rows = frame.drop(columns="geometry").to_dict("records")
    return [str(r[key]) for r in rows], rows, wkb_of(frame.geometry.values), srid


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("layer_id", VECTOR_LAYERS)
def test_download_reads_back_the_same_features(sample: Sample, layer_id: str, fmt: str) -> None:
    written = sample.export(layer_id, fmt)
    layer = layer_meta(sample.settings, layer_id)
    assert written.load_id == layer.load_id and written.features == layer.record.feature_count
    keys, rows, wkbs, srid = read_back(written.path, fmt, layer)
    expected = postgis_rows(sample.settings, layer, as_text=fmt == "csv")
    assert len(rows) == len(expected) == layer.record.feature_count
    assert sorted(keys) == sorted(expected)
    cut = shapefile_mapping(written.path)[1] if fmt == "shp" else {}
    wrong = []
    for key, row in zip(keys, rows, strict=True):
        for name, pg_type in layer.columns.items():
            want, got = expected[key][name], row.get(name)
            if fmt == "csv":  # text as PostgreSQL writes it; CSV has no NULL; GDAL reads CR in values as LF
                ok = _lines(got or "") == _lines(want or "")
            else:
                if (key, name) in cut:  # cut or trimmed in the .dbf, the full value beside it
                    assert len((got or "").encode("utf-8")) <= TEXT_BYTES
                    assert cut[key, name].strip().startswith((got or "").strip())
                    got = cut[key, name]
                ok = same(got, want, pg_type, rel=1e-10 if fmt == "shp" else 0.0)
            if not ok:
                wrong.append((key, name, want, got))
    assert not wrong, wrong[:5]
    matched, distance = max_distance(sample.settings, layer, keys, wkbs, srid)
    assert matched == len(expected)
    assert distance <= TOLERANCE_M, f"geometry {distance:.4f} m from PostGIS"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_chinese_text_is_intact(sample: Sample, fmt: str) -> None:
    layer = layer_meta(sample.settings, "districts_18")
    _, rows, _, _ = read_back(sample.export("districts_18", fmt).path, fmt, layer)
    assert "深水埗區" in {r["name_zh"] for r in rows}
    libraries = layer_meta(sample.settings, "public_libraries_2013")
    _, rows, _, _ = read_back(sample.export("public_libraries_2013", fmt).path, fmt, libraries)
    assert sum(1 for r in rows if CJK.search(str(r["name_zh"] or ""))) == libraries.record.feature_count


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("layer_id", ["buildings_with_carparks", "industrial_special_waivers", "public_facilities"])
def test_csv_values_are_exact_with_the_csv_module(sample: Sample, layer_id: str) -> None:
    """Python's csv module reads every value exactly (line breaks inside values too), NULL as empty."""
    layer = layer_meta(sample.settings, layer_id)
    text = sample.export(layer_id, "csv").path.read_bytes().decode("utf-8-sig")  # no newline translation
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    expected = postgis_rows(sample.settings, layer, as_text=True)
    assert len(rows) == len(expected)
    for row in rows:
        want = expected[row[layer.primary_key]]
        assert {n: row[n] for n in layer.columns} == {n: v if v is not None else "" for n, v in want.items()}


def test_csv_opens_in_excel_as_utf8_with_wkt_in_the_hk_grid(sample: Sample) -> None:
    path = sample.export("industrial_special_waivers", "csv").path
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only after a BOM
    layer = layer_meta(sample.settings, "industrial_special_waivers")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == [*layer.columns, "wkt"]
    assert len(rows) - 1 == layer.record.feature_count
    easting, northing = map(float, re.findall(r"[\d.]+", rows[1][-1]))
    assert 800_000 < easting < 870_000 and 800_000 < northing < 850_000  # x = easting, y = northing
    assert data.count(b"\r\n") >= len(rows)


def test_shapefile_zip_is_utf8_with_prj_cpg_and_a_field_mapping(sample: Sample) -> None:
    from pyproj import CRS

    path = sample.export("industrial_special_waivers", "shp").path
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        stem = "industrial_special_waivers"
        assert {f"{stem}.{ext}" for ext in ("shp", "shx", "dbf", "prj", "cpg")} | {"fields.csv"} <= names
        assert archive.read(f"{stem}.cpg").decode().strip().upper() in ("UTF-8", "UTF8")
        assert CRS.from_wkt(archive.read(f"{stem}.prj").decode()).to_epsg() == 2326
        fields = list(csv.DictReader(io.StringIO(archive.read("fields.csv").decode("utf-8-sig"))))
    short = [f["shapefile_name"] for f in fields]
    assert all(len(s.encode()) <= 10 for s in short) and len({s.lower() for s in short}) == len(short)
    by_name = {f["name"]: f for f in fields}
    assert by_name["relevant_district_council_en"]["shapefile_name"] != by_name["relevant_district_council_zh"][
        "shapefile_name"]
    assert int(by_name["user_en"]["full_values"]) > 0  # 910-byte lists of uses do not fit a .dbf
    layer = layer_meta(sample.settings, "industrial_special_waivers")
    info = pyogrio.read_info(path, layer=stem)
    assert info["encoding"] == "UTF-8" and info["features"] == layer.record.feature_count
    originals = {f["name"]: f["original_name"] for f in fields}
    assert originals["user_en"] == "userEN"


def test_shapefile_field_list_keeps_chinese_source_names(sample: Sample) -> None:
    path = sample.export("weather_stations", "shp").path
    names, _ = shapefile_mapping(path)
    with zipfile.ZipFile(path) as archive:
        fields = list(csv.DictReader(io.StringIO(archive.read("fields.csv").decode("utf-8-sig"))))
    assert {"name": "address_zh", "original_name": "地址"}.items() <= next(
        f for f in fields if f["name"] == "address_zh").items()
    assert set(names.values()) == set(layer_meta(sample.settings, "weather_stations").columns)


def test_geojson_is_rfc7946(sample: Sample) -> None:
    import shapely

    doc = json.loads(sample.export("districts_18", "geojson").path.read_text(encoding="utf-8"))
    assert set(doc) == {"type", "name", "features"}
    for feature in doc["features"]:
        geometry = shapely.geometry.shape(feature["geometry"])
        lon, lat = geometry.representative_point().coords[0]
        assert 113.8 < lon < 114.5 and 22.1 < lat < 22.6
        for polygon in getattr(geometry, "geoms", [geometry]):
            assert polygon.exterior.is_ccw and not any(ring.is_ccw for ring in polygon.interiors)


def test_geoparquet_metadata_names_the_hk_grid(sample: Sample) -> None:
    import pyarrow.parquet as pq
    from pyproj import CRS

    path = sample.export("synthetic_lots", "parquet").path
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    column = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and column["geometry_types"] == ["Polygon"]
    assert CRS.from_json_dict(column["crs"]).to_epsg() == 2326
    x0, y0, x1, y1 = column["bbox"]
    assert 800_000 < x0 < x1 < 870_000 and 800_000 < y0 < y1 < 850_000
    assert pq.ParquetFile(path).metadata.num_row_groups == 7  # 10,000 features in pages of 1,500


def test_the_named_layers_are_all_covered() -> None:
    assert set(NAMED) <= set(VECTOR_LAYERS) and len(VECTOR_LAYERS) >= 20
