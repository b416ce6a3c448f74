"""A WFS 2.0 source: a real server, Debian's MapServer (``mapserv`` run as a CGI program per request behind a local
HTTP server), over a GeoPackage of points and the sample districts shapefile. Pages of 10 (MapServer's
``wfs_maxfeatures``, advertised as ``CountDefault``) in GML 3.2 and in GeoJSON, to the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import psycopg
import pytest
import shapely

from loaders.sync import sync_layer
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import SAMPLE
from tests.harvest.servers import FixtureServer, find_mapserv, fixture_server, mapserver_route

pytestmark = pytest.mark.db
POINTS = 23

MAPFILE = """MAP
  NAME "harvest"
  EXTENT 800000 800000 870000 850000
  PROJECTION "init=epsg:2326" END
  WEB
    METADATA
      "wfs_title" "HK SDI harvesting test"
      "wfs_onlineresource" "http://127.0.0.1/"
      "wfs_srs" "EPSG:2326 EPSG:4326"
      "wfs_enable_request" "*"
      "wfs_getfeature_formatlist" "geojson"
      "wfs_maxfeatures" "10"
      "wfs_compute_number_matched" "true"
    END
  END
  OUTPUTFORMAT
    NAME "geojson"
    DRIVER "OGR/GEOJSON"
    MIMETYPE "application/json; subtype=geojson"
    FORMATOPTION "STORAGE=stream"
    FORMATOPTION "FORM=SIMPLE"
  END
  LAYER
    NAME "pts"
    TYPE POINT
    CONNECTIONTYPE OGR
    CONNECTION "{points}"
    DATA "pts"
    PROJECTION "init=epsg:2326" END
    METADATA
      "wfs_title" "points"
      "gml_include_items" "all"
      "gml_featureid" "code"
      "gml_types" "auto"
    END
  END
  LAYER
    NAME "districts"
    TYPE POLYGON
    CONNECTIONTYPE OGR
    CONNECTION "{districts}"
    PROJECTION "init=epsg:4326" END
    METADATA
      "wfs_title" "districts"
      "gml_include_items" "all"
      "gml_featureid" "OBJECTID"
      "gml_types" "auto"
    END
  END
END
"""


@dataclass(frozen=True)
class Wfs:
    url: str
    server: FixtureServer
    points: gpd.GeoDataFrame


@pytest.fixture(scope="module")
def wfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wfs]:
    """MapServer's WFS on a free port."""
    mapserv = find_mapserv()
    folder = tmp_path_factory.mktemp("mapserver")
    points = gpd.GeoDataFrame(
        {"code": [f"{i:04d}" for i in range(POINTS)], "name": [f"測站 {i}" for i in range(POINTS)],
         "value": [i * 1.5 for i in range(POINTS)]},
        geometry=[shapely.Point(830000 + 137.25 * i, 820000 + 51.5 * i) for i in range(POINTS)], crs=2326)
    points.to_file(folder / "pts.gpkg", layer="pts")
    districts = SAMPLE / "districts18" / "Hong_Kong_18_Districts.shp"
    mapfile = folder / "harvest.map"
    mapfile.write_text(MAPFILE.format(points=folder / "pts.gpkg", districts=districts), encoding="utf-8")
    with fixture_server() as server:
        server.routes["/wfs"] = mapserver_route(mapserv, mapfile, folder)
        yield Wfs(server.url("/wfs"), server, points)


@pytest.mark.parametrize("output", ["gml", "geojson"])
def test_a_feature_type_is_paged_to_the_end(
        output: str, wfs: Wfs, harvest_settings: Settings, url_layer: Callable[..., Path],
        db: psycopg.Connection) -> None:
    layer_id = f"wfs_points_{output}"
    definition = read_definition(url_layer(layer_id, {"url": wfs.url, "service": "wfs", "typename": "pts",
                                                      "output": output}, primary_key="code"))
    before = len(wfs.server.requests_to("/wfs"))
    result = sync_layer(definition, cgi_settings(harvest_settings))
    assert result.status == "loaded", result.message
    assert result.features == POINTS and result.fetch is not None and result.fetch["pages"] == 3
    pages = [s.query for s in wfs.server.requests_to("/wfs")[before:] if s.query.get("REQUEST") == "GetFeature"]
    assert [(p["STARTINDEX"], p["COUNT"]) for p in pages] == [("0", "10"), ("10", "10"), ("20", "10")]
    assert all(p["SRSNAME"] == "EPSG:2326" for p in pages)
    rows = db.execute(f"select code, name, value, st_x(geom), st_y(geom) from layers.{layer_id}"
                      " order by code").fetchall()
    expected = [(r.code, r.name, r.value, r.geometry.x, r.geometry.y) for r in wfs.points.itertuples()]
    assert rows == pytest.approx(expected) if output == "geojson" else rows == expected
    assert rows[0][0] == "0000"  # a code with leading zeros stays text (GML: typed from DescribeFeatureType)
    columns = [r[0] for r in db.execute("select column_name from information_schema.columns where table_schema ="
                                        " 'layers' and table_name = %s order by ordinal_position", (layer_id,))]
    assert columns == (["gml_id", "code", "name", "value", "geom"] if output == "gml" else
                       ["code", "name", "value", "geom"])

    again = sync_layer(definition, cgi_settings(harvest_settings))  # the same features give the same file: no new load
    assert again.status == "unchanged", again.message


def test_polygons_in_gml_land_in_hong_kong(wfs: Wfs, harvest_settings: Settings, url_layer: Callable[..., Path],
                                           db: psycopg.Connection) -> None:
    definition = read_definition(url_layer("wfs_districts", {"url": f"{wfs.url}?map=ignored", "service": "wfs",
                                                             "typename": "ms:districts", "page_size": 4}))
    result = sync_layer(definition, cgi_settings(harvest_settings))
    assert result.status == "loaded", result.message
    assert result.features == 18 and result.fetch is not None and result.fetch["pages"] == 5
    names = {r[0] for r in db.execute("select ename from layers.wfs_districts")}
    assert {"KWUN TONG", "ISLANDS", "WONG TAI SIN"} <= names and len(names) == 18
    # MapServer transformed WGS 84 to the grid with its own PROJ pipeline: within metres of the loader's
    (area,) = db.execute("select sum(st_area(geom)) / 1e6 from layers.wfs_districts").fetchone()
    assert 1100 < area < 1120  # km²: the territory's land and sea area inside the district boundaries


def test_an_unknown_feature_type_is_a_recorded_failure(
        wfs: Wfs, harvest_settings: Settings, url_layer: Callable[..., Path], db: psycopg.Connection) -> None:
    definition = read_definition(url_layer("wfs_missing", {"url": wfs.url, "service": "wfs", "typename": "roads"}))
    result = sync_layer(definition, cgi_settings(harvest_settings))
    assert result.status == "failed"
    assert "the WFS has no feature type 'roads' (it has: ms:pts, ms:districts)" in result.message
    assert db.execute("select status from sdi.load_history where layer_id = 'wfs_missing'").fetchall() == [
        ("failed",)]


def cgi_settings(settings: Settings) -> Settings:
    """``settings`` with time for MapServer, which starts as a CGI program for every request (seconds on a busy
    machine; the fixtures' one-second timeout is for the local fixture server)."""
    return settings.model_copy(update={"fetch_timeout_s": 20.0})
