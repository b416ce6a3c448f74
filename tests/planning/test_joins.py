"""Spatial joins on three engines: hand-checked answers on tiny fixtures, engines agree, bad inputs fail clearly.

Fixtures (``tests/data/planning``, EPSG:2326, offsets from (835000, 815000) in metres, synthetic):
squares A [0,100]², B [100,200]x[0,100] (shares the edge x=100 with A), C [300,400]x[0,100];
points p1 (50,50) in A, p2 (100,50) on the A|B edge, p3 (250,50) 50 m from both B and C,
p4 (150,150) 50 m north of B (70.7 m from A's corner), p5 (600,50) 200 m east of C;
lots L1 [80,120]x[20,60] (half in A, half in B), L2 [310,330]x[10,30] in C;
road R1 from (50,50) to (350,50): 50 m in A, 100 m in B, 50 m in C.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from psycopg import sql
from shapely.geometry import box

from loaders import load
from sdi.db import connect
from sdi.errors import LayerNotFoundError, PlanningError
from sdi.layerdef import read_definition
from sdi.planning import clip, nearest, overlay, sjoin, summarise_by, within_distance
from sdi.planning.engines import dask as dask_engine
from sdi.planning.engines import postgis
from sdi.planning.engines.frames import Join, Summary, keep_dimension
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS

pytestmark = pytest.mark.db

FIXTURES = DATA / "planning"
NAMES = ("squares", "points", "lots", "roads")
X0, Y0 = 835000, 815000
ENGINES = ("postgis", "geopandas", "dask")


@pytest.fixture(scope="module")
def join_settings(database_url: str) -> Settings:
    """The test database with the four fixture layers ``planning_<name>`` loaded."""
    settings = Settings(database_url=database_url, layers_dir=LAYERS)
    for name in NAMES:
        load(read_definition(FIXTURES / f"planning_{name}.yml"), settings)
    return settings


@pytest.fixture(scope="module")
def frames() -> dict[str, gpd.GeoDataFrame]:
    """The same fixtures as GeoDataFrames read from the files, keyed by layer id."""
    return {f"planning_{n}": gpd.read_file(FIXTURES / f"{n}.geojson") for n in NAMES}


def run(function: Callable[..., gpd.GeoDataFrame], *args: Any, engine: str, settings: Settings,
        **kwargs: Any) -> gpd.GeoDataFrame:
    """Call a join; dask runs on its in-process threaded scheduler (the cluster paths have their own tests)."""
    return function(*args, engine=engine, settings=settings, scheduler="threads", **kwargs)


def pairs(result: gpd.GeoDataFrame, *columns: str) -> list[tuple[Any, ...]]:
    """The result's rows as tuples of ``columns`` (missing values as None, floats rounded to mm)."""
    out = []
    for row in result[list(columns)].itertuples(index=False):
        out.append(tuple(None if pd.isna(v) else round(v, 3) if isinstance(v, float) else v for v in row))
    return out


def shifted(x0: float, y0: float, x1: float, y1: float) -> shapely.Geometry:
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def assert_same_geometry(a: gpd.GeoSeries, b: gpd.GeoSeries) -> None:
    assert len(a) == len(b)
    for ga, gb in zip(a.values, b.values, strict=True):
        if ga is None or gb is None:
            assert ga is None and gb is None
            continue
        assert ga.geom_type == gb.geom_type
        same = shapely.equals_exact(shapely.normalize(ga), shapely.normalize(gb), tolerance=1e-6)
        assert same or (ga.symmetric_difference(gb).area < 1e-6 and ga.hausdorff_distance(gb) < 1e-6), (ga, gb)


def assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    """Same columns in the same order, same values (floats within 1e-6), same geometries, CRS and index."""
    assert list(a.columns) == list(b.columns)
    for frame in (a, b):
        assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
        assert frame.crs is not None and frame.crs.to_epsg() == 2326
        assert frame.geometry.name == "geometry"
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")),
                                  check_dtype=False, check_exact=False, atol=1e-6, rtol=0)
    assert_same_geometry(a.geometry, b.geometry)


