"""Vector tiles from the query core: the affine stand-in for the exact transformation, and both grids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mapbox_vector_tile
import morecantile
import psycopg
import pytest
import shapely.geometry

from sdi.query.layer import LayerMeta
from sdi.query.tms import EXTENT, affine_to_grid, grid, tile_statement
from tests.conftest import loaded_database

pytestmark = pytest.mark.db
WMQ = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    with loaded_database(("districts_18", "buildings_with_carparks", "traffic_hotzone_streets"),
                         data_dir=tmp_path_factory.mktemp("store")) as settings, \
            psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


def _layer(conn: psycopg.Connection, layer_id: str) -> LayerMeta:
    meta = LayerMeta.read(conn, layer_id)
    assert meta is not None, layer_id
    return meta


def _decode(conn: psycopg.Connection, layer: LayerMeta, z: int, row: int, col: int,
            exact: bool) -> dict[Any, Any]:
    statement, params = tile_statement(layer, grid("WebMercatorQuad"), z, row, col, exact=exact)
    data = conn.execute(statement, params, binary=True).fetchone()[0]
    if not data:
        return {}
    features = mapbox_vector_tile.decode(bytes(data))[layer.id]["features"]
    return {f["id"]: shapely.geometry.shape(f["geometry"]) for f in features}


@pytest.mark.parametrize("layer_id", ["districts_18", "buildings_with_carparks", "traffic_hotzone_streets"])
@pytest.mark.parametrize("z", [14, 16, 19])
def test_affine_tiles_agree_with_exact_ones_to_a_unit(conn: psycopg.Connection, layer_id: str, z: int) -> None:
    layer = _layer(conn, layer_id)
    compared = 0
    places = conn.execute(f"select st_x(p), st_y(p) from (select st_transform(st_pointonsurface(geom), 4326) p "
                          f"from layers.{layer_id} where not st_isempty(geom) order by fid limit 6) s").fetchall()
    for lon, lat in places:
        tile = WMQ.tile(lon, lat, z)
        exact = _decode(conn, layer, z, tile.y, tile.x, exact=True)
        fast = _decode(conn, layer, z, tile.y, tile.x, exact=False)
        assert fast.keys() == exact.keys()
        for fid, geometry in exact.items():
            compared += 1
            # a quarter of a screen pixel (16 units): coordinates a unit apart, and snapping may drop a vertex
            assert geometry.hausdorff_distance(fast[fid]) <= 4, (fid, geometry.wkt[:200], fast[fid].wkt[:200])
    assert compared >= len(places)


def test_the_affine_map_is_used_only_where_it_is_close(conn: psycopg.Connection) -> None:
    g = grid("WebMercatorQuad")
    for z, expected in ((10, False), (12, False), (14, True), (18, True)):
        tile = WMQ.tile(114.158, 22.282, z)
        x0, y0, x1, y1 = g.bounds(z, tile.y, tile.x)
        assert (affine_to_grid(3857, (x0, y0, x1, y1), (x1 - x0) / EXTENT) is not None) is expected, z
    statement, params = tile_statement(_layer(conn, "districts_18"), g, 10, 446, 836)
    assert "st_transform" in statement.as_string(conn) and "aa" not in params
