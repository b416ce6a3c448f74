"""Site screening on dask: the candidates cut into spatial partitions, each read from PostGIS by its own task.

The client plans only: from the catalogue and a sample of the candidates (those large enough) it
cuts the plane into rectangles (:mod:`sdi.planning.engines.partitions`), and decides how far around
a partition each layer test must look: 0 m for ``in_zone`` (the site's centroid) and ``contains``,
the distance for ``exclude_within``, a first radius for the nearest features of a ``distance_to``
score. Each task opens its own connection, reads its candidates (bounding-box centre in its
rectangle, minimum area applied in SQL), the features of every test and the districts near them,
and screens them with :func:`sdi.planning.sites.frame_engine.screen_partition`, the code the
``geopandas`` engine runs, so the engines cannot drift apart. A site whose nearest feature lies
beyond the radius read gets it from a wider read. Tasks check they read the layer loads the client
planned with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from sdi.planning.cluster import task_runner
from sdi.planning.criteria import DistanceTo, ExcludeWithin, Where
from sdi.planning.engines.partitions import Rect, hilbert_ordered, layer_info, plan_rects
from sdi.planning.engines.reading import Database, check_loads, next_radius, read_near, read_partition, snapshot
from sdi.planning.sites.frame_engine import Inputs, feature_key, layer_tests, nearest_feature, screen_partition, take
from sdi.planning.sites.plan import Plan, min_areas, score_key, where_sql
from sdi.settings import Settings

__all__ = ["ROWS_PER_PARTITION", "SiteTask", "hilbert_ordered", "screen_dask", "screen_part"]

HK_GRID = 2326
#: Candidates per partition (at least two partitions per worker thread are used).
ROWS_PER_PARTITION = 50_000


@dataclass(frozen=True)
class SiteTask:
    """One partition's screening.

    Attributes
    ----------
    plan
        The checked plan.
    rect
        The partition: candidates whose bounding-box centre lies in it.
    reach
        Metres to read around the partition's candidates, by feature key
        (:func:`~sdi.planning.sites.frame_engine.feature_key`).
    loads
        The load id of every layer, as the client planned with.
    """

    plan: Plan
    rect: Rect
    reach: dict[str, float]
    loads: dict[str, int]


def _near(conn: psycopg.Connection, plan: Plan, layer: str, where: Where | None, columns: dict[str, str | None],
          bounds: tuple[float, float, float, float] | None, reach: float) -> gpd.GeoDataFrame:
    """``layer``'s rows matching ``where`` near ``bounds`` (none without bounds), columns renamed (``None``: key)."""
    table = plan.tables[layer]
    wanted = {new: col or table.primary_key for new, col in columns.items()}
    cond, params = where_sql(where, "t")
    if bounds is None:  # an empty partition: no rows, the same columns
        cond, params, bounds = sql.SQL("false"), [], (0.0, 0.0, 0.0, 0.0)
    rows = read_near(conn, table, list(dict.fromkeys(wanted.values())), bounds, reach, cond, params)
    frame = pd.DataFrame(rows.values, columns=list(dict.fromkeys(wanted.values())))
    return gpd.GeoDataFrame({new: frame[col].to_numpy() for new, col in wanted.items()},
                            geometry=gpd.GeoSeries(rows.geometry, crs=HK_GRID), crs=HK_GRID)


def _candidates(conn: psycopg.Connection, plan: Plan, rect: Rect) -> gpd.GeoDataFrame:
    """The candidates placed in ``rect``, at least the largest minimum area (``_pk``, ``site``)."""
    table, label = plan.candidates, plan.criteria.candidates.label
    areas = min_areas(plan.criteria)
    where = sql.SQL("st_area(t.geom) >= %s") if areas else None
    rows = read_partition(conn, table, [label], rect, where, [max(areas)] if areas else [])
    frame = pd.DataFrame({"_pk": rows.keys, "site": [v[0] for v in rows.values]})
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(rows.geometry, crs=HK_GRID), crs=HK_GRID)


