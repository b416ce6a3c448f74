"""Reprojecting simple geometries inside their WKB, for streamed loads: no GEOS object is built twice.

Parsing WKB into GEOS geometries, moving their coordinates and writing them back as WKB costs a load
about 7 µs a polygon. Most features of a large layer are simple: a Point, a LineString, or a Polygon
with one ring, written little-endian in 2D. In their WKB the coordinates are one contiguous run of
doubles after a fixed header (5, 9 or 13 bytes), so they are gathered from the Arrow buffer with NumPy,
transformed (:func:`loaders.fitted.transform`, the same function the GEOS path uses, so the numbers are
identical) and scattered back into a copy of the buffer. Every other geometry (holes, multi-part,
3D, big-endian, empty) is left untouched and marked, and goes through the GEOS path
(:func:`loaders.reproject.to_storage`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from loaders import fitted
from sdi.crs import HK_GRID

#: (WKB type code, bytes before the coordinates) of the layouts handled here.
_POINT, _LINE, _POLYGON = 1, 2, 3


def _u32(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint32 values at byte positions ``at`` (positions must leave 4 bytes)."""
    b = data[at[:, None] + np.arange(4)].astype(np.uint32)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


def transform_simple(wkb: pa.Array, source_epsg: int) -> tuple[pa.Array, np.ndarray]:
    """Transform the simple geometries of a WKB array to EPSG:2326 in place of a copy.

    Returns
    -------
    (wkb, simple)
        The WKB array with the simple geometries' coordinates in EPSG:2326 (the others as they were),
        and a mask of the simple ones.
    """
    n = len(wkb)
    simple = np.zeros(n, dtype=bool)
    if source_epsg == HK_GRID or n == 0:
        return wkb, simple
    if isinstance(wkb.type, pa.ExtensionType):
        wkb = wkb.storage
    wkb = wkb.cast(pa.binary()) if wkb.type != pa.binary() else wkb
    validity, offsets_buf, data_buf = wkb.buffers()
    if data_buf is None:
        return wkb, simple
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=wkb.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    present = lengths >= 21  # the shortest simple layout: a point
    if validity is not None:
        present &= np.asarray(wkb.is_valid())
    at = starts[present]
    kind = np.zeros(n, dtype=np.int64)
    header = np.zeros(n, dtype=np.int64)
    little = data[at] == 1
    code = _u32(data, at + 1)
    count = _u32(data, at + 5)
    size = lengths[present]
    point = little & (code == _POINT) & (size == 21)
    line = little & (code == _LINE) & (count >= 2) & (size == 9 + 16 * count.astype(np.int64))
    polygon = little & (code == _POLYGON) & (count == 1) & (size >= 13 + 16 * 4)
    if polygon.any():
        points = _u32(data, at[polygon] + 9).astype(np.int64)
        ok = size[polygon] == 13 + 16 * points
        polygon[np.flatnonzero(polygon)[~ok]] = False
    idx = np.flatnonzero(present)
    for mask, code_, skip in ((point, _POINT, 5), (line, _LINE, 9), (polygon, _POLYGON, 13)):
        kind[idx[mask]] = code_
        header[idx[mask]] = skip
    simple = kind > 0
    if not simple.any():
        return wkb, simple
    begin = starts[simple] + header[simple]
    doubles = (offsets[1:][simple] - begin) // 8
    first = np.concatenate(([0], np.cumsum(doubles)[:-1]))  # where each geometry's doubles go in ``coords``
    coords = np.empty(int(doubles.sum()), dtype="<f8")
    out = data.copy()
    groups = []
    for align in range(8):  # the runs start at any byte: read each alignment through its own float64 view
        sel = begin % 8 == align
        if not sel.any():
            continue
        lens = doubles[sel]
        within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        src = np.repeat((begin[sel] - align) // 8, lens) + within
        dst = np.repeat(first[sel], lens) + within
        usable = (len(data) - align) // 8 * 8
        coords[dst] = data[align:align + usable].view("<f8")[src]
        groups.append((align, usable, src, dst))
    x, y = fitted.transform(source_epsg, coords[0::2].copy(), coords[1::2].copy())
    coords[0::2], coords[1::2] = x, y
    for align, usable, src, dst in groups:
        out[align:align + usable].view("<f8")[src] = coords[dst]
    patched = pa.Array.from_buffers(pa.binary(), n, [validity, offsets_buf, pa.py_buffer(out)], offset=wkb.offset)
    return patched, simple
