"""Site screening the way an analyst writes it in plain GeoPandas: the baseline and cross-check of ``sdi.planning``.

This module deliberately uses NO ``sdi.planning`` code. It reads the criteria as a plain dict (the parsed
YAML of ``sdi/planning/criteria/data_centre.yml``) and applies each criterion with its own textbook
GeoPandas operation, reusing nothing between criteria:

* ``in_zone``: ``sjoin`` of the lot centroids ``within`` the matching zones;
* ``contains``: ``sjoin`` of the lots ``covers`` the matching points;
* ``min_area``: the polygon area;
* ``exclude_within`` at 0 m: ``overlay`` (intersection, every geometry type kept, so lots that merely
  touch count) for the first such criterion, ``sjoin(predicate="intersects")`` for the others;
  at a distance: ``sjoin(predicate="dwithin", distance=d)`` (exact; ``buffer`` + ``sjoin`` would
  miss lots within the buffer's chord error of the limit, up to 1.2 m at 1 km with 16 segments);
* ``distance_to``: ``sjoin_nearest`` with ``distance_col`` from the lot polygon;
* ``area``: the polygon area; ``slope``: the DEM's numpy gradient, in degrees, at the pixel under the
  lot centroid (``rasterio.transform.rowcol``).

Scores are linear between the two anchors and clipped to [0, 1]; the total is ``100 * sum(w*s) / sum(w)``
rounded to 6 decimals, ranked descending with ties broken by the label ascending. Inputs are
GeoDataFrames in EPSG:2326 keyed by layer id.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.transform

HK_GRID = 2326


def _matching(frame: gpd.GeoDataFrame, where: Mapping[str, Any] | None) -> gpd.GeoDataFrame:
    """Rows of ``frame`` that pass a ``where`` filter (``in`` / ``contains`` / ``min`` / ``max``)."""
    if not where:
        return frame
    column = frame[where["column"]]
    if "in" in where:
        return frame[column.isin(where["in"])]
    if "contains" in where:
        return frame[column.astype("string").str.contains(str(where["contains"]), case=False, regex=False)
                     .fillna(False).astype(bool)]
    if "min" in where:
        return frame[pd.to_numeric(column) >= where["min"]]
    if "max" in where:
        return frame[pd.to_numeric(column) <= where["max"]]
    raise ValueError(f"where {dict(where)!r}: expected one of in, contains, min, max")


def _passes(lots: gpd.GeoDataFrame, rule: Mapping[str, Any], layers: Mapping[str, gpd.GeoDataFrame],
            state: dict[str, bool]) -> np.ndarray:
    """Boolean array over ``lots`` (positional index): does each lot pass this constraint?"""
    kind = rule.get("type")
    if "any_of" in rule:
        passed = np.zeros(len(lots), dtype=bool)
        for member in rule["any_of"]:
            passed |= _passes(lots, member, layers, state)
        return passed
    if kind == "min_area":
        return np.asarray(lots.geometry.area >= rule["min_m2"])
    other = _matching(layers[rule["layer"]], rule.get("where"))[["geometry"]]
    hit = np.zeros(len(lots), dtype=bool)
    if kind == "in_zone":
        centroids = gpd.GeoDataFrame(geometry=lots.geometry.centroid, crs=lots.crs)
        joined = gpd.sjoin(centroids, other, predicate="within", how="inner")
        hit[joined.index.unique()] = True
        return hit
    if kind == "contains":
        joined = gpd.sjoin(lots[["geometry"]], other, predicate="covers", how="inner")
        hit[joined.index.unique()] = True
        return hit
    if kind == "exclude_within":
        distance = float(rule.get("distance_m", 0))
        if distance > 0:
            joined = gpd.sjoin(lots[["geometry"]], other, predicate="dwithin", distance=distance, how="inner")
            hit[joined.index.unique()] = True
        elif not state.get("overlay_used"):
            state["overlay_used"] = True
            pieces = gpd.overlay(lots[["geometry"]].assign(_lot=np.arange(len(lots))), other,
                                 how="intersection", keep_geom_type=False)
            hit[pieces["_lot"].unique()] = True
        else:
            joined = gpd.sjoin(lots[["geometry"]], other, predicate="intersects", how="inner")
            hit[joined.index.unique()] = True
        return ~hit
    raise ValueError(f"constraint {rule.get('id')!r}: unknown type {kind!r}")


def _linear(value: np.ndarray, zero_at: float, full_at: float) -> np.ndarray:
    """0 at ``zero_at``, 1 at ``full_at``, linear between, clipped to [0, 1]; NaN values score 0."""
    score = np.clip((np.asarray(value, dtype=float) - zero_at) / (full_at - zero_at), 0.0, 1.0)
    return np.nan_to_num(score, nan=0.0)


def dem_slope_at(dem: Path, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Slope in degrees of the DEM at points: numpy gradient of the whole band, read at the pixel under each point.

    Points off the raster, or where the slope is undefined (NaN pixels around), give NaN.
    """
    with rasterio.open(dem) as src:
        band = src.read(1, masked=True).filled(np.nan).astype("float64")
        transform = src.transform
        if src.crs is None or src.crs.to_epsg() != HK_GRID:
            raise ValueError(f"{dem}: expected a raster in EPSG:{HK_GRID}, got {src.crs}")
    dz_row, dz_col = np.gradient(band, abs(transform.e), abs(transform.a))
    slope = np.degrees(np.arctan(np.hypot(dz_row, dz_col)))
    rows, cols = rasterio.transform.rowcol(transform, xs, ys)
    rows, cols = np.asarray(rows), np.asarray(cols)
    inside = (rows >= 0) & (rows < slope.shape[0]) & (cols >= 0) & (cols < slope.shape[1])
    out = np.full(len(xs), np.nan)
    out[inside] = slope[rows[inside], cols[inside]]
    return out


