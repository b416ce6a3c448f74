"""Geometry normalisation: drop what cannot be published, repair, unify the type.

Reprojection to EPSG:2326 is in :mod:`loaders.reproject`.

Every step counts what it did in the :class:`~loaders.report.LoadReport`; nothing is silent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import shapely
from shapely import GeometryType as GT

from loaders.report import LoadReport
from sdi.errors import GeometryError
from sdi.layerdef import LayerDefinition

FAMILIES = {
    int(GT.POINT): "Point", int(GT.MULTIPOINT): "Point",
    int(GT.LINESTRING): "LineString", int(GT.LINEARRING): "LineString", int(GT.MULTILINESTRING): "LineString",
    int(GT.POLYGON): "Polygon", int(GT.MULTIPOLYGON): "Polygon",
}
MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}
_MULTI_IDS = {int(GT.MULTIPOINT), int(GT.MULTILINESTRING), int(GT.MULTIPOLYGON)}
_COLLECT = {"Point": shapely.multipoints, "LineString": shapely.multilinestrings, "Polygon": shapely.multipolygons}


def _parallel(fn: Callable[[np.ndarray], np.ndarray], geoms: np.ndarray) -> np.ndarray:
    """Apply a GIL-releasing shapely function to halves of a large array on two threads."""
    if len(geoms) < 20_000:
        return fn(geoms)
    half = len(geoms) // 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(fn, (geoms[:half], geoms[half:]))
    return np.concatenate([first, second])


def drop_unpublishable(frame: gpd.GeoDataFrame, report: LoadReport) -> gpd.GeoDataFrame:
    """Drop null, empty and NaN/infinite geometries (counted by reason); drop Z/M to 2D (counted)."""
    geoms = np.asarray(frame.geometry.array, dtype=object)
    null = shapely.is_missing(geoms)
    report.drop("null geometry", int(null.sum()))
    empty = ~null & shapely.is_empty(geoms)
    report.drop("empty geometry", int(empty.sum()))
    keep = ~(null | empty)
    if not np.isfinite(shapely.get_coordinates(geoms[keep])).all():
        coords, index = shapely.get_coordinates(geoms, return_index=True)
        nonfinite = np.zeros(len(geoms), dtype=bool)
        nonfinite[np.unique(index[~np.isfinite(coords).all(axis=1)])] = True
        nonfinite &= keep
        report.drop("NaN or infinite coordinates", int(nonfinite.sum()))
        keep &= ~nonfinite
    if not keep.all():
        geoms = geoms[keep]
        frame = frame.loc[keep]
    flat = shapely.has_z(geoms)
    if hasattr(shapely, "has_m"):
        flat |= shapely.has_m(geoms)
    if flat.any():
        geoms = geoms.copy()
        geoms[flat] = shapely.force_2d(geoms[flat])
        frame = frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))
        report.repair("Z/M coordinates dropped to 2D", int(flat.sum()))
    return frame


def _extract_family(geom: shapely.Geometry, family: str) -> shapely.Geometry | None:
    parts = shapely.get_parts(geom)
    while True:  # flatten nested collections
        nested = [p for p in parts if shapely.get_type_id(p) == int(GT.GEOMETRYCOLLECTION)]
        if not nested:
            break
        parts = np.concatenate([[p for p in parts if p not in nested]] + [shapely.get_parts(n) for n in nested])
    singles = []
    for part in parts:
        if FAMILIES.get(int(shapely.get_type_id(part))) == family and not shapely.is_empty(part):
            singles.extend(shapely.get_parts(part))
    if not singles:
        return None
    return singles[0] if len(singles) == 1 else _COLLECT[family](singles)


def repair_geometries(geoms: np.ndarray, report: LoadReport, *,
                      source: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Repair invalid geometries with ``make_valid``, keeping each geometry's family.

    A self-intersecting polygon stays polygonal (collapsed slivers are discarded); a geometry with
    nothing of its family left is dropped. Both are counted, by GEOS's reason. ``source`` holds the
    same geometries before reprojection (or a function giving them for given row positions): a
    geometry invalid only after it is counted as "... after reprojection", one already invalid in the
    source by the source's reason.

    Returns
    -------
    (geometries, keep)
        The repaired array (same length) and a mask of the rows to keep.
    """
    keep = np.ones(len(geoms), dtype=bool)
    invalid = ~_parallel(shapely.is_valid, geoms)
    if not invalid.any():
        return geoms, keep
    idx = np.flatnonzero(invalid)
    fixed = shapely.make_valid(geoms[idx])
    originals = None if source is None else (source(idx) if callable(source) else source[idx])
    before = np.zeros(len(idx), dtype=bool) if originals is None else shapely.is_valid(originals)
    out = np.array(geoms, dtype=object)
    reasons: Counter[str] = Counter()
    for k, (i, original, repaired, was_valid) in enumerate(zip(idx, geoms[idx], fixed, before, strict=True)):
        family = FAMILIES.get(int(shapely.get_type_id(original)))
        result = repaired if family is None or FAMILIES.get(int(shapely.get_type_id(repaired))) == family \
            else _extract_family(repaired, family)
        basis = original if originals is None or was_valid else originals[k]
        reason = shapely.is_valid_reason(basis).split("[")[0].strip().lower()
        when = " after reprojection" if was_valid else ""
        if result is None or shapely.is_empty(result):
            keep[i] = False
            report.drop(f"invalid geometry ({reason}){when} with nothing left after repair")
        else:
            out[i] = result
            reasons[f"invalid geometry repaired ({reason}){when}"] += 1
    for reason, count in reasons.items():
        report.repair(reason, count)
    return out, keep


