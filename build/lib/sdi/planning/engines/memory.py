"""The ``geopandas`` engine: joins in memory on shapely's STRtree (``GeoDataFrame.sindex``).

The kernels here take geometry arrays and return positions, so the ``dask`` engine runs the same
code on each partition of the left side.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from sdi.planning.engines.frames import Join, Pairs, Summary, pairs_result, summarise_pairs

_INVERSE = {"intersects": "intersects", "within": "contains", "contains": "within", "dwithin": "dwithin"}


def _series(geometries: object) -> gpd.GeoSeries:
    return gpd.GeoSeries(np.asarray(geometries, dtype=object))


def join_pairs(join: Join, left: object, right: object) -> Pairs:
    """Match the geometries ``left`` against ``right`` (arrays of shapely geometries) for ``join``.

    Returns positions into ``left`` and ``right``, unsorted, without unmatched left rows. ``nearest``
    keeps, among equally near right rows, the lowest position.
    """
    lgeom, rgeom = _series(left), _series(right)
    if join.kind == "nearest":
        if len(rgeom) == 0 or len(lgeom) == 0:
            return Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
        (li, ri), dist = rgeom.sindex.nearest(lgeom.values, return_all=True, max_distance=join.distance,
                                      return_distance=True)
        order = np.lexsort((ri, li))
        li, ri, dist = li[order], ri[order], dist[order]
        first = np.r_[True, li[1:] != li[:-1]]
        return Pairs(li[first].astype(np.int64), ri[first].astype(np.int64), dist[first].astype(float))
    if join.kind == "within_distance":
        li, ri = query(lgeom, rgeom, "dwithin", join.distance)
        dist = shapely.distance(lgeom.values[li], rgeom.values[ri])
        return Pairs(li, ri, np.asarray(dist, dtype=float))
    li, ri = query(lgeom, rgeom, join.predicate if join.kind == "sjoin" else "intersects")
    if join.intersects_geometry:
        return Pairs(li, ri, geometry=inside(np.asarray(lgeom.values)[li], np.asarray(rgeom.values)[ri]))
    return Pairs(li, ri)


def query(left: gpd.GeoSeries, right: gpd.GeoSeries, predicate: str,
          distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the pairs with ``predicate(left, right)`` (``dwithin``: within ``distance``).

    The side with fewer rows is the query (each of its geometries prepared once) and the other the
    STRtree, so a few large zones are not re-read for every small geometry they are tested against.
    """
    if len(right) <= len(left):
        ri, li = left.sindex.query(right.values, predicate=_INVERSE[predicate], distance=distance)
    else:
        li, ri = right.sindex.query(left.values, predicate=predicate, distance=distance)
    return li.astype(np.int64), ri.astype(np.int64)


def inside(geometries: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """The intersection of each geometry with its zone: the geometry itself when the zone covers it.

    The shortcut is exact and spares most rows an overlay with a large zone (a district, a coastline).
    """
    shapely.prepare(zones)
    covered = shapely.covers(zones, geometries)
    out = np.array(geometries, dtype=object)
    out[~covered] = shapely.intersection(geometries[~covered], zones[~covered])
    return out


def summary_pairs(summary: Summary, source: object, zones: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match ``source`` geometries to the ``zones`` they intersect.

    Returns
    -------
    tuple
        ``(source_positions, zone_positions, measure)`` where ``measure`` is the area (polygon source)
        or length (line source) of the source row inside the zone, 0 for points.
    """
    sgeom, zgeom = _series(source), _series(zones)
    si, zi = query(sgeom, zgeom, "intersects")
    measure = np.zeros(len(si))
    if summary.measure:
        parts = inside(np.asarray(sgeom.values)[si], np.asarray(zgeom.values)[zi])
        measure = shapely.area(parts) if summary.dimension == 2 else shapely.length(parts)
    return si.astype(np.int64), zi.astype(np.int64), np.asarray(measure, dtype=float)


def run_join(join: Join, left: gpd.GeoDataFrame, right: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Run ``join`` in memory; ``right`` is the mask's union (one row) for ``clip``."""
    return pairs_result(join, left, right, join_pairs(join, left.geometry.values, right.geometry.values))


def run_summary(summary: Summary, source: gpd.GeoDataFrame, zones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Summarise ``source`` over ``zones`` (already dissolved when ``summary.by`` is set) in memory."""
    si, zi, measure = summary_pairs(summary, source.geometry.values, zones.geometry.values)
    return summarise_pairs(zones, source, summary, zi, si, measure)
