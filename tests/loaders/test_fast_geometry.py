"""The streamed load's fast route (loaders.validity, loaders.chunk_geometry) and its COPY writer (loaders.copy_writer).

Geometries proven valid from their coordinates skip GEOS; these tests check that the proof never
vouches for a geometry GEOS finds invalid, that a chunk comes out byte for byte as the GEOS route
makes it (same rows, coordinates, type ids, bounds, repairs and drops), that whole-file and streamed
loads of mixed files still agree, and that COPY data sent from the background thread arrives whole,
in order, and fails cleanly; and that memory is given back once the process has grown. All data is
synthetic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
import shapely
import shapely.affinity
from psycopg import sql

from loaders import geometry
from loaders.batches import RawBatch, to_frame
from loaders.chunk_geometry import storage_geometry
from loaders.copy_binary import HEADER, TRAILER, encode_rows
from loaders.copy_writer import BackgroundWriter
from loaders.memory import TRIM_SLACK, Trimmer, resident
from loaders.report import FieldInfo, LoadReport
from loaders.reproject import to_storage
from loaders.validity import proven_valid
from loaders.wkbproj import locate_simple
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.loaders.test_stream import _both

HK = (830_000.0, 820_000.0)  #: a point in Hong Kong (EPSG:2326)


def _wkb(geoms: list[Any]) -> pa.Array:
    return pa.array(shapely.to_wkb(np.array(geoms, dtype=object), byte_order=1), type=pa.binary())


def _tricky(rng: np.random.Generator) -> list[Any]:
    """Valid and invalid geometries, many of them near the edge of what a float proof can tell."""
    out: list[Any] = []
    centres = shapely.points(rng.uniform(810_000, 860_000, 2_000), rng.uniform(806_000, 845_000, 2_000))
    out += list(shapely.buffer(centres, rng.uniform(5, 40, 2_000), quad_segs=2))  # convex octagons
    for _ in range(4_000):  # random rings: star-shaped (simple) or in random order (often self-intersecting)
        k = int(rng.integers(3, 12))
        c = rng.uniform(0, 10, (k, 2)) + HK
        if rng.random() < 0.5:
            c = c[np.argsort(np.arctan2(c[:, 1] - c[:, 1].mean(), c[:, 0] - c[:, 0].mean()))]
        if rng.random() < 0.3:
            c = np.round(c)  # collinear and repeated points
        out.append(shapely.Polygon(c))
    for _ in range(2_000):  # nearly collinear triangles: orientation signs too close to call in floating point
        a = rng.uniform(830_000, 830_001, 2)
        out.append(shapely.Polygon([a, a + 1, a + 2 + rng.normal(0, 1e-9, 2)]))
    t = np.arange(5) * 4 * np.pi / 5
    out += [
        shapely.Polygon(np.c_[np.cos(t), np.sin(t)] * 100 + HK),  # a pentagram: turns one way, winds twice
        shapely.Polygon([(0, 0), (1, 0), (2, 0), (1, 1)]),  # a straight vertex (valid, not proven)
        shapely.Polygon([(0, 0), (2, 0), (1, 0), (1, 1)]),  # a spike back along an edge
        shapely.Polygon([(0, 0), (1, 1), (1, 1), (0, 1)]),  # a repeated point
        shapely.Polygon([(0, 0), (1, 0), (1, 1), (0, 1)], [[(0.2, 0.2), (0.4, 0.2), (0.4, 0.4)]]),  # a hole
        shapely.LineString([(0, 0), (0, 0)]), shapely.LineString([(0, 0), (0, 0), (1, 1)]),
        shapely.Point(1, 2), shapely.Point(np.nan, np.nan), shapely.Point(np.inf, 1),
        shapely.LineString([(0, 0), (np.nan, 1)]), shapely.Polygon(), shapely.Point(1, 2, 3),
    ]
    return out


def test_a_proof_of_validity_never_vouches_for_an_invalid_geometry() -> None:
    geoms = np.array(_tricky(np.random.default_rng(15)), dtype=object)
    proven = proven_valid(locate_simple(_wkb(list(geoms)), 2326))
    valid = shapely.is_valid(geoms)
    assert not (proven & ~valid).any(), [shapely.to_wkt(g) for g in geoms[proven & ~valid]][:5]
    assert proven[:2_000].all()  # every convex octagon is proven
    assert (~valid).sum() > 1_000 and (valid & ~proven).sum() > 1_000  # both kinds of "not proven" occur
    named = dict(zip(["pentagram", "straight", "spike", "repeated", "hole", "line0", "line1", "point", "nan",
                      "inf", "line_nan", "empty", "z"], proven[-13:], strict=True))
    assert named == {"pentagram": False, "straight": False, "spike": False, "repeated": False, "hole": False,
                     "line0": False, "line1": True, "point": True, "nan": False, "inf": False, "line_nan": False,
                     "empty": False, "z": False}


def _mixed(crs: int) -> tuple[RawBatch, int]:
    """A chunk (synthetic) of convex and concave polygons, bow-ties, multipolygons, holes, nulls and empties."""
    rng = np.random.default_rng(2326)
    n = 400
    centres = shapely.points(rng.uniform(810_000, 860_000, n), rng.uniform(806_000, 845_000, n))
    geoms: list[Any] = list(shapely.buffer(centres, rng.uniform(5, 40, n), quad_segs=2))
    for i in range(0, n, 37):
        x, y, s = shapely.get_x(centres[i]), shapely.get_y(centres[i]), 10.0
        geoms[i] = shapely.Polygon([(x - s, y - s), (x + s, y + s), (x + s, y - s), (x - s, y + s)])  # bow-tie
    for i in range(5, n, 41):
        geoms[i] = shapely.affinity.translate(shapely.Polygon([(0, 0), (40, 0), (40, 40), (20, 10), (0, 40)]),
                                              shapely.get_x(centres[i]), shapely.get_y(centres[i]))  # concave
    geoms[7] = shapely.MultiPolygon([geoms[8], geoms[9]])
    geoms[11] = shapely.Polygon(shapely.get_exterior_ring(geoms[11]), [shapely.get_exterior_ring(
        shapely.buffer(centres[11], 1.0, quad_segs=2))])  # a hole
    geoms[13], geoms[17] = None, shapely.Polygon()
    frame = gpd.GeoDataFrame({"k": np.arange(n)}, geometry=geoms, crs=2326).to_crs(crs)
    wkb = pa.array(shapely.to_wkb(np.asarray(frame.geometry.array, dtype=object), byte_order=1), type=pa.binary())
    return RawBatch(pd.DataFrame({"k": np.arange(n)}, index=pd.RangeIndex(1_000, 1_000 + n)), wkb, None), n


@pytest.mark.parametrize("crs", [2326, 4326])
def test_a_chunk_comes_out_as_the_geos_route_makes_it(crs: int) -> None:
    raw, n = _mixed(crs)
    fast = LoadReport(layer_id="x", source_path="x")
    got = storage_geometry(raw, crs, fast, where="test")
    slow = LoadReport(layer_id="x", source_path="x")
    frame = geometry.drop_unpublishable(to_frame(raw, slow), slow)
    frame = to_storage(frame, crs, slow, where="test")
    geoms = np.asarray(frame.geometry.array, dtype=object)
    assert 0 < got.proven < n
    assert got.kept.tolist() == (frame.index.to_numpy() - 1_000).tolist()
    assert got.wkb.to_pylist() == list(shapely.to_wkb(geoms, byte_order=1, include_srid=False))
    assert got.codes.tolist() == shapely.get_type_id(geoms).tolist()
    assert got.box == tuple(float(v) for v in shapely.total_bounds(geoms))
    assert (dict(fast.repaired), dict(fast.dropped)) == (dict(slow.repaired), dict(slow.dropped))
    assert sum(fast.repaired.values()) >= 10 and fast.dropped == {"null geometry": 1, "empty geometry": 1}


def test_mixed_polygon_and_line_files_load_streamed_as_whole(tmp_path: Path, layer_yaml: Any, settings: Settings,
                                                              db: psycopg.Connection) -> None:
    raw, _ = _mixed(4326)
    polygons = gpd.GeoDataFrame({"k": raw.attrs["k"].to_numpy()}, crs=4326,
                                geometry=shapely.from_wkb(raw.wkb.to_numpy(zero_copy_only=False)))
    polygons.to_file(tmp_path / "polygons.gpkg", driver="GPKG", engine="pyogrio")
    whole, streamed, report = _both(read_definition(layer_yaml("mixed_polygons", tmp_path / "polygons.gpkg")),
                                    settings, 64, db)
    assert streamed == whole and sum(report.repaired.values()) >= 10
    lines = [shapely.LineString([HK, (HK[0] + i, HK[1] + 1)]) for i in range(1, 60)]
    lines[10] = shapely.LineString([HK, HK])  # one distinct point: invalid
    lines[20] = shapely.LineString([HK, HK, (HK[0] + 5, HK[1])])  # a repeated point: valid
    gpd.GeoDataFrame({"k": range(len(lines))}, geometry=lines, crs=2326).to_crs(4326).to_file(
        tmp_path / "lines.gpkg", driver="GPKG", engine="pyogrio")
    whole, streamed, _ = _both(read_definition(layer_yaml("mixed_lines", tmp_path / "lines.gpkg")), settings, 16, db)
    assert streamed == whole


def _copy_table(db: psycopg.Connection) -> sql.Identifier:
    db.execute("create temporary table copied (n bigint, geom geometry(Point, 2326) not null)")
    return sql.Identifier("copied")


def _chunk(start: int, stop: int) -> bytes:
    frame = pd.DataFrame({"n": np.arange(start, stop)})
    geoms = shapely.points(np.full(stop - start, HK[0]), np.arange(start, stop, dtype=float) + HK[1])
    return encode_rows(frame, [FieldInfo("n", "n", "bigint")], geoms, promote=False)


def test_copy_data_sent_from_the_background_arrives_whole_and_in_order(db: psycopg.Connection) -> None:
    table = _copy_table(db)
    with db.cursor() as cur, cur.copy(sql.SQL("copy {} from stdin (format binary)").format(table),
                                      writer=BackgroundWriter(cur, depth=2)) as copy:
        copy.write(HEADER)
        for start in range(0, 50_000, 5_000):
            copy.write(_chunk(start, start + 5_000))
        copy.write(TRAILER)
    rows = db.execute("select n, st_y(geom)::bigint - 820000 from copied order by ctid").fetchall()
    assert rows == [(i, i) for i in range(50_000)]


def test_a_copy_the_server_refuses_or_the_caller_abandons_fails_and_writes_nothing(db: psycopg.Connection) -> None:
    table = _copy_table(db)
    copy_sql = sql.SQL("copy {} from stdin (format binary)").format(table)
    with pytest.raises(psycopg.errors.DataError), db.transaction(), db.cursor() as cur, \
            cur.copy(copy_sql, writer=BackgroundWriter(cur)) as copy:
        copy.write(HEADER)
        copy.write(_chunk(0, 10))
        copy.write(b"\x00\x02\xff\xff")  # a row with two fields, the first of length -2: malformed
        copy.write(TRAILER)
    with pytest.raises(RuntimeError, match="stopped"), db.transaction(), db.cursor() as cur, \
            cur.copy(copy_sql, writer=BackgroundWriter(cur)) as copy:
        copy.write(HEADER)
        copy.write(_chunk(0, 10))
        raise RuntimeError("stopped")
    assert db.execute("select count(*) from copied").fetchone() == (0,)


def test_memory_is_trimmed_only_after_the_process_has_grown_by_the_slack() -> None:
    trimmer = Trimmer()
    trimmer.chunk_done()  # the first chunk always trims, and measures
    base = trimmer.base
    assert base is not None and resident() is not None
    trimmer.chunk_done()  # no growth: no trim, the base stays
    assert trimmer.base == base
    grown = np.ones(2 * TRIM_SLACK // 8)  # touched pages: the process grows by twice the slack
    trimmer.chunk_done()
    assert trimmer.base is not None and trimmer.base >= base + TRIM_SLACK
    del grown
