"""Joins against zones the ``postgis`` engine cuts into pieces agree with GEOS on the whole polygons.

Fixtures (synthetic, EPSG:2326, offsets in metres from (832000, 818000)): three zones of 300-400 vertices,
so the ``postgis`` engine cuts them (:mod:`sdi.planning.engines.pieces`): WEST (a 3 km block whose east side
is a wiggly border of 300 vertices shared exactly with EAST, and whose top is one slanted edge of slope 1/3),
EAST, and RING (a 400-vertex gear with a square hole, plus a square far away). Points and lots are placed
where a naive subdivision goes wrong: on the edges of WEST's inner cells (internal cut lines, inside the
zone), on the outer boundary where cut lines cross it, on the slanted edge (its clipped parts are rounded,
so the pieces alone misclassify most of these points), on the shared border, in and on the hole; lots
straddle cut lines, the border and the boundary. Every join is compared with the ``geopandas`` engine, which
tests the whole polygons with GEOS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.affinity
import shapely.errors
import yaml
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from loaders import load
from sdi.layerdef import read_definition
from sdi.planning import clip, nearest, overlay, sjoin, summarise_by, within_distance
from sdi.planning.engines import pieces, postgis, subdivided, subdivided_summary
from sdi.settings import Settings

pytestmark = pytest.mark.db

X0, Y0 = 832000, 818000
ENGINES = ("postgis", "geopandas")


def _p(x: float, y: float) -> tuple[float, float]:
    return (X0 + x, Y0 + y)


def _zones() -> gpd.GeoDataFrame:
    t = np.linspace(0, 1, 301)
    border = [_p(3000 + 300 * v + 13.7 * math.sin(40 * v), 3100 * v) for v in t[1:-1]]
    west = Polygon([_p(0, 0), _p(3000, 0), *border, _p(3300, 3100), _p(0, 2000)])
    east = Polygon([_p(3000, 0), _p(6000, 0), _p(6000, 3100), _p(3300, 3100), *border[::-1]])
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = 600 + 30 * np.sin(12 * angles)
    gear = [_p(1500 + r * math.cos(a), 4500 + r * math.sin(a)) for a, r in zip(angles, radius, strict=True)]
    hole = [_p(1400, 4400), _p(1600, 4400), _p(1600, 4600), _p(1400, 4600)]
    ring = MultiPolygon([Polygon(gear, [hole]), box(*_p(5000, 4000), *_p(5500, 4500))])
    return gpd.GeoDataFrame({"zone": ["WEST", "EAST", "RING"], "grp": ["main", "main", "other"],
                             "level": [1, 2, 3]}, geometry=[west, east, ring], crs=2326)


def _cut_lines(zone: shapely.Geometry) -> tuple[list[float], list[float]]:
    """The x and y of the cell edges inside ``zone`` (the edges of its inner cells)."""
    cut = pieces.cut([zone])
    cells = shapely.bounds(cut.geometry[cut.inner])
    return sorted(set(cells[:, [0, 2]].ravel())), sorted(set(cells[:, [1, 3]].ravel()))


def _points(zones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    west = zones.geometry.iloc[0]
    cut = pieces.cut([west])
    rows: list[tuple[str, Point]] = [("inside", Point(_p(1000, 1000)))]
    for i, cell in enumerate(shapely.bounds(cut.geometry[cut.inner])[:3]):  # on internal cut lines
        x0, y0, x1, y1 = cell
        for j, (x, y) in enumerate([(x0, y0), ((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), (x0, y1)]):
            rows.append((f"cut{i}{j}", Point(x, y)))
    xs = [x for x in sorted(set(shapely.bounds(cut.geometry)[:, [0, 2]].ravel())) if X0 < x < X0 + 3000]
    rows += [(f"bottom{i}", Point(x, Y0)) for i, x in enumerate(xs)]  # where cut lines cross the outer boundary
    rows += [("corner", Point(_p(0, 0))), ("bottom", Point(_p(1234.5, 0)))]
    steps = sorted({m for x in xs for m in range(int((x - X0) / 3) - 1, int((x - X0) / 3) + 2) if 0 < m < 1100})
    rows += [(f"slant{m}", Point(_p(3 * m, 2000 + m))) for m in steps[:12]]  # exactly on the slanted edge
    border = shapely.get_coordinates(west.exterior)[60:240:60]
    rows += [(f"border{i}", Point(*xy)) for i, xy in enumerate(border)]  # shared by WEST and EAST
    rows += [("hole_corner", Point(_p(1400, 4400))), ("in_hole", Point(_p(1500, 4500))),
             ("gear", Point(_p(1500, 4050))), ("far_square", Point(_p(5250, 4250))),
             ("below5", Point(_p(1000, -5))), ("below5.5", Point(_p(1000, -5.5))), ("left3", Point(_p(-3, 1000)))]
    return gpd.GeoDataFrame({"key": [k for k, _ in rows], "value": np.arange(len(rows), dtype=float)},
                            geometry=[g for _, g in rows], crs=2326)


def _lots(zones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    xs, ys = _cut_lines(zones.geometry.iloc[0])
    shapes = [box(x - 2, y - 2, x + 2, y + 2) for x in xs[:3] for y in ys[:2]]  # straddling internal cut lines
    shapes += [box(*_p(495, -5), *_p(505, 5)), box(*_p(600, -10), *_p(610, 0)), box(*_p(700, 0), *_p(710, 10)),
               box(*_p(200, 200), *_p(2200, 1000)),  # inside WEST across several cells
               box(*_p(1450, 4450), *_p(1550, 4550)), box(*_p(1580, 4480), *_p(1620, 4520)),  # in and across the hole
               shapely.affinity.rotate(box(*_p(2990, 1490), *_p(3330, 1510)), 7),  # across the shared border
               MultiPolygon([box(*_p(100, 100), *_p(120, 120)), box(*_p(5900, 100), *_p(5920, 120))]),
               Polygon([_p(1497, 2497), _p(1503, 2499), _p(1503, 2503), _p(1497, 2501)]),  # across the slanted edge
               box(*_p(800, 3800), *_p(5600, 5200))]  # holding all of RING
    rng = np.random.default_rng(15)
    for x, y in rng.uniform([0, 0], [6000, 3100], (400, 2)):  # many small lots, some inside inner cells
        shapes.append(shapely.affinity.rotate(box(*_p(x, y), *_p(x + 25, y + 18)), rng.uniform(0, 90)))
    return gpd.GeoDataFrame({"lot_id": np.arange(1, len(shapes) + 1), "value": np.linspace(1, 2, len(shapes))},
                            geometry=shapes, crs=2326)


def _roads(zones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    xs, ys = _cut_lines(zones.geometry.iloc[0])
    lines = [LineString([_p(-100, 500), _p(3500, 800), _p(5000, 4200)]), LineString([_p(100, 0), _p(900, 0)]),
             LineString([_p(1000, 4300), _p(2000, 4700)]),
             LineString([(xs[0], Y0 - 10), (xs[0], ys[-1])])]  # along cut lines, from outside WEST: measured once
    return gpd.GeoDataFrame({"road": ["cross", "on_edge", "ring", "on_cut"]}, geometry=lines, crs=2326)


@pytest.fixture(scope="module")
def frames() -> dict[str, gpd.GeoDataFrame]:
    """The fixture layers as GeoDataFrames, keyed by layer id."""
    zones = _zones()
    return {"subdiv_zones": zones, "subdiv_points": _points(zones), "subdiv_lots": _lots(zones),
            "subdiv_roads": _roads(zones)}


@pytest.fixture(scope="module")
def layers(database_url: str, frames: dict[str, gpd.GeoDataFrame],
           tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test database with the fixture layers loaded through the normal loader."""
    folder = tmp_path_factory.mktemp("subdivided")
    keys = {"subdiv_zones": "zone", "subdiv_points": "key", "subdiv_lots": "lot_id", "subdiv_roads": "road"}
    settings = Settings(database_url=database_url, layers_dir=folder)
    for layer_id, frame in frames.items():
        frame.to_file(folder / f"{layer_id}.gpkg", driver="GPKG")
        doc = {"id": layer_id, "title": {"en": f"Subdivided-join test layer {layer_id} (synthetic)"},
               "abstract": {"en": "Made-up geometry for the subdivided-join tests."}, "custodian": "HK SDI tests",
               "licence": "test data", "synthetic": True, "primary_key": keys[layer_id],
               "source": {"path": f"{layer_id}.gpkg"}}
        (folder / f"{layer_id}.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        load(read_definition(folder / f"{layer_id}.yml"), settings)
    return settings


def run(function: Callable[..., gpd.GeoDataFrame], *args: Any, engine: str, settings: Settings,
        **kwargs: Any) -> gpd.GeoDataFrame:
    return function(*args, engine=engine, settings=settings, **kwargs)


def assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    """Same columns, rows, order and values (floats within 1e-6); geometries equal or within 1e-6 m."""
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")),
                                  check_dtype=False, check_exact=False, atol=1e-6, rtol=0)
    for ga, gb in zip(a.geometry.values, b.geometry.values, strict=True):
        if ga is None or gb is None:
            assert ga is None and gb is None
            continue
        assert ga.geom_type == gb.geom_type, (ga.wkt[:200], gb.wkt[:200])
        same = shapely.equals_exact(shapely.normalize(ga), shapely.normalize(gb), tolerance=1e-6)
        assert same or (ga.symmetric_difference(gb).area < 1e-6 and ga.hausdorff_distance(gb) < 1e-6), (ga, gb)