def _score(lots: gpd.GeoDataFrame, rule: Mapping[str, Any], layers: Mapping[str, gpd.GeoDataFrame],
           dem: Path | None) -> np.ndarray | None:
    """Score in [0, 1] of each lot for one score rule (``None`` when a slope score has no DEM)."""
    kind = rule["type"]
    if kind == "area":
        return _linear(lots.geometry.area.to_numpy(), rule["zero_at_m2"], rule["full_at_m2"])
    if kind == "distance_to":
        other = _matching(layers[rule["layer"]], rule.get("where"))[["geometry"]]
        if other.empty:
            return np.zeros(len(lots))
        joined = gpd.sjoin_nearest(lots[["geometry"]], other, how="left", distance_col="_dist")
        dist = joined["_dist"].groupby(level=0).min().reindex(range(len(lots))).to_numpy()
        return _linear(dist, rule["zero_at_m"], rule["full_at_m"])
    if kind == "slope":
        if dem is None:
            return None
        centroids = lots.geometry.centroid
        return _linear(dem_slope_at(dem, centroids.x.to_numpy(), centroids.y.to_numpy()),
                       rule["zero_at_deg"], rule["full_at_deg"])
    raise ValueError(f"score {rule.get('id')!r}: unknown type {kind!r}")


def screen(criteria: Mapping[str, Any], layers: Mapping[str, gpd.GeoDataFrame], *, dem: Path | None = None,
           weights: Mapping[str, float] | None = None) -> gpd.GeoDataFrame:
    """Screen and rank the candidate sites.

    Parameters
    ----------
    criteria
        The parsed criteria YAML (``candidates``, ``districts``, ``constraints``, ``scores``).
    layers
        GeoDataFrames in EPSG:2326 keyed by layer id: the candidates layer and every layer a criterion names.
    dem
        Path of the slope raster (EPSG:2326); ``None`` skips ``slope`` scores (their weight leaves the total).
    weights
        Score weights overriding the criteria's, by score id.

    Returns
    -------
    geopandas.GeoDataFrame
        The passing sites ordered by rank: ``rank``, ``site``, ``score``, ``district``, ``area_m2``,
        ``score_<id>`` per score, ``geometry``.
    """
    for layer_id, frame in layers.items():
        if frame.crs is None or frame.crs.to_epsg() != HK_GRID:
            raise ValueError(f"layer {layer_id!r}: expected EPSG:{HK_GRID}, got {frame.crs}")
    spec = criteria["candidates"]
    lots = layers[spec["layer"]].reset_index(drop=True)
    state: dict[str, bool] = {}
    keep = np.ones(len(lots), dtype=bool)
    for rule in criteria.get("constraints", []):
        keep &= _passes(lots, rule, layers, state)
    sites = lots[keep].reset_index(drop=True)

    total = np.zeros(len(sites))
    weight_sum = 0.0
    score_cols: dict[str, np.ndarray] = {}
    for rule in criteria.get("scores", []):
        values = _score(sites, rule, layers, dem)
        if values is None:
            continue
        weight = float((weights or {}).get(rule["id"], rule["weight"]))
        score_cols[f"score_{rule['id']}"] = values
        total += weight * values
        weight_sum += weight
    score = np.round(100.0 * total / weight_sum, 6) if weight_sum else np.zeros(len(sites))

    districts_spec = criteria["districts"]
    districts = layers[districts_spec["layer"]][[districts_spec["name"], "geometry"]]
    centroids = gpd.GeoDataFrame(geometry=sites.geometry.centroid, crs=sites.crs)
    in_district = gpd.sjoin(centroids, districts, predicate="within", how="left")
    district = in_district[districts_spec["name"]].groupby(level=0).first().reindex(range(len(sites)))

    result = gpd.GeoDataFrame({
        "site": sites[spec["label"]].to_numpy(),
        "score": score,
        "district": district.to_numpy(),
        "area_m2": sites.geometry.area.to_numpy(),
        **score_cols,
    }, geometry=sites.geometry.to_numpy(), crs=HK_GRID)
    result = result.sort_values(["score", "site"], ascending=[False, True], kind="stable").reset_index(drop=True)
    result.insert(0, "rank", np.arange(1, len(result) + 1))
    return result


