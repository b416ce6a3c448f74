"""Geometries proven valid from their coordinates alone, so that a streamed load builds no GEOS object for them.

Checking validity with GEOS means parsing every geometry's WKB into a GEOS object and running its
validity test, about 2 µs a polygon, most of it holding Python's GIL. Most features of a large layer
are simple (:mod:`loaders.wkbproj`) and many of those can be proven valid with a few vectorised NumPy
passes over the coordinates already in hand:

* a **Point** with finite coordinates;
* a **LineString** with finite coordinates and at least two distinct points;
* a one-ring **Polygon** whose ring is closed, finite and *strictly convex with one turn*: at every
  vertex it turns the same way, with the sign of each turn (an orientation determinant) certain under
  Shewchuk's floating-point error bound, and the direction of its edges goes round once (it passes
  from the fourth quadrant to the first exactly once). Such a ring is simple, so GEOS finds it valid.

The test is one-sided: ``True`` is a proof, ``False`` means "not proven" (a concave or nearly degenerate
ring, repeated points, a self-intersection...), and those geometries go through GEOS as before
(:func:`loaders.reproject.to_storage`), which decides, repairs and names the reason.
"""

from __future__ import annotations

import numpy as np

from loaders.wkbproj import SimpleWkb

#: Shewchuk's bound on the error of a floating-point orientation determinant, (3 + 16ε)ε, rounded up.
_ORIENT_ERROR = 3.3306690738754716e-16 * 1.01


def _sums(flags: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """For each run ``first[i]..last[i]`` (inclusive) of ``flags`` (booleans), how many are True."""
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return total[last + 1] - total[first]


def _turns(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, cx: np.ndarray,
           cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a→b→c certainly turns left, and where it certainly turns right (Shewchuk's orient2d with its
    error bound: a sign is trusted only when the determinant exceeds the bound)."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    det = left - right
    bound = _ORIENT_ERROR * (np.abs(left) + np.abs(right))
    return det > bound, -det > bound


def _quadrants(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The quadrant (0-3) of each edge direction, half-open intervals [0°, 90°), [90°, 180°), ... (exact)."""
    upper = (dy > 0) | ((dy == 0) & (dx > 0))
    return np.where(upper, dx <= 0, 2 + (dx >= 0)).astype(np.int8)


def proven_valid(found: SimpleWkb) -> np.ndarray:
    """Which geometries of ``found`` are proven valid, finite and two-dimensional (see the module docstring).

    All the tests run on the flat coordinate arrays (values at the joins between geometries are
    computed and ignored), so the cost is a few passes over the coordinates.

    Parameters
    ----------
    found
        A WKB array with its simple geometries located (:func:`loaders.wkbproj.locate_simple`), their
        coordinates as they will be stored.

    Returns
    -------
    numpy.ndarray
        A mask over all the geometries; geometries that are not simple are never proven.
    """
    out = np.zeros(len(found.simple), dtype=bool)
    rows = np.flatnonzero(found.simple)
    if not len(rows):
        return out
    x, y = found.coords[0::2], found.coords[1::2]
    first = found.first // 2
    points = found.doubles // 2
    last = first + points - 1
    kind = found.kind[rows]
    proven = _sums(~(np.isfinite(x) & np.isfinite(y)), first, last) == 0
    proven &= kind != 0
    lines = np.flatnonzero(proven & (kind == 2))
    if len(lines):  # at least two distinct points: some edge of non-zero length
        moves = np.concatenate([(x[1:] != x[:-1]) | (y[1:] != y[:-1]), [False]])
        proven[lines] = _sums(moves, first[lines], last[lines] - 1) > 0
    rings = np.flatnonzero(proven & (kind == 3))
    if len(rings):
        s, e = first[rings], last[rings]
        closed = (points[rings] >= 4) & (x[s] == x[e]) & (y[s] == y[e])
        # turns at the vertices inside each ring (position k: edges k-1 and k), then at its first vertex
        ccw, cw = _turns(x[:-2], y[:-2], x[1:-1], y[1:-1], x[2:], y[2:])
        q = _quadrants(x[1:] - x[:-1], y[1:] - y[:-1])
        down, up = q[1:] < q[:-1], q[1:] > q[:-1]  # the direction passes 360° (left turns) / 0° (right turns)
        pad = np.zeros(1, dtype=bool)
        inner_ccw, inner_cw = (_sums(np.concatenate([pad, f, pad]), s + 1, e - 1) for f in (ccw, cw))
        inner_down, inner_up = (_sums(np.concatenate([pad, f, pad]), s + 1, e - 1) for f in (down, up))
        p = e - 1  # the vertex before the first (the last point repeats the first)
        wrap_ccw, wrap_cw = _turns(x[p], y[p], x[s], y[s], x[s + 1], y[s + 1])
        wrap_down, wrap_up = q[s] < q[p], q[s] > q[p]
        vertices = points[rings] - 1
        left = (inner_ccw + wrap_ccw == vertices) & (inner_down + wrap_down == 1)
        right = (inner_cw + wrap_cw == vertices) & (inner_up + wrap_up == 1)
        proven[rings] = closed & (left | right)
    out[rows] = proven
    return out
