"""Slope of a DEM at given points, the same for every engine (numpy gradients over the whole COG)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio

from sdi.errors import CrsError

HK_GRID = 2326


@lru_cache(maxsize=4)
def _slope_grid(path: str, mtime_ns: int) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as src:
        if src.crs is None or src.crs.to_epsg() != HK_GRID:
            raise CrsError(f"{path}: the DEM is in {src.crs}, not EPSG:2326 (HK1980 Grid); reload it")
        dem = src.read(1, masked=True).astype("float64").filled(np.nan)
        transform = src.transform
    # rows run north to south, so |e| is the spacing between rows and |a| between columns (metres)
    dz_dy, dz_dx = np.gradient(dem, abs(transform.e), abs(transform.a))
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    slope.setflags(write=False)
    return slope, transform


def slope_at(path: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope in degrees of the DEM at ``path`` in the cells holding the points (``x``, ``y``) in EPSG:2326.

    The slope of each cell comes from :func:`numpy.gradient` of the elevations (central differences
    inside, one-sided at the edges) with the cell sizes in metres. Points off the raster, and cells
    next to a no-data cell, give NaN.

    Raises
    ------
    CrsError
        When the raster is not in EPSG:2326.
    """
    slope, transform = _slope_grid(str(path), path.stat().st_mtime_ns)
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    cols, rows = ~transform @ (x, y)
    cols, rows = np.floor(cols), np.floor(rows)
    inside = (rows >= 0) & (rows < slope.shape[0]) & (cols >= 0) & (cols < slope.shape[1])
    out = np.full(x.shape, np.nan)
    out[inside] = slope[rows[inside].astype(np.intp), cols[inside].astype(np.intp)]
    return out
