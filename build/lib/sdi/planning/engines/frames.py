"""What every join engine shares: the join description, matched row positions and the result frame.

Engines find *pairs* (positions of matching left and right rows, with a distance or an intersection
geometry where the join makes one) and hand them to :func:`pairs_result`, or, when the attributes come
straight from SQL, hand the columns to :func:`finish`. Both end in :func:`assemble`, so the column
names, column order, row order and geometry types of a result do not depend on the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from sdi.errors import PlanningError

HK_GRID = 2326
JoinKind = Literal["sjoin", "within_distance", "nearest", "overlay", "clip"]
#: Spatial predicates of :func:`sdi.planning.sjoin`, applied as ``predicate(left, right)``.
PREDICATES = ("intersects", "within", "contains")
#: Aggregate functions of :func:`sdi.planning.summarise_by`.
AGGREGATES = ("sum", "mean", "min", "max")
#: Name of the summary column measuring the source inside a zone, by the source's geometry dimension.
MEASURES = {2: "area_m2", 1: "length_m"}
RIGHT_SUFFIX = "_right"
ZONE_SUFFIX = "_zone"


@dataclass(frozen=True)
class Join:
    """One join request, validated.

    Attributes
    ----------
    kind
        ``sjoin``, ``within_distance``, ``nearest``, ``overlay`` or ``clip``.
    predicate
        For ``sjoin``: one of :data:`PREDICATES`.
    how
        ``inner`` or ``left`` (``nearest`` is always ``left``).
    distance
        ``within_distance``: the distance in metres; ``nearest``: the optional maximum distance.
    """

    kind: JoinKind
    predicate: str = "intersects"
    how: str = "inner"
    distance: float | None = None

    @property
    def has_distance(self) -> bool:
        """Whether the result has a ``distance_m`` column."""
        return self.kind in ("within_distance", "nearest")

    @property
    def intersects_geometry(self) -> bool:
        """Whether the result geometry is the intersection (``overlay``, ``clip``) rather than the left geometry."""
        return self.kind in ("overlay", "clip")


@dataclass(frozen=True)
class Summary:
    """One :func:`sdi.planning.summarise_by` request, validated.

    Attributes
    ----------
    by
        Zone column the zones are dissolved by, or ``None`` for one result row per zone.
    agg
        ``(column, function)`` pairs over the source's columns, functions from :data:`AGGREGATES`.
    dimension
        Geometry dimension of the source (0 points, 1 lines, 2 polygons; -1 when empty).
    """

    by: str | None
    agg: tuple[tuple[str, str], ...]
    dimension: int

    @property
    def measure(self) -> str | None:
        """``area_m2`` for polygon sources, ``length_m`` for lines, ``None`` for points."""
        return MEASURES.get(self.dimension)


@dataclass
class Pairs:
    """Matched rows: positions into the left and right frames (``-1`` on the right: no match).

    ``distance`` (metres) is set by distance joins, ``geometry`` (the intersection) by ``overlay`` and ``clip``.
    """

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray | None = None
    geometry: np.ndarray | None = None

    def subset(self, order: np.ndarray) -> Pairs:
        """The pairs at the positions ``order``."""
        return Pairs(self.left[order], self.right[order],
                     None if self.distance is None else self.distance[order],
                     None if self.geometry is None else self.geometry[order])


def attributes(frame: gpd.GeoDataFrame) -> pd.DataFrame:
    """The attribute columns of ``frame`` (all but its active geometry), with a RangeIndex."""
    return pd.DataFrame(frame.drop(columns=frame.geometry.name)).reset_index(drop=True)


def dimension(geometries: object) -> int:
    """The highest dimension among ``geometries`` (0 points, 1 lines, 2 polygons; -1 when there are none)."""
    dims = shapely.get_dimensions(np.asarray(geometries, dtype=object))
    return int(dims.max()) if dims.size else -1


def take(attrs: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Rows of ``attrs`` at ``positions``; a position of ``-1`` gives a row of missing values.

    Missing values are ``NaN`` in numeric columns and ``None`` in object columns, as when read from SQL.
    """
    out = attrs.reset_index(drop=True).reindex(positions).reset_index(drop=True)
    missing = np.asarray(positions) < 0
    objects = [c for c in out.columns if out[c].dtype == object]
    if missing.any() and objects:
        out.loc[missing, objects] = None
    return out