CALLS: list[tuple[str, Callable[..., gpd.GeoDataFrame], tuple[Any, ...], dict[str, Any]]] = [
    ("points-intersects", sjoin, ("subdiv_points", "subdiv_zones"), {}),
    ("points-within", sjoin, ("subdiv_points", "subdiv_zones", "within"), {}),
    ("points-within-left", sjoin, ("subdiv_points", "subdiv_zones", "within", "left"), {}),
    ("zones-contain-points", sjoin, ("subdiv_zones", "subdiv_points", "contains"), {}),
    ("zones-contain-points-left", sjoin, ("subdiv_zones", "subdiv_points", "contains", "left"), {}),
    ("zones-within-lots", sjoin, ("subdiv_zones", "subdiv_lots", "within"), {}),
    ("lots-contain-zones", sjoin, ("subdiv_lots", "subdiv_zones", "contains"), {}),
    ("lots-intersects", sjoin, ("subdiv_lots", "subdiv_zones"), {}),
    ("lots-within", sjoin, ("subdiv_lots", "subdiv_zones", "within"), {}),
    ("lots-within-left", sjoin, ("subdiv_lots", "subdiv_zones", "within", "left"), {}),
    ("roads-intersects-left", sjoin, ("subdiv_roads", "subdiv_zones", "intersects", "left"), {}),
    ("points-within-0", within_distance, ("subdiv_points", "subdiv_zones", 0), {}),
    ("points-within-5", within_distance, ("subdiv_points", "subdiv_zones", 5), {}),
    ("lots-within-50", within_distance, ("subdiv_lots", "subdiv_zones", 50), {}),
    ("points-nearest", nearest, ("subdiv_points", "subdiv_zones"), {}),
    ("points-nearest-4", nearest, ("subdiv_points", "subdiv_zones", 4), {}),
    ("lots-overlay", overlay, ("subdiv_lots", "subdiv_zones"), {}),
    ("zones-overlay-lots", overlay, ("subdiv_zones", "subdiv_lots"), {}),
    ("roads-overlay", overlay, ("subdiv_roads", "subdiv_zones"), {}),
    ("lots-clip", clip, ("subdiv_lots", "subdiv_zones"), {}),
    ("points-clip", clip, ("subdiv_points", "subdiv_zones"), {}),
    ("summarise-points", summarise_by, ("subdiv_points", "subdiv_zones"), {"agg": {"value": ["sum", "mean"]}}),
    ("summarise-lots", summarise_by, ("subdiv_lots", "subdiv_zones"), {"agg": {"value": ["sum", "max"]}}),
    ("summarise-lots-by", summarise_by, ("subdiv_lots", "subdiv_zones"), {"by": "grp"}),
    ("summarise-roads", summarise_by, ("subdiv_roads", "subdiv_zones"), {}),
]


