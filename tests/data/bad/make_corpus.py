"""Make the broken inputs in this folder (run from anywhere; files are committed, this records how).

``python tests/data/bad/make_corpus.py`` rewrites the generated files. Two inputs are too big to
commit and are made by the tests on the fly: :func:`huge_attribute` (a 5 MB value) and
:func:`ten_thousand_columns`.
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[2] / "data" / "sample"
DC = SAMPLE / "dc_2001"


def _fc(features: list[dict], **extra: object) -> str:
    return json.dumps({"type": "FeatureCollection", **extra, "features": features}, ensure_ascii=False)


def _pt(x: float, y: float, **props: object) -> dict:
    return {"type": "Feature", "properties": props, "geometry": {"type": "Point", "coordinates": [x, y]}}


def _poly(ring: list[list[float]], **props: object) -> dict:
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def huge_attribute(folder: Path) -> Path:
    """A GeoJSON point whose 'note' is 5 MB of text."""
    path = folder / "huge_attribute.geojson"
    path.write_text(_fc([_pt(114.17, 22.30, note="長" * (5 * 1024 * 1024 // 3))]), encoding="utf-8")
    return path


def ten_thousand_columns(folder: Path) -> Path:
    """A CSV with easting/northing and 10,000 more columns."""
    path = folder / "ten_thousand_columns.csv"
    header = ["EASTING", "NORTHING"] + [f"c{i}" for i in range(10_000)]
    row = ["835411.431", "817266.016"] + ["1"] * 10_000
    path.write_text(",".join(header) + "\n" + ",".join(row) + "\n", encoding="utf-8")
    return path


def _two_layer_gpkg(path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    path.unlink(missing_ok=True)
    gpd.GeoDataFrame({"n": [1]}, geometry=[Point(835411, 817266)], crs=2326).to_file(path, layer="stations")
    gpd.GeoDataFrame({"n": [2]}, geometry=[Point(835412, 817267)], crs=2326).to_file(path, layer="depots")


def main() -> None:
    h = HERE
    # shapefile sets
    shutil.copy(DC / "dc.shp", h / "truncated.shp")
    shutil.copy(DC / "dc.shx", h / "truncated.shx")
    with (h / "truncated.shp").open("r+b") as fh:
        fh.truncate(200_000)
    shutil.copy(DC / "dc.shp", h / "count_mismatch.shp")
    shutil.copy(DC / "dc.shx", h / "count_mismatch.shx")
    dbf = bytearray((DC / "dc_land.dbf").read_bytes())  # 18 records; drop to 15
    hlen, rlen = struct.unpack("<HH", dbf[8:12])
    dbf[4:8] = struct.pack("<I", 15)
    (h / "count_mismatch.dbf").write_bytes(bytes(dbf[: hlen + 15 * rlen]) + b"\x1a")
    (h / "zero_bytes.shp").write_bytes(b"")
    shutil.copy(DC / "dc.shp", h / "garbage_shx.shp")
    (h / "garbage_shx.shx").write_bytes(b"this is not a shape index" * 10)
    shutil.copy(DC / "dc.shp", h / "custom_prj.shp")
    shutil.copy(DC / "dc.shx", h / "custom_prj.shx")
    (h / "custom_prj.prj").write_text(
        'PROJCS["Local_Site_Grid",GEOGCS["GCS_Local",DATUM["D_Local",SPHEROID["Local",6378000.0,300.0]],'
        'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
        'PARAMETER["False_Easting",12345.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",114.1],'
        'PARAMETER["Scale_Factor",0.9999],PARAMETER["Latitude_Of_Origin",22.3],UNIT["Meter",1.0]]')
    # zero-byte and not-the-format files
    (h / "zero_bytes.csv").write_bytes(b"")
    (h / "random_bytes.geojson").write_bytes(bytes(range(256)) * 8)
    with zipfile.ZipFile(h / "nothing_readable.zip", "w") as z:
        z.writestr("readme.txt", "no geodata in here\n")
        z.writestr("notes/more.txt", "still none\n")
    # GeoJSON
    (h / "empty_collection.geojson").write_text(_fc([]))
    (h / "all_null_geometries.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": i}, "geometry": None} for i in range(3)]}))
    (h / "self_intersecting.geojson").write_text(_fc([
        _poly([[114.16, 22.29], [114.17, 22.30], [114.17, 22.29], [114.16, 22.30], [114.16, 22.29]], n=1),
        _poly([[114.18, 22.29], [114.19, 22.29], [114.19, 22.30], [114.18, 22.29]], n=2)]))
    (h / "unclosed_ring.geojson").write_text(_fc([
        _poly([[114.16, 22.29], [114.17, 22.29], [114.17, 22.30], [114.16, 22.30]], n=1)]))
    (h / "too_few_points.geojson").write_text(_fc([
        _poly([[114.16, 22.29], [114.17, 22.29], [114.16, 22.29]], n=1),
        _poly([[114.18, 22.29], [114.19, 22.29], [114.19, 22.30], [114.18, 22.29]], n=2)]))
    (h / "three_d.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": 1},
         "geometry": {"type": "Point", "coordinates": [114.17, 22.30, 35.5]}}]}))
    (h / "geometry_collection.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [114.17, 22.30]},
            {"type": "LineString", "coordinates": [[114.17, 22.30], [114.18, 22.31]]}]}}]}))
    (h / "unknown_legacy_crs.geojson").write_text(_fc(
        [_pt(835411.431, 817266.016)], crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::999999"}}))
    (h / "nan_coordinates.geojson").write_text(
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "Point", "coordinates": [NaN, 22.3]}},'
        '{"type": "Feature", "properties": {"n": 2}, "geometry": {"type": "Point", "coordinates": [114.17, 22.30]}}]}')
    (h / "nul_in_text.geojson").write_text(_fc([_pt(114.17, 22.30, name="Tsing\u0000 Yi")]))
    # delimited text
    (h / "nan_infinite.csv").write_text(
        "id,EASTING,NORTHING\n1,835411.431,817266.016\n2,nan,817266\n3,inf,817266\n4,835000,-inf\n")
    (h / "swapped_easting_northing.csv").write_text(
        "id,EASTING,NORTHING\n1,822500,862100\n2,823800,864300\n3,821900,865800\n")
    (h / "lat_lon_swapped.csv").write_text("id,latitude,longitude\n1,114.17,22.30\n2,114.18,22.31\n")
    (h / "no_coordinates.csv").write_text("id,name\n1,Central\n2,Wan Chai\n")
    (h / "ragged_rows.csv").write_text("id,EASTING,NORTHING\n1,835411,817266\n2,835412,817267,extra,fields\n")
    (h / "text_coordinates.csv").write_text(
        "id,EASTING,NORTHING\n1,835411.431,817266.016\n2,unknown,817266\n3,,\n")
    (h / "undecodable.csv").write_bytes(b"id,EASTING,NORTHING,name\n1,835411,817266,\xff\xfe\xfa\xfb\x81\x30\n")
    _two_layer_gpkg(h / "two_layers.gpkg")


if __name__ == "__main__":
    main()
