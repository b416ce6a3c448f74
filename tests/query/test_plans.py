"""No slowdown over time: each statement shape of the API, run past PostgreSQL's generic-plan threshold.

psycopg prepares a statement after 5 runs and PostgreSQL switches a prepared statement to a generic plan after
5 more when it looks no costlier. In a generic plan the bbox is an unknown parameter: it is re-transformed for
every row and the planner cannot see how selective it is (requests became 30× slower that way). The API's
connections run with ``plan_cache_mode = force_custom_plan`` (sdi.web.runtime.connection_options): these tests
run every shape 12 times on one connection with those options and read ``pg_prepared_statements`` to show
that each was prepared and never planned generically, and that without the option PostgreSQL would have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from sdi.query.layer import LayerMeta
from sdi.query.params import Limits, parse_item, parse_items
from sdi.query.statements import hits_statement, item_statement, page_statement
from sdi.query.tms import grid, tile_statement
from sdi.web.runtime import connection_options
from sdi.web.settings import WebSettings
from tests.conftest import DATA, loaded_database

pytestmark = pytest.mark.db
RUNS = 12  #: past psycopg's prepare threshold (5) and PostgreSQL's 5 custom plans before a generic one
EPSG2326 = "http://www.opengis.net/def/crs/EPSG/0/2326"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with loaded_database(("public_libraries_2013", "districts_18"),
                         definitions=[DATA / "publishing" / "landsd_reference.yml"],
                         data_dir=tmp_path_factory.mktemp("store")) as settings:
        yield settings.database_url


def _layer(conn: psycopg.Connection, layer_id: str) -> LayerMeta:
    meta = LayerMeta.read(conn, layer_id)
    assert meta is not None, layer_id
    return meta


def shapes(conn: psycopg.Connection) -> dict[str, Any]:
    """Statement shape → a function of the run number giving (query, params); values differ between runs."""
    libraries, districts = _layer(conn, "public_libraries_2013"), _layer(conn, "districts_18")
    limits = Limits(10, 1000)

    def box(i: int) -> str:
        return f"{114.10 + i * 0.002},{22.25 + i * 0.001},{114.20 + i * 0.002},{22.35 + i * 0.001}"

    def items(layer: LayerMeta, **params: Any) -> Any:
        def make(i: int) -> Any:
            values = {k: (v(i) if callable(v) else v) for k, v in params.items()}
            statement = page_statement(layer, parse_items(values, layer, limits))
            return statement.query, statement.params
        return make

    def item(i: int) -> Any:
        statement = item_statement(libraries, 1 + i, parse_item({}, libraries))
        return statement.query, statement.params

    def hits(i: int) -> Any:
        statement = hits_statement(libraries, parse_items({"bbox": box(i), "resulttype": "hits"}, libraries, limits))
        return statement.query, statement.params

    def tile(grid_id: str, z: int) -> Any:
        def make(i: int) -> Any:
            g = grid(grid_id)
            col, row = (13380 + i % 8, 7140 + i % 8) if grid_id == "WebMercatorQuad" else (572 + i % 4, 768 + i % 4)
            return tile_statement(districts, g, z, row, col)
        return make

    return {
        "items bbox CRS84": items(libraries, bbox=box, limit="100"),
        "items bbox EPSG:2326": items(libraries, bbox=lambda i: f"{810000 + i},{830000 + i},{820000 + i},{840000 + i}",
                                      **{"bbox-crs": EPSG2326, "limit": "100"}),
        "items filter + sortby": items(libraries, filter=lambda i: f"fid > {i} AND district <> 'x{i}'",
                                       sortby="-english_name"),
        "items unfiltered, offset": items(libraries, offset=lambda i: str(i * 7), crs=EPSG2326),
        "item": item,
        "hits": hits,
        "tile WebMercatorQuad z14": tile("WebMercatorQuad", 14),
        "tile HK80Grid z12": tile("HK80Grid", 12),
    }


def _run_all(url: str, options: str) -> dict[str, list[tuple[int, int]]]:
    """Run every shape RUNS times, each on a connection of its own; (generic, custom) plans of what was prepared."""
    with psycopg.connect(url, autocommit=True) as conn:
        makers = shapes(conn)
    counts: dict[str, list[tuple[int, int]]] = {}
    for name, make in makers.items():
        with psycopg.connect(url, autocommit=True, options=options) as conn:
            for i in range(RUNS):
                query, params = make(i)
                conn.execute(query, params).fetchall()
            rows = conn.execute("select generic_plans, custom_plans from pg_prepared_statements").fetchall()
        assert rows, f"{name}: psycopg did not prepare the statement"
        counts[name] = [(int(g), int(c)) for g, c in rows]
    return counts


def test_every_shape_keeps_custom_plans_past_the_threshold(url: str) -> None:
    counts = _run_all(url, connection_options(WebSettings()))
    for name, plans in counts.items():
        assert all(generic == 0 for generic, _ in plans), f"{name}: generic plans {plans}"
        assert max(custom for _, custom in plans) >= RUNS - 5, f"{name}: {plans}"


def test_without_the_setting_postgresql_switches_to_generic_plans(url: str) -> None:
    """The control: the same runs on a default connection do get generic plans (so the test above can fail)."""
    counts = _run_all(url, "-c max_parallel_workers_per_gather=0")
    assert any(generic > 0 for plans in counts.values() for generic, _ in plans), json.dumps(counts)
