"""OGC API – Tiles (MVT made by PostGIS) and Coverages: the pygeoapi adapter directly, then a live `sdi serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import morecantile
import numpy as np
import psycopg
import pytest
import requests
import shapely
from psycopg import sql
from pygeoapi.provider.base import ProviderInvalidQueryError
from pygeoapi.provider.tile import ProviderTileNotFoundError, ProviderTilesetIdNotFoundError
from pyproj import Transformer

from sdi.catalogue import Catalogue
from sdi.catalogue.models import CatalogueRecord
from sdi.publishing.mvt import BUFFER, EXTENT, SdiMVTProvider
from sdi.publishing.tiles import coverage_provider, tile_provider
from sdi.settings import Settings
from tests.conftest import loaded_database
from tests.live_server import sdi_server

LIBRARIES = "public_libraries_2013"
DISTRICTS = "districts_18"
RASTER = "synthetic_mudflat_elevation"
WMQ = morecantile.tms.get("WebMercatorQuad")
TO_3857 = Transformer.from_crs(2326, 3857, always_xy=True)
CENTRAL = (114.158, 22.282)  # lon, lat: Central, Hong Kong Island
EDGE_TOLERANCE_M = 5.0  # points this close to a tile edge are not asserted either way (PROJ pipelines may differ)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A module database with the libraries, the 18 districts and the synthetic raster loaded."""
    data_dir = tmp_path_factory.mktemp("store")
    with loaded_database((LIBRARIES, DISTRICTS, RASTER), data_dir=data_dir) as settings:
        yield settings


def record(settings: Settings, layer: str) -> CatalogueRecord:
    found = Catalogue(settings).get(layer)
    assert found is not None
    return found


def provider(settings: Settings, layer: str) -> SdiMVTProvider:
    block = tile_provider(record(settings, layer), settings)
    assert block is not None
    return SdiMVTProvider({**block, "data": settings.database_url})


def decode(tile: bytes | None, layer: str) -> list[dict[str, Any]]:
    assert tile, "expected a non-empty tile"
    decoded = mapbox_vector_tile.decode(tile, default_options={"y_coord_down": True})
    assert list(decoded) == [layer]
    assert decoded[layer]["extent"] == EXTENT
    return list(decoded[layer]["features"])


def points_3857(settings: Settings, layer: str) -> dict[int, tuple[float, float]]:
    """fid → Web Mercator x, y, transformed here with pyproj (not by PostGIS)."""
    with psycopg.connect(settings.database_url) as conn:
        query = sql.SQL("select fid, ST_X(geom), ST_Y(geom) from layers.{}").format(sql.Identifier(layer))
        rows = conn.execute(query).fetchall()
    xs, ys = TO_3857.transform([r[1] for r in rows], [r[2] for r in rows])
    return {int(r[0]): (x, y) for r, x, y in zip(rows, xs, ys, strict=True)}


# -- the provider block ------------------------------------------------------------------------------


def test_tile_provider_block_for_a_vector_layer(store: Settings) -> None:
    block = tile_provider(record(store, LIBRARIES), store)
    assert block is not None
    assert block["type"] == "tile" and block["name"] == "sdi.publishing.mvt.SdiMVTProvider"
    assert block["data"] == "env"
    assert block["format"] == {"name": "pbf", "mimetype": "application/vnd.mapbox-vector-tile"}
    options = block["options"]
    assert options["table"] == LIBRARIES and options["geom_field"] == "geom" and options["id_field"] == "fid"
    assert options["schemes"] == ["WebMercatorQuad", "HK80Grid"] and options["zoom"] == {"min": 0, "max": 20}
    assert "english_name" in options["properties"] and "geom" not in options["properties"]
    assert len(options["bounds"]) == 4
    assert tile_provider(record(store, RASTER), store) is None