def repair(frame: gpd.GeoDataFrame, report: LoadReport) -> gpd.GeoDataFrame:
    """Repair a frame's invalid geometries (see :func:`repair_geometries`), dropping what cannot be."""
    geoms, keep = repair_geometries(np.asarray(frame.geometry.array, dtype=object), report)
    if keep.all() and geoms is frame.geometry.array:
        return frame
    fixed = frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))
    return fixed.loc[keep] if not keep.all() else fixed


def promote_to_multi(geoms: np.ndarray) -> np.ndarray:
    """Return ``geoms`` with every single part (Point, LineString, Polygon) wrapped in its Multi* type."""
    out = np.asarray(geoms, dtype=object).copy()
    type_ids = shapely.get_type_id(out)
    for single, family in ((int(GT.POINT), "Point"), (int(GT.LINESTRING), "LineString"),
                           (int(GT.POLYGON), "Polygon")):
        mask = type_ids == single
        if mask.any():
            out[mask] = _COLLECT[family](out[mask], indices=np.arange(int(mask.sum())))
    return out


def type_counts(geoms: np.ndarray) -> Counter[int]:
    """How many geometries of each GEOS type id ``geoms`` holds (what :func:`settle_type` decides on)."""
    ids, counts = np.unique(shapely.get_type_id(np.asarray(geoms)), return_counts=True)
    return Counter({int(t): int(c) for t, c in zip(ids, counts, strict=True)})


def unify_type(frame: gpd.GeoDataFrame, definition: LayerDefinition, report: LoadReport, *,
               override: str | None = None) -> tuple[str, bool]:
    """Settle one geometry type for the layer from all its geometries (see :func:`settle_type`)."""
    return settle_type(type_counts(np.asarray(frame.geometry.array)), definition, report, override=override)


def settle_type(present: Counter[int], definition: LayerDefinition, report: LoadReport | None, *,
                override: str | None = None, seen: str = "") -> tuple[str, bool]:
    """Settle one geometry type for the layer from the counts of its geometry types.

    When a layer mixes single and multi parts (or declares a Multi* type), single parts are to be
    promoted: that is counted here (in ``report``, when given) and done by the writer at the EWKB
    level (or in memory by :func:`promote_to_multi`), so a million polygons are not rebuilt one by one.
    A streamed load calls this after each chunk with the counts so far (``report=None``, so nothing
    is noted twice; ``seen`` says how far it got, for error messages) and once more at the end.

    Returns
    -------
    (geometry_type, promote)
        ``geometry_type`` is a PostGIS type name such as ``MultiPolygon``, or ``Geometry``;
        ``promote`` says whether single parts must become Multi*.

    Raises
    ------
    GeometryError
        For mixed families without ``geometry_type: Geometry``, or data that contradict the
        declared type.
    """
    declared = override or definition.geometry_type
    if declared == "Geometry":
        return "Geometry", False
    present = +present  # drop zero counts
    families = {FAMILIES.get(t, "GeometryCollection") for t in present}
    if not present:
        if declared is None:
            raise GeometryError(f"{definition.label}: no geometries left to publish; nothing to load")
        return declared, declared.startswith("Multi")
    if len(families) > 1:
        counts: Counter[str] = Counter()
        for t, n in present.items():
            counts[FAMILIES.get(t, "GeometryCollection")] += n
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        raise GeometryError(f"{definition.label}: mixed geometry types ({shown}{seen}); set geometry_type: "
                            f"Geometry or split the source into one layer per type")
    family = families.pop()
    if family == "GeometryCollection":
        raise GeometryError(f"{definition.label}: geometry collections cannot be published as a typed layer; "
                            f"set geometry_type: Geometry")
    has_multi = any(t in _MULTI_IDS for t in present)
    target: str
    if declared is not None:
        if declared.removeprefix("Multi") != family:
            raise GeometryError(f"{definition.label}: geometry_type {declared} but the data are {family}s")
        target = declared
        if not declared.startswith("Multi") and has_multi:
            raise GeometryError(f"{definition.label}: geometry_type {declared} but some features are "
                                f"{MULTI[family]}; declare {MULTI[family]}")
    else:
        target = MULTI[family] if has_multi else family
    promote = target.startswith("Multi")
    if promote and report is not None:
        singles = sum(n for t, n in present.items() if t not in _MULTI_IDS)
        reason = "declared" if declared else "the layer mixes single and multi parts"
        if singles:
            report.note(f"{singles:,} single parts written as one-part {target} ({reason})")
    return target, promote
