"""A checked transformation evaluated as a polynomial over Hong Kong: PROJ's answer at a fraction of the cost.

Reprojecting is the costliest step of a load: PROJ evaluates EPSG:1825 (geographic → geocentric,
Helmert, back, then the Transverse Mercator of HK1980 Grid) point by point, about 1 µs a point, and a
million polygons have some nine million points. Over Hong Kong's small extent that pipeline is a very
smooth function, so it is fitted once per source CRS (least squares, a bivariate polynomial of total
degree :data:`DEGREE` in coordinates scaled to [-1, 1]) on a lattice of points transformed by PROJ itself,
then **checked against PROJ** on a denser lattice offset from the first: the fit is used only when the
largest difference is below :data:`TOLERANCE_M` (for EPSG:4326 it is about 0.02 µm). Points outside the
fitted extent, and any CRS whose fit does not pass, go through PROJ. The transformation itself is the
one :func:`sdi.crs.reprojection` checked (never a ballpark one); only its evaluation is faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from sdi.crs import HK_GRID, HK_GRID_BOUNDS, reprojection

DEGREE = 5
#: Largest difference from PROJ (metres) at which the fit is used.
TOLERANCE_M = 1e-6
_FIT_STEPS = 41  #: lattice of the fit, per axis
_CHECK_STEPS = 97  #: lattice of the check, per axis (not aligned with the fit's)
_TERMS = tuple((i, j) for i in range(DEGREE + 1) for j in range(DEGREE + 1 - i))
_INDEX = {term: k for k, term in enumerate(_TERMS)}


@dataclass(frozen=True)
class Fit:
    """A polynomial fit of a transformation to EPSG:2326 over a box of the source CRS."""

    box: tuple[float, float, float, float]  #: xmin, ymin, xmax, ymax in the source CRS
    cx: np.ndarray  #: coefficients of easting, one per term of :data:`_TERMS`
    cy: np.ndarray  #: coefficients of northing
    error_m: float  #: largest difference from PROJ on the check lattice

    def _scaled(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xmin, ymin, xmax, ymax = self.box
        return (x - (xmin + xmax) / 2) / ((xmax - xmin) / 2), (y - (ymin + ymax) / 2) / ((ymax - ymin) / 2)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points the fit covers."""
        xmin, ymin, xmax, ymax = self.box
        return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the fit (Horner's scheme in ``u`` for each power of ``v``, then in ``v``).

        Each polynomial starts from its leading coefficient (not from zero times ``u``): for the finite
        coordinates inside the box the values are the same, with fewer passes over the arrays.
        """
        u, v = self._scaled(x, y)
        ex = np.empty_like(u)
        ey = np.empty_like(u)
        for j in range(DEGREE, -1, -1):  # sum_j v^j * P_j(u)
            top = DEGREE - j
            px: np.ndarray | float = self.cx[_INDEX[(top, j)]]
            py: np.ndarray | float = self.cy[_INDEX[(top, j)]]
            for i in range(top - 1, -1, -1):
                if i == top - 1:
                    px, py = u * px, u * py
                else:
                    px *= u
                    py *= u
                px += self.cx[_INDEX[(i, j)]]
                py += self.cy[_INDEX[(i, j)]]
            if j == DEGREE:
                ex[...] = px
                ey[...] = py
            else:
                ex *= v
                ex += px
                ey *= v
                ey += py
        return ex, ey


def _lattice(box: tuple[float, float, float, float], steps: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    xmin, ymin, xmax, ymax = box
    t = (np.arange(steps) + offset) / (steps - 1 + 2 * offset)
    gx, gy = np.meshgrid(xmin + t * (xmax - xmin), ymin + t * (ymax - ymin))
    return gx.ravel(), gy.ravel()


@lru_cache(maxsize=16)
def fit(source_epsg: int) -> Fit | None:
    """The checked fit of ``source_epsg`` → EPSG:2326 over Hong Kong, or ``None`` (then use PROJ).

    Cached per process: building and checking it costs about 10,000 PROJ evaluations.
    """
    rep = reprojection(source_epsg, HK_GRID)
    transformer: Any = rep.transformer
    if transformer is None:
        return None
    try:
        box = tuple(float(v) for v in transformer.transform_bounds(*HK_GRID_BOUNDS, densify_pts=21,
                                                                       direction="INVERSE"))
    except Exception:
        return None
    if not np.isfinite(box).all() or box[0] >= box[2] or box[1] >= box[3]:
        return None
    x, y = _lattice(box, _FIT_STEPS)  # type: ignore[arg-type]
    ex, ey = transformer.transform(x, y, errcheck=False)
    if not (np.isfinite(ex).all() and np.isfinite(ey).all()):
        return None
    probe = Fit(box, np.zeros(len(_TERMS)), np.zeros(len(_TERMS)), 0.0)  # type: ignore[arg-type]
    u, v = probe._scaled(x, y)
    design = np.column_stack([u**i * v**j for i, j in _TERMS])
    cx = np.linalg.lstsq(design, ex, rcond=None)[0]
    cy = np.linalg.lstsq(design, ey, rcond=None)[0]
    candidate = Fit(box, cx, cy, 0.0)  # type: ignore[arg-type]
    qx, qy = _lattice(box, _CHECK_STEPS, offset=0.37)  # type: ignore[arg-type]
    tx, ty = transformer.transform(qx, qy, errcheck=False)
    fx, fy = candidate(qx, qy)
    error = float(np.max(np.hypot(fx - tx, fy - ty)))
    if not error <= TOLERANCE_M:
        return None
    return Fit(box, cx, cy, error)  # type: ignore[arg-type]


def transform(source_epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``source_epsg`` → EPSG:2326 for coordinate arrays: the checked fit inside its box, PROJ elsewhere."""
    rep = reprojection(source_epsg, HK_GRID)
    transformer: Any = rep.transformer
    if transformer is None:
        return x, y
    fitted = fit(source_epsg)
    if fitted is None:
        return transformer.transform(x, y, errcheck=False)
    inside = fitted.inside(x, y)
    if inside.all():
        return fitted(x, y)
    ex, ey = np.empty_like(x), np.empty_like(y)
    ex[inside], ey[inside] = fitted(x[inside], y[inside])
    outside = ~inside
    ex[outside], ey[outside] = transformer.transform(x[outside], y[outside], errcheck=False)
    return ex, ey
