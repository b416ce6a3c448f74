"""The ``dask`` engine on a real cluster: a scheduler and two workers started with the dask command-line tools.

Joins, summaries and the site selection run with ``scheduler="tcp://127.0.0.1:<port>"`` and must equal
the ``postgis`` and ``geopandas`` engines (on the hand-made join fixtures, whose keys are text, and on
the sample layers, cut into several partitions over both workers). The workers read their partitions
from PostGIS themselves: the rows each worker process read add up to the layer, none were read by the
client, and the client sends a small fraction of what shipping the layer would cost. A task that meets
another load of a layer than the client planned with refuses to go on, and a password in the database
URL reaches neither an error nor a worker's log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psutil
import pytest
import shapely
from distributed import Client
from distributed.comm.tcp import TCP

from loaders import load
from sdi.db import connect
from sdi.errors import DatabaseUnavailableError, PlanningError
from sdi.layerdef import read_definition
from sdi.planning import clip, nearest, overlay, site_selection, sjoin, summarise_by, within_distance
from sdi.planning.cli_cluster import CliCluster, cli_cluster
from sdi.planning.cluster import TaskRunner
from sdi.planning.engines import dask as dask_engine
from sdi.planning.engines import dask_tasks
from sdi.planning.engines.dask_tasks import JoinTask, LayerPart, NearLayer, join_part
from sdi.planning.engines.frames import Join
from sdi.planning.engines.partitions import Rect, split
from sdi.planning.engines.reading import Database, next_radius, partition_rows_read
from sdi.planning.sites import dask_engine as sites_dask
from sdi.planning.sources import layer_table, read_layer
from sdi.settings import Settings
from tests.planning.conftest import CRITERIA
from tests.planning.test_joins import CALLS, FIXTURES, NAMES, assert_same

pytestmark = pytest.mark.db

Call = tuple[str, Callable[..., gpd.GeoDataFrame], tuple[Any, ...], dict[str, Any]]


@pytest.fixture(scope="module")
def client(dask_cli_cluster: CliCluster) -> Iterator[Client]:
    """A client of the CLI cluster, for looking at the workers."""
    with Client(dask_cli_cluster.address, timeout="30s", set_as_default=False) as opened:
        yield opened


@pytest.fixture(scope="module")
def fixture_layers(planning_settings: Settings) -> Settings:
    """The four join fixtures (``planning_<name>``, text keys) loaded into the session database."""
    for name in NAMES:
        load(read_definition(FIXTURES / f"planning_{name}.yml"), planning_settings)
    return planning_settings


def assert_equal_with_dtypes(result: gpd.GeoDataFrame, expected: gpd.GeoDataFrame) -> None:
    """:func:`assert_same`, and the same dtype in every column."""
    assert_same(result, expected)
    assert result.dtypes.astype(str).to_dict() == expected.dtypes.astype(str).to_dict()


def test_the_cluster_is_two_worker_processes_on_loopback(dask_cli_cluster: CliCluster, client: Client) -> None:
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2 and all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert dask_cli_cluster.address.startswith("tcp://127.0.0.1:")
    assert os.getpid() not in dask_cli_cluster.worker_pids
    assert sorted(client.run(os.getpid).values()) == sorted(dask_cli_cluster.worker_pids)


# ---------------------------------------------------------------- joins: the hand-made fixtures (text keys)


@pytest.mark.parametrize(("name", "function", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_fixture_joins_on_the_cluster_equal_postgis_and_geopandas(
        fixture_layers: Settings, dask_cli_cluster: CliCluster, monkeypatch: pytest.MonkeyPatch, name: str,
        function: Callable[..., gpd.GeoDataFrame], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1)  # a partition per row: keys sorted across tasks
    expected = function(*args, engine="postgis", settings=fixture_layers, **kwargs)
    result = function(*args, engine="dask", settings=fixture_layers, scheduler=dask_cli_cluster.address, **kwargs)
    assert len(result) > 0
    assert_equal_with_dtypes(result, expected)
    assert_same(result, function(*args, engine="geopandas", settings=fixture_layers, **kwargs))


@pytest.mark.parametrize(("name", "function", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_fixture_frames_cut_per_chunk_equal_postgis(fixture_layers: Settings, monkeypatch: pytest.MonkeyPatch,
                                                    name: str, function: Callable[..., gpd.GeoDataFrame],
                                                    args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """GeoDataFrame inputs: the left in one-row chunks, the right cut near each chunk (in-process threads)."""
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1)
    monkeypatch.setattr(dask_engine, "BROADCAST_MAX_ROWS", 0)
    with connect(fixture_layers) as conn:
        framed = tuple(read_layer(conn, a) if isinstance(a, str) and a.startswith("planning_") else a for a in args)
    expected = function(*args, engine="postgis", settings=fixture_layers, **kwargs)
    assert_same(function(*framed, engine="dask", scheduler="threads", **kwargs), expected)


# ---------------------------------------------------------------- joins: the sample layers, many partitions

SAMPLE_CALLS: list[Call] = [
    ("sjoin", sjoin, ("synthetic_lots", "synthetic_ozp_zones"), {}),
    ("sjoin-within-left", sjoin, ("landslide_incidents", "districts_18", "within", "left"), {}),
    ("sjoin-contains", sjoin, ("synthetic_country_park_areas", "landslide_incidents", "contains"), {}),
    ("within-distance", within_distance, ("synthetic_substations", "synthetic_lots", 150), {}),
    ("nearest", nearest, ("synthetic_lots", "synthetic_substations"), {}),
    ("nearest-max", nearest, ("landslide_incidents", "synthetic_lots", 200), {}),
    ("overlay", overlay, ("synthetic_lots", "synthetic_ozp_zones"), {}),
    ("clip", clip, ("synthetic_lots", "synthetic_flood_prone_areas"), {}),
    ("summarise", summarise_by, ("synthetic_lots", "districts_18"), {"agg": {"area_m2": ["sum", "max"]}}),
    ("summarise-by", summarise_by, ("landslide_incidents", "synthetic_ozp_zones"), {"by": "zone_code"}),
]


@pytest.fixture(scope="module")
def sample_frames(sample_layers: Settings) -> dict[str, gpd.GeoDataFrame]:
    """The sample layers of :data:`SAMPLE_CALLS` as GeoDataFrames (for inputs given as frames)."""
    names = {a for _, _, args, _ in SAMPLE_CALLS for a in args[:2]}
    with connect(sample_layers) as conn:
        return {n: read_layer(conn, n) for n in names}


@pytest.mark.parametrize("inputs", ["ids", "left-frame", "right-frame"])
@pytest.mark.parametrize(("name", "function", "args", "kwargs"), SAMPLE_CALLS, ids=[c[0] for c in SAMPLE_CALLS])
def test_sample_joins_on_the_cluster_equal_postgis_and_geopandas(
        sample_layers: Settings, sample_frames: dict[str, gpd.GeoDataFrame], dask_cli_cluster: CliCluster,
        monkeypatch: pytest.MonkeyPatch, inputs: str, name: str, function: Callable[..., gpd.GeoDataFrame],
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1500)  # the 10,000 lots in about 7 partitions
    if inputs != "ids":
        at = 0 if inputs == "left-frame" else 1
        args = (*args[:at], sample_frames[args[at]], *args[at + 1:])
    expected = function(*args, engine="postgis", settings=sample_layers, **kwargs)
    result = function(*args, engine="dask", settings=sample_layers, scheduler=dask_cli_cluster.address, **kwargs)
    assert len(result) > 0
    assert_same(result, expected)
    if inputs == "ids":
        assert_equal_with_dtypes(result, expected)
    assert_same(result, function(*args, engine="geopandas", settings=sample_layers, **kwargs))


# ---------------------------------------------------------------- site selection


def _comparable(result: gpd.GeoDataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(result.drop(columns="geometry"))
    frame["wkb"] = shapely.to_wkb(shapely.normalize(result.geometry.values), hex=True)
    return frame


def assert_same_sites(got: gpd.GeoDataFrame, expected: gpd.GeoDataFrame) -> None:
    """Same sites, ranks, explanations, districts and geometries; scores within 1e-6."""
    a, b = _comparable(got), _comparable(expected)
    assert list(a.columns) == list(b.columns)
    assert list(a["site"]) == list(b["site"]) and list(a["rank"]) == list(b["rank"])
    numeric = ["score", "area_m2"] + [c for c in b.columns if c.startswith("score_")]
    np.testing.assert_allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), atol=1e-6)
    text = [c for c in b.columns if c.startswith("why_")] + ["district", "wkb"]
    pd.testing.assert_frame_equal(a[text], b[text])


@pytest.mark.parametrize(("criteria", "district"), [(CRITERIA / "handmade.yml", None),
                                                    (CRITERIA / "handmade.yml", "alpha")])
def test_handmade_site_selection_on_the_cluster(handmade_layers: Settings, dask_cli_cluster: CliCluster,
                                                monkeypatch: pytest.MonkeyPatch, criteria: Any,
                                                district: str | None) -> None:
    """One lot per partition; L-FAR's 132 kV substation lies beyond the first radius read, so it is widened."""
    monkeypatch.setattr(sites_dask, "ROWS_PER_PARTITION", 1)
    expected = site_selection(criteria, settings=handmade_layers, district=district, engine="postgis")
    got = site_selection(criteria, settings=handmade_layers, district=district, engine="dask",
                         scheduler=dask_cli_cluster.address)
    assert len(got) > 0
    assert_same_sites(got, expected)
    assert_same_sites(got, site_selection(criteria, settings=handmade_layers, district=district, engine="geopandas"))


