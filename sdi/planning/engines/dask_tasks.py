"""The tasks of the ``dask`` engine's joins and summaries, run on the workers.

Each task handles one partition of the left side (the summarised source): the rows of a layer
whose bounding-box centre lies in its rectangle, read by the task from PostGIS, or a chunk of a GeoDataFrame
sent by the client. It reads what the other side needs near that partition (the rows whose
bounding box comes within the join's reach of the partition's rows), matches with the in-memory
kernels of :mod:`sdi.planning.engines.memory` (so the results are the ``geopandas`` engine's), and
returns keys and raw values; the client sorts and assembles them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from sdi.planning.engines import memory
from sdi.planning.engines.frames import Join, Pairs, Summary, keep_dimension
from sdi.planning.engines.partitions import INF, Rect
from sdi.planning.engines.reading import (
    Database,
    Rows,
    WkbGeometry,
    check_loads,
    next_radius,
    read_near,
    read_partition,
    snapshot,
)
from sdi.planning.sources import LayerTable


@dataclass(frozen=True)
class LayerPart:
    """A partition of a layer: its rows placed in ``rect`` (by their bounding-box centre); ``columns`` to read."""

    table: LayerTable
    rect: Rect
    columns: tuple[str, ...]


@dataclass(frozen=True)
class NearLayer:
    """The other side as a layer, read near each partition.

    Attributes
    ----------
    table
        The layer.
    columns
        Attribute columns to read.
    radius
        ``nearest`` without a limit: the first search radius (grown until every left row's nearest
        row is certainly within it).
    union
        ``clip``: the rows read are one mask, their union.
    """

    table: LayerTable
    columns: tuple[str, ...]
    radius: float = INF
    union: bool = False


@dataclass(frozen=True)
class JoinTask:
    """One join task: the join, the partition (``None``: a frame chunk is given) and the other side.

    ``right`` is ``None`` when the other side is a frame given to the task; ``loads`` are the load
    ids the client planned with, checked against the ones the task reads.
    """

    join: Join
    left: LayerPart | None
    right: NearLayer | None
    loads: dict[str, int]


@dataclass
class JoinPiece(WkbGeometry):
    """What a join task found: one entry per result row (unsorted).

    ``right_keys`` holds ``None`` (layer) or ``-1`` (frame) and ``right_values`` ``None`` where a
    left row has no match; ``geometry`` is the left geometry, or the intersection reduced to the left
    geometry's dimension (``overlay``, ``clip``).
    """

    left_keys: list[object]
    left_values: list[tuple[object, ...]]
    right_keys: list[object]
    right_values: list[tuple[object, ...] | None]
    distance: np.ndarray | None
    geometry: np.ndarray


@dataclass(frozen=True)
class SummaryTask:
    """One summary task: the source partition (``None``: a frame chunk is given) and the zones layer.

    ``zones`` is ``None`` when the zones (dissolved, or a frame) are given to the task.
    """

    summary: Summary
    source: LayerPart | None
    zones: LayerTable | None
    loads: dict[str, int]


@dataclass
class SummaryPiece:
    """What a summary task found: one entry per (source row, zone) pair that intersect.

    ``values`` are the source row's ``agg`` columns (layer source), ``measure`` its area or length in
    the zone.
    """

    source_keys: list[object]
    values: list[tuple[object, ...]]
    zone_keys: list[object]
    measure: np.ndarray


@contextmanager
def _reading(db: Database | None, tables: list[LayerTable],
             loads: dict[str, int]) -> Iterator[psycopg.Connection | None]:
    """A snapshot of ``tables`` whose load ids are checked against ``loads``; nothing when no table is read."""
    if not tables:
        yield None
        return
    assert db is not None, "a task reading layers needs the database"
    with snapshot(db, tables) as (conn, seen):
        check_loads({t.id: loads[t.id] for t in tables}, seen)
        yield conn


def _left(conn: psycopg.Connection | None, part: LayerPart | None, given: Rows | None) -> Rows:
    if part is None:
        assert given is not None
        return given
    assert conn is not None
    return read_partition(conn, part.table, part.columns, part.rect)


def _nearest(conn: psycopg.Connection, join: Join, left: Rows, near: NearLayer) -> tuple[Rows, Pairs]:
    """``nearest`` against a layer: read within a radius, grown until no left row's nearest can lie beyond it."""
    bounds, radius = left.bounds(), near.radius if join.distance is None else join.distance
    while True:
        right = read_near(conn, near.table, near.columns, bounds, radius)
        pairs = memory.join_pairs(join, left.geometry, right.geometry)
        if join.distance is not None or math.isinf(radius):
            return right, pairs
        found = np.full(len(left), INF)
        assert pairs.distance is not None
        found[pairs.left] = pairs.distance
        needed = float(found.max())
        if needed <= radius:
            return right, pairs
        radius = next_radius(radius, needed)