# ---------------------------------------------------------------- hand-checked answers, every engine


@pytest.mark.parametrize("engine", ENGINES)
def test_sjoin_predicates(join_settings: Settings, engine: str) -> None:
    def keys(predicate: str, left: str = "planning_points", right: str = "planning_squares") -> list[tuple[Any, ...]]:
        return pairs(run(sjoin, left, right, predicate, engine=engine, settings=join_settings), "key", "key_right")

    # p2 on the shared edge intersects both squares but is within neither
    assert keys("intersects") == [("p1", "A"), ("p2", "A"), ("p2", "B")]
    assert keys("within") == [("p1", "A")]
    assert keys("contains", "planning_squares", "planning_points") == [("A", "p1")]
    assert keys("contains") == []


@pytest.mark.parametrize("engine", ENGINES)
def test_sjoin_left_keeps_unmatched_rows_with_left_geometry(join_settings: Settings, engine: str) -> None:
    result = run(sjoin, "planning_points", "planning_squares", how="left", engine=engine, settings=join_settings)
    assert pairs(result, "key", "key_right", "value_right") == [
        ("p1", "A", 10), ("p2", "A", 10), ("p2", "B", 20), ("p3", None, None), ("p4", None, None), ("p5", None, None)]
    assert list(result.columns) == ["key", "name", "value", "key_right", "name_right", "grp", "value_right", "geometry"]
    assert result.geometry.iloc[3].equals(shapely.Point(X0 + 250, Y0 + 50))


@pytest.mark.parametrize("engine", ENGINES)
def test_within_distance_includes_pairs_exactly_at_the_distance(join_settings: Settings, engine: str) -> None:
    result = run(within_distance, "planning_points", "planning_squares", 50, engine=engine, settings=join_settings)
    assert pairs(result, "key", "key_right", "distance_m") == [
        ("p1", "A", 0.0), ("p1", "B", 50.0), ("p2", "A", 0.0), ("p2", "B", 0.0),
        ("p3", "B", 50.0), ("p3", "C", 50.0), ("p4", "B", 50.0)]
    zero = run(within_distance, "planning_points", "planning_squares", 0, engine=engine, settings=join_settings)
    assert pairs(zero, "key", "key_right") == [("p1", "A"), ("p2", "A"), ("p2", "B")]


@pytest.mark.parametrize("engine", ENGINES)
def test_nearest_breaks_ties_by_lowest_key_and_honours_max_distance(join_settings: Settings, engine: str) -> None:
    result = run(nearest, "planning_points", "planning_squares", engine=engine, settings=join_settings)
    # p2 is on A and B (tie at 0 → A); p3 is 50 m from B and from C (tie → B)
    assert pairs(result, "key", "key_right", "distance_m") == [
        ("p1", "A", 0.0), ("p2", "A", 0.0), ("p3", "B", 50.0), ("p4", "B", 50.0), ("p5", "C", 200.0)]
    limited = run(nearest, "planning_points", "planning_squares", 50, engine=engine, settings=join_settings)
    assert pairs(limited, "key", "key_right", "distance_m") == [
        ("p1", "A", 0.0), ("p2", "A", 0.0), ("p3", "B", 50.0), ("p4", "B", 50.0), ("p5", None, None)]


@pytest.mark.parametrize("engine", ENGINES)
def test_overlay_splits_a_polygon_crossing_two_zones(join_settings: Settings, engine: str) -> None:
    result = run(overlay, "planning_lots", "planning_squares", engine=engine, settings=join_settings)
    assert pairs(result, "key", "key_right", "lot_value", "value") == [
        ("L1", "A", 100.0, 10), ("L1", "B", 100.0, 20), ("L2", "C", 40.0, 30)]
    assert_same_geometry(result.geometry, gpd.GeoSeries([
        shifted(80, 20, 100, 60), shifted(100, 20, 120, 60), shifted(310, 10, 330, 30)]))