@pytest.mark.parametrize("inputs", ["ids", "frames"])
@pytest.mark.parametrize(("name", "function", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_engines_agree_on_cut_zones(layers: Settings, frames: dict[str, gpd.GeoDataFrame], inputs: str, name: str,
                                    function: Callable[..., gpd.GeoDataFrame], args: tuple[Any, ...],
                                    kwargs: dict[str, Any]) -> None:
    if inputs == "frames":
        args = tuple(frames[a] if isinstance(a, str) and a in frames else a for a in args)
    expected = run(function, *args, engine="geopandas", settings=layers, **kwargs)
    assert len(expected) > 0
    assert_same(run(function, *args, engine="postgis", settings=layers, **kwargs), expected)


@pytest.mark.parametrize("name", ["lots-intersects", "lots-within-left", "points-within-left", "lots-within-50",
                                  "lots-overlay", "zones-overlay-lots", "zones-contain-points-left"])
def test_statements_run_in_parts_agree(layers: Settings, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A large small side is fetched in parts (ranges of pieces); a row meeting pieces of two parts is kept once,
    and a left join adds the rows no part matched. An ``sjoin`` of two layers runs every other part on a second
    connection."""
    monkeypatch.setattr(subdivided, "ROWS_PER_PART", 1)
    monkeypatch.setattr(subdivided, "MAX_PARTS", 3)
    parts: list[int] = []
    shared: list[int] = []
    original, share = subdivided.Plan.make, subdivided.Plan.shared

    def spy(*args: Any) -> subdivided.Plan:
        plan = original(*args)
        parts.append(len(plan.parts))
        return plan

    def sharing(plan: subdivided.Plan, conn: Any, helper: Any) -> subdivided.Plan:
        assert helper.info.backend_pid != conn.info.backend_pid
        shared.append(helper.info.backend_pid)
        return share(plan, conn, helper)

    monkeypatch.setattr(subdivided.Plan, "make", spy)
    monkeypatch.setattr(subdivided.Plan, "shared", sharing)
    _, function, args, kwargs = next(c for c in CALLS if c[0] == name)
    result = run(function, *args, engine="postgis", settings=layers, **kwargs)
    assert parts == [3]
    assert len(shared) == (1 if function is sjoin else 0)
    assert_same(result, run(function, *args, engine="geopandas", settings=layers, **kwargs))


@pytest.mark.parametrize("name", ["lots-intersects", "lots-within-left", "points-within-left", "lots-overlay",
                                  "zones-contain-points-left"])
def test_keys_the_server_sorts_come_in_one_statement(layers: Settings, monkeypatch: pytest.MonkeyPatch,
                                                     name: str) -> None:
    """Keys Python cannot sort as PostgreSQL does (text under a linguistic collation) are sorted by the server,
    so the statement is not split into parts (their rows would interleave) and a left join stays in SQL."""
    monkeypatch.setattr(subdivided, "python_sortable", lambda *args: False)
    monkeypatch.setattr(subdivided, "ROWS_PER_PART", 1)
    plans: list[subdivided.Plan] = []
    original = subdivided.Plan.make

    def spy(*args: Any) -> subdivided.Plan:
        plans.append(original(*args))
        return plans[-1]

    monkeypatch.setattr(subdivided.Plan, "make", spy)
    _, function, args, kwargs = next(c for c in CALLS if c[0] == name)
    result = run(function, *args, engine="postgis", settings=layers, **kwargs)
    assert [(p.presorted, p.parts) for p in plans] == [(True, (None,))]
    assert_same(result, run(function, *args, engine="geopandas", settings=layers, **kwargs))


@pytest.fixture
def cut_plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The zone sets the ``postgis`` engine builds during a test (their pieces tables)."""
    built: list[str] = []
    original = subdivided.Plan.make

    def spy(conn: Any, small: Any, zones: Any, small_left: bool) -> subdivided.Plan:
        built.append(zones.pieces.as_string(conn))
        return original(conn, small, zones, small_left)

    monkeypatch.setattr(subdivided.Plan, "make", spy)
    yield built


def test_the_joins_run_against_pieces(layers: Settings, cut_plans: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    summaries: list[int] = []
    original = subdivided_summary.run_summary

    def spy(*args: Any) -> gpd.GeoDataFrame:
        summaries.append(1)
        return original(*args)

    monkeypatch.setattr(subdivided_summary, "run_summary", spy)
    for _, function, args, kwargs in CALLS:
        run(function, *args, engine="postgis", settings=layers, **kwargs)
    joins = [c for c in CALLS if c[1] is not summarise_by]
    assert len(cut_plans) == len(joins) and all(name.strip('"').startswith("_sdi_pieces_") for name in cut_plans)
    assert len(summaries) == len(CALLS) - len(joins)
    run(sjoin, "subdiv_points", "subdiv_lots", engine="postgis", settings=layers)  # no large polygon: joined whole
    assert len(cut_plans) == len(joins)


def test_points_on_cut_lines_and_boundaries(layers: Settings, frames: dict[str, gpd.GeoDataFrame]) -> None:
    for engine in ENGINES:
        hits = run(sjoin, "subdiv_points", "subdiv_zones", engine=engine, settings=layers)
        inside = run(sjoin, "subdiv_points", "subdiv_zones", "within", engine=engine, settings=layers)
        zones_of = hits.groupby("key")["zone"].apply(sorted).to_dict()
        within = set(inside["key"])
        cuts = [k for k in frames["subdiv_points"]["key"] if k.startswith("cut")]
        assert cuts and all(zones_of[k] == ["WEST"] and k in within for k in cuts)  # an internal cut is inside
        for k in [k for k in zones_of if k.startswith(("bottom", "slant", "corner"))]:
            assert zones_of[k] == ["WEST"] and k not in within, k  # on the outer boundary: meets, not within
        for k in [k for k in zones_of if k.startswith("border")]:
            assert zones_of[k] == ["EAST", "WEST"] and k not in within, k
        assert zones_of["hole_corner"] == ["RING"] and "hole_corner" not in within
        assert "in_hole" not in zones_of and {"gear", "far_square", "inside"} <= within


def test_the_slanted_edge_defeats_a_naive_subdivision(frames: dict[str, gpd.GeoDataFrame]) -> None:
    """The pieces alone get most points on the slanted edge wrong: the exact tests above are needed."""
    west = frames["subdiv_zones"].geometry.iloc[0]
    cut = pieces.cut([west])
    slant = [g for k, g in zip(frames["subdiv_points"]["key"], frames["subdiv_points"].geometry, strict=True)
             if k.startswith("slant")]
    wrong = [p for p in slant if not any(shapely.intersects(cut.geometry, p)) or any(shapely.within(p, cut.geometry))]
    assert len(slant) >= 6 and len(wrong) >= 2
    assert all(west.intersects(p) and not p.within(west) for p in slant)


def test_summaries_count_each_lot_once_and_add_its_parts(layers: Settings, frames: dict[str, gpd.GeoDataFrame]) -> None:
    zones, lots = frames["subdiv_zones"], frames["subdiv_lots"]
    cut = pieces.cut(zones.geometry.values)
    spans = [len({int(z) for z in cut.zone[shapely.intersects(cut.geometry, g)]}) < int(
        shapely.intersects(cut.geometry, g).sum()) for g in lots.geometry]
    assert sum(spans) >= 10  # lots meeting two or more pieces of one zone: counted twice without the dedupe
    result = run(summarise_by, "subdiv_lots", "subdiv_zones", engine="postgis", settings=layers)
    for zone, count, area in zip(result["zone"], result["count"], result["area_m2"], strict=True):
        shape = zones.geometry[zones["zone"] == zone].iloc[0]
        meeting = lots.geometry[lots.intersects(shape)]
        assert count == len(meeting)
        assert area == pytest.approx(float(shapely.area(shapely.intersection(meeting.values, shape)).sum()), abs=1e-6)
    crossing = [g for g in lots.geometry if 0 < g.intersection(zones.geometry.iloc[0]).area < g.area]
    assert len(crossing) >= 3  # a whole area for these would be wrong by far more than 1e-6


def test_within_distance_is_exact_at_the_threshold(layers: Settings) -> None:
    for engine in ENGINES:
        near = run(within_distance, "subdiv_points", "subdiv_zones", 5, engine=engine, settings=layers)
        found = dict(zip(near["key"] + "/" + near["zone"], near["distance_m"], strict=True))
        assert found["below5/WEST"] == pytest.approx(5.0) and "below5.5/WEST" not in found
        assert found["left3/WEST"] == pytest.approx(3.0) and found["border0/EAST"] == 0.0


def test_cut_keeps_area_and_validity() -> None:
    zones = _zones().geometry.values
    cut = pieces.cut(zones)
    assert cut.inner.any() and (~cut.inner).any()
    assert shapely.is_valid(cut.geometry).all()
    assert np.allclose(np.bincount(cut.zone, shapely.area(cut.geometry)), shapely.area(zones), rtol=0, atol=1e-6)
    for i, zone in enumerate(zones):
        assert shapely.contains_properly(zone, cut.geometry[cut.inner & (cut.zone == i)]).all()
        assert shapely.symmetric_difference(shapely.union_all(cut.geometry[cut.zone == i]), zone).area < 1e-6
    zone, lines = pieces.chunks(zones)
    for i, polygon in enumerate(zones):
        assert shapely.equals(shapely.union_all(lines[zone == i]), polygon.boundary)
        assert set(map(tuple, shapely.get_coordinates(lines[zone == i]))) == set(
            map(tuple, shapely.get_coordinates(polygon)))  # the zone's own vertices, none added


def test_cut_recovers_from_an_invalid_rectangle_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rectangle clipping along an edge of round coordinates can lose part of a piece: the area check redoes it."""
    monkeypatch.setattr(pieces, "GRID_OFFSET_M", 0.0)
    zigzag = Polygon([(x, x % 2) for x in range(700)] + [(699, 500), (0, 500)])
    cut = pieces.cut([zigzag])
    assert shapely.area(cut.geometry).sum() == pytest.approx(zigzag.area, abs=1e-6)
    assert shapely.is_valid(cut.geometry).all()


def test_cut_falls_back_to_an_overlay_when_rectangle_clipping_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise shapely.errors.GEOSException("IllegalArgumentException: Invalid number of points in LinearRing")

    zones = _zones().geometry.values
    expected = pieces.cut(zones)
    monkeypatch.setattr(shapely, "clip_by_rect", failing)
    cut = pieces.cut(zones)
    assert len(cut) == len(expected) and shapely.is_valid(cut.geometry).all()
    assert np.allclose(np.bincount(cut.zone, shapely.area(cut.geometry)), shapely.area(zones), rtol=0, atol=1e-6)


def test_the_statement_walks_the_pieces_through_the_gist_index(layers: Settings) -> None:
    from sdi.db import connect
    from sdi.planning.engines.frames import Join

    with connect(layers) as conn:
        left, right = postgis.side(conn, "subdiv_lots", "left"), postgis.side(conn, "subdiv_zones", "right")
        plan = postgis._cut_side(conn, Join("sjoin"), left, right)
        assert plan is not None and plan.small_left
        body = subdivided.candidates(plan.small, plan.zones)
        rows = conn.execute(b"explain " + f"select count(*) {body.as_string(conn)}".encode()).fetchall()
    text = "\n".join(r[0] for r in rows)
    assert "Index Scan using subdiv_lots_geom_idx" in text or "Bitmap Index Scan on subdiv_lots_geom_idx" in text, text


def test_invalid_frame_zones_are_joined_whole(layers: Settings, frames: dict[str, gpd.GeoDataFrame],
                                              cut_plans: list[str]) -> None:
    bowtie = Polygon([_p(0, 0), *(_p(3000 * i / 300, 3000 * i / 300) for i in range(1, 300)), _p(3000, 3000),
                      _p(3000, 0), _p(0, 3000)])
    assert not bowtie.is_valid and shapely.get_num_coordinates(bowtie) > pieces.CUT_VERTICES
    zones = gpd.GeoDataFrame({"zone": ["BOW"]}, geometry=[bowtie], crs=2326)
    result = run(sjoin, frames["subdiv_points"], zones, engine="postgis", settings=layers)
    assert list(result.columns) == ["key", "value", "zone", "geometry"] and not cut_plans


def test_parts_typed_differently_come_back_as_objects(layers: Settings) -> None:
    """A column of one Python type comes back as a numpy array of it; parts typed differently, as objects."""
    from psycopg import sql

    from sdi.db import connect
    from sdi.planning.engines import sides

    parts = [sql.SQL("select x, 1.5::float8, true from (values (1), (2)) v(x)"),
             sql.SQL("select x, 2.5::float8, 7 from (values (null::int)) v(x)")]
    with connect(layers) as conn:
        one = sides.fetch_parts([conn], parts[:1], 9)
        both = sides.fetch_parts([conn], parts, 9)
    assert [c.dtype for c in one] == [np.int64, np.float64, np.bool_]
    assert both[0].dtype == object and list(both[0]) == [1, 2, None]
    assert both[1].dtype == np.float64 and list(both[1]) == [1.5, 1.5, 2.5]
    assert both[2].dtype == object and list(both[2]) == [True, True, 7]