def _right(conn: psycopg.Connection | None, join: Join, left: Rows, near: NearLayer | None,
           given: Rows | None) -> tuple[Rows, Pairs]:
    """The other side's rows that can match ``left``, and the matched pairs."""
    if near is None:
        assert given is not None
        return given, memory.join_pairs(join, left.geometry, given.geometry)
    assert conn is not None
    if join.kind == "nearest":
        return _nearest(conn, join, left, near)
    right = read_near(conn, near.table, near.columns, left.bounds(), join.distance or 0.0)
    if near.union:
        mask = shapely.union_all(right.geometry) if len(right) else shapely.Polygon()
        right = Rows([0], [()], np.array([mask], dtype=object))
    return right, memory.join_pairs(join, left.geometry, right.geometry)


def join_part(db: Database | None, task: JoinTask, left_given: Rows | None, right_given: Rows | None) -> JoinPiece:
    """Run ``task.join`` on one partition; return its result rows, unsorted (see :class:`JoinPiece`)."""
    join = task.join
    tables = [s.table for s in (task.left, task.right) if s is not None]
    with _reading(db, tables, task.loads) as conn:
        left = _left(conn, task.left, left_given)
        if len(left) == 0:
            return JoinPiece([], [], [], [], None if not join.has_distance else np.empty(0), np.empty(0, object))
        right, pairs = _right(conn, join, left, task.right, right_given)
    li, ri = pairs.left, pairs.right
    distance = pairs.distance
    if join.how == "left" or join.kind == "nearest":
        missing = np.setdiff1d(np.arange(len(left)), li)
        li, ri = np.concatenate([li, missing]), np.concatenate([ri, np.full(len(missing), -1)])
        if distance is not None:
            distance = np.concatenate([distance, np.full(len(missing), np.nan)])
    if join.intersects_geometry:
        assert pairs.geometry is not None
        geometry = keep_dimension(pairs.geometry, shapely.get_dimensions(left.geometry[li]))
    else:
        geometry = left.geometry[li]
    no_key = -1 if task.right is None else None
    return JoinPiece([left.keys[i] for i in li.tolist()], [left.values[i] for i in li.tolist()],
                     [no_key if j < 0 else right.keys[j] for j in ri.tolist()],
                     [None if j < 0 else right.values[j] for j in ri.tolist()], distance, geometry)


def summary_part(db: Database | None, task: SummaryTask, source_given: Rows | None,
                 zones_given: Rows | None) -> SummaryPiece:
    """Match one partition of the source with the zones it intersects (see :class:`SummaryPiece`)."""
    tables = [t for t in (task.source.table if task.source else None, task.zones) if t is not None]
    with _reading(db, tables, task.loads) as conn:
        source = _left(conn, task.source, source_given)
        if len(source) == 0:
            return SummaryPiece([], [], [], np.empty(0))
        if task.zones is None:
            assert zones_given is not None
            zones = zones_given
        else:
            assert conn is not None
            zones = read_near(conn, task.zones, (), source.bounds(), 0.0)
    si, zi, measure = memory.summary_pairs(task.summary, source.geometry, zones.geometry)
    return SummaryPiece([source.keys[i] for i in si.tolist()], [source.values[i] for i in si.tolist()],
                        [zones.keys[j] for j in zi.tolist()], measure)


def frame_rows(geometry: np.ndarray, positions: np.ndarray | None = None) -> Rows:
    """A frame's rows as a task receives them: keys are row positions, no attribute values (the client has them)."""
    keys: list[object] = list((np.arange(len(geometry)) if positions is None else positions).tolist())
    return Rows(keys, [()] * len(keys), np.asarray(geometry, dtype=object))