# --- harness: inputs and the agreement check, shared by the benchmark and tests/planning/test_naive_agrees.py ---


def layer_ids(criteria: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The vector layer ids and the raster layer ids the criteria name."""
    vectors = {criteria["candidates"]["layer"], criteria["districts"]["layer"]}
    rasters: set[str] = set()

    def visit(rule: Mapping[str, Any]) -> None:
        for member in rule.get("any_of", []):
            visit(member)
        if "layer" in rule:
            vectors.add(rule["layer"])
        if "raster" in rule:
            rasters.add(rule["raster"])

    for rule in [*criteria.get("constraints", []), *criteria.get("scores", [])]:
        visit(rule)
    return vectors, rasters


def read_inputs(database_url: str, vectors: set[str]) -> dict[str, gpd.GeoDataFrame]:
    """Read whole ``layers.<id>`` tables with plain ``geopandas.read_postgis`` (geometry column ``geometry``)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(database_url))
    try:
        return {layer_id: gpd.read_postgis(sql.SQL("select * from {}").format(
                    sql.Identifier("layers", layer_id)).as_string(None), engine, geom_col="geom")
                .rename_geometry("geometry") for layer_id in sorted(vectors)}
    finally:
        engine.dispose()


def disagreement(expected: pd.DataFrame, got: pd.DataFrame, tolerance: float = 1e-6) -> str | None:
    """Why ``got`` differs from ``expected`` (sites in rank order, ranks 1..n, scores within ``tolerance``), or None."""
    if len(got) != len(expected):
        return f"{len(got):,} sites, expected {len(expected):,}"
    if not np.array_equal(np.asarray(got["rank"], dtype=np.int64), np.arange(1, len(got) + 1)):
        return "ranks are not 1..n in row order"
    sites, want = got["site"].astype(str).to_numpy(), expected["site"].astype(str).to_numpy()
    differ = np.flatnonzero(sites != want)
    if differ.size:
        only = set(sites) ^ set(want)
        what = f"{len(only):,} sites in one result only" if only else "same sites, rank order differs"
        return f"{what} (first at rank {differ[0] + 1}: {sites[differ[0]]!r}, expected {want[differ[0]]!r})"
    gap = np.abs(got["score"].to_numpy(dtype=float) - expected["score"].to_numpy(dtype=float))
    if gap.size and not gap.max() <= tolerance:
        worst = int(np.nanargmax(gap)) if not np.isnan(gap).all() else 0
        return f"scores differ by up to {gap[worst]:.3g} (site {sites[worst]!r} at rank {worst + 1})"
    return None