@pytest.mark.parametrize("min_area", [None, 100.0])
def test_sample_site_selection_on_the_cluster(sample_layers: Settings, dask_cli_cluster: CliCluster,
                                              monkeypatch: pytest.MonkeyPatch, min_area: float | None) -> None:
    monkeypatch.setattr(sites_dask, "ROWS_PER_PARTITION", 400)
    criteria: Any = None
    if min_area is not None:  # the sample's lots are small: the 100 m² rule leaves thousands of sites
        from sdi.planning.criteria import load_criteria

        criteria = load_criteria().model_dump(by_alias=True, exclude_none=True)
        criteria["constraints"] = [{**c, "min_m2": min_area} if c.get("type") == "min_area" else c
                                   for c in criteria["constraints"]]
    expected = site_selection(criteria, settings=sample_layers, engine="postgis")
    got = site_selection(criteria, settings=sample_layers, engine="dask", scheduler=dask_cli_cluster.address)
    assert len(got) > 0
    assert_same_sites(got, expected)
    assert_same_sites(got, site_selection(criteria, settings=sample_layers, engine="geopandas"))


# ---------------------------------------------------------------- the workers read PostGIS themselves


class _BytesSent:
    """Counts the bytes this process writes on its dask TCP connections (to the scheduler and the workers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.total = 0
        write = TCP.write

        async def counted(comm: TCP, *args: Any, **kwargs: Any) -> int:
            sent = await write(comm, *args, **kwargs)
            self.total += int(sent)
            return int(sent)

        monkeypatch.setattr(TCP, "write", counted)


def _rows_read(client: Client, layer: str) -> dict[str, int]:
    return {worker: counts.get(layer, 0) for worker, counts in client.run(partition_rows_read).items()}


def test_workers_read_their_partitions_from_postgis(sample_layers: Settings, dask_cli_cluster: CliCluster,
                                                    client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both worker processes read lots, each lot exactly once, none in this process; the client sends little.

    Shipping the lots (as the engine did before) would send the whole layer: the control scatters it
    and counts the bytes the same way.
    """
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1500)
    with connect(sample_layers) as conn:
        lots = read_layer(conn, "synthetic_lots")
    before, here = _rows_read(client, "synthetic_lots"), partition_rows_read().get("synthetic_lots", 0)
    sent = _BytesSent(monkeypatch)
    result = sjoin("synthetic_lots", "districts_18", engine="dask", settings=sample_layers,
                   scheduler=dask_cli_cluster.address)
    join_bytes = sent.total
    read = {w: n - before.get(w, 0) for w, n in _rows_read(client, "synthetic_lots").items()}
    pids = client.run(os.getpid)
    assert {pids[w] for w in read} == set(dask_cli_cluster.worker_pids)
    assert all(n > 0 for n in read.values()), read  # both workers read partitions
    assert sum(read.values()) == len(lots)  # every lot once: no row duplicated or lost
    assert partition_rows_read().get("synthetic_lots", 0) == here  # the client read none
    assert set(result["fid"]) <= set(lots["fid"]) and len(result) >= len(lots) * 0.9

    sent.total = 0
    shipped = client.scatter(lots)
    ship_bytes = sent.total
    shipped.release()
    assert ship_bytes > 1_000_000
    assert join_bytes * 20 < ship_bytes, (join_bytes, ship_bytes)


