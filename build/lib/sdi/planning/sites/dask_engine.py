"""Site screening on dask: candidates in spatial partitions, the other layers broadcast to every worker.

The candidates are sorted along a Hilbert curve in the client and cut into consecutive chunks, so
each partition covers a compact area (its STRtree queries touch few features) with no shuffle.

Each partition is screened by :func:`sdi.planning.sites.frame_engine.screen_partition`, the same
code the ``geopandas`` engine runs, so the two engines cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import dask
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
from distributed import Client

from sdi.planning.cluster import dask_client
from sdi.planning.sites.frame_engine import Inputs, screen_partition

#: Candidates per partition (at least one partition per worker is used).
ROWS_PER_PARTITION = 50_000


def _workers(client: Client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def hilbert_ordered(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The rows of ``frame`` in Hilbert-curve order of their bounding boxes (stable on ties).

    Cutting this order into consecutive chunks gives compact spatial partitions without a dask
    shuffle (which moves every row between tasks and costs a minute at 500,000 lots).
    """
    if len(frame) < 2:
        return frame
    return frame.iloc[np.argsort(frame.hilbert_distance().to_numpy(), kind="stable")]


def screen_dask(inputs: Inputs, *, scheduler: str | None = None) -> gpd.GeoDataFrame:
    """Screen the candidates on a dask cluster; return the raw passing sites (see :mod:`.scoring`).

    Parameters
    ----------
    inputs
        What :func:`~sdi.planning.sites.frame_engine.read_inputs` read.
    scheduler
        Address of a running dask scheduler; ``None`` starts a local cluster for this call.
    """
    cands = inputs.candidates
    shared = dataclasses.replace(inputs, candidates=cands.iloc[:0])  # what every worker needs, without the sites
    meta = screen_partition(cands.iloc[:0], shared)
    with dask_client(scheduler) as opened:
        client = cast(Client, opened)
        # the client is used explicitly (client.compute), not made the default scheduler
        with dask.config.set({"dataframe.convert-string": False}):
            parts = max(2 * _workers(client), -(-len(cands) // ROWS_PER_PARTITION))
            sites = dask_geopandas.from_geopandas(hilbert_ordered(cands), npartitions=min(parts, max(1, len(cands))),
                                                  sort=False)
            [broadcast] = client.scatter([shared], broadcast=True)
            raw = sites.map_partitions(screen_partition, broadcast, meta=meta)
            result = client.compute(raw).result()
    if not isinstance(result, gpd.GeoDataFrame):
        result = gpd.GeoDataFrame(pd.DataFrame(result), geometry="geometry", crs=cands.crs)
    return result.sort_values("_pk", kind="mergesort").reset_index(drop=True)