@pytest.mark.parametrize("engine", ENGINES)
def test_overlay_drops_pairs_that_only_share_an_edge(join_settings: Settings, engine: str) -> None:
    result = run(overlay, "planning_squares", "planning_squares", engine=engine, settings=join_settings)
    assert pairs(result, "key", "key_right") == [("A", "A"), ("B", "B"), ("C", "C")]
    assert set(result.geom_type) == {"Polygon"}


@pytest.mark.parametrize("engine", ENGINES)
def test_clip_keeps_source_attributes_and_the_part_inside_the_mask(
        join_settings: Settings, frames: dict[str, gpd.GeoDataFrame], engine: str) -> None:
    roads = run(clip, "planning_roads", "planning_squares", engine=engine, settings=join_settings)
    assert list(roads.columns) == ["key", "road", "geometry"]
    assert roads.geom_type.tolist() == ["MultiLineString"]
    assert roads.length.round(6).tolist() == [200.0]  # 50→200 through A and B, 300→350 in C
    points = run(clip, "planning_points", "planning_squares", engine=engine, settings=join_settings)
    assert points["key"].tolist() == ["p1", "p2"]  # the boundary point is kept
    square_a = frames["planning_squares"].iloc[[0]]
    lots = run(clip, "planning_lots", square_a, engine=engine, settings=join_settings)
    assert lots["key"].tolist() == ["L1"]
    assert_same_geometry(lots.geometry, gpd.GeoSeries([shifted(80, 20, 100, 60)]))


@pytest.mark.parametrize("engine", ENGINES)
def test_summarise_by_counts_areas_and_sums_per_zone(join_settings: Settings, engine: str) -> None:
    lots = run(summarise_by, "planning_lots", "planning_squares", agg={"lot_value": ["sum", "mean"]},
               engine=engine, settings=join_settings)
    assert list(lots.columns) == ["key", "name", "grp", "value", "count", "lot_value_sum", "lot_value_mean",
                                  "area_m2", "geometry"]
    assert pairs(lots, "key", "count", "area_m2", "lot_value_sum") == [
        ("A", 1, 800.0, 100.0), ("B", 1, 800.0, 100.0), ("C", 1, 400.0, 40.0)]
    points = run(summarise_by, "planning_points", "planning_squares", agg={"value": "mean"},
                 engine=engine, settings=join_settings)
    assert pairs(points, "key", "count", "value_mean") == [("A", 2, 2.0), ("B", 1, 2.5), ("C", 0, None)]
    assert "area_m2" not in points.columns and "length_m" not in points.columns
    roads = run(summarise_by, "planning_roads", "planning_squares", engine=engine, settings=join_settings)
    assert pairs(roads, "key", "count", "length_m") == [("A", 1, 50.0), ("B", 1, 100.0), ("C", 1, 50.0)]


@pytest.mark.parametrize("engine", ENGINES)
def test_summarise_by_column_dissolves_zones(join_settings: Settings, engine: str) -> None:
    result = run(summarise_by, "planning_points", "planning_squares", by="grp", agg={"value": ["sum", "max"]},
                 engine=engine, settings=join_settings)
    assert list(result.columns) == ["grp", "count", "value_sum", "value_max", "geometry"]
    # p2 lies on the A|B edge inside the dissolved "west" zone: counted once
    assert pairs(result, "grp", "count", "value_sum", "value_max") == [("east", 0, 0.0, None), ("west", 2, 4.0, 2.5)]
    assert result.geometry.iloc[1].area == pytest.approx(20000.0)


# ---------------------------------------------------------------- engines and input kinds agree