def test_site_selection_workers_read_the_candidates(sample_layers: Settings, dask_cli_cluster: CliCluster,
                                                    client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates large enough are read by the workers, once each, in several partitions."""
    monkeypatch.setattr(sites_dask, "ROWS_PER_PARTITION", 400)
    with connect(sample_layers) as conn:
        row = conn.execute("select count(*) from layers.synthetic_lots where st_area(geom) >= 1000").fetchone()
    before = _rows_read(client, "synthetic_lots")
    site_selection(settings=sample_layers, engine="dask", scheduler=dask_cli_cluster.address)
    read = {w: n - before.get(w, 0) for w, n in _rows_read(client, "synthetic_lots").items()}
    assert row is not None and sum(read.values()) == row[0] > 0
    assert all(n > 0 for n in read.values()), read


# ---------------------------------------------------------------- partitions, loads, passwords


def test_rectangles_tile_the_plane_and_balance_the_points() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(835_000, 3_000, 4000), np.full(500, 840_000.0)])  # a pile of equal points
    y = np.concatenate([rng.normal(820_000, 1_000, 4000), np.full(500, 821_000.0)])
    rects = split(x, y, 7)
    assert len(rects) == 7
    inside = np.array([r.holds(x, y) for r in rects])
    assert (inside.sum(axis=0) == 1).all()  # every point in exactly one rectangle
    assert inside.sum(axis=1).max() < 2 * len(x) / 7
    assert split(np.full(10, 1.0), np.full(10, 2.0), 4) == [Rect()]  # cannot cut equal points: one rectangle


def test_a_layer_reloaded_while_the_job_runs_is_refused(sample_layers: Settings) -> None:
    with connect(sample_layers) as conn:
        lots, districts = layer_table(conn, "synthetic_lots"), layer_table(conn, "districts_18")
        loads = dict(conn.execute("select id, load_id from sdi.layer where id = any(%s)",
                                  (["synthetic_lots", "districts_18"],)).fetchall())
    task = JoinTask(Join("sjoin"), LayerPart(lots, Rect(), ("fid",)), NearLayer(districts, ("fid",)),
                    {**loads, "synthetic_lots": loads["synthetic_lots"] - 1})
    with pytest.raises(PlanningError, match="layer 'synthetic_lots' was reloaded or dropped while the dask engine"):
        join_part(Database.of(sample_layers), task, None, None)
    ok = join_part(Database.of(sample_layers), JoinTask(task.join, task.left, task.right, loads), None, None)
    assert len(ok.left_keys) > 0


def test_a_password_in_the_database_url_reaches_no_error_and_no_worker_log(
        sample_layers: Settings, dask_cli_cluster: CliCluster, client: Client) -> None:
    secret = "s3cr3t-pw-4217"
    db = Database(f"postgresql://sdi_nobody:{secret}@127.0.0.1:1/nothing", connect_timeout=2)
    assert secret not in repr(db) and "***" in repr(db)
    with connect(sample_layers) as conn:
        lots, districts = layer_table(conn, "synthetic_lots"), layer_table(conn, "districts_18")
    task = JoinTask(Join("sjoin"), LayerPart(lots, Rect(), ("fid",)), NearLayer(districts, ("fid",)), {})
    with pytest.raises(DatabaseUnavailableError) as info:
        TaskRunner(client).map(join_part, [(db, task, None, None)])
    assert secret not in str(info.value) and "sdi_nobody:***@" in str(info.value)
    logs = "".join(log.read_text(errors="replace") for log in dask_cli_cluster.logs)
    assert "Compute Failed" in logs or "join_part" in logs  # the failure was logged ...
    assert secret not in logs  # ... without the password


def test_nearest_rows_beyond_the_first_radius_are_found(sample_layers: Settings, handmade_layers: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``nearest`` and ``distance_to`` read near each partition first, and wider where a nearest row may lie beyond."""
    widened: list[tuple[float, float]] = []

    def counted(radius: float, needed: float) -> float:
        widened.append((radius, needed))
        return next_radius(radius, needed)

    monkeypatch.setattr(dask_tasks, "next_radius", counted)
    monkeypatch.setattr(sites_dask, "next_radius", counted)
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 500)
    monkeypatch.setattr(sites_dask, "ROWS_PER_PARTITION", 1)
    for left, right in (("synthetic_lots", "oil_storage_installations"), ("landslide_incidents", "synthetic_lots")):
        expected = nearest(left, right, engine="postgis", settings=sample_layers)
        assert_equal_with_dtypes(nearest(left, right, engine="dask", settings=sample_layers, scheduler="threads"),
                                 expected)
    assert widened
    joins_widened = len(widened)
    criteria = CRITERIA / "handmade.yml"
    assert_same_sites(site_selection(criteria, settings=handmade_layers, engine="dask", scheduler="threads"),
                      site_selection(criteria, settings=handmade_layers, engine="postgis"))
    assert len(widened) > joins_widened


def test_a_cluster_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    """Workers that die at start-up end the wait with a PlanningError quoting their log, and no process is left."""
    started = time.monotonic()
    with pytest.raises(PlanningError, match=r"(?s)did not register \(a dask worker exited.*worker-0\.log"), \
            cli_cluster(tmp_path, workers=1, memory_limit="not-a-size", timeout_s=60):
        pass
    assert time.monotonic() - started < 50  # the dead worker ended the wait, not the timeout
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(
        p.info["cmdline"] or ())]
    assert not left
