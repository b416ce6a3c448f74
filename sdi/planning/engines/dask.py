"""The ``dask`` engine: the left side cut into spatial partitions that the workers read from PostGIS themselves.

For a layer id, the client only plans: it reads the layer's load id, row count and extent from the
catalogue and the bounding-box centres of a sample of its rows, and cuts the plane into rectangles of about
:data:`ROWS_PER_PARTITION` rows each (at least one per worker thread;
:mod:`sdi.planning.engines.partitions`). Each task then opens its own connection, reads the rows
whose bounding-box centre lies in its rectangle, and reads the other side near them (rows whose bounding box
comes within the join's reach of the partition: 0 m for ``sjoin``/``overlay``/``clip``/
``summarise_by``, the distance for ``within_distance`` and ``nearest`` with a limit, a growing
radius for ``nearest`` without one). A GeoDataFrame input is held by the client: as the left side it
is cut into Hilbert-curve chunks sent to the tasks, as the other side it is sent once to every worker
(or, when both sides are frames and it has more than :data:`BROADCAST_MAX_ROWS` rows, cut per chunk).

Tasks match with the in-memory kernels (:mod:`sdi.planning.engines.memory`) and return keys and raw
values; the client sorts them by the left then the right key (text keys in the database's order) and
builds the columns from the values as the ``postgis`` engine does, so every engine returns the same
frame. Tasks check they read the load of each layer the client planned with (see
:mod:`sdi.planning.engines.reading`). Work runs on a ``dask.distributed`` scheduler (an address, a
client, or a local cluster: :func:`sdi.planning.cluster.task_runner`) or on the in-process
``"threads"`` / ``"synchronous"`` schedulers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.planning.cluster import TaskRunner, task_runner
from sdi.planning.engines import postgis
from sdi.planning.engines.dask_tasks import (
    JoinPiece,
    JoinTask,
    LayerPart,
    NearLayer,
    SummaryTask,
    frame_rows,
    join_part,
    summary_part,
)
from sdi.planning.engines.frames import Join, Summary, attributes, dimension, finish, summarise_pairs, take
from sdi.planning.engines.partitions import envelope, hilbert_chunks, layer_info, partition_count, plan_rects
from sdi.planning.engines.reading import MARGIN_M, Database, Rows, key_ranks, snapshot
from sdi.planning.sources import LayerTable, Source, layer_table, read_layer
from sdi.settings import Settings

#: Left rows per partition (at least one partition per worker thread).
ROWS_PER_PARTITION = 50_000
#: A right-side frame of more rows is cut per partition when the left side is a frame too (else sent whole).
BROADCAST_MAX_ROWS = 100_000


@dataclass
class _Session:
    """The layers of one call: the database, an autocommit connection and each layer input's table, by name."""

    db: Database | None
    conn: psycopg.Connection | None
    tables: dict[str, LayerTable]

    @contextmanager
    def snapshot(self) -> Iterator[tuple[psycopg.Connection | None, dict[str, int]]]:
        """A consistent read of the layers for planning, with their load ids (nothing without layers)."""
        if self.db is None:
            yield None, {}
            return
        with snapshot(self.db, list(self.tables.values())) as (conn, loads):
            yield conn, loads


@contextmanager
def _session(settings: Settings | None, sources: Mapping[str, Source]) -> Iterator[_Session]:
    """Look up the layer inputs (an unknown id is an error named after its parameter); yield the session."""
    from sdi.planning.joins import _naming  # the public API's wording of errors (joins imports this module)

    layers = {name: s for name, s in sources.items() if isinstance(s, str)}
    if not layers:
        yield _Session(None, None, {})
        return
    from sdi.db import connect

    settings = settings if settings is not None else Settings()
    with connect(settings, autocommit=True) as conn:
        tables = {}
        for name, layer_id in layers.items():
            with _naming(name):
                tables[name] = layer_table(conn, layer_id)
        yield _Session(Database.of(settings), conn, tables)


def _left_parts(session: _Session, plan: psycopg.Connection | None, name: str, source: Source,
                columns: Sequence[str], runner: TaskRunner) -> list[tuple[LayerPart | None, Rows | None]]:
    """The partitions of the left side: rectangles of a layer (read by the tasks) or chunks of a frame."""
    table = session.tables.get(name)
    if table is not None:
        assert plan is not None
        info = layer_info(plan, table)
        rects = plan_rects(plan, info, runner.workers, ROWS_PER_PARTITION)
        return [(LayerPart(table, rect, tuple(columns)), None) for rect in rects]
    assert isinstance(source, gpd.GeoDataFrame)
    geometry = np.asarray(source.geometry.values, dtype=object)
    chunks = hilbert_chunks(geometry, partition_count(len(geometry), runner.workers, ROWS_PER_PARTITION))
    return [(None, frame_rows(geometry[chunk], chunk)) for chunk in chunks]