def test_coverage_provider_block(store: Settings, tmp_path: Path) -> None:
    raster = record(store, RASTER)
    block = coverage_provider(raster, store)
    assert block == {
        "type": "coverage", "name": "rasterio", "data": str((store.data_dir / "rasters" / f"{RASTER}.tif").resolve()),
        "options": {"DATA_ENCODING": "COG"}, "format": {"name": "GTiff", "mimetype": "application/x-geotiff"},
    }
    assert Path(block["data"]).is_absolute() and Path(block["data"]).is_file()
    assert coverage_provider(record(store, LIBRARIES), store) is None
    elsewhere = store.model_copy(update={"data_dir": tmp_path})  # the COG is not there
    assert coverage_provider(raster, elsewhere) is None


# -- tiles from the provider -------------------------------------------------------------------------


def test_central_tile_has_exactly_the_libraries_inside_it(store: Settings) -> None:
    z = 14
    tile = WMQ.tile(*CENTRAL, z)
    features = decode(provider(store, LIBRARIES).get_tiles(tileset="WebMercatorQuad", z=z, y=tile.y, x=tile.x),
                      LIBRARIES)
    box = WMQ.xy_bounds(tile)
    size = box.right - box.left
    inside, near_edge = set(), set()
    for fid, (x, y) in points_3857(store, LIBRARIES).items():
        dx = min(x - box.left, box.right - x)
        dy = min(y - box.bottom, box.top - y)
        if min(dx, dy) > EDGE_TOLERANCE_M:
            inside.add(fid)
        elif min(dx, dy) > -EDGE_TOLERANCE_M:
            near_edge.add(fid)
    assert inside, "the test tile should hold libraries"
    by_id = {f["id"]: f for f in features}
    in_tile = {fid for fid, f in by_id.items() if all(0 <= c <= EXTENT for c in f["geometry"]["coordinates"])}
    assert in_tile - near_edge == inside
    points = points_3857(store, LIBRARIES)
    for fid in inside:  # positions agree with the tile formula to a pixel
        x, y = points[fid]
        px, py = by_id[fid]["geometry"]["coordinates"]
        assert abs(px - (x - box.left) / size * EXTENT) <= 1
        assert abs(py - (box.top - y) / size * EXTENT) <= 1
    # features in the buffer lie within 64 units of the tile
    assert all(-BUFFER <= c <= EXTENT + BUFFER for f in features for c in f["geometry"]["coordinates"])
    some = by_id[next(iter(inside))]["properties"]
    assert some["english_name"] and some["district"] and "geom" not in some and "fid" not in some


def test_low_zoom_tile_has_every_library(store: Settings) -> None:
    p = provider(store, LIBRARIES)
    for z in (0, 3):
        tile = WMQ.tile(*CENTRAL, z)
        assert len(decode(p.get_tiles(tileset="WebMercatorQuad", z=z, y=tile.y, x=tile.x), LIBRARIES)) == 260


def test_tiles_in_the_sea_or_far_away_are_empty(store: Settings) -> None:
    p = provider(store, LIBRARIES)
    sea = WMQ.tile(114.60, 21.90, 14)  # South China Sea, south-east of Hong Kong
    assert p.get_tiles(tileset="WebMercatorQuad", z=14, y=sea.y, x=sea.x) is None
    europe = WMQ.tile(2.35, 48.85, 5)
    assert p.get_tiles(tileset="WebMercatorQuad", z=5, y=europe.y, x=europe.x) is None


def test_district_polygons_at_zoom_10(store: Settings) -> None:
    z = 10
    tile = WMQ.tile(*CENTRAL, z)
    features = decode(provider(store, DISTRICTS).get_tiles(tileset="WebMercatorQuad", z=z, y=tile.y, x=tile.x),
                      DISTRICTS)
    assert {f["geometry"]["type"] for f in features} <= {"Polygon", "MultiPolygon"}
    box = WMQ.xy_bounds(tile)
    margin = (box.right - box.left) * BUFFER / EXTENT
    with psycopg.connect(store.database_url) as conn:
        rows = conn.execute("select fid, name_en, ST_AsBinary(geom) from layers.districts_18").fetchall()
    tile_box = shapely.box(box.left, box.bottom, box.right, box.top)
    must, may = set(), set()
    for fid, _name, wkb in rows:
        geom = shapely.transform(shapely.from_wkb(bytes(wkb)),
                                 lambda c: np.column_stack(TO_3857.transform(c[:, 0], c[:, 1])))
        if geom.intersects(tile_box.buffer(-EDGE_TOLERANCE_M)):
            must.add(fid)
        if geom.intersects(tile_box.buffer(margin + EDGE_TOLERANCE_M)):
            may.add(fid)
    got = {f["id"] for f in features}
    assert must and must <= got <= may
    names = {f["properties"]["name_en"] for f in features}
    assert any("central" in n.casefold() for n in names), names