def _widen_nearest(conn: psycopg.Connection, task: SiteTask, raw: gpd.GeoDataFrame,
                   bounds: tuple[float, float, float, float]) -> None:
    """Redo a ``distance_to`` score of ``raw`` from a wider read where a site's nearest may lie beyond the reach."""
    geoms = np.asarray(raw.geometry.array, dtype=object)
    for score in task.plan.criteria.scores:
        if not isinstance(score, DistanceTo) or len(raw) == 0:
            continue
        radius = task.reach[feature_key(score)]
        dist = raw[score_key(score.id, "dist")].to_numpy(dtype=float)
        needed = float(np.nan_to_num(dist, nan=math.inf).max())
        while needed > radius and not math.isinf(radius):
            radius = next_radius(radius, needed)
            feats = _near(conn, task.plan, score.layer, score.where, {"_pk": None, "_l": score.label}, bounds, radius)
            pos, dist = nearest_feature(feats, geoms)
            raw[score_key(score.id, "dist")] = dist
            raw[score_key(score.id, "label")] = take(feats, "_l", pos)
            needed = float(np.nan_to_num(dist, nan=math.inf).max())


def screen_part(db: Database, task: SiteTask) -> gpd.GeoDataFrame:
    """Read and screen one partition's candidates; return its raw passing sites (see :mod:`.scoring`)."""
    plan = task.plan
    with snapshot(db, list(plan.tables.values())) as (conn, seen):
        check_loads(task.loads, seen)
        cands = _candidates(conn, plan, task.rect)
        bounds = None
        if len(cands):
            xmin, ymin, xmax, ymax = (float(v) for v in cands.total_bounds)
            bounds = (xmin, ymin, xmax, ymax)
        features: dict[str, gpd.GeoDataFrame] = {}
        for test in layer_tests(plan):
            key = feature_key(test)
            if key not in features:
                features[key] = _near(conn, plan, test.layer, test.where, {
                    "_pk": None, "_v": test.where.column if test.where else None, "_l": test.label},
                    bounds, task.reach[key])
        c = plan.criteria
        districts = None
        if c.districts:
            districts = _near(conn, plan, c.districts.layer, None, {"_pk": None, "_n": c.districts.name}, bounds, 0.0)
        raw = screen_partition(cands, Inputs(plan, cands.iloc[:0], features, districts))
        if bounds is not None:
            _widen_nearest(conn, task, raw, bounds)
    return raw


def _reach(conn: psycopg.Connection, plan: Plan) -> dict[str, float]:
    """How far around a partition each feature key is read: the largest distance its tests need."""
    reach: dict[str, float] = {}
    for test in layer_tests(plan):
        if isinstance(test, ExcludeWithin):
            need = float(test.distance_m)
        elif isinstance(test, DistanceTo):  # a first guess, widened per site when it falls short
            need = 2.0 * layer_info(conn, plan.tables[test.layer]).spacing
        else:  # in_zone (the site's centroid is inside its box), contains
            need = 0.0
        key = feature_key(test)
        reach[key] = max(reach.get(key, 0.0), need)
    return reach


def screen_dask(plan: Plan, settings: Settings, *, scheduler: Any = None) -> gpd.GeoDataFrame:
    """Screen the candidates on dask, each partition read by its task; return the raw passing sites.

    Parameters
    ----------
    plan
        The checked plan (:func:`~sdi.planning.sites.plan.make_plan`).
    settings
        Settings naming the database; its URL is given to the tasks (their workers need to reach it).
    scheduler
        A dask scheduler's address or a :class:`distributed.Client`; ``None`` starts a local cluster
        for this call (see :func:`sdi.planning.cluster.task_runner`).
    """
    db = Database.of(settings)
    areas = min_areas(plan.criteria)
    where = sql.SQL("st_area(t.geom) >= %s") if areas else None
    with task_runner(scheduler) as runner:
        with snapshot(db, list(plan.tables.values())) as (conn, loads):
            info = layer_info(conn, plan.candidates)
            rects = plan_rects(conn, info, 2 * runner.workers, ROWS_PER_PARTITION, where, [max(areas)] if areas else [])
            reach = _reach(conn, plan)
        pieces = runner.map(screen_part, [(db, SiteTask(plan, rect, reach, loads)) for rect in rects])
    found = [p for p in pieces if len(p)] or pieces[:1]
    result = pd.concat(found, ignore_index=True)
    if not isinstance(result, gpd.GeoDataFrame):
        result = gpd.GeoDataFrame(result, geometry="geometry", crs=HK_GRID)
    return result.sort_values("_pk", kind="mergesort").reset_index(drop=True)
