"""An OGC API – Features source: `sdi serve` itself, started by the test over one database, harvested into
another with small pages; every feature arrives (numberMatched), in EPSG:2326 with the axes right."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import shapely

from loaders.sync import sync_layer
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import loaded_database
from tests.harvest.servers import fixture_server
from tests.live_server import sdi_server

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def source_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """`sdi serve` over a database holding the 18 districts (polygons) and the landslide points."""
    with loaded_database(("districts_18", "landslide_incidents"),
                         data_dir=tmp_path_factory.mktemp("oapi_store")) as settings, \
            sdi_server(settings, tmp_path_factory.mktemp("oapi_serve"), workers=1) as base:
        yield base, settings


def _rows(url: str, table: str, key: str, column: str) -> dict[object, tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1:] for r in conn.execute(
            f"select {key}, {column}, st_asbinary(geom) from layers.{table}").fetchall()}


@pytest.mark.parametrize(("layer_id", "source", "page_size", "key", "column"), [
    ("oapi_districts", {"collection": "districts_18"}, 5, "fid", "name_en"),
    ("oapi_landslides", {"collection": "landslide_incidents"}, 100, "fid", "location"),
])
def test_a_collection_is_paged_to_the_end(
        layer_id: str, source: dict[str, str], page_size: int, key: str, column: str, source_api: tuple[str, Settings],
        harvest_settings: Settings, url_layer: Callable[..., Path], db: psycopg.Connection) -> None:
    base, source_settings = source_api
    collection = source["collection"]
    forms = {"oapi_districts": {"url": f"{base}/collections/{collection}"},  # the collection's URL
             "oapi_landslides": {"url": base, "collection": collection}}  # the landing page + the collection id
    definition = read_definition(url_layer(layer_id, {**forms[layer_id], "service": "ogcapi",
                                                      "page_size": page_size}, primary_key=key))
    result = sync_layer(definition, harvest_settings)
    assert result.status == "loaded", result.message
    with psycopg.connect(source_settings.database_url) as conn:
        (expected,) = conn.execute(f"select count(*) from layers.{collection}").fetchone()
    assert result.features == expected and result.fetch is not None
    assert result.fetch["pages"] == math.ceil(expected / page_size)
    assert "EPSG:2326" in result.fetch["notes"][0]  # asked for in the storage CRS: no coordinate transformed

    source_rows = _rows(source_settings.database_url, collection, key, column)
    harvested = _rows(harvest_settings.database_url, layer_id, key, column)
    assert harvested.keys() == source_rows.keys()
    moved = []
    for fid, (name, wkb) in source_rows.items():
        got_name, got_wkb = harvested[fid]
        assert got_name == name
        # the API writes metres with 2 decimals; easting stays easting (a swap would be kilometres off)
        was, now = shapely.from_wkb(bytes(wkb)), shapely.from_wkb(bytes(got_wkb))
        a, b = shapely.get_coordinates(was), shapely.get_coordinates(now)
        if a.shape != b.shape or abs(a - b).max() >= 0.01:
            moved.append(fid)
            assert abs(was.area - now.area) < 1e-6 * was.area  # a repair of a ring the 1 cm rounding made invalid
    assert result.report is not None and len(moved) <= sum(result.report["repaired"].values()), moved
    assert db.execute(f"select count(*) from layers.{layer_id} where id = fid").fetchone() == (expected,)

    again = sync_layer(definition, harvest_settings)  # the same features give the same file
    assert again.status == "unchanged" and "same SHA-256" in again.message, again.message


def test_a_server_paging_wrongly_fails_and_is_recorded(
        harvest_settings: Settings, url_layer: Callable[..., Path], db: psycopg.Connection) -> None:
    """A next link that loops, and a numberMatched the pages do not reach: refused, not loaded half."""
    import json

    from tests.harvest.servers import Reply

    feature = {"type": "Feature", "id": 1, "properties": {"name": "a"},
               "geometry": {"type": "Point", "coordinates": [114.17, 22.30]}}
    with fixture_server() as server:
        server.routes["/collections/c"] = lambda seen: Reply(200, json.dumps({"id": "c", "crs": []}).encode())
        page = {"type": "FeatureCollection", "numberMatched": 5, "features": [feature],
                "links": [{"rel": "next", "type": "application/geo+json", "href": "/collections/c/items?f=json"}]}
        server.routes["/collections/c/items"] = lambda seen: Reply(200, json.dumps(page).encode())
        definition = read_definition(url_layer("oapi_loop", {"url": server.url("/collections/c"),
                                                             "service": "ogcapi"}))
        looped = sync_layer(definition, harvest_settings)
        assert looped.status == "failed" and "leads back to a page already fetched" in looped.message
        page["links"] = []
        short = sync_layer(definition, harvest_settings)
        assert short.status == "failed" and "paged 1 features but the server said numberMatched 5" in short.message
    assert [r[0] for r in db.execute("select status from sdi.load_history where layer_id = 'oapi_loop'")] == [
        "failed", "failed"]