def test_invalid_tiles_are_refused(store: Settings) -> None:
    p = provider(store, LIBRARIES)
    with pytest.raises(ProviderTileNotFoundError):
        p.get_tiles(tileset="WebMercatorQuad", z=21, y=0, x=0)
    with pytest.raises(ProviderTileNotFoundError):
        p.get_tiles(tileset="WebMercatorQuad", z=2, y=0, x=4)
    with pytest.raises(ProviderInvalidQueryError):  # not a row index at all
        p.get_tiles(tileset="WebMercatorQuad", z=2, y=-1, x=0)
    with pytest.raises(ProviderTilesetIdNotFoundError):
        p.get_tiles(tileset="WorldCRS84Quad", z=2, y=0, x=0)
    with pytest.raises(ProviderInvalidQueryError):
        p.get_tiles(tileset="WebMercatorQuad", z="a", y=0, x=0)


def test_provider_without_configured_properties_reads_the_columns(store: Settings) -> None:
    block = tile_provider(record(store, LIBRARIES), store)
    assert block is not None
    del block["options"]["properties"]
    p = SdiMVTProvider({**block, "data": store.database_url})
    tile = WMQ.tile(*CENTRAL, 14)
    features = decode(p.get_tiles(tileset="WebMercatorQuad", z=14, y=tile.y, x=tile.x), LIBRARIES)
    assert all("english_name" in f["properties"] for f in features)


# -- a live sdi serve ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` over the module database (libraries, districts, the raster); stopped afterwards."""
    with sdi_server(store, tmp_path_factory.mktemp("tiles_serve")) as base:
        yield base


