"""Reprojecting simple geometries inside their WKB, for streamed loads: no GEOS object is built twice.

Parsing WKB into GEOS geometries, moving their coordinates and writing them back as WKB costs a load
about 7 µs a polygon. Most features of a large layer are simple: a Point, a LineString, or a Polygon
with one ring, written little-endian in 2D. In their WKB the coordinates are one contiguous run of
doubles after a fixed header (5, 9 or 13 bytes), so they are gathered from the Arrow buffer with NumPy,
transformed (:func:`loaders.fitted.transform`, the same function the GEOS path uses, so the numbers are
identical) and scattered back into a copy of the buffer; the coordinates are kept for the proof of
validity (:mod:`loaders.validity`). Every other geometry (holes, multi-part, 3D, big-endian, empty)
is left untouched, and goes through the GEOS path (:mod:`loaders.chunk_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class SimpleWkb:
    """A WKB array with its simple geometries located, and reprojected inside the buffer (unless already in
    EPSG:2326)."""

    wkb: pa.Array  #: the geometries, the simple ones with their coordinates in EPSG:2326
    simple: np.ndarray  #: mask of the simple geometries
    kind: np.ndarray  #: per geometry: its WKB type code (1, 2 or 3) when simple, else 0
    coords: np.ndarray  #: the simple geometries' coordinates, x y x y ..., in file order
    first: np.ndarray  #: per simple geometry: index of its first double in ``coords``
    doubles: np.ndarray  #: per simple geometry: number of doubles in ``coords``


def locate_simple(wkb: pa.Array, source_epsg: int) -> SimpleWkb:
    """Find the simple geometries of a WKB array and transform their coordinates to EPSG:2326 in a copy.

    A source already in EPSG:2326 is left as it is; its simple geometries are still located (their
    coordinates are what :mod:`loaders.validity` checks).
    """
    n = len(wkb)
    none = SimpleWkb(wkb, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int8), np.empty(0), np.empty(0, dtype=np.int64),
                     np.empty(0, dtype=np.int64))
    if n == 0:
        return none
    if isinstance(wkb.type, pa.ExtensionType):
        wkb = wkb.storage
    wkb = wkb.cast(pa.binary()) if wkb.type != pa.binary() else wkb
    none.wkb = wkb
    validity, offsets_buf, data_buf = wkb.buffers()
    if data_buf is None:
        return none
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=wkb.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    present = lengths >= 21  # the shortest simple layout: a point
    if validity is not None:
        present &= np.asarray(wkb.is_valid())
    at = starts[present]
    kind = np.zeros(n, dtype=np.int8)
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
        return SimpleWkb(wkb, simple, kind, none.coords, none.first, none.doubles)
    begin = starts[simple] + header[simple]
    doubles = (offsets[1:][simple] - begin) // 8
    first = np.concatenate(([0], np.cumsum(doubles)[:-1])).astype(np.int64)  # each geometry's doubles in ``coords``
    coords = np.empty(int(doubles.sum()), dtype="<f8")
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
    if source_epsg == HK_GRID:
        return SimpleWkb(wkb, simple, kind, coords, first, doubles)
    x, y = fitted.transform(source_epsg, coords[0::2].copy(), coords[1::2].copy())
    coords[0::2], coords[1::2] = x, y
    out = data.copy()
    for align, usable, src, dst in groups:
        out[align:align + usable].view("<f8")[src] = coords[dst]
    patched = pa.Array.from_buffers(pa.binary(), n, [validity, offsets_buf, pa.py_buffer(out)], offset=wkb.offset)
    return SimpleWkb(patched, simple, kind, coords, first, doubles)

