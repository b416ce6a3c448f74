"""One chunk's geometries, as a streamed load stores them: in EPSG:2326, inside Hong Kong, valid, as WKB.

Two routes, one result (the same rows, coordinates, repairs and counts as a whole-file load):

* geometries whose coordinates prove them valid (:mod:`loaders.validity`: points, lines, strictly
  convex one-ring polygons), reprojected inside their WKB (:mod:`loaders.wkbproj`), are written as
  they are: no GEOS object is built for them;
* every other geometry goes through GEOS as in a whole-file load: parsed (unparseable WKB fixed and
  counted), null, empty and non-finite ones dropped, Z/M dropped to 2D, reprojected, checked against
  Hong Kong's extent, validated and repaired in EPSG:2326 (:func:`loaders.reproject.to_storage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from loaders import geometry
from loaders.batches import RawBatch, to_frame
from loaders.report import LoadReport
from loaders.reproject import to_storage
from loaders.validity import proven_valid
from loaders.wkbproj import SimpleWkb, locate_simple
from sdi.crs import HK_GRID, check_hk_extent
from sdi.errors import ExtentError

Bounds = tuple[float, float, float, float]
#: WKB type codes of simple layouts (1 Point, 2 LineString, 3 Polygon) → GEOS type ids.
_GEOS_OF_WKB = np.array([-1, 0, 1, 3], dtype=np.int8)


@dataclass
class ChunkGeometry:
    """The stored geometries of one chunk."""

    kept: np.ndarray  #: positions in the chunk of the rows kept (the others were dropped), ascending
    wkb: pa.Array  #: their geometries in EPSG:2326 as plain little-endian WKB
    codes: np.ndarray  #: their GEOS type ids
    box: Bounds | None  #: their bounds
    proven: int  #: how many were proven valid without GEOS


def _bounds(found: SimpleWkb, rows: np.ndarray) -> Bounds | None:
    """Bounds of the simple geometries ``rows`` (a mask over all geometries) from their coordinates."""
    if not rows.any():
        return None
    points = found.doubles // 2
    x, y = found.coords[0::2], found.coords[1::2]
    chosen = rows[found.simple]
    if not chosen.all():
        mask = np.repeat(chosen, points)
        x, y = x[mask], y[mask]
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def _union(a: Bounds | None, b: Bounds | None) -> Bounds | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def storage_geometry(raw: RawBatch, source_epsg: int, report: LoadReport, *, where: str) -> ChunkGeometry:
    """A chunk's geometries ready to store, recording in ``report`` what was dropped or repaired.

    Raises
    ------
    CrsError, ExtentError
        As :func:`loaders.reproject.to_storage`.
    """
    n = len(raw.wkb)
    found = locate_simple(raw.wkb, source_epsg)
    fast = proven_valid(found)
    box = _bounds(found, fast)
    if box is not None:
        try:
            check_hk_extent(box, None, source_epsg, where=where)
        except ExtentError:  # the GEOS route names the likely cause from the source coordinates
            fast[:] = False
            box = None
    codes = np.zeros(n, dtype=np.int8)
    codes[fast] = _GEOS_OF_WKB[found.kind[fast]]
    slow = np.flatnonzero(~fast)
    if not len(slow):
        return ChunkGeometry(np.arange(n), found.wkb, codes, box, n)
    start = int(raw.attrs.index[0])
    # no attributes and no CRS (the source CRS is ``source_epsg``): a small frame, cheap to build
    frame = to_frame(RawBatch(raw.attrs.iloc[slow][[]], found.wkb.take(pa.array(slow)), None), report)
    frame = geometry.drop_unpublishable(frame, report)
    rows = frame.index.to_numpy() - start
    before = pd.Series(np.asarray(frame.geometry.array, dtype=object), index=frame.index)

    def sources(positions: np.ndarray) -> np.ndarray:
        """Source geometries of rows (positions in ``frame``), from the WKB as read."""
        return shapely.from_wkb(raw.wkb.take(pa.array(rows[positions])).to_numpy(zero_copy_only=False))

    moved = found.simple[rows] if source_epsg != HK_GRID else None  # a source in EPSG:2326 is not moved
    frame = to_storage(frame, source_epsg, report, where=where, moved=moved, sources=sources)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    kept_slow = frame.index.to_numpy() - start
    reuse = found.simple[kept_slow] & np.fromiter(
        (a is b for a, b in zip(geoms, before.loc[frame.index], strict=True)), dtype=bool, count=len(geoms))
    keep = fast.copy()
    keep[kept_slow] = True
    kept = np.flatnonzero(keep)
    codes[kept_slow] = shapely.get_type_id(geoms).astype(np.int8)
    if len(geoms):
        box = _union(box, tuple(float(v) for v in shapely.total_bounds(geoms)))  # type: ignore[arg-type]
    wkb = found.wkb if len(kept) == n else found.wkb.take(pa.array(kept))
    if not reuse.all():
        fresh = np.zeros(n, dtype=bool)
        fresh[kept_slow[~reuse]] = True
        written = pa.array(shapely.to_wkb(geoms[~reuse], byte_order=1, include_srid=False), type=pa.binary())
        wkb = pc.replace_with_mask(wkb.cast(pa.binary()), pa.array(fresh[kept]), written)
    return ChunkGeometry(kept, wkb, codes[kept], box, int(fast.sum()))
