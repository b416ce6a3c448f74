"""Site screening in memory with GeoPandas: shapely STRtree queries and vectorised numpy, no per-row Python.

:func:`read_inputs` reads what the criteria need from the database (each layer once per distinct
``where`` filter, filtered in the database so the filters mean exactly what they mean in the
``postgis`` engine); :func:`screen_partition` screens any subset of the candidates against them,
which is what the ``dask`` engine runs on each spatial partition; :func:`screen_frame` runs it on
all candidates at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.planning.criteria import Constraint, Contains, DistanceTo, ExcludeWithin, InZone, MinArea, Where
from sdi.planning.sites.plan import Plan, is_area_only, member_key, min_areas, score_key, where_sql
from sdi.planning.sources import read_layer

HK_GRID = 2326
_Test = InZone | Contains | ExcludeWithin | DistanceTo


@dataclass(frozen=True)
class Inputs:
    """Everything a screening needs, in memory (picklable, so it can be sent to dask workers).

    Attributes
    ----------
    plan
        The checked plan.
    candidates
        Candidate sites: ``_pk``, ``site`` (label), ``geometry``.
    features
        The matching features of each layer test, keyed by :func:`feature_key`: ``_pk``, ``_v``
        (the ``where`` column's value, if any), ``_l`` (label), ``geometry``.
    districts
        The districts layer (``_pk``, ``_n`` name, ``geometry``), or ``None``.
    """

    plan: Plan
    candidates: gpd.GeoDataFrame
    features: dict[str, gpd.GeoDataFrame]
    districts: gpd.GeoDataFrame | None


def feature_key(test: _Test) -> str:
    """The key of a layer test's features: layer, filter and label (tests sharing all three share the frame)."""
    return f"{test.layer}|{test.where.model_dump_json() if test.where else ''}|{test.label or ''}"


def read_features(conn: psycopg.Connection, plan: Plan, layer: str, where: Where | None,
          columns: dict[str, str | None], *, min_area: float | None = None) -> gpd.GeoDataFrame:
    """Read ``layer`` filtered by ``where`` (and a minimum area); rename columns (``None`` = the primary key)."""
    pk = plan.tables[layer].primary_key
    wanted = {new: col or pk for new, col in columns.items()}
    cond, params = where_sql(where, "t")
    if min_area is not None:
        cond, params = sql.SQL("{} and st_area(t.geom) >= %s").format(cond), [*params, min_area]
    frame = read_layer(conn, layer, columns=list(dict.fromkeys(wanted.values())), where=cond, params=params)
    return gpd.GeoDataFrame({new: frame[col].to_numpy() for new, col in wanted.items()},
                            geometry=frame.geometry.to_numpy(), crs=HK_GRID)


def layer_tests(plan: Plan) -> list[_Test]:
    """Every constraint member and score of the criteria that reads a layer."""
    c = plan.criteria
    tests = [t for con in c.constraints for t in con.any_of] + list(c.scores)
    return [t for t in tests if isinstance(t, _Test)]


def read_inputs(conn: psycopg.Connection, plan: Plan) -> Inputs:
    """Read the candidates, the matching features of every layer test and the districts."""
    c = plan.criteria
    areas = min_areas(c)
    # the cheapest filter runs in the database: fewer rows to send (screen_partition applies it again)
    candidates = read_features(conn, plan, c.candidates.layer, None, {"_pk": None, "site": c.candidates.label},
                       min_area=max(areas) if areas else None)
    features: dict[str, gpd.GeoDataFrame] = {}
    for test in layer_tests(plan):
        key = feature_key(test)
        if key not in features:
            features[key] = read_features(conn, plan, test.layer, test.where,
                                  {"_pk": None, "_v": test.where.column if test.where else None, "_l": test.label})
    districts = None
    if c.districts:
        districts = read_features(conn, plan, c.districts.layer, None, {"_pk": None, "_n": c.districts.name})
    return Inputs(plan, candidates, features, districts)


def first_hit(features: gpd.GeoDataFrame, geoms: np.ndarray, predicate: str,
               distance: float | None = None) -> np.ndarray:
    """For each geometry, the position of the lowest-key feature it meets (``-1`` where none).

    ``predicate`` must be symmetric (``intersects``, ``dwithin``): the tree is built on ``geoms`` and
    queried with the features, so GEOS prepares each (possibly large) feature polygon once, instead of
    testing every site against unprepared polygons.
    """
    out = np.full(len(geoms), -1, dtype=np.intp)
    if len(features) == 0 or len(geoms) == 0:
        return out
    hit, src = shapely.STRtree(geoms).query(np.asarray(features.geometry.array, dtype=object), predicate=predicate,
                                            distance=distance)
    if len(src):
        order = np.lexsort((features["_pk"].to_numpy()[hit], src))
        src, hit = src[order], hit[order]
        first = np.r_[True, src[1:] != src[:-1]]
        out[src[first]] = hit[first]
    return out


def nearest_feature(features: gpd.GeoDataFrame, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each geometry, the position of the nearest feature (lowest key among ties, ``-1`` if none) and distance."""
    pos, dist = np.full(len(geoms), -1, dtype=np.intp), np.full(len(geoms), np.nan)
    if len(features) == 0 or len(geoms) == 0:
        return pos, dist
    (src, hit), d = features.sindex.nearest(geoms, return_all=True, return_distance=True)
    order = np.lexsort((features["_pk"].to_numpy()[hit], src))
    src, hit, d = src[order], hit[order], d[order]
    first = np.r_[True, src[1:] != src[:-1]]
    pos[src[first]], dist[src[first]] = hit[first], d[first]
    return pos, dist


def take(features: gpd.GeoDataFrame, column: str, pos: np.ndarray) -> np.ndarray:
    values = np.empty(len(pos), dtype=object)
    values[:] = None
    found = pos >= 0
    values[found] = features[column].to_numpy(dtype=object)[pos[found]]
    return values


class _Sites:
    """The candidates still in the running, with their raw columns; :meth:`keep` drops the ones that failed."""

    def __init__(self, cands: gpd.GeoDataFrame) -> None:
        geoms = np.asarray(cands.geometry.array, dtype=object)
        self.cols: dict[str, np.ndarray] = {
            "_pk": cands["_pk"].to_numpy(), "site": cands["site"].to_numpy(dtype=object),
            "area_m2": shapely.area(geoms), "geometry": geoms}
        self.centroid = shapely.centroid(geoms)

    @property
    def geoms(self) -> np.ndarray:
        return self.cols["geometry"]

    def keep(self, mask: np.ndarray) -> None:
        self.cols = {k: v[mask] for k, v in self.cols.items()}
        self.centroid = self.centroid[mask]


def _member(test: MinArea | _Test, sites: _Sites, inputs: Inputs, extra: dict[str, np.ndarray]) -> np.ndarray:
    """Whether each site passes one constraint member; puts the explaining values in ``extra``."""
    if isinstance(test, MinArea):
        return np.asarray(sites.cols["area_m2"] >= test.min_m2)
    feats = inputs.features[feature_key(test)]
    if isinstance(test, ExcludeWithin):
        hit = first_hit(feats, sites.geoms, "intersects" if test.distance_m == 0 else "dwithin",
                         None if test.distance_m == 0 else float(test.distance_m))
        return hit < 0
    assert isinstance(test, InZone | Contains)
    pos = first_hit(feats, sites.centroid if isinstance(test, InZone) else sites.geoms, "intersects")
    none = np.full(len(pos), None, dtype=object)
    extra["value"], extra["label"] = take(feats, "_v", pos) if test.where else none, take(feats, "_l", pos)
    return pos >= 0


def _constraint(con: Constraint, sites: _Sites, inputs: Inputs) -> None:
    oks = []
    for k, test in enumerate(con.any_of):
        extra: dict[str, np.ndarray] = {}
        oks.append(_member(test, sites, inputs, extra))
        for field, values in extra.items():
            sites.cols[member_key(con.id, k, field)] = values
        if len(con.any_of) > 1:
            sites.cols[member_key(con.id, k, "ok")] = oks[-1]
    sites.keep(np.logical_or.reduce(oks))


def _district(sites: _Sites, inputs: Inputs) -> np.ndarray:
    """Position of each site's district (lowest key holding its centroid; ``-1`` where none)."""
    assert inputs.districts is not None
    return first_hit(inputs.districts, sites.centroid, "intersects")


def screen_partition(cands: gpd.GeoDataFrame, inputs: Inputs) -> gpd.GeoDataFrame:
    """Screen some candidates (``_pk``, ``site``, ``geometry``) against ``inputs``; return the raw passing sites.

    The area test runs first, then the district filter (if any), then the other constraints in the
    order of the criteria, each on the sites still in the running; districts and nearest features
    are found for the survivors only. ``inputs.candidates`` is not used, so the ``dask`` engine can
    send inputs without them.
    """
    plan = inputs.plan
    sites = _Sites(cands)
    for con in plan.criteria.constraints:
        if is_area_only(con):
            _constraint(con, sites, inputs)
    if plan.district_pks and inputs.districts is not None:
        pks = take(inputs.districts, "_pk", _district(sites, inputs)).astype("float64")
        sites.keep(np.isin(pks, plan.district_pks))
    for con in plan.criteria.constraints:
        if not is_area_only(con):
            _constraint(con, sites, inputs)
    sites.cols["district"] = np.full(len(sites.geoms), None, dtype=object) if inputs.districts is None else \
        take(inputs.districts, "_n", _district(sites, inputs))
    for score in plan.criteria.scores:
        if isinstance(score, DistanceTo):
            feats = inputs.features[feature_key(score)]
            pos, dist = nearest_feature(feats, sites.geoms)
            sites.cols[score_key(score.id, "dist")] = dist
            sites.cols[score_key(score.id, "label")] = take(feats, "_l", pos)
    centroid = sites.centroid
    cols = dict(sites.cols, cx=shapely.get_x(centroid), cy=shapely.get_y(centroid))
    geometry = cols.pop("geometry")
    return gpd.GeoDataFrame(pd.DataFrame(cols), geometry=gpd.GeoSeries(geometry, crs=HK_GRID), crs=HK_GRID)


def screen_frame(inputs: Inputs) -> gpd.GeoDataFrame:
    """Screen all candidates in memory; return the raw passing sites (see :mod:`.scoring`)."""
    return screen_partition(inputs.candidates, inputs)
