"""Bounded tiles from the query core: at most ``MAX_TILE_FEATURES`` features per tile, and no specks.

The layers are generated in SQL inside one tile of each grid, on a table built like a loaded layer's (``fid``,
``geom`` in EPSG:2326, a GiST index), next to the loaded ``districts_18`` whose catalogue record they borrow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import mapbox_vector_tile
import psycopg
import pytest
from psycopg import sql

from sdi.query.layer import LayerMeta
from sdi.query.tms import EXTENT, HK80_ID, MAX_TILE_FEATURES, WEB_MERCATOR_ID, Grid, grid, tile_statement
from tests.conftest import loaded_database

pytestmark = pytest.mark.db
TILE = (17, 24638, 18389)  #: HK80Grid z 17: a 306 m tile over Kowloon (units of 7.5 cm)
CROWD = MAX_TILE_FEATURES + 25  #: points in the crowded tile: just above the cap


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    with loaded_database(("districts_18",), data_dir=tmp_path_factory.mktemp("store")) as settings, \
            psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


def _table(conn: psycopg.Connection, name: str, geometries: str, params: dict[str, float]) -> LayerMeta:
    """A layer table ``layers.<name>`` of ``geometries`` (SQL yielding ``geom`` in EPSG:2326), as a LayerMeta."""
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier("layers", name)))
    conn.execute(sql.SQL("create table {} as select row_number() over ()::integer as fid, g.geom from ({}) as g")
                 .format(sql.Identifier("layers", name), sql.SQL(geometries)), params)
    conn.execute(sql.SQL("create index on {} using gist (geom)").format(sql.Identifier("layers", name)))
    conn.execute(sql.SQL("analyze {}").format(sql.Identifier("layers", name)))
    template = LayerMeta.read(conn, "districts_18")
    assert template is not None
    return replace(template, record=template.record.model_copy(update={"id": name}), primary_key="fid",
                   columns={"fid": "integer"}, time_field=None)


def _ids(conn: psycopg.Connection, layer: LayerMeta, grid_: Grid, tile: tuple[int, int, int],
         max_features: int | None = None) -> set[int]:
    """The feature ids in one tile made by the query core (with its default cap, as the API calls it, unless
    ``max_features`` is given)."""
    if max_features is None:
        statement, params = tile_statement(layer, grid_, *tile)
    else:
        statement, params = tile_statement(layer, grid_, *tile, max_features=max_features)
    row = conn.execute(statement, params, binary=True).fetchone()
    data = bytes(row[0]) if row and row[0] else b""
    if not data:
        return set()
    return {int(f["id"]) for f in mapbox_vector_tile.decode(data)[layer.id]["features"]}


def _bounds(grid_: Grid, tile: tuple[int, int, int]) -> dict[str, float]:
    x0, y0, x1, y1 = grid_.bounds(*tile)
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def test_a_tile_over_more_features_than_the_cap_holds_the_cap(conn: psycopg.Connection) -> None:
    hk80 = grid(HK80_ID)
    box = _bounds(hk80, TILE)
    layer = _table(conn, "crowded_points", f"""
        select st_setsrid(st_makepoint(%(x0)s + (%(x1)s - %(x0)s) * (0.05 + 0.9 * mod(i, 300) / 300.0),
                                       %(y0)s + (%(y1)s - %(y0)s) * (0.05 + 0.9 * (i / 300) / 300.0)), 2326) as geom
        from generate_series(0, {CROWD - 1}) as i""", box)
    assert conn.execute("select count(*) from layers.crowded_points").fetchone() == (CROWD,)
    started = time.monotonic()
    capped = _ids(conn, layer, hk80, TILE)  # the default cap
    took = time.monotonic() - started
    assert len(capped) == MAX_TILE_FEATURES, "a tile must hold at most MAX_TILE_FEATURES features"
    assert capped <= set(range(1, CROWD + 1))
    assert took < 10, f"a capped tile took {took:.1f} s"
    assert len(_ids(conn, layer, hk80, TILE, max_features=7)) == 7
    assert len(_ids(conn, layer, hk80, TILE, max_features=CROWD + 100)) == CROWD  # the cap cuts, nothing else


def test_lines_and_polygons_smaller_than_half_a_tile_unit_are_left_out(conn: psycopg.Connection) -> None:
    """At z 17 of HK80Grid a tile unit is 306 m / 4,096 = 7.5 cm, so the speck limit is 3.7 cm; points are kept
    whatever their size, and a speck is kept again in a tile where it is larger than half a unit."""
    hk80 = grid(HK80_ID)
    box = _bounds(hk80, TILE)
    unit = (box["x1"] - box["x0"]) / EXTENT
    cx, cy = (box["x0"] + box["x1"]) / 2, (box["y0"] + box["y1"]) / 2
    layer = _table(conn, "specks", """
        select st_buffer(st_setsrid(st_makepoint(%(cx)s, %(cy)s), 2326), %(big)s) as geom   -- fid 1: 40 units
        union all select st_makeenvelope(%(cx)s + 2, %(cy)s - 2 - %(small)s, %(cx)s + 2 + %(small)s,
                                         %(cy)s - 2, 2326)                                  -- fid 2: 0.3 units
        union all select st_setsrid(st_makeline(st_makepoint(%(cx)s + 3, %(cy)s - 3),
                                                st_makepoint(%(cx)s + 3 + %(small)s, %(cy)s - 3)), 2326)  -- 3
        union all select st_setsrid(st_makepoint(%(cx)s + 4, %(cy)s - 4), 2326)            -- fid 4: a point
        union all select st_makeenvelope(%(cx)s + 5, %(cy)s - 5 - %(over)s, %(cx)s + 5 + %(over)s,
                                         %(cy)s - 5, 2326)                                  -- fid 5: 0.6 units
        """, {"cx": cx, "cy": cy, "big": 20 * unit, "small": 0.3 * unit, "over": 0.6 * unit})
    assert conn.execute("select array_agg(st_srid(geom) order by fid) from layers.specks").fetchone() == (
        [2326] * 5,)
    assert _ids(conn, layer, hk80, TILE) == {1, 4, 5}
    z, row, col = TILE
    deeper = (z + 3, row * 8 + 4, col * 8 + 4)  # z 20: 38 m south-east of the centre, units of 9 mm
    assert _ids(conn, layer, hk80, deeper) == {1, 2, 3, 4, 5}


def test_the_speck_limit_holds_in_web_mercator_too(conn: psycopg.Connection) -> None:
    """In WebMercatorQuad (1.2 Web Mercator metres to a ground metre round Hong Kong) the same rule applies."""
    wmq = grid(WEB_MERCATOR_ID)
    tile = (14, 7149, 13388)  # 2.4 km of Web Mercator over Kowloon: units of 60 cm, 50 cm on the ground
    x0, y0, x1, y1 = wmq.bounds(*tile)
    centre = conn.execute("select st_x(p), st_y(p) from st_transform(st_setsrid(st_makepoint(%s, %s), 3857), 2326) "
                          "as p", ((x0 + x1) / 2, (y0 + y1) / 2)).fetchone()
    assert centre is not None
    ground_unit = (x1 - x0) / EXTENT / 1.2
    layer = _table(conn, "mercator_specks", """
        select st_makeenvelope(%(cx)s, %(cy)s, %(cx)s + %(small)s, %(cy)s + %(small)s, 2326) as geom
        union all select st_makeenvelope(%(cx)s + 10, %(cy)s, %(cx)s + 10 + %(big)s, %(cy)s + %(big)s, 2326)
        """, {"cx": centre[0], "cy": centre[1], "small": 0.2 * ground_unit, "big": 3 * ground_unit})
    assert _ids(conn, layer, wmq, tile) == {2}
