"""Reprojection to EPSG:2326 with the Hong Kong extent check, and validity checked where the data will live.

Each frame (a whole layer, or one chunk of a streamed load) is transformed with the checked
transformation (EPSG:1825 for HK80↔WGS84, evaluated through its checked polynomial fit over Hong Kong:
:mod:`loaders.fitted`), checked against Hong Kong's extent, then validated and repaired once, in
EPSG:2326: a geometry that only the transformation made invalid is repaired like any other and
counted as such (:func:`to_storage`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import shapely

from loaders import fitted
from loaders.geometry import repair_geometries
from loaders.report import LoadReport
from sdi.crs import HK_GRID, check_hk_extent, describe_bounds, reprojection
from sdi.errors import CrsError, ExtentError


def _transform_xy(source_epsg: int, coords: np.ndarray) -> np.ndarray:
    """Transform an (n, 2) array to EPSG:2326 (:func:`loaders.fitted.transform`); large arrays in halves
    on two threads (NumPy and PROJ release the GIL)."""
    out = np.empty_like(coords)

    def part(sl: slice) -> None:
        out[sl, 0], out[sl, 1] = fitted.transform(source_epsg, coords[sl, 0], coords[sl, 1])

    if len(coords) < 200_000:
        part(slice(None))
    else:
        half = len(coords) // 2
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(part, (slice(0, half), slice(half, None))))
    return out


def bounds_of(coords: np.ndarray) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) of an (n, 2) coordinate array, or ``None`` when it is empty."""
    if not len(coords):
        return None
    x, y = coords[:, 0], coords[:, 1]  # per-column reductions: much faster than min(axis=0)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def to_hk_grid(geoms: np.ndarray, source_epsg: int, *, where: str) -> np.ndarray:
    """Reproject geometries (x/y order) to EPSG:2326 and check they lie inside Hong Kong.

    Raises
    ------
    CrsError
        When coordinates cannot be transformed (for example latitudes beyond 90°: swapped axes).
    ExtentError
        When the result lies outside Hong Kong, naming the likely cause.
    """
    rep = reprojection(source_epsg, HK_GRID)
    coords = shapely.get_coordinates(geoms)
    source_bounds = bounds_of(coords)
    if rep.transformer is not None and len(coords):
        coords = _transform_xy(source_epsg, coords)
        geoms = shapely.set_coordinates(np.array(geoms, dtype=object), coords)
    bounds = bounds_of(coords)
    if bounds is not None:
        if not np.isfinite(bounds).all():
            hint = describe_bounds(source_bounds) if source_bounds else None
            raise CrsError(f"{where}: coordinates cannot be transformed from EPSG:{source_epsg} (infinite "
                           f"results): {hint or 'they do not fit the declared CRS'}; check source.crs and the "
                           f"axis order")
        check_hk_extent(bounds, source_bounds, source_epsg, where=where)
    return geoms


def to_storage(frame: gpd.GeoDataFrame, source_epsg: int, report: LoadReport, *, where: str,
               moved: np.ndarray | None = None,
               sources: Callable[[np.ndarray], np.ndarray] | None = None) -> gpd.GeoDataFrame:
    """A frame's geometries in EPSG:2326, inside Hong Kong and valid: reprojected, then repaired once.

    Validity is checked (and repaired) in the storage CRS, where the data will be used; a geometry that
    was already invalid in the source is counted by the source's reason, one that only the
    transformation made invalid as "... after reprojection" (see :func:`loaders.geometry.repair_geometries`).

    Parameters
    ----------
    moved
        Rows already in EPSG:2326 (reprojected inside their WKB by :mod:`loaders.wkbproj`); their
        extent is checked here, the others are reprojected.
    sources
        For ``moved`` rows: gives the source geometries of given row positions (to name a repair's reason).

    Raises
    ------
    CrsError, ExtentError
        As :func:`to_hk_grid`.
    """
    source = np.asarray(frame.geometry.array, dtype=object)
    if moved is None or not moved.any():
        geoms = to_hk_grid(source, source_epsg, where=where)
        originals: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = (
            None if source_epsg == HK_GRID else source)
    else:
        geoms = source.copy()
        rest = ~moved
        if rest.any():
            geoms[rest] = to_hk_grid(source[rest], source_epsg, where=where)
        done = geoms[moved]
        if len(done):
            xmin, ymin, xmax, ymax = (float(v) for v in shapely.total_bounds(done))
            try:
                check_hk_extent((xmin, ymin, xmax, ymax), None, source_epsg, where=where)
            except ExtentError:
                assert sources is not None
                raw = shapely.get_coordinates(sources(np.flatnonzero(moved)))
                check_hk_extent((xmin, ymin, xmax, ymax), bounds_of(raw), source_epsg, where=where)
                raise

        def originals_of(rows: np.ndarray) -> np.ndarray:
            out = source[rows].copy()
            mine = moved[rows]
            if mine.any():
                assert sources is not None
                out[mine] = sources(rows[mine])
            return out
        originals = originals_of
    geoms, keep = repair_geometries(geoms, report, source=originals)
    out = gpd.GeoDataFrame(frame.drop(columns=frame.geometry.name),
                           geometry=gpd.GeoSeries(geoms, index=frame.index, crs=HK_GRID), crs=HK_GRID)
    out = out.rename_geometry(frame.geometry.name) if frame.geometry.name != "geometry" else out
    return out.loc[keep] if not keep.all() else out
