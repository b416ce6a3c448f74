"""The zipped Shapefile: what a Shapefile cannot hold (long or Chinese field names, long text, several geometry
families, geometry collections, more than 2 GB) is mapped, split or refused."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyogrio
import pytest

from sdi.distribution.shapefile import short_names, write_shapefile_zip
from sdi.distribution.source import open_connection, read_layer
from sdi.errors import DataError, GeometryError
from sdi.settings import Settings
from tests.conftest import loaded_database


def test_short_names_fit_ten_bytes_and_are_unique_without_case() -> None:
    names = ["fid", "relevant_district_council_zh", "relevant_district_council_en", "name", "Name", "地址",
             "relevant_d", "execution_date_en", "execution_date_zh", "a" * 10, "名稱二"]
    short = short_names(names)
    assert list(short) == names
    assert all(s.isascii() and len(s.encode()) <= 10 for s in short.values())
    assert len({s.lower() for s in short.values()}) == len(names)
    assert short["fid"] == "fid" and short["name"] == "name" and short["a" * 10] == "a" * 10
    assert short["relevant_d"] == "relevant_d"  # a name that fits keeps it; the long ones are numbered
    assert short["relevant_district_council_zh"] == "relevant_1"
    assert short["relevant_district_council_en"] == "relevant_2"
    assert short["地址"] == "f006" and short["名稱二"] == "f011"
    assert short["Name"] != "Name"  # "name" has it already (.dbf names ignore case)


@pytest.fixture(scope="module")
def mutable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Layers these tests change (a database of their own)."""
    with loaded_database(("traffic_hotzone_streets", "oil_storage_installations", "country_parks"),
                         data_dir=tmp_path_factory.mktemp("shp_store")) as settings:
        yield settings


def _generic(settings: Settings, layer_id: str, *wkts: str) -> None:
    """Make ``layer_id``'s geometry column generic and add features of other types (as the owner, in SQL)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"alter table layers.{layer_id} alter column geom type geometry(Geometry, 2326)")
        conn.execute("update sdi.layer set geometry_type = 'Geometry' where id = %s", (layer_id,))
        for i, wkt in enumerate(wkts):
            conn.execute(f"insert into layers.{layer_id} (fid, geom) values (%s, st_geomfromtext(%s, 2326))",
                         (100_000 + i, wkt))


def _zip(settings: Settings, layer_id: str, path: Path, **kwargs: int) -> None:
    with open_connection(settings) as conn:
        write_shapefile_zip(read_layer(conn, layer_id, page_rows=7), path, **kwargs)


@pytest.mark.db
def test_a_layer_of_several_families_is_split_into_one_shapefile_each(mutable: Settings, tmp_path: Path) -> None:
    _generic(mutable, "traffic_hotzone_streets", "POINT(836000 818000)", "MULTIPOINT((836100 818100),(836200 818200))")
    path = tmp_path / "mixed.zip"
    _zip(mutable, "traffic_hotzone_streets", path)
    names = set(zipfile.ZipFile(path).namelist())
    assert {"traffic_hotzone_streets_points.shp", "traffic_hotzone_streets_lines.shp", "fields.csv"} <= names
    assert "traffic_hotzone_streets.shp" not in names
    points = pyogrio.read_info(path, layer="traffic_hotzone_streets_points")
    lines = pyogrio.read_info(path, layer="traffic_hotzone_streets_lines")
    assert (points["features"], points["geometry_type"]) == (2, "MultiPoint")
    assert lines["features"] == 19 and "LineString" in lines["geometry_type"]


@pytest.mark.db
def test_geometry_collections_are_refused_with_one_line(mutable: Settings, tmp_path: Path) -> None:
    _generic(mutable, "oil_storage_installations",
             "GEOMETRYCOLLECTION(POINT(836000 818000),LINESTRING(836000 818000,836100 818100))")
    with pytest.raises(GeometryError, match=r"^shp: oil_storage_installations holds geometrycollection geometries, "
                                            r"which a Shapefile cannot hold; download the GeoPackage or GeoParquet$"):
        _zip(mutable, "oil_storage_installations", tmp_path / "collections.zip")
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.db
def test_a_shapefile_over_the_size_limit_is_refused(mutable: Settings, tmp_path: Path) -> None:
    _zip(mutable, "country_parks", tmp_path / "fits.zip", max_file_bytes=100_000)
    with pytest.raises(DataError, match=r"too large for a Shapefile \(\.(shp|dbf) over .* GB\); download the "
                                        r"GeoPackage or GeoParquet"):
        _zip(mutable, "country_parks", tmp_path / "big.zip", max_file_bytes=2_000)
    assert not (tmp_path / "big.zip").exists()
