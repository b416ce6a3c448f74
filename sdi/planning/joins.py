"""Spatial joins of loaded layers or GeoDataFrames on PostGIS, GeoPandas or Dask, in EPSG:2326 metres.

Functions: :func:`sjoin` (by predicate), :func:`within_distance`, :func:`nearest`, :func:`overlay`
(intersection), :func:`clip` and :func:`summarise_by` (aggregate one layer over the zones of another).

Inputs are layer ids (tables ``layers.<id>``) or GeoDataFrames with a CRS (reprojected to EPSG:2326;
a missing CRS is an error, never guessed). ``engine=None`` picks ``postgis`` when every input is a
layer id and ``geopandas`` otherwise; ``settings`` names the database and is needed for layer ids and
the ``postgis`` engine (``Settings()`` from the environment when ``None``); ``scheduler`` is the
``dask.distributed`` address for the ``dask`` engine (``None``: a local cluster; ``"threads"`` or
``"synchronous"``: dask's in-process schedulers).

Output contract (identical for every engine)
--------------------------------------------
- A GeoDataFrame in EPSG:2326 with a RangeIndex.
- Columns: the left attribute columns unchanged (a layer's columns in table order, its primary key
  included; a frame's columns in frame order), then the right attribute columns, with ``_right``
  appended to a name the left side (or the result) already uses, then ``distance_m`` (metres) for
  :func:`within_distance` and :func:`nearest`, then ``geometry``.
- ``geometry`` is the left row's geometry; for :func:`overlay` and :func:`clip` it is the
  intersection, keeping only parts of the left geometry's dimension (polygons stay polygons: an
  edge shared by two polygons is not an overlap), one part as a single geometry, several as Multi*;
  rows whose intersection is empty are dropped.
- Rows are sorted by the left key, then the right key. The key is a layer's primary key (the order
  :func:`sdi.planning.sources.read_layer` returns) or a frame's row position.
- Unmatched left rows (``how="left"``, :func:`nearest`) have missing right columns and distance.
- Distances and areas agree within 1e-6 m between engines; predicates are exact (GEOS everywhere):
  a point on a polygon's boundary intersects it but is not within it.

:func:`summarise_by` returns one row per zone (in zone key order) or, with ``by``, per distinct
non-null value of the zone column ``by`` (zones dissolved, sorted by that value): the zone columns
(``_zone`` appended to a name the summary uses), ``count`` (source rows intersecting the zone, so a
row crossing two zones counts in both), ``<column>_<function>`` floats for ``agg``, ``area_m2``
(polygon source) or ``length_m`` (line source) of the source inside the zone, then ``geometry`` (the
zone). Zones with no source row have count 0, sums and measures 0, means/min/max missing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import psycopg
import shapely

from sdi.errors import LayerNotFoundError, PlanningError
from sdi.planning.engines import dask as dask_engine
from sdi.planning.engines import memory, postgis
from sdi.planning.engines.frames import AGGREGATES, PREDICATES, Join, Summary, dimension
from sdi.planning.sources import Engine, Source, as_frame, resolve_engine
from sdi.settings import Settings

__all__ = ["clip", "nearest", "overlay", "sjoin", "summarise_by", "within_distance"]


def _choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise PlanningError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def _distance(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise PlanningError(f"{name} must be a finite number of metres, got {value!r}")
    if value < 0:
        raise PlanningError(f"{name} must not be negative, got {value!r}")
    return float(value)


def _checked(source: object, name: str) -> Source:
    """A layer id as given, or a frame checked for a CRS and reprojected to EPSG:2326."""
    if isinstance(source, str):
        if not source:
            raise PlanningError(f"{name}: the layer id is empty")
        return source
    return as_frame(None, source, name=name)


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Put the parameter ``name`` in front of a layer-lookup error's message."""
    try:
        yield
    except LayerNotFoundError as exc:
        raise LayerNotFoundError(f"{name}: {exc}") from exc
    except PlanningError as exc:
        if str(exc).startswith(f"{name}:"):
            raise
        raise PlanningError(f"{name}: {exc}") from exc


def _side(conn: psycopg.Connection, source: Source, name: str, columns: Sequence[str] = ()) -> postgis.Side:
    with _naming(name):
        return postgis.side(conn, source, name, columns)


def _frame(conn: psycopg.Connection | None, source: Source, name: str) -> gpd.GeoDataFrame:
    with _naming(name):
        return as_frame(conn, source, name=name)