def keep_dimension(geometries: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Keep only the parts of each geometry whose dimension is ``dims[i]`` (e.g. polygonal parts of polygons).

    A row left with no part becomes ``None``, with one part that part, with several a Multi* geometry,
    so the shape of an intersection does not depend on which library computed it.
    """
    parts, index = shapely.get_parts(geometries, return_index=True)
    while True:  # flatten collections nested in collections
        nested = shapely.get_num_geometries(parts) > 1
        nested |= np.isin(shapely.get_type_id(parts), (4, 5, 6, 7))
        if not nested.any():
            break
        sub, sub_index = shapely.get_parts(parts, return_index=True)
        parts, index = sub, index[sub_index]
    keep = ~shapely.is_empty(parts) & (shapely.get_dimensions(parts) == dims[index])
    parts, index = parts[keep], index[keep]
    out = np.full(len(geometries), None, dtype=object)
    counts = np.bincount(index, minlength=len(geometries))
    single = counts[index] == 1
    out[index[single]] = parts[single]
    multi = counts[index] > 1
    for dim, make in ((0, shapely.multipoints), (1, shapely.multilinestrings), (2, shapely.multipolygons)):
        chosen = multi & (dims[index] == dim)
        if chosen.any():
            rows, dense = np.unique(index[chosen], return_inverse=True)
            out[rows] = make(parts[chosen], indices=dense)
    return out


def assemble(left: pd.DataFrame, right: pd.DataFrame | None, geometry: object,
             extra: Mapping[str, object] | None = None) -> gpd.GeoDataFrame:
    """The result frame: left columns, right columns (``_right`` added on a clash), ``extra``, ``geometry``.

    Raises
    ------
    PlanningError
        When a left column has the name of a column the join adds (``distance_m``).
    """
    extra = extra or {}
    clash = [c for c in left.columns if c in extra or c == "geometry"]
    if clash:
        raise PlanningError(f"left: column {clash[0]!r} clashes with a column the result adds; rename it")
    columns = [left.reset_index(drop=True)]
    if right is not None:
        taken = set(left.columns) | set(extra) | {"geometry"}
        renamed = {c: f"{c}{RIGHT_SUFFIX}" for c in right.columns if c in taken}
        columns.append(right.reset_index(drop=True).rename(columns=renamed))
    columns.append(pd.DataFrame({k: np.asarray(v) for k, v in extra.items()}, index=columns[0].index))
    frame = pd.concat(columns, axis=1)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(np.asarray(geometry, dtype=object), crs=HK_GRID),
                            crs=HK_GRID)


def finish(join: Join, left: pd.DataFrame, right: pd.DataFrame | None, geometry: np.ndarray,
           distance: np.ndarray | None) -> gpd.GeoDataFrame:
    """Assemble a result whose rows are already in order.

    For ``overlay`` and ``clip``, ``geometry`` is the intersection already reduced to the left
    geometry's dimension (by the SQL or by :func:`pairs_result`); here its shape is normalised (one
    part: a single geometry, several: Multi*) and rows left empty are removed.
    """
    if join.intersects_geometry:
        geometry = keep_dimension(geometry, shapely.get_dimensions(geometry))
        kept = np.flatnonzero(pd.notna(geometry))
        left, geometry = left.iloc[kept], geometry[kept]
        right = None if right is None else right.iloc[kept]
    extra = {"distance_m": distance} if join.has_distance else None
    return assemble(left, right, geometry, extra)


def pairs_result(join: Join, left: gpd.GeoDataFrame, right: gpd.GeoDataFrame, pairs: Pairs) -> gpd.GeoDataFrame:
    """The result of ``join`` from matched positions: sorted by left then right row, unmatched rows added."""
    if join.how == "left" or join.kind == "nearest":
        missing = np.setdiff1d(np.arange(len(left)), pairs.left)
        distance = pairs.distance
        if distance is not None:
            distance = np.concatenate([distance, np.full(len(missing), np.nan)])
        pairs = Pairs(np.concatenate([pairs.left, missing]),
                      np.concatenate([pairs.right, np.full(len(missing), -1)]), distance, pairs.geometry)
    pairs = pairs.subset(np.lexsort((pairs.right, pairs.left)))
    left_geometry = np.asarray(left.geometry.values, dtype=object)
    if join.intersects_geometry:
        assert pairs.geometry is not None
        geometry = keep_dimension(pairs.geometry, shapely.get_dimensions(left_geometry[pairs.left]))
    else:
        geometry = left_geometry[pairs.left]
    right_attrs = None if join.kind == "clip" else take(attributes(right), pairs.right)
    return finish(join, take(attributes(left), pairs.left), right_attrs, geometry, pairs.distance)


def summary_frame(zones: pd.DataFrame, stats: Mapping[str, np.ndarray], geometry: object) -> gpd.GeoDataFrame:
    """A :func:`sdi.planning.summarise_by` result: zone columns (``_zone`` added on a clash), ``stats``, geometry."""
    zones = zones.rename(columns={c: f"{c}{ZONE_SUFFIX}" for c in zones.columns if c in stats or c == "geometry"})
    return assemble(zones, None, geometry, stats)


def summarise_pairs(zones: gpd.GeoDataFrame, source: pd.DataFrame, summary: Summary, zone_index: np.ndarray,
                    source_index: np.ndarray, measure: np.ndarray) -> gpd.GeoDataFrame:
    """Aggregate matched (zone, source row) pairs into one row per zone; zones with no match count 0.

    ``measure`` is the area (polygons) or length (lines) of each source row inside its zone.
    """
    n = len(zones)
    stats: dict[str, np.ndarray] = {"count": np.bincount(zone_index, minlength=n).astype(np.int64)}
    for column, function in summary.agg:
        values = pd.Series(pd.to_numeric(source[column]).to_numpy(dtype=float)[source_index])
        grouped = values.groupby(zone_index).agg(function).reindex(range(n))
        stats[f"{column}_{function}"] = (grouped.fillna(0.0) if function == "sum" else grouped).to_numpy(float)
    if summary.measure:
        stats[summary.measure] = np.bincount(zone_index, weights=measure, minlength=n).astype(float)
    return summary_frame(attributes(zones), stats, zones.geometry.values)