def _ranks(session: _Session, name: str, keys: list[object]) -> np.ndarray:
    table = session.tables.get(name)
    if table is None:  # a frame: the keys are row positions (-1: no match)
        return np.asarray(keys, dtype=np.int64).reshape(-1)
    return key_ranks(session.conn, table, keys)


def _frame_right(join: Join, frame: gpd.GeoDataFrame, lefts: list[tuple[LayerPart | None, Rows | None]],
                 runner: TaskRunner) -> list[Any]:
    """The right-side frame as each task receives it: one mask (``clip``), whole, or cut near each chunk."""
    geometry = np.asarray(frame.geometry.values, dtype=object)
    if join.kind == "clip":
        return [runner.share(Rows([0], [()], np.array([shapely.union_all(geometry)], dtype=object)))] * len(lefts)
    reach = join.distance if join.has_distance else 0.0
    if reach is None or len(frame) <= BROADCAST_MAX_ROWS or any(rows is None for _, rows in lefts):
        return [runner.share(frame_rows(geometry))] * len(lefts)
    pieces = []
    for _, rows in lefts:
        assert rows is not None
        near = np.sort(frame.sindex.query(envelope(rows.geometry), predicate="dwithin", distance=reach + MARGIN_M))
        pieces.append(frame_rows(geometry[near], near))
    return pieces


def run_join(join: Join, left: Source, right: Source, names: tuple[str, str], settings: Settings | None,
             scheduler: Any) -> gpd.GeoDataFrame:
    """Run ``join`` (``right`` is the mask for ``clip``) on partitions of ``left``; inputs checked by the caller.

    Parameters
    ----------
    join
        The join.
    left, right
        Layer ids or GeoDataFrames in EPSG:2326.
    names
        The parameter names of the inputs, for error messages (``("left", "right")``).
    settings
        The database, when an input is a layer id (``None``: ``Settings()``).
    scheduler
        See :func:`sdi.planning.cluster.task_runner`.
    """
    with _session(settings, dict(zip(names, (left, right), strict=True))) as session, \
            task_runner(scheduler) as runner:
        ltable, rtable = session.tables.get(names[0]), session.tables.get(names[1])
        with session.snapshot() as (plan, loads):
            lefts = _left_parts(session, plan, names[0], left, ltable.columns if ltable else (), runner)
            near = None
            if rtable is not None:
                assert plan is not None
                columns = () if join.kind == "clip" else rtable.columns
                near = NearLayer(rtable, columns, 2.0 * layer_info(plan, rtable).spacing, join.kind == "clip")
        if near is not None:
            rights: list[Any] = [None] * len(lefts)
        else:
            assert isinstance(right, gpd.GeoDataFrame)
            rights = _frame_right(join, right, lefts, runner)
        calls = [(session.db, JoinTask(join, part, near, loads), rows, given)
                 for (part, rows), given in zip(lefts, rights, strict=True)]
        pieces: list[JoinPiece] = runner.map(join_part, calls)
        return _assemble(join, session, names, left, right, pieces)


def _assemble(join: Join, session: _Session, names: tuple[str, str], left: Source, right: Source,
              pieces: list[JoinPiece]) -> gpd.GeoDataFrame:
    """Sort the pieces' rows by left then right key and build the result as the other engines do."""
    lkeys = [k for p in pieces for k in p.left_keys]
    rkeys = [k for p in pieces for k in p.right_keys]
    lrank = _ranks(session, names[0], lkeys)
    rrank = np.zeros(len(rkeys), np.int64) if join.kind == "clip" else _ranks(session, names[1], rkeys)
    order = np.lexsort((rrank, lrank))
    ltable, rtable = session.tables.get(names[0]), session.tables.get(names[1])
    if ltable is not None:
        lvalues = [v for p in pieces for v in p.left_values]
        left_attrs = pd.DataFrame([lvalues[i] for i in order.tolist()], columns=list(ltable.columns))
    else:
        assert isinstance(left, gpd.GeoDataFrame)
        left_attrs = take(attributes(left), lrank[order])
    right_attrs = None
    if join.kind != "clip" and rtable is not None:
        blank = (None,) * len(rtable.columns)
        rvalues = [v for p in pieces for v in p.right_values]
        right_attrs = pd.DataFrame([rvalues[i] or blank for i in order.tolist()], columns=list(rtable.columns))
    elif join.kind != "clip":
        assert isinstance(right, gpd.GeoDataFrame)
        right_attrs = take(attributes(right), rrank[order])
    geometry = np.concatenate([p.geometry for p in pieces]) if pieces else np.empty(0, dtype=object)
    distance = None
    if join.has_distance:
        distance = np.concatenate([p.distance for p in pieces if p.distance is not None] or [np.empty(0)])[order]
    return finish(join, left_attrs, right_attrs, np.asarray(geometry, dtype=object)[order], distance)