@contextmanager
def _connection(needed: bool, settings: Settings | None) -> Iterator[psycopg.Connection | None]:
    """A connection (rolled back and closed afterwards, dropping temp tables) when ``needed``, else ``None``."""
    if not needed:
        yield None
        return
    from sdi.db import connect

    conn = connect(settings if settings is not None else Settings())
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _helper(settings: Settings | None) -> psycopg.Connection:
    """A second connection to the same database, for the ``postgis`` engine to share a join's work."""
    from sdi.db import connect

    return connect(settings if settings is not None else Settings())


def _run(join: Join, left: object, right: object, names: tuple[str, str], engine: str | None,
         settings: Settings | None, scheduler: str | None) -> gpd.GeoDataFrame:
    chosen: Engine = resolve_engine(engine, (left, right))
    lsrc, rsrc = _checked(left, names[0]), _checked(right, names[1])
    if chosen == "dask":  # the tasks read the layers themselves
        return dask_engine.run_join(join, lsrc, rsrc, names, settings, scheduler)
    needs_db = chosen == "postgis" or isinstance(lsrc, str) or isinstance(rsrc, str)
    with _connection(needs_db, settings) as conn:
        if chosen == "postgis":
            assert conn is not None
            return postgis.run_join(conn, join, _side(conn, lsrc, names[0]), _side(conn, rsrc, names[1]),
                                    helper=lambda: _helper(settings))
        lframe, rframe = _frame(conn, lsrc, names[0]), _frame(conn, rsrc, names[1])
    if join.kind == "clip":
        union = shapely.union_all(np.asarray(rframe.geometry.values, dtype=object))
        rframe = gpd.GeoDataFrame(geometry=gpd.GeoSeries([union], crs=rframe.crs), crs=rframe.crs)
    return memory.run_join(join, lframe, rframe)


def sjoin(left: Source, right: Source, predicate: str = "intersects", how: str = "inner", *,
          engine: str | None = None, settings: Settings | None = None,
          scheduler: str | None = None) -> gpd.GeoDataFrame:
    """Join the rows of ``left`` and ``right`` whose geometries satisfy ``predicate(left, right)``.

    Parameters
    ----------
    left, right
        Layer ids or GeoDataFrames.
    predicate
        ``intersects`` (boundaries count), ``within`` (left inside right, not on its boundary only) or
        ``contains`` (left contains right).
    how
        ``inner`` (matching pairs only) or ``left`` (also left rows without a match, right columns missing).
    engine, settings, scheduler
        See the module docstring.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per matching pair, columns and order as in the module docstring.

    Raises
    ------
    PlanningError
        Unknown ``predicate``, ``how`` or ``engine``; a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    join = Join("sjoin", _choice("predicate", predicate, PREDICATES), _choice("how", how, ("inner", "left")))
    return _run(join, left, right, ("left", "right"), engine, settings, scheduler)


def within_distance(left: Source, right: Source, distance_m: float, *, engine: str | None = None,
                    settings: Settings | None = None, scheduler: str | None = None) -> gpd.GeoDataFrame:
    """Pairs of rows whose geometries are at most ``distance_m`` metres apart, with ``distance_m``.

    ``distance_m=0`` gives the pairs that intersect (distance 0). A pair exactly ``distance_m`` apart
    is included.

    Raises
    ------
    PlanningError
        A negative or non-finite ``distance_m``; an unknown ``engine``; a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    join = Join("within_distance", distance=_distance("distance_m", distance_m))
    return _run(join, left, right, ("left", "right"), engine, settings, scheduler)


def nearest(left: Source, right: Source, max_distance_m: float | None = None, *, engine: str | None = None,
            settings: Settings | None = None, scheduler: str | None = None) -> gpd.GeoDataFrame:
    """Each left row with its nearest right row and the ``distance_m`` between them.

    Among equally near right rows the one with the lowest key wins. Left rows with no right row
    within ``max_distance_m`` (inclusive; ``None`` = no limit) are kept with missing right columns
    and distance.

    Raises
    ------
    PlanningError
        A negative or non-finite ``max_distance_m``; an unknown ``engine``; a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    limit = None if max_distance_m is None else _distance("max_distance_m", max_distance_m)
    join = Join("nearest", how="left", distance=limit)
    return _run(join, left, right, ("left", "right"), engine, settings, scheduler)


def overlay(left: Source, right: Source, how: str = "intersection", *, engine: str | None = None,
            settings: Settings | None = None, scheduler: str | None = None) -> gpd.GeoDataFrame:
    """The intersection of each intersecting pair of rows, with the attributes of both.

    Only ``how="intersection"`` is supported. The geometry keeps the left geometry's dimension;
    pairs that only touch (e.g. along a shared edge) are dropped.

    Raises
    ------
    PlanningError
        ``how`` other than ``intersection``; an unknown ``engine``; a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    _choice("how", how, ("intersection",))
    return _run(Join("overlay"), left, right, ("left", "right"), engine, settings, scheduler)


