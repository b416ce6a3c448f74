"""The ``dask`` engine: the left side split into Hilbert-curve partitions, the right side sent to every task.

A small right side is broadcast whole; a large one is cut per partition to the rows near the
partition's convex hull (``nearest`` without ``max_distance_m`` always gets the whole right side).

Each partition runs the in-memory kernels of :mod:`sdi.planning.engines.memory` against the right
rows that can match it, so results are identical to the ``geopandas`` engine; the matched positions
are gathered and assembled in the calling process. Work runs on a ``dask.distributed`` scheduler
(:func:`sdi.planning.cluster.dask_client`: the given address, or a local cluster of processes), or
on dask's local ``"threads"`` / ``"synchronous"`` schedulers when one of those names is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from sdi.planning.cluster import dask_client
from sdi.planning.engines import memory
from sdi.planning.engines.frames import Join, Pairs, Summary, pairs_result, summarise_pairs

#: Scheduler names run by dask itself in this process, without a ``distributed`` cluster.
LOCAL_SCHEDULERS = ("threads", "synchronous")
#: Left rows per partition (the left side is split into ``ceil(rows / ROWS_PER_PARTITION)`` partitions).
ROWS_PER_PARTITION = 50_000
#: Right rows up to which the right side is sent whole to every task (beyond: per-partition subsets).
BROADCAST_MAX_ROWS = 100_000
_POSITION = "_sdi_position"


def _join_partition(part: gpd.GeoDataFrame, right: gpd.GeoSeries, join: Join) -> pd.DataFrame:
    pairs = memory.join_pairs(join, part.geometry.values, right.values)
    return pd.DataFrame({"left": part[_POSITION].to_numpy()[pairs.left], "right": right.index.to_numpy()[pairs.right],
                         "distance": pairs.distance if pairs.distance is not None else np.nan,
                         "geometry": pairs.geometry if pairs.geometry is not None else None})


def _summary_partition(part: gpd.GeoDataFrame, zones: gpd.GeoSeries, summary: Summary) -> pd.DataFrame:
    si, zi, measure = memory.summary_pairs(summary, part.geometry.values, zones.values)
    return pd.DataFrame({"source": part[_POSITION].to_numpy()[si], "zone": zones.index.to_numpy()[zi],
                         "measure": measure})


@contextmanager
def _client(scheduler: str | None) -> Iterator[Any]:
    if scheduler in LOCAL_SCHEDULERS:
        yield None
        return
    with dask_client(scheduler) as client, client.as_current():  # type: ignore[attr-defined]
        yield client


def _run(frame: gpd.GeoDataFrame, other: gpd.GeoSeries, kernel: Callable[..., pd.DataFrame], arg: object,
         scheduler: str | None, reach: float | None) -> pd.DataFrame:
    """Apply ``kernel(partition, other rows, arg)`` to Hilbert partitions of ``frame``; concatenate the results.

    ``other`` (indexed by position) is broadcast whole when it has at most :data:`BROADCAST_MAX_ROWS`
    rows or ``reach`` is ``None`` (``nearest`` without a limit); otherwise each partition gets only
    the rows within ``reach`` metres of its convex hull, the only ones that can match it.
    """
    import dask
    import dask_geopandas

    positioned = gpd.GeoDataFrame({_POSITION: np.arange(len(frame), dtype=np.int64)},
                                  geometry=gpd.GeoSeries(frame.geometry.values, crs=frame.crs), crs=frame.crs)
    npartitions = max(1, math.ceil(len(frame) / ROWS_PER_PARTITION))
    with _client(scheduler) as client:
        parts = dask_geopandas.from_geopandas(positioned, npartitions=npartitions)
        if npartitions > 1:
            parts = parts.spatial_shuffle(by="hilbert", npartitions=npartitions)
        blocks = parts.to_delayed()
        if reach is None or npartitions == 1 or len(other) <= BROADCAST_MAX_ROWS:
            shared = other if client is None else client.scatter(other, broadcast=True)
            pieces = [shared] * len(blocks)
        else:
            pieces = [other.iloc[np.sort(other.sindex.query(hull, predicate="dwithin", distance=reach))]
                      for hull in parts.spatial_partitions.values]
            pieces = pieces if client is None else client.scatter(pieces)
        tasks = [dask.delayed(kernel)(part, piece, arg) for part, piece in zip(blocks, pieces, strict=True)]
        computed = dask.compute(*tasks, scheduler=scheduler) if client is None else client.gather(client.compute(tasks))
        results = list(computed)
    return pd.concat(results, ignore_index=True)


def run_join(join: Join, left: gpd.GeoDataFrame, right: gpd.GeoDataFrame, scheduler: str | None) -> gpd.GeoDataFrame:
    """Run ``join`` on partitions of ``left`` (``right`` is the mask's union for ``clip``)."""
    reach = join.distance if join.has_distance else 0.0  # nearest without a limit: None, broadcast
    found = _run(left, gpd.GeoSeries(right.geometry.values), _join_partition, join, scheduler, reach)
    pairs = Pairs(found["left"].to_numpy(np.int64), found["right"].to_numpy(np.int64),
                  found["distance"].to_numpy(float) if join.has_distance else None,
                  found["geometry"].to_numpy(object) if join.intersects_geometry else None)
    return pairs_result(join, left, right, pairs)


def run_summary(summary: Summary, source: gpd.GeoDataFrame, zones: gpd.GeoDataFrame,
                scheduler: str | None) -> gpd.GeoDataFrame:
    """Summarise partitions of ``source`` over ``zones`` (already dissolved when ``summary.by`` is set)."""
    found = _run(source, gpd.GeoSeries(zones.geometry.values), _summary_partition, summary, scheduler, 0.0)
    return summarise_pairs(zones, source, summary, found["zone"].to_numpy(np.int64),
                           found["source"].to_numpy(np.int64), found["measure"].to_numpy(float))
