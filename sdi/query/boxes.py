"""Boxes in any served CRS as exact EPSG:2326 polygons in SQL: clipped to where the data can be, then densified.

A box in longitude/latitude (or Web Mercator) is a curved shape in the Hong Kong 1980 Grid. Transforming its
four corners would cut the curve short (a parallel bows by up to a metre across a 0.1° box, tens of metres
across the territory), so each side is split into :data:`SEGMENTS_PER_SIDE` segments first: the chords then
stay within millimetres of the curve. Before that the box is clipped to :data:`DOMAINS`, a generous frame round
Hong Kong in that CRS, because every geometry in ``layers`` lies inside Hong Kong (the loader refuses anything
else), and a transverse Mercator grid is meaningless for the far side of the world: ``bbox=-180,-90,180,90``
becomes the frame and selects every feature, quickly.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from sdi.crs import HK_GRID, WEB_MERCATOR, WGS84_GEOG
from sdi.errors import QueryError

SEGMENTS_PER_SIDE = 32
#: Boxes (x/y order) that hold all of Hong Kong with a wide margin, per SRID: lon 109–120, lat 17–27.
DOMAINS: dict[int, tuple[float, float, float, float]] = {
    WGS84_GEOG: (109.0, 17.0, 120.0, 27.0),
    WEB_MERCATOR: (12_133_824.0, 1_920_825.0, 13_358_339.0, 3_123_471.0),
    HK_GRID: (200_000.0, 200_000.0, 1_500_000.0, 1_500_000.0),
}


def check_geographic(box: tuple[float, float, float, float], geographic: bool, name: str, axes: str) -> None:
    """Refuse (:class:`QueryError` naming ``name``) a box (x/y order) in a geographic CRS that leaves the globe:
    longitudes outside −180…180 or latitudes outside −90…90 (``axes``: the CRS's axis order, for the message)."""
    x0, y0, x1, y1 = box
    if geographic and not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
        raise QueryError(f"{name}: longitude must lie in −180…180 and latitude in −90…90 ({axes})")


def clip(box: tuple[float, float, float, float], srid: int) -> tuple[float, float, float, float] | None:
    """``box`` (x/y order, in ``srid``) cut to that SRID's domain; ``None`` when nothing is left."""
    domain = DOMAINS.get(srid)
    if domain is None:
        return box
    x0, y0 = max(box[0], domain[0]), max(box[1], domain[1])
    x1, y1 = min(box[2], domain[2]), min(box[3], domain[3])
    return (x0, y0, x1, y1) if x0 <= x1 and y0 <= y1 else None


def box_sql(box: tuple[float, float, float, float], srid: int, params: dict[str, Any], prefix: str,
            target_srid: int = HK_GRID) -> sql.Composable | None:
    """An SQL geometry for ``box`` (x/y order in ``srid``) in ``target_srid``; ``None`` when it misses Hong Kong.

    The corners are bound as ``<prefix>0..3`` in ``params``. Under the custom plans the API's connections
    use (``plan_cache_mode = force_custom_plan``), PostgreSQL folds the whole expression into one constant
    while planning, so it is transformed once per statement and the planner sees the real box.
    """
    clipped = clip(box, srid)
    if clipped is None:
        return None
    names = [f"{prefix}{i}" for i in range(4)]
    params.update(zip(names, clipped, strict=True))
    envelope: sql.Composable = sql.SQL("st_makeenvelope({}, {}, {}, {}, {})").format(
        *(sql.Placeholder(n) for n in names), sql.Literal(srid))
    if srid == target_srid:
        return envelope
    step = max(clipped[2] - clipped[0], clipped[3] - clipped[1]) / SEGMENTS_PER_SIDE
    if step > 0:
        params[f"{prefix}s"] = step
        envelope = sql.SQL("st_segmentize({}, {})").format(envelope, sql.Placeholder(f"{prefix}s"))
    return sql.SQL("st_transform({}, {})").format(envelope, sql.Literal(target_srid))