def clip(source: Source, mask: Source, *, engine: str | None = None, settings: Settings | None = None,
         scheduler: str | None = None) -> gpd.GeoDataFrame:
    """The part of each ``source`` row inside the union of ``mask``, with the source's attributes only.

    Rows outside the mask (or only touching it with a lower-dimension part) are dropped.

    Raises
    ------
    PlanningError
        An unknown ``engine``; a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    return _run(Join("clip"), source, mask, ("source", "mask"), engine, settings, scheduler)


def _aggregates(agg: Mapping[str, str | Sequence[str]] | None,
                numeric: Mapping[str, bool]) -> tuple[tuple[str, str], ...]:
    if agg is None:
        return ()
    if not isinstance(agg, Mapping):
        raise PlanningError(f"agg must map columns to functions ({', '.join(AGGREGATES)}), got {type(agg).__name__}")
    pairs = []
    for column, functions in agg.items():
        if column not in numeric:
            raise PlanningError(f"agg: source has no column {column!r} (columns: {', '.join(numeric)})")
        if not numeric[column]:
            raise PlanningError(f"agg: source column {column!r} is not numeric")
        for function in [functions] if isinstance(functions, str) else functions:
            pairs.append((column, _choice(f"agg[{column!r}]", function, AGGREGATES)))
    return tuple(pairs)


def _check_by(by: str | None, columns: Sequence[str]) -> None:
    if by is not None and by not in columns:
        raise PlanningError(f"by: zones have no column {by!r} (columns: {', '.join(columns)})")


def summarise_by(source: Source, zones: Source, by: str | None = None,
                 agg: Mapping[str, str | Sequence[str]] | None = None, *, engine: str | None = None,
                 settings: Settings | None = None, scheduler: str | None = None) -> gpd.GeoDataFrame:
    """Aggregate ``source`` over ``zones``: count, ``agg`` of source columns, area or length inside each zone.

    Parameters
    ----------
    source
        The layer summarised (e.g. landslide points, lot polygons).
    zones
        The zones (e.g. districts); every zone (or ``by`` group) gets a row, 0 when nothing falls in it.
    by
        A zone column: zones with the same value are dissolved into one (null values are left out).
    agg
        ``{column: function or [functions]}`` over numeric source columns, functions ``sum``, ``mean``,
        ``min``, ``max``; result columns ``<column>_<function>`` (floats).
    engine, settings, scheduler
        See the module docstring.

    Raises
    ------
    PlanningError
        Unknown ``by`` column, ``agg`` column or function, a non-numeric ``agg`` column, an unknown
        ``engine``, a frame without CRS.
    LayerNotFoundError
        An unknown layer id.
    """
    chosen: Engine = resolve_engine(engine, (source, zones))
    ssrc, zsrc = _checked(source, "source"), _checked(zones, "zones")
    if chosen == "dask":  # the tasks read the source layer themselves
        return dask_engine.run_summary(ssrc, zsrc, by, agg, settings, scheduler)
    needs_db = chosen == "postgis" or isinstance(ssrc, str) or isinstance(zsrc, str)
    with _connection(needs_db, settings) as conn:
        if chosen == "postgis":
            assert conn is not None
            if isinstance(ssrc, str):
                sside = _side(conn, ssrc, "source")
                aggs = _aggregates(agg, postgis.numeric_columns(conn, sside.table))
            else:
                aggs = _aggregates(agg, _numeric(ssrc))
                sside = _side(conn, ssrc, "source", list(dict.fromkeys(c for c, _ in aggs)))
            if isinstance(zsrc, str):
                zside = _side(conn, zsrc, "zones")
                _check_by(by, zside.table.columns)
            else:
                _check_by(by, _attribute_names(zsrc))
                zside = _side(conn, zsrc, "zones", [] if by is None else [by])
            summary = Summary(by, aggs, postgis.source_dimension(conn, sside))
            return postgis.run_summary(conn, summary, sside, zside)
        sframe, zframe = _frame(conn, ssrc, "source"), _frame(conn, zsrc, "zones")
    summary = Summary(by, _aggregates(agg, _numeric(sframe)), dimension(sframe.geometry.values))
    _check_by(by, _attribute_names(zframe))
    if by is not None:
        zframe = zframe[[by, zframe.geometry.name]].dissolve(by=by, sort=True, dropna=True).reset_index()
    return memory.run_summary(summary, sframe, zframe)


def _numeric(frame: gpd.GeoDataFrame) -> dict[str, bool]:
    return {str(c): frame[c].dtype.kind in "iuf" for c in frame.columns if c != frame.geometry.name}


def _attribute_names(frame: gpd.GeoDataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c != frame.geometry.name]
