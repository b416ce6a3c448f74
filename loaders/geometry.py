"""Geometry normalisation: drop what cannot be published, reproject, repair, unify the type.

Every step counts what it did in the :class:`~loaders.report.LoadReport`; nothing is silent.
"""

from __future__ import annotations

from collections import Counter

import geopandas as gpd
import numpy as np
import shapely
from shapely import GeometryType as GT

from loaders.report import LoadReport
from sdi.crs import HK_GRID, check_hk_extent, describe_bounds, reprojection
from sdi.errors import CrsError, GeometryError
from sdi.layerdef import LayerDefinition

FAMILIES = {
    int(GT.POINT): "Point", int(GT.MULTIPOINT): "Point",
    int(GT.LINESTRING): "LineString", int(GT.LINEARRING): "LineString", int(GT.MULTILINESTRING): "LineString",
    int(GT.POLYGON): "Polygon", int(GT.MULTIPOLYGON): "Polygon",
}
MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}
_MULTI_IDS = {int(GT.MULTIPOINT), int(GT.MULTILINESTRING), int(GT.MULTIPOLYGON)}
_COLLECT = {"Point": shapely.multipoints, "LineString": shapely.multilinestrings, "Polygon": shapely.multipolygons}


def drop_unpublishable(frame: gpd.GeoDataFrame, report: LoadReport) -> gpd.GeoDataFrame:
    """Drop null, empty and non-finite geometries (counted by reason); drop Z/M to 2D (counted)."""
    geoms = frame.geometry.array
    keep = np.ones(len(frame), dtype=bool)
    null = shapely.is_missing(geoms)
    report.drop("null geometry", int(null.sum()))
    keep &= ~null
    empty = keep & shapely.is_empty(geoms)
    report.drop("empty geometry", int(empty.sum()))
    keep &= ~empty
    coords, index = shapely.get_coordinates(geoms, include_z=False, return_index=True)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        nonfinite = np.zeros(len(frame), dtype=bool)
        nonfinite[np.unique(index[bad])] = True
        nonfinite &= keep
        report.drop("NaN or infinite coordinates", int(nonfinite.sum()))
        keep &= ~nonfinite
    frame = frame.loc[keep].copy() if not keep.all() else frame
    has_z = shapely.has_z(frame.geometry.array)
    has_m = shapely.has_m(frame.geometry.array) if hasattr(shapely, "has_m") else np.zeros(len(frame), bool)
    flat = has_z | has_m
    if flat.any():
        frame.geometry.array[flat] = shapely.force_2d(frame.geometry.array[flat])
        report.repair("Z/M coordinates dropped to 2D", int(flat.sum()))
    return frame


def reproject(frame: gpd.GeoDataFrame, source_epsg: int, definition: LayerDefinition,
              report: LoadReport) -> gpd.GeoDataFrame:
    """Reproject to EPSG:2326 with the checked transformation and verify the Hong Kong extent.

    Raises
    ------
    ExtentError
        When the result lies outside Hong Kong, naming the likely cause.
    """
    rep = reprojection(source_epsg, HK_GRID)
    report.transformation = rep.description
    geoms = frame.geometry.array
    source_bounds = tuple(float(v) for v in shapely.total_bounds(geoms)) if len(frame) else None
    if rep.transformer is not None and len(frame):
        transformer = rep.transformer

        def _xy(coords: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(coords[:, 0], coords[:, 1], errcheck=False)
            return np.column_stack([x, y])

        geoms = shapely.transform(geoms, _xy)
    out = gpd.GeoDataFrame(frame.drop(columns=frame.geometry.name), geometry=geoms, crs=f"EPSG:{HK_GRID}")
    if len(out):
        bounds = tuple(float(v) for v in shapely.total_bounds(out.geometry.array))
        if not np.isfinite(bounds).all():
            hint = describe_bounds(source_bounds) if source_bounds else None  # type: ignore[arg-type]
            raise CrsError(f"{definition.label}: coordinates cannot be transformed from EPSG:{source_epsg}"
                           f" (infinite results): {hint or 'they do not fit the declared CRS'}; check source.crs"
                           f" and the axis order")
        check_hk_extent(bounds, source_bounds, source_epsg, where=definition.label)  # type: ignore[arg-type]
    return out


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


def repair(frame: gpd.GeoDataFrame, report: LoadReport) -> gpd.GeoDataFrame:
    """Repair invalid geometries with ``make_valid``, keeping each geometry's family.

    A self-intersecting polygon stays polygonal (collapsed slivers are discarded); a geometry with
    nothing of its family left is dropped. Both are counted.
    """
    geoms = frame.geometry.array
    invalid = ~shapely.is_valid(geoms)
    if not invalid.any():
        return frame
    idx = np.flatnonzero(invalid)
    fixed = shapely.make_valid(geoms[idx])
    keep = np.ones(len(frame), dtype=bool)
    out = np.array(geoms, dtype=object)
    reasons: Counter[str] = Counter()
    for i, original, repaired in zip(idx, geoms[idx], fixed, strict=True):
        family = FAMILIES.get(int(shapely.get_type_id(original)))
        result = repaired if family is None or FAMILIES.get(int(shapely.get_type_id(repaired))) == family \
            else _extract_family(repaired, family)
        reason = shapely.is_valid_reason(original).split("[")[0].strip().lower()
        if result is None or shapely.is_empty(result):
            keep[i] = False
            report.drop(f"invalid geometry ({reason}) with nothing left after repair")
        else:
            out[i] = result
            reasons[f"invalid geometry repaired ({reason})"] += 1
    for reason, count in reasons.items():
        report.repair(reason, count)
    result_frame = frame.set_geometry(gpd.GeoSeries(out, index=frame.index, crs=frame.crs))
    return result_frame.loc[keep] if not keep.all() else result_frame


def unify_type(frame: gpd.GeoDataFrame, definition: LayerDefinition, report: LoadReport) -> tuple[
        gpd.GeoDataFrame, str]:
    """Settle one geometry type for the layer, promoting singles to Multi* when parts are mixed.

    Returns
    -------
    (frame, geometry_type)
        ``geometry_type`` is a PostGIS type name such as ``MultiPolygon``, or ``Geometry``.

    Raises
    ------
    GeometryError
        For mixed families without ``geometry_type: Geometry``, or data that contradict the
        declared type.
    """
    declared = definition.geometry_type
    if declared == "Geometry":
        return frame, "Geometry"
    type_ids = shapely.get_type_id(frame.geometry.array)
    present = Counter(int(t) for t in np.unique(type_ids))
    families = {FAMILIES.get(t, "GeometryCollection") for t in present}
    if not len(frame):
        if declared is None:
            raise GeometryError(f"{definition.label}: no geometries left to publish; nothing to load")
        return frame, declared
    if len(families) > 1:
        counts = Counter(FAMILIES.get(int(t), "GeometryCollection") for t in type_ids)
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        raise GeometryError(f"{definition.label}: mixed geometry types ({shown}); set geometry_type: Geometry "
                            f"or split the source into one layer per type")
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
    if target.startswith("Multi"):
        single = ~np.isin(type_ids, list(_MULTI_IDS))
        if single.any():
            arr = frame.geometry.array.copy()
            arr[single] = [_COLLECT[family]([g]) for g in arr[single]]
            frame = frame.set_geometry(gpd.GeoSeries(arr, index=frame.index, crs=frame.crs))
            report.repair(f"promoted to {target} (layer mixes single and multi parts)", int(single.sum()))
    return frame, target
