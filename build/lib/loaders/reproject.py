"""Reprojection to EPSG:2326, chunk by chunk, with the Hong Kong extent check.

A normalised layer keeps its geometries in the source CRS until they are needed: the writer
reprojects each COPY chunk on a worker thread while the server ingests the previous one, so the
transformation (the costliest step of a load) overlaps the database's work. In-memory users call
:func:`finalise` on the whole layer. Either way, each chunk is transformed with the checked
transformation (EPSG:1825 for HK80↔WGS84), checked against Hong Kong's extent, and re-validated:
a geometry that a transformation made invalid is repaired like any other (and counted).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import shapely
from shapely import GeometryType as GT

from loaders.geometry import FAMILIES, repair_geometries
from loaders.report import LoadReport
from sdi.crs import HK_GRID, check_hk_extent, describe_bounds, reprojection
from sdi.errors import CrsError

_MULTI_IDS = {int(GT.MULTIPOINT), int(GT.MULTILINESTRING), int(GT.MULTIPOLYGON)}


class TypeChangedError(Exception):
    """A repair after reprojection produced a geometry the layer's column type cannot hold (rare).

    The pipeline then reloads with the wider type; it never reaches the user.
    """

    def __init__(self, geometry_type: str) -> None:
        super().__init__(geometry_type)
        self.geometry_type = geometry_type


def _transform_xy(transformer: Any, coords: np.ndarray) -> np.ndarray:
    """Transform an (n, 2) array; PROJ releases the GIL, so large arrays go in halves on two threads."""
    out = np.empty_like(coords)

    def part(sl: slice) -> None:
        out[sl, 0], out[sl, 1] = transformer.transform(coords[sl, 0], coords[sl, 1], errcheck=False)

    if len(coords) < 50_000:
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
        coords = _transform_xy(rep.transformer, coords)
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


def finalise(geoms: np.ndarray, source_epsg: int, geometry_type: str, report: LoadReport, *,
             where: str) -> tuple[np.ndarray, np.ndarray]:
    """Reproject a chunk to EPSG:2326 and re-validate it for a layer of ``geometry_type``.

    Returns
    -------
    (geometries, keep)
        The chunk's final geometries and a mask of the rows to keep.

    Raises
    ------
    TypeChangedError
        When a repair made a geometry that ``geometry_type`` cannot hold.
    """
    geoms = to_hk_grid(geoms, source_epsg, where=where)
    if source_epsg == HK_GRID:
        return geoms, np.ones(len(geoms), dtype=bool)  # validated (and repaired) in this CRS already
    geoms, keep = repair_geometries(geoms, report, when=" after reprojection")
    if geometry_type != "Geometry":
        type_ids = shapely.get_type_id(geoms[keep])
        families = {FAMILIES.get(int(t)) for t in np.unique(type_ids)}
        family = geometry_type.removeprefix("Multi")
        if families - {family}:
            raise TypeChangedError("Geometry")
        if not geometry_type.startswith("Multi") and np.isin(type_ids, list(_MULTI_IDS)).any():
            raise TypeChangedError(f"Multi{family}")
    return geoms, keep