_DIMENSIONS = {"point": 0, "multipoint": 0, "linestring": 1, "multilinestring": 1, "polygon": 2, "multipolygon": 2}


def _dimension(conn: psycopg.Connection, table: LayerTable) -> int:
    """A layer's geometry dimension: from its catalogue type, or (mixed types) from its rows (-1 when empty)."""
    known = _DIMENSIONS.get((table.geometry_type or "").lower())
    if known is not None:
        return known
    row = conn.execute(sql.SQL("select max(st_dimension(geom)) from {}").format(table.ident)).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def run_summary(source: Source, zones: Source, by: str | None, agg: Mapping[str, str | Sequence[str]] | None,
                settings: Settings | None, scheduler: Any) -> gpd.GeoDataFrame:
    """:func:`sdi.planning.summarise_by` on partitions of ``source``, its parameters checked by the same code.

    The zones are read (and dissolved by ``by``) by the client, which returns one row per zone; a
    zones layer without ``by`` is also read by each task near its partition, while dissolved zones
    or a zones frame are sent to every worker.
    """
    from sdi.planning.joins import _aggregates, _attribute_names, _check_by, _naming, _numeric

    with _session(settings, {"source": source, "zones": zones}) as session:
        stable, ztable = session.tables.get("source"), session.tables.get("zones")
        if stable is not None:
            assert session.conn is not None
            aggs = _aggregates(agg, postgis.numeric_columns(session.conn, stable))
            dim = _dimension(session.conn, stable)
        else:
            assert isinstance(source, gpd.GeoDataFrame)
            aggs, dim = _aggregates(agg, _numeric(source)), dimension(source.geometry.values)
        summary = Summary(by, aggs, dim)
        columns = tuple(dict.fromkeys(c for c, _ in aggs))
        with task_runner(scheduler) as runner:
            with session.snapshot() as (plan, loads):
                if ztable is not None:
                    assert plan is not None
                    with _naming("zones"):
                        zframe = read_layer(plan, ztable.id)
                else:
                    assert isinstance(zones, gpd.GeoDataFrame)
                    zframe = zones
                _check_by(by, _attribute_names(zframe))
                lefts = _left_parts(session, plan, "source", source, columns, runner)
            if by is not None:
                zframe = zframe[[by, zframe.geometry.name]].dissolve(by=by, sort=True, dropna=True).reset_index()
            read_zones = ztable if by is None else None
            given = None if read_zones is not None else runner.share(frame_rows(zframe.geometry.values))
            calls = [(session.db, SummaryTask(summary, part, read_zones, loads), rows, given) for part, rows in lefts]
            pieces = runner.map(summary_part, calls)
    if read_zones is not None:
        position = {k: i for i, k in enumerate(zframe[read_zones.primary_key].tolist())}
        zone_index = np.array([position[k] for p in pieces for k in p.zone_keys], dtype=np.int64)
    else:
        zone_index = np.array([k for p in pieces for k in p.zone_keys], dtype=np.int64)
    measure = np.concatenate([p.measure for p in pieces] or [np.empty(0)])
    if stable is not None:
        values = pd.DataFrame([v for p in pieces for v in p.values], columns=list(columns)) if columns else \
            pd.DataFrame(index=range(len(zone_index)))
        source_index = np.arange(len(zone_index))
    else:
        assert isinstance(source, gpd.GeoDataFrame)
        values, source_index = source, np.array([k for p in pieces for k in p.source_keys], dtype=np.int64)
    return summarise_pairs(zframe, values, summary, zone_index, source_index, measure)