CALLS: list[tuple[str, Callable[..., gpd.GeoDataFrame], tuple[Any, ...], dict[str, Any]]] = [
    ("sjoin-intersects", sjoin, ("planning_points", "planning_squares"), {}),
    ("sjoin-left-within", sjoin, ("planning_points", "planning_squares", "within", "left"), {}),
    ("sjoin-contains", sjoin, ("planning_squares", "planning_lots", "contains"), {}),
    ("sjoin-lots", sjoin, ("planning_lots", "planning_squares"), {"how": "left"}),
    ("within-distance", within_distance, ("planning_squares", "planning_points", 70.8), {}),
    ("nearest", nearest, ("planning_lots", "planning_points"), {}),
    ("nearest-max", nearest, ("planning_points", "planning_lots", 120), {}),
    ("overlay", overlay, ("planning_squares", "planning_lots"), {}),
    ("overlay-roads", overlay, ("planning_roads", "planning_squares"), {}),
    ("clip", clip, ("planning_lots", "planning_squares"), {}),
    ("summarise-lots", summarise_by, ("planning_lots", "planning_squares"), {"agg": {"lot_value": "min"}}),
    ("summarise-by", summarise_by, ("planning_roads", "planning_squares"), {"by": "grp"}),
]


@pytest.fixture(scope="module")
def reference(join_settings: Settings) -> dict[str, gpd.GeoDataFrame]:
    """Each call's result on PostGIS with layer-id inputs."""
    return {name: run(fn, *args, engine="postgis", settings=join_settings, **kw) for name, fn, args, kw in CALLS}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("inputs", ["ids", "frames"])