def test_live_tiles(server: str) -> None:
    tiles = requests.get(f"{server}/collections/{LIBRARIES}/tiles", params={"f": "json"}, timeout=30)
    assert tiles.status_code == 200, tiles.text
    body = tiles.json()
    assert [t["tileMatrixSetURI"] for t in body["tilesets"]] == [
        "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad", f"{server}/TileMatrixSets/HK80Grid"]
    assert any(link["rel"] == "item" and "{tileMatrix}" in link["href"] for link in body["links"])

    tile = WMQ.tile(*CENTRAL, 14)
    url = f"{server}/collections/{LIBRARIES}/tiles/WebMercatorQuad/14/{tile.y}/{tile.x}"
    answer = requests.get(url, params={"f": "mvt"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.mapbox-vector-tile")
    assert decode(answer.content, LIBRARIES)

    sea = WMQ.tile(114.60, 21.90, 14)
    empty = requests.get(f"{server}/collections/{LIBRARIES}/tiles/WebMercatorQuad/14/{sea.y}/{sea.x}",
                         params={"f": "mvt"}, timeout=30)
    assert empty.status_code == 204
    too_deep = requests.get(f"{server}/collections/{LIBRARIES}/tiles/WebMercatorQuad/21/0/0",
                            params={"f": "mvt"}, timeout=30)
    assert too_deep.status_code == 404
    other_tms = requests.get(f"{server}/collections/{LIBRARIES}/tiles/WorldCRS84Quad/1/0/0",
                             params={"f": "mvt"}, timeout=30)
    assert other_tms.status_code == 404


def test_live_tile_metadata(server: str) -> None:
    sets = requests.get(f"{server}/TileMatrixSets", params={"f": "json"}, timeout=30)
    assert sets.status_code == 200
    assert "WebMercatorQuad" in {s["id"] for s in sets.json()["tileMatrixSets"]}
    wmq = requests.get(f"{server}/TileMatrixSets/WebMercatorQuad", params={"f": "json"}, timeout=30)
    assert wmq.status_code == 200 and wmq.json()["crs"].endswith("/3857")

    meta = requests.get(f"{server}/collections/{LIBRARIES}/tiles/WebMercatorQuad/metadata",
                        params={"f": "json"}, timeout=30)
    assert meta.status_code == 200, meta.text
    assert meta.json()["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    tilejson = requests.get(f"{server}/collections/{LIBRARIES}/tiles/WebMercatorQuad/metadata",
                            params={"f": "tilejson"}, timeout=30)
    assert tilejson.status_code == 200, tilejson.text
    doc = tilejson.json()
    assert doc["tilejson"] == "3.0.0" and doc["minzoom"] == 0 and doc["maxzoom"] == 20
    assert doc["tiles"] == [f"{server}/collections/public_libraries_2013/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}?f=mvt"]
    assert doc["vector_layers"][0]["id"] == LIBRARIES
    assert doc["vector_layers"][0]["fields"]["english_name"] == "String"
    assert doc["vector_layers"][0]["fields"]["fid"] == "Number"

    collection = requests.get(f"{server}/collections/{LIBRARIES}", params={"f": "json"}, timeout=30)
    assert collection.status_code == 200, collection.text
    assert any("/tiles" in link["href"] for link in collection.json()["links"])


def test_live_coverage_on_the_hk1980_grid(server: str) -> None:
    # pygeoapi 0.21's rasterio provider reports EPSG:2326 as ".../def/crs/OGC/1.3/2326" (not ".../EPSG/0/2326")
    # and the grid's outer edges as start/stop instead of the cell centres (half a pixel, 15 m, out).
    # Axis order is right: x is the easting, y the northing (north to south), values shaped [y, x].
    answer = requests.get(f"{server}/collections/{RASTER}/coverage", params={"f": "json"}, timeout=60)
    assert answer.status_code == 200, answer.text[:500]
    cov = answer.json()
    axes = cov["domain"]["axes"]
    assert (axes["x"]["num"], axes["y"]["num"]) == (186, 229)
    assert abs(axes["x"]["start"] - 816300) <= 15 and abs(axes["x"]["stop"] - 821880) <= 15
    assert abs(axes["y"]["start"] - 843660) <= 15 and abs(axes["y"]["stop"] - 836790) <= 15
    system = cov["domain"]["referencing"][0]["system"]
    assert system["type"] == "ProjectedCRS" and system["id"].endswith("/2326")
    (band,) = cov["ranges"].values()
    assert band["shape"] == [229, 186] and band["axisNames"] == ["y", "x"]

    part = requests.get(f"{server}/collections/{RASTER}/coverage",
                        params={"f": "json", "subset": "x(817000:818000),y(838000:839000)"}, timeout=60)
    assert part.status_code == 200, part.text[:500]
    sub = part.json()["domain"]["axes"]
    assert 33 <= sub["x"]["num"] <= 35 and 33 <= sub["y"]["num"] <= 35


def test_tile_filter_runs_on_the_gist_index(store: Settings) -> None:
    from sdi.query.tms import grid, tile_statement

    tile = WMQ.tile(*CENTRAL, 14)
    layer = provider(store, LIBRARIES)._layer()
    for grid_id, (row, col) in (("WebMercatorQuad", (tile.y, tile.x)), ("HK80Grid", (3080, 2300))):
        statement, params = tile_statement(layer, grid(grid_id), 14, row, col)
        with psycopg.connect(store.database_url) as conn:
            conn.execute("set enable_seqscan = off")  # the table is small; show that the filter *can* use the index
            plan = conn.execute(sql.SQL("explain ") + statement, params).fetchall()
        text = "\n".join(row[0] for row in plan)
        assert "Index" in text and "&&" in text, text
