"""Spatial partitions for the ``dask`` engine: rectangles that tile the plane, planned from a cheap sample.

A layer is cut into *rectangles*, half-open (``xmin <= x < xmax``, ``ymin <= y < ymax``) and tiling
the whole plane (the outer ones reach to infinity). A row belongs to the rectangle holding the centre
of its bounding box (:func:`centre`, computed by PostGIS the same way for every read), so it falls in
exactly one of them: a task reads the rows of its rectangle and no row is read twice or lost, whatever
the rectangles are. They are found by splitting the centres of a sample of the rows at quantiles (a
k-d split, on the side where they spread wider), so each holds about as many rows. The rows of a
rectangle are read through the layer's GiST index (a row whose centre lies in the rectangle has a
bounding box meeting it), then kept by the exact test of the centre. (The centre of the box costs
half what ``ST_Centroid`` does, and any rule that places each row once would do.)

GeoDataFrames given as inputs are held by the client, which cuts them into chunks along a Hilbert
curve (:func:`hilbert_chunks`) and ships each chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import psycopg
import shapely
from psycopg import sql

from sdi.planning.sources import HK_GRID, LayerTable

#: Rows sampled (at most) to place the partition boundaries; a smaller layer is read whole for it.
SAMPLE_ROWS = 20_000
INF = math.inf


@dataclass(frozen=True)
class Rect:
    """A half-open rectangle ``[xmin, xmax) x [ymin, ymax)``; infinite bounds make it reach the plane's edge."""

    xmin: float = -INF
    ymin: float = -INF
    xmax: float = INF
    ymax: float = INF

    def holds(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each point ``(x[i], y[i])`` lies in the rectangle (the lower bounds included)."""
        return (x >= self.xmin) & (x < self.xmax) & (y >= self.ymin) & (y < self.ymax)

    def box(self, geometry: sql.Composable) -> tuple[sql.Composable, list[float]]:
        """SQL for ``geometry``'s bounding box meeting the rectangle (GiST-indexed), and its bound values.

        Every row whose bounding-box centre lies in the rectangle passes (a superset). Infinite bounds are bound
        as ``±Infinity``, which PostGIS boxes accept.
        """
        return (sql.SQL("{} && st_makeenvelope(%s, %s, %s, %s, {})").format(geometry, sql.Literal(HK_GRID)),
                [self.xmin, self.ymin, self.xmax, self.ymax])

    def contains(self, x: sql.Composable, y: sql.Composable) -> tuple[sql.Composable, list[float]]:
        """SQL for the point ``(x, y)`` lying in the rectangle (half-open, as :meth:`holds`), and its bound values."""
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: list[float] = []
        for value, low, high in ((x, self.xmin, self.xmax), (y, self.ymin, self.ymax)):
            if low > -INF:
                parts.append(sql.SQL("{} >= %s").format(value))
                params.append(low)
            if high < INF:
                parts.append(sql.SQL("{} < %s").format(value))
                params.append(high)
        return sql.SQL(" and ").join(parts), params


def centre(box: sql.Composable) -> tuple[sql.Composable, sql.Composable]:
    """SQL for the centre ``(x, y)`` of ``box`` (a ``box2d``): the point that places a row in a partition."""
    return (sql.SQL("(st_xmin({b}) + st_xmax({b})) / 2").format(b=box),
            sql.SQL("(st_ymin({b}) + st_ymax({b})) / 2").format(b=box))


def split(x: np.ndarray, y: np.ndarray, parts: int, rect: Rect | None = None) -> list[Rect]:
    """Cut ``rect`` (default: the plane) into at most ``parts`` rectangles holding about as many of the points.

    Each cut is at a quantile of the points along the axis on which they spread wider; a cut that
    would leave one side empty (all points equal on both axes) is not made, so fewer rectangles may
    come back. The rectangles always tile ``rect`` exactly.
    """
    rect = rect if rect is not None else Rect()
    if parts <= 1 or len(x) < 2:
        return [rect]
    spreads = [(float(np.ptp(x)), 0), (float(np.ptp(y)), 1)]
    for _, axis in sorted(spreads, reverse=True):
        values = x if axis == 0 else y
        ordered = np.sort(values)
        low_parts = parts // 2
        at = min(len(ordered) - 1, max(1, round(len(ordered) * low_parts / parts)))
        cut = float(ordered[at - 1] + ordered[at]) / 2.0
        below = values < cut
        if below.all() or not below.any():
            cut = float(ordered[at])
            below = values < cut
            if below.all() or not below.any():
                continue
        if axis == 0:
            first, second = Rect(rect.xmin, rect.ymin, cut, rect.ymax), Rect(cut, rect.ymin, rect.xmax, rect.ymax)
        else:
            first, second = Rect(rect.xmin, rect.ymin, rect.xmax, cut), Rect(rect.xmin, cut, rect.xmax, rect.ymax)
        return (split(x[below], y[below], low_parts, first)
                + split(x[~below], y[~below], parts - low_parts, second))
    return [rect]


def partition_count(rows: int, workers: int, rows_per_partition: int) -> int:
    """How many partitions for ``rows`` rows: one per ``rows_per_partition`` rows, at least one per worker."""
    return max(1, workers, math.ceil(rows / max(1, rows_per_partition)))


@dataclass(frozen=True)
class LayerInfo:
    """What the client knows of a layer before any task reads it.

    Attributes
    ----------
    table
        The layer's table (primary key, attribute columns).
    load_id
        The load the layer's table comes from (tasks check they read the same one).
    rows
        Feature count recorded by the load.
    bounds
        The layer's extent ``(xmin, ymin, xmax, ymax)`` recorded by the load, or ``None``.
    """

    table: LayerTable
    load_id: int
    rows: int
    bounds: tuple[float, float, float, float] | None

    @property
    def spacing(self) -> float:
        """The typical distance between neighbouring features (extent area / count, square-rooted); inf when empty."""
        if self.rows <= 0 or self.bounds is None:
            return INF
        xmin, ymin, xmax, ymax = self.bounds
        return math.sqrt(max(xmax - xmin, 1.0) * max(ymax - ymin, 1.0) / self.rows)


def layer_info(conn: psycopg.Connection, table: LayerTable) -> LayerInfo:
    """Read a layer's load id, feature count and extent from the catalogue (``sdi.layer``)."""
    row = conn.execute("select load_id, feature_count, st_xmin(extent), st_ymin(extent), st_xmax(extent), "
                       "st_ymax(extent) from sdi.layer where id = %s", (table.id,)).fetchone()
    if row is None:  # layer_table found it a moment ago: dropped since
        from sdi.errors import LayerNotFoundError

        raise LayerNotFoundError(f"layer {table.id!r} is not loaded ('sdi layers list' shows the loaded layers)")
    bounds = None if row[2] is None else (float(row[2]), float(row[3]), float(row[4]), float(row[5]))
    return LayerInfo(table, int(row[0]), int(row[1] or 0), bounds)


def plan_rects(conn: psycopg.Connection, info: LayerInfo, workers: int, rows_per_partition: int,
               where: sql.Composable | None = None, params: Sequence[object] = ()) -> list[Rect]:
    """Rectangles cutting ``info``'s layer into partitions of about ``rows_per_partition`` rows, at least ``workers``.

    Only rows satisfying ``where`` (on alias ``t``) count. The boundaries are placed from the
    centres of at most about :data:`SAMPLE_ROWS` rows (a repeatable ``TABLESAMPLE SYSTEM`` of a
    larger table), which also estimate how many rows satisfy ``where``.
    """
    if info.rows <= 1:
        return [Rect()]
    sample: sql.Composable = sql.SQL("")
    if info.rows > SAMPLE_ROWS:
        percent = max(0.01, min(100.0, 100.0 * SAMPLE_ROWS / info.rows))
        sample = sql.SQL(" tablesample system ({}) repeatable (0)").format(sql.Literal(percent))
    x, y = centre(sql.SQL("b"))
    query = sql.SQL("select {x}, {y}, ok from (select box2d(t.geom) as b, coalesce({where}, false) as ok "
                    "from {table} t{sample} offset 0) s").format(x=x, y=y, table=info.table.ident, sample=sample,
                                                              where=where if where is not None else sql.SQL("true"))
    rows = conn.execute(query, list(params)).fetchall()
    points = np.array([r[:2] for r in rows if r[2]], dtype=float).reshape(-1, 2)
    estimate = round(info.rows * len(points) / len(rows)) if rows else info.rows
    return split(points[:, 0], points[:, 1], partition_count(estimate, workers, rows_per_partition))


def hilbert_ordered(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The rows of ``frame`` in Hilbert-curve order of their bounding boxes (stable on ties).

    Cutting this order into consecutive chunks gives compact spatial partitions without a dask
    shuffle (which moves every row between tasks and costs a minute at 500,000 lots).
    """
    if len(frame) < 2:
        return frame
    return frame.iloc[np.argsort(frame.hilbert_distance().to_numpy(), kind="stable")]


def hilbert_chunks(geometry: np.ndarray, parts: int) -> list[np.ndarray]:
    """Positions of ``geometry`` cut into at most ``parts`` chunks of consecutive Hilbert-curve order."""
    if len(geometry) == 0:
        return []
    positions = gpd.GeoDataFrame({"_pos": np.arange(len(geometry))},
                                 geometry=gpd.GeoSeries(geometry, crs=HK_GRID), crs=HK_GRID)
    order = hilbert_ordered(positions)["_pos"].to_numpy()
    return [chunk for chunk in np.array_split(order, min(parts, len(order))) if len(chunk)]


def envelope(geometry: np.ndarray) -> shapely.Geometry:
    """The bounding box of ``geometry`` as a geometry: a polygon, or a point or line when it has no area."""
    return shapely.envelope(shapely.geometrycollections(np.asarray(geometry, dtype=object)))