@pytest.mark.parametrize(("name", "function", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_engines_and_input_kinds_agree(join_settings: Settings, frames: dict[str, gpd.GeoDataFrame],
                                       reference: dict[str, gpd.GeoDataFrame], engine: str, inputs: str, name: str,
                                       function: Callable[..., gpd.GeoDataFrame], args: tuple[Any, ...],
                                       kwargs: dict[str, Any]) -> None:
    if inputs == "frames":
        args = tuple(frames[a] if isinstance(a, str) and a in frames else a for a in args)
    result = run(function, *args, engine=engine, settings=join_settings, **kwargs)
    assert len(result) > 0
    assert_same(result, reference[name])


def test_default_engine_is_postgis_for_layer_ids_and_works_without_settings_for_frames(
        join_settings: Settings, frames: dict[str, gpd.GeoDataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDI_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")  # any DB use would fail
    from_frames = sjoin(frames["planning_points"], frames["planning_squares"])  # geopandas, no settings needed
    from_ids = sjoin("planning_points", "planning_squares", settings=join_settings)
    assert_same(from_frames, from_ids)


def test_frames_in_another_crs_are_reprojected(join_settings: Settings,
                                               frames: dict[str, gpd.GeoDataFrame]) -> None:
    points = frames["planning_points"].to_crs(4326)
    for engine in ENGINES:
        result = run(nearest, points, "planning_squares", engine=engine, settings=join_settings)
        clear = result.iloc[[0, 3, 4]]  # p2 and p3 are ties that a reprojection round trip may break
        assert pairs(clear, "key", "key_right") == [("p1", "A"), ("p4", "B"), ("p5", "C")]
        assert np.allclose(clear["distance_m"], [0, 50, 200], atol=1e-3)
        assert result.crs.to_epsg() == 2326


def test_frame_index_is_ignored_and_right_names_are_suffixed(join_settings: Settings,
                                                             frames: dict[str, gpd.GeoDataFrame]) -> None:
    points = frames["planning_points"].set_index(pd.Index([50, 40, 30, 20, 10]))
    squares = frames["planning_squares"].rename(columns={"grp": "distance_m"})
    for engine in ENGINES:
        result = run(within_distance, points, squares, 0, engine=engine, settings=join_settings)
        assert isinstance(result.index, pd.RangeIndex)
        assert list(result.columns) == ["key", "name", "value", "key_right", "name_right", "distance_m_right",
                                        "value_right", "distance_m", "geometry"]
        assert result["key"].tolist() == ["p1", "p2", "p2"]


def test_postgis_engine_with_frames_and_no_settings_uses_the_environment(
        database_url: str, frames: dict[str, gpd.GeoDataFrame], reference: dict[str, gpd.GeoDataFrame],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDI_DATABASE_URL", database_url)
    result = nearest(frames["planning_lots"], frames["planning_points"], engine="postgis")
    assert_same(result, reference["nearest"])


@pytest.mark.parametrize("join", [
    Join("sjoin", "within"), Join("sjoin", "contains", "left"), Join("within_distance", distance=50.0),
    Join("nearest", how="left"), Join("nearest", how="left", distance=10.0), Join("overlay"), Join("clip")])
def test_postgis_statements_use_the_gist_indexes(join_settings: Settings, join: Join) -> None:
    with connect(join_settings) as conn:
        conn.execute("set local enable_seqscan = off")  # tiny tables: show the index is usable at all
        left, right = postgis.side(conn, "planning_points", "left"), postgis.side(conn, "planning_squares", "right")
        query, params = postgis.join_statement(join, left, right)
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("explain ") + query, params).fetchall())
        summary = postgis.summary_statement(Summary("grp", (), 0), left, right)
        summary_plan = "\n".join(r[0] for r in conn.execute(sql.SQL("explain ") + summary).fetchall())
    indexed = ["planning_points_geom_idx"] if join.kind == "clip" else ["planning_points_geom_idx",
                                                                        "planning_squares_geom_idx"]
    assert any(f"Index Scan using {name}" in plan for name in indexed), plan
    if join.kind == "nearest":
        assert "Order By: (geom <-> l.geom)" in plan, plan  # KNN
    assert "Index Scan using planning_points_geom_idx" in summary_plan, summary_plan


# ---------------------------------------------------------------- dask on a real cluster


def test_dask_on_its_own_local_cluster_with_several_hilbert_partitions(
        join_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 2)  # 5 points → 3 spatially shuffled partitions
    result = within_distance("planning_points", "planning_squares", 50, engine="dask", settings=join_settings)
    assert pairs(result, "key", "key_right", "distance_m") == [
        ("p1", "A", 0.0), ("p1", "B", 50.0), ("p2", "A", 0.0), ("p2", "B", 0.0),
        ("p3", "B", 50.0), ("p3", "C", 50.0), ("p4", "B", 50.0)]


@pytest.mark.parametrize(("name", "function", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_dask_with_the_right_side_cut_per_partition(
        join_settings: Settings, reference: dict[str, gpd.GeoDataFrame], monkeypatch: pytest.MonkeyPatch,
        name: str, function: Callable[..., gpd.GeoDataFrame], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1)
    monkeypatch.setattr(dask_engine, "BROADCAST_MAX_ROWS", 0)
    assert_same(run(function, *args, engine="dask", settings=join_settings, **kwargs), reference[name])


@pytest.fixture(scope="module")
def process_scheduler() -> Iterator[str]:
    """A local ``dask.distributed`` cluster of one worker process, reached by its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_on_a_scheduler_address(join_settings: Settings, reference: dict[str, gpd.GeoDataFrame],
                                     process_scheduler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dask_engine, "ROWS_PER_PARTITION", 1)
    monkeypatch.setattr(dask_engine, "BROADCAST_MAX_ROWS", 1)
    for name in ("overlay", "summarise-by"):
        _, function, args, kwargs = next(c for c in CALLS if c[0] == name)
        result = function(*args, engine="dask", settings=join_settings, scheduler=process_scheduler, **kwargs)
        assert_same(result, reference[name])


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(("call", "match"), [
    (lambda s: sjoin("planning_points", "planning_squares", "touches", settings=s), "predicate 'touches'"),
    (lambda s: sjoin("planning_points", "planning_squares", how="outer", settings=s), "how 'outer'"),
    (lambda s: sjoin("planning_points", "planning_squares", engine="spark", settings=s), "engine 'spark'"),
    (lambda s: within_distance("planning_points", "planning_squares", -1, settings=s), "distance_m must not be neg"),
    (lambda s: within_distance("planning_points", "planning_squares", math.nan, settings=s), "distance_m must be"),
    (lambda s: nearest("planning_points", "planning_squares", -5, settings=s), "max_distance_m must not be negative"),
    (lambda s: overlay("planning_lots", "planning_squares", how="union", settings=s), "how 'union'"),
    (lambda s: summarise_by("planning_lots", "planning_squares", by="nope", settings=s), "by: zones have no column"),
    (lambda s: summarise_by("planning_lots", "planning_squares", agg={"nope": "sum"}, settings=s), "agg: source has"),
    (lambda s: summarise_by("planning_lots", "planning_squares", agg={"lot_value": "median"}, settings=s),
     r"agg\['lot_value'\] 'median'"),
    (lambda s: summarise_by("planning_points", "planning_squares", agg={"name": "sum"}, settings=s), "not numeric"),
    (lambda s: sjoin("planning_points", 42, settings=s), "right: expected a layer id or a GeoDataFrame"),
])
def test_bad_parameters_raise_one_line_planning_errors(join_settings: Settings, call: Callable[[Settings], Any],
                                                       match: str) -> None:
    with pytest.raises(PlanningError, match=match) as info:
        call(join_settings)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_frame_without_crs_and_unknown_layer_are_rejected(join_settings: Settings,
                                                          frames: dict[str, gpd.GeoDataFrame], engine: str) -> None:
    no_crs = frames["planning_points"].set_crs(None, allow_override=True)
    with pytest.raises(PlanningError, match="left: the GeoDataFrame has no CRS"):
        run(sjoin, no_crs, "planning_squares", engine=engine, settings=join_settings)
    with pytest.raises(PlanningError, match="zones: the GeoDataFrame has no CRS"):
        run(summarise_by, "planning_points", no_crs, engine=engine, settings=join_settings)
    with pytest.raises(LayerNotFoundError, match=r"^right: layer 'no_such_layer' is not loaded"):
        run(nearest, "planning_points", "no_such_layer", engine=engine, settings=join_settings)
    with pytest.raises(LayerNotFoundError, match=r"^source: layer 'no_such_layer' is not loaded"):
        run(summarise_by, "no_such_layer", "planning_squares", engine=engine, settings=join_settings)


def test_keep_dimension_keeps_parts_of_the_wanted_dimension_only() -> None:
    a, b = box(0, 0, 1, 1), box(3, 3, 4, 4)
    mixed = shapely.GeometryCollection([a, shapely.LineString([(1, 1), (3, 3)]), b])
    edge_only = shapely.GeometryCollection([shapely.LineString([(0, 0), (0, 1)]), shapely.Point(5, 5)])
    geometries = np.array([mixed, edge_only, a, None, mixed], dtype=object)
    kept = keep_dimension(geometries, np.array([2, 2, 2, 2, 1]))
    assert kept[0].equals(shapely.MultiPolygon([a, b]))
    assert kept[1] is None and kept[3] is None
    assert kept[2].geom_type == "Polygon" and kept[2].equals(a)
    assert kept[4].equals(shapely.LineString([(1, 1), (3, 3)]))


def test_fixture_files_match_their_documented_geometry(frames: dict[str, gpd.GeoDataFrame]) -> None:
    squares = frames["planning_squares"]
    expected = [shifted(0, 0, 100, 100), shifted(100, 0, 200, 100), shifted(300, 0, 400, 100)]
    assert all(g.equals(e) for g, e in zip(squares.geometry, expected, strict=True))
    assert frames["planning_roads"].length.tolist() == [300.0]
    assert Path(FIXTURES / "planning_squares.yml").read_text().count("synthetic: true") == 1
