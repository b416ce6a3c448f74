"""SYNTHETIC planning layers for Hong Kong: zoning, lots, substations, stations, flood areas, parks, DEM.

``.venv/bin/python data/sample/synthetic/planning.py`` (from the repository root) writes the sample
files under ``data/sample/synthetic/planning/``: ``planning.gpkg`` (one GeoPackage layer per vector
layer id) and ``dem.tif``. Nothing in them is measured or surveyed; they are made up, deterministically
(fixed seeds), inside Hong Kong's real land outline (the union of the 18 districts), anchored on a few
real public points: the country-park reference points (parks are drawn around them and named after
them) and the revitalised industrial buildings (industrial and business zones are put around them).
The benchmark calls :func:`make_planning_layers` with up to a million lots; smaller lots fill the same land.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.transform import Affine

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent
OUT = HERE / "planning"
GPKG = OUT / "planning.gpkg"
DEM_TIF = OUT / "dem.tif"
SAMPLE_LOTS = 10_000
SEED = 2326
CRS = "EPSG:2326"
CONSERVATION = ("CA", "SSSI", "CPA", "GB")
URBAN = ("I", "OU(B)", "B", "C", "R(A)", "R(B)", "G/IC", "O")
RURAL = ("R(C)", "AGR", "V")
ZONE_NAMES = {
    "I": "Industrial", "OU(B)": "Other Specified Uses (Business)", "B": "Business", "C": "Commercial",
    "R(A)": "Residential (Group A)", "R(B)": "Residential (Group B)", "R(C)": "Residential (Group C)",
    "G/IC": "Government, Institution or Community", "O": "Open Space", "GB": "Green Belt",
    "CA": "Conservation Area", "SSSI": "Site of Special Scientific Interest", "CPA": "Coastal Protection Area",
    "AGR": "Agriculture", "V": "Village Type Development",
}
#: District → (outline zoning plan number stem, town-lot prefix).
DISTRICT_CODES = {
    "CENTRAL & WESTERN": ("S/H4", "IL"), "WAN CHAI": ("S/H5", "IL"), "EASTERN": ("S/H9", "IL"),
    "SOUTHERN": ("S/H15", "AIL"), "YAU TSIM MONG": ("S/K1", "KIL"), "SHAM SHUI PO": ("S/K5", "NKIL"),
    "KOWLOON CITY": ("S/K7", "KIL"), "WONG TAI SIN": ("S/K11", "NKIL"), "KWUN TONG": ("S/K14S", "KTIL"),
    "KWAI TSING": ("S/KC", "KCTL"), "TSUEN WAN": ("S/TW", "TWTL"), "SHA TIN": ("S/ST", "STTL"),
    "TAI PO": ("S/TP", "TPTL"), "NORTH": ("S/FSS", "FSSTL"), "YUEN LONG": ("S/YL", "YLTL"),
    "TUEN MUN": ("S/TM", "TMTL"), "SAI KUNG": ("S/TKO", "TKOTL"), "ISLANDS": ("S/I-TCTC", "TCTL"),
}
#: Development cores (easting, northing, radius m): where towns are, roughly.
CORES = np.array([
    (836300, 820300, 3200), (836000, 815800, 2200), (841500, 815200, 1500), (829800, 824400, 2300),
    (837300, 826700, 2000), (842100, 829000, 1100), (836400, 834200, 1400), (835200, 841100, 1800),
    (822000, 834300, 1500), (818600, 836000, 1300), (816300, 826300, 2000), (845400, 817400, 1700),
    (811700, 816900, 900), (835400, 812300, 900), (840900, 819300, 1500), (848300, 815000, 900),
], dtype=float)
#: Industrial estates and clusters without a special-waiver point (Tseung Kwan O, Tai Po, Yuen Long, Chai Wan).
ESTATES = np.array([(848400, 814900), (848000, 815400), (838900, 835200), (821700, 836700), (843200, 814600)],
                   dtype=float)
#: Flood-prone places: NW New Territories, Tai O, and a few urban low spots (easting, northing, radius, severity).
FLOOD_SPOTS = [
    (822300, 835200, 900, "high"), (818700, 836900, 800, "medium"), (825600, 840600, 1000, "high"),
    (833700, 842700, 600, "medium"), (824600, 833300, 700, "medium"), (816600, 834600, 700, "medium"),
    (819800, 838700, 600, "high"), (802300, 815300, 400, "high"), (835900, 819900, 180, "medium"),
    (833700, 816400, 150, "medium"), (834700, 820900, 160, "medium"), (837000, 826300, 200, "medium"),
]
#: Railway corridors (name, code, vertices): stations are put every ~1.1 km along them.
LINES = [
    ("Island Line", "ISL", [(831000, 816000), (833700, 816300), (836800, 815500), (838700, 816700),
                            (842000, 815500), (843500, 814200)]),
    ("Tsuen Wan Line", "TWL", [(833700, 816300), (836000, 818200), (836000, 820000), (833500, 821800),
                               (831800, 823300), (829800, 825500)]),
    ("Kwun Tong Line", "KTL", [(835800, 819300), (836800, 821900), (839300, 822300), (840000, 820200),
                               (841300, 819200), (842400, 817300), (843600, 817500)]),
    ("Tseung Kwan O Line", "TKL", [(843600, 817500), (845000, 817300), (845800, 818700)]),
    ("East Rail Line", "EAL", [(837000, 818700), (836800, 822000), (836500, 825600), (839300, 829200),
                               (836600, 833500), (835500, 840300), (834000, 841800), (833500, 844000)]),
    ("Tuen Ma Line", "TML", [(843000, 830700), (842000, 829000), (838000, 826500), (836500, 825600),
                             (833000, 822000), (829000, 825000), (826000, 834000), (822000, 834000),
                             (819000, 835500), (816500, 830500), (816200, 826500)]),
    ("Tung Chung Line", "TCL", [(833500, 816700), (834800, 818700), (834200, 821000), (831400, 822300),
                                (829800, 822800), (820000, 819500), (811800, 816900)]),
]


@dataclass(frozen=True)
class Territory:
    """The real geography everything is drawn on (EPSG:2326)."""

    districts: gpd.GeoDataFrame  #: name_en (upper case), name_zh, geometry
    land: shapely.Geometry  #: union of the districts
    parks: gpd.GeoDataFrame  #: the real country-park points: name_en, name_zh, geometry
    waivers: np.ndarray  #: (n, 2) coordinates of the real industrial special-waiver points


@lru_cache(maxsize=1)
def territory() -> Territory:
    """Read the real districts, country-park points and special-waiver points, in EPSG:2326."""
    raw = pyogrio.read_dataframe(SAMPLE / "districts18" / "Hong_Kong_18_Districts.shp")
    if raw.crs is None:
        raise ValueError("districts18/Hong_Kong_18_Districts.shp: no CRS (expected its .prj, EPSG:4326)")
    districts = raw.rename(columns={"ENAME": "name_en", "TCNAME": "name_zh"})[["name_en", "name_zh", "geometry"]]
    districts = districts.to_crs(CRS)  # geopandas transforms with always_xy
    districts["geometry"] = shapely.make_valid(districts.geometry.values)
    land = shapely.union_all(districts.geometry.values)
    parks = pyogrio.read_dataframe(SAMPLE / "geodatastore" / "country_parks.geojson").to_crs(CRS)
    parks = parks.rename(columns={"Facility Name": "name_en", "設施名稱": "name_zh"})[["name_en", "name_zh",
                                                                                       "geometry"]]
    waivers = pyogrio.read_dataframe(SAMPLE / "geodatastore" / "industrial_special_waivers.geojson").to_crs(CRS)
    shapely.prepare(land)
    return Territory(districts, land, parks.reset_index(drop=True), shapely.get_coordinates(waivers.geometry.values))


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _blobs(rng: np.random.Generator, xy: np.ndarray, radius: np.ndarray, n: int = 48) -> np.ndarray:
    """Irregular star-shaped polygons (smooth random radius) around each point."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, (len(xy), 3))
    amp = rng.uniform([0.1, 0.05, 0.02], [0.3, 0.18, 0.1], (len(xy), 3))
    r = 1 + sum(amp[:, [k]] * np.sin((k + 2) * theta + phase[:, [k]]) for k in range(3))
    r = radius[:, None] * r
    coords = np.stack([xy[:, [0]] + r * np.cos(theta), xy[:, [1]] + r * np.sin(theta)], axis=-1)
    return shapely.polygons(coords)


def _clip_rects(areas: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Each area clipped to its (xmin, ymin, xmax, ymax) rectangle, as valid geometries."""
    with np.errstate(invalid="ignore"):
        pieces = np.array([shapely.clip_by_rect(a, *b) for a, b in zip(areas, bounds, strict=True)], dtype=object)
    bad = ~shapely.is_valid(pieces)  # rectangle clipping can leave invalid rings: clip those properly
    pieces[bad] = shapely.intersection(areas[bad], shapely.box(*bounds[bad].T))
    return pieces


def _pieces(area: shapely.Geometry, bounds: np.ndarray, tile: float) -> np.ndarray:
    """``area`` clipped to each rectangle, going through ``tile``-metre tiles (×4 per level) to stay fast."""
    extent = shapely.bounds(area)
    if len(bounds) == 0 or tile > max(extent[2] - extent[0], extent[3] - extent[1]):
        return _clip_rects(np.full(len(bounds), area, dtype=object), bounds)
    col = np.floor((bounds[:, [0, 2]] - extent[0]) / tile).astype(int)
    row = np.floor((bounds[:, [1, 3]] - extent[1]) / tile).astype(int)
    single = (col[:, 0] == col[:, 1]) & (row[:, 0] == row[:, 1])
    keys, which = np.unique(np.column_stack([col[single, 0], row[single, 0]]), axis=0, return_inverse=True)
    corners = np.column_stack([keys, keys + 1]) * tile + extent[[0, 1, 0, 1]]
    tiles = _pieces(area, corners, tile * 4)
    out = np.full(len(bounds), None, dtype=object)
    out[single] = _clip_rects(tiles[which.ravel()], bounds[single])
    out[~single] = _pieces(area, bounds[~single], tile * 4)
    return out


def _clip_to(geoms: np.ndarray, area: shapely.Geometry) -> np.ndarray:
    """``geoms`` intersected with a large polygon (MultiPolygon parts; None where nothing is left)."""
    bounds = shapely.bounds(geoms)
    full = ~np.isnan(bounds[:, 0])
    pieces = np.full(len(geoms), None, dtype=object)
    pieces[full] = _pieces(area, bounds[full], 1000.0)
    return _polygonal(shapely.intersection(geoms, pieces))


def _polygonal(geoms: np.ndarray, min_area: float = 1.0) -> np.ndarray:
    """The polygon parts of each geometry as a MultiPolygon (None where nothing polygonal is left)."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area)
    out = np.full(len(geoms), None, dtype=object)
    if keep.any():
        groups, compact = np.unique(index[keep], return_inverse=True)
        out[groups] = shapely.multipolygons(parts[keep], indices=compact)
    return out


def country_park_areas(seed: int = SEED) -> gpd.GeoDataFrame:
    """Irregular park areas of a few km² around the real country-park points, clear of industrial sites."""
    terr = territory()
    rng = _rng(seed, 1)
    xy = shapely.get_coordinates(terr.parks.geometry.values)
    stars = _blobs(rng, xy, rng.uniform(900, 1500, len(xy)))
    keep_out = shapely.union_all(shapely.buffer(shapely.points(np.vstack([terr.waivers, ESTATES])), 400))
    stars = shapely.difference(stars, keep_out)
    for i in range(1, len(stars)):  # earlier parks win where two overlap
        stars[i] = shapely.difference(stars[i], shapely.union_all(stars[:i]))
    areas = _clip_to(stars, terr.land)
    frame = gpd.GeoDataFrame({"name_en": terr.parks.name_en, "name_zh": terr.parks.name_zh},
                             geometry=areas, crs=CRS)
    return frame[frame.geometry.notna()].reset_index(drop=True)


def _box_blur(grid: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window (edges padded), three passes ≈ a Gaussian."""
    out = grid.astype("float64")
    for _ in range(3):
        for axis in (0, 1):
            pad = np.pad(out, [(r + 1, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
            c = np.cumsum(pad, axis=axis)
            hi = np.take(c, np.arange(2 * r + 1, c.shape[axis]), axis=axis)
            lo = np.take(c, np.arange(0, c.shape[axis] - 2 * r - 1), axis=axis)
            out = (hi - lo) / (2 * r + 1)
    return out


def _core_weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How urban each point is: ~1 in a development core, falling to 0 outside it."""
    d2 = ((x[..., None] - CORES[:, 0]) ** 2 + (y[..., None] - CORES[:, 1]) ** 2) / CORES[:, 2] ** 2
    return np.exp(-(d2**2)).max(axis=-1)


@lru_cache(maxsize=4)
def elevation_grid(cell_m: float = 100.0, seed: int = SEED) -> tuple[np.ndarray, Affine]:
    """The synthetic DEM: hills around the park points inland, low near coasts and in towns, NaN over sea."""
    terr = territory()
    west, south, east, north = shapely.bounds(terr.land)
    west, north = np.floor(west / cell_m) * cell_m - cell_m, np.ceil(north / cell_m) * cell_m + cell_m
    width, height = int(np.ceil((east - west) / cell_m)) + 2, int(np.ceil((north - south) / cell_m)) + 2
    transform = Affine(cell_m, 0.0, west, 0.0, -cell_m, north)
    mask = geometry_mask([terr.land], (height, width), transform, invert=True)
    x = west + (np.arange(width) + 0.5) * cell_m
    y = north - (np.arange(height) + 0.5) * cell_m
    gx, gy = np.meshgrid(x, y)
    inland = np.clip((_box_blur(mask, max(1, int(600 / cell_m))) - 0.45) * 2.2, 0, 1)
    rng = _rng(seed, 2)
    peaks = shapely.get_coordinates(terr.parks.geometry.values)
    knolls = rng.uniform([west, south], [east, north], (80, 2))  # smaller hills anywhere, to break the pattern
    heights = np.concatenate([rng.uniform(300, 650, len(peaks)), rng.uniform(30, 220, len(knolls))])
    sigmas = np.concatenate([rng.uniform(1200, 2200, len(peaks)), rng.uniform(400, 1400, len(knolls))])
    hills = np.zeros_like(gx)
    for (px, py), h, s in zip(np.vstack([peaks, knolls]), heights, sigmas, strict=True):
        hills += h * np.exp(-((gx - px) ** 2 + (gy - py) ** 2) / (2 * s * s))
    hills = 950 * (1 - np.exp(-hills / 750))  # summits stay below ~950 m, like Tai Mo Shan
    plain = np.exp(-(((gx - 822000) / 6500) ** 2 + ((gy - 837000) / 3500) ** 2) ** 2)
    hills = np.clip(hills, 0, None) * (1 - 0.9 * _core_weight(gx, gy)) * (1 - 0.9 * plain)
    dem = 1.5 + 6 * inland + hills * inland**1.5
    return np.where(mask, np.round(dem, 1), np.nan).astype("float32"), transform


def _sample(grid: np.ndarray, transform: Affine, xy: np.ndarray) -> np.ndarray:
    cols, rows = (xy[:, 0] - transform.c) / transform.a, (xy[:, 1] - transform.f) / transform.e  # north-up
    rows = np.clip(np.floor(rows).astype(int), 0, grid.shape[0] - 1)
    cols = np.clip(np.floor(cols).astype(int), 0, grid.shape[1] - 1)
    return grid[rows, cols]


def make_dem(path: Path | str, cell_m: float = 100.0, seed: int = SEED) -> Path:
    """Write the synthetic DEM as a GeoTIFF.

    Parameters
    ----------
    path
        File to write (replaced if it exists).
    cell_m
        Cell size in metres (the sample uses 100; 50 gives four times the cells).
    seed
        Seed of the random hills.

    Returns
    -------
    pathlib.Path
        ``path``: float32 metres above Hong Kong Principal Datum, EPSG:2326, LZW, nodata NaN over the sea,
        tagged ``SYNTHETIC=yes``.
    """
    grid, transform = elevation_grid(cell_m, seed)
    path = Path(path)
    profile = {"driver": "GTiff", "width": grid.shape[1], "height": grid.shape[0], "count": 1, "dtype": "float32",
               "crs": CRS, "transform": transform, "nodata": float("nan"), "compress": "lzw", "predictor": 3,
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grid, 1)
        dst.set_band_description(1, "SYNTHETIC elevation (m above Hong Kong Principal Datum)")
        dst.update_tags(SYNTHETIC="yes", SOURCE="data/sample/synthetic/planning.py")
    return path


def _jittered(rng: np.random.Generator, bounds: tuple[float, ...], step: float) -> np.ndarray:
    """One random point per ``step``-metre grid cell over ``bounds``."""
    west, south, east, north = bounds
    gx, gy = np.meshgrid(np.arange(west, east, step), np.arange(south, north, step))
    base = np.column_stack([gx.ravel(), gy.ravel()])
    return base + rng.uniform(0.15, 0.85, base.shape) * step


def _nearest_distance(xy: np.ndarray, targets: np.ndarray) -> np.ndarray:
    tree = shapely.STRtree(shapely.points(targets))
    (_, _), dist = tree.query_nearest(shapely.points(xy), return_distance=True, all_matches=False)
    return np.asarray(dist)


def _choose(rng: np.random.Generator, n: int, table: dict[str, float]) -> np.ndarray:
    codes, weights = list(table), np.array(list(table.values()))
    return np.array(codes, dtype=object)[rng.choice(len(codes), n, p=weights / weights.sum())]


def ozp_zones(parks: gpd.GeoDataFrame, seed: int = SEED) -> gpd.GeoDataFrame:
    """Zones shaped like Outline Zoning Plan zones, on land outside the country parks.

    Industrial and business zones lie around the real special-waiver points and the industrial
    estates; conservation zones on high ground and undeveloped coasts; towns in the development
    cores; agriculture, villages and low-density housing in the rural lowlands.
    """
    terr = territory()
    rng = _rng(seed, 3)
    bounds = tuple(shapely.bounds(terr.land))
    industrial = np.vstack([terr.waivers, ESTATES])
    dense, coarse = _jittered(rng, bounds, 300.0), _jittered(rng, bounds, 750.0)

    def busy(xy: np.ndarray) -> np.ndarray:  # towns and industry get small zones, the countryside large ones
        return (_core_weight(xy[:, 0], xy[:, 1]) > 0.3) | (_nearest_distance(xy, industrial) < 800)

    seeds = np.vstack([dense[busy(dense)], coarse[~busy(coarse)]])
    envelope = shapely.box(*(np.array(bounds) + np.array([-2000, -2000, 2000, 2000])))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=envelope))
    cells = shapely.intersection(cells, envelope)  # border cells reach far beyond the envelope
    cells = cells[shapely.intersects(terr.land, cells)]  # the prepared geometry first: fast
    cells = cells[np.lexsort((shapely.bounds(cells)[:, 0], -shapely.bounds(cells)[:, 3]))]
    unzoned = shapely.union_all(parks.geometry.values)
    geoms = _clip_to(shapely.difference(cells, unzoned), terr.land)
    geoms = geoms[np.array([g is not None and g.area >= 2000 for g in geoms])]
    where = shapely.get_coordinates(shapely.point_on_surface(geoms))
    grid, transform = elevation_grid(100.0, seed)
    height = _sample(grid, transform, where)
    height = np.where(np.isnan(height), 0.0, height)
    urban = _core_weight(where[:, 0], where[:, 1])
    near_industry = _nearest_distance(where, industrial) < 300
    coast = height < 5  # the DEM is this low only within a few hundred metres of the sea
    n = len(geoms)
    code = _choose(rng, n, {"AGR": 3, "V": 2.5, "R(C)": 1.5, "GB": 1.5, "O": 0.5, "G/IC": 0.5, "I": 0.05})
    town = _choose(rng, n, {"R(A)": 3.5, "C": 1.2, "G/IC": 1.5, "O": 1.2, "R(B)": 1.0, "B": 0.2, "OU(B)": 0.1,
                            "I": 0.1})
    works = _choose(rng, n, {"I": 3, "OU(B)": 3, "B": 1, "C": 1.5, "R(A)": 0.5, "G/IC": 0.3})
    hill = np.where(height > 350, "CA", "GB").astype(object)
    hill[rng.random(n) < 0.05] = "SSSI"
    code = np.where(urban > 0.35, town, code)
    code = np.where(coast & (urban < 0.2) & (rng.random(n) < 0.6), "CPA", code)
    code = np.where(height > 120, hill, code)
    code = np.where(near_industry & (height < 80), works, code)
    amendment = dict(zip(DISTRICT_CODES, rng.integers(8, 36, len(DISTRICT_CODES)), strict=True))
    plan = [f"{DISTRICT_CODES[d][0]}/{amendment[d]}" for d in _district_of(where)]  # one plan per district
    frame = gpd.GeoDataFrame({"zone_id": [f"Z{i:04d}" for i in range(1, n + 1)], "zone_code": code.astype(str),
                              "zone_name": [ZONE_NAMES[c] for c in code], "plan_no": plan}, geometry=geoms, crs=CRS)
    return frame


def _district_of(xy: np.ndarray) -> np.ndarray:
    """The real district (upper-case English name) of each point; the nearest one off the outline."""
    districts = territory().districts
    shapes = districts.geometry.values
    shapely.prepare(shapes)
    points = shapely.points(xy)
    which, inside = shapely.STRtree(points).query(shapes, predicate="contains")
    out = np.full(len(xy), None, dtype=object)
    out[inside] = districts.name_en.to_numpy()[which]
    lost = np.flatnonzero(pd.isna(out))
    if len(lost):
        found, nearest = shapely.STRtree(shapes).query_nearest(points[lost], all_matches=False)
        out[lost[found]] = districts.name_en.to_numpy()[nearest]
    return out


def flood_prone_areas(seed: int = SEED) -> gpd.GeoDataFrame:
    """Low-lying flood-prone blobs: NW New Territories plains, Tai O and a few urban low spots."""
    rng = _rng(seed, 4)
    spots = np.array([s[:3] for s in FLOOD_SPOTS], dtype=float)
    blobs = _clip_to(_blobs(rng, spots[:, :2], spots[:, 2]), territory().land)
    keep = np.array([b is not None for b in blobs])
    severity = np.array([s[3] for s in FLOOD_SPOTS])[keep]
    return gpd.GeoDataFrame({"area_id": [f"F{i:03d}" for i in range(1, keep.sum() + 1)], "severity": severity},
                            geometry=blobs[keep], crs=CRS)


def _cells(zones: np.ndarray, size: np.ndarray, aspect: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    """Jittered-grid quadrilaterals lying inside each zone (a grid of its own per zone), and their zone index."""
    bounds = shapely.bounds(zones)
    sx, sy = size * np.sqrt(aspect), size / np.sqrt(aspect)
    nx = np.ceil((bounds[:, 2] - bounds[:, 0]) / sx).astype(np.int64)
    ny = np.ceil((bounds[:, 3] - bounds[:, 1]) / sy).astype(np.int64)
    counts = nx * ny
    owner = np.repeat(np.arange(len(zones)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    x0 = bounds[owner, 0] + (k % nx[owner]) * sx[owner]
    y0 = bounds[owner, 1] + (k // nx[owner]) * sy[owner]
    centre = shapely.contains_xy(zones[owner], x0 + sx[owner] / 2, y0 + sy[owner] / 2)
    owner, x0, y0 = owner[centre], x0[centre], y0[centre]
    quads = _quads(x0, y0, sx[owner], sy[owner], rng)
    inside = shapely.contains(zones[owner], quads)
    return quads[inside], owner[inside]


def _quads(x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A jittered quadrilateral in each cell (lower-left corner x0, y0; size w × h).

    Each corner stays in its own corner of the cell (3-18 % in from both sides), so the quadrilateral
    is convex and never reaches a neighbouring cell.
    """
    w, h = w[:, None], h[:, None]
    inset = rng.uniform(0.03, 0.18, (len(x0), 4, 2))
    xs = x0[:, None] + w * np.array([0, 1, 1, 0]) + w * inset[:, :, 0] * np.array([1, -1, -1, 1])
    ys = y0[:, None] + h * np.array([0, 0, 1, 1]) + h * inset[:, :, 1] * np.array([1, 1, -1, -1])
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def _building_lots(zones: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One lot (1,200-3,000 m²) around each real special-waiver building, inside its development zone.

    Returns the lots and their zone index; buildings sharing a lot with an earlier one are skipped.
    """
    xy = territory().waivers
    n = len(xy)
    area, aspect = rng.uniform(1200, 3000, n), rng.uniform(0.7, 1.4, n)
    w, h = np.sqrt(area * aspect) / 0.8, np.sqrt(area / aspect) / 0.8  # the jitter keeps ~64 % of the cell
    shift = rng.uniform(0.3, 0.7, (n, 2))
    quads = _quads(xy[:, 0] - w * shift[:, 0], xy[:, 1] - h * shift[:, 1], w, h, rng)
    which, owner = shapely.STRtree(zones).query(shapely.points(xy), predicate="within")
    keep = np.zeros(n, dtype=bool)
    zone_of = np.full(n, -1)
    zone_of[which] = owner
    taken: list[shapely.Geometry] = []
    for i in np.flatnonzero(zone_of >= 0):  # one pass over the ~150 buildings, not over lots
        if shapely.contains(zones[zone_of[i]], quads[i]) and not any(q.intersects(quads[i]) for q in taken):
            keep[i] = True
            taken.append(quads[i])
    return quads[keep], zone_of[keep]


def _lot_numbers(xy: np.ndarray, district: np.ndarray, rural: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lot numbers like the Land Registry's: town lots by district, "Lot N in DD M" in the rural New Territories."""
    urban_districts = {"CENTRAL & WESTERN", "WAN CHAI", "EASTERN", "SOUTHERN", "YAU TSIM MONG", "SHAM SHUI PO",
                       "KOWLOON CITY", "WONG TAI SIN", "KWUN TONG"}
    in_town = np.isin(district, list(urban_districts))
    prefix = np.array([DISTRICT_CODES[d][1] for d in district], dtype=object)
    prefix[rural & in_town] = "RBL"
    frame = pd.DataFrame({"x": np.floor(xy[:, 0] / 10), "y": -np.floor(xy[:, 1] / 10), "prefix": prefix})
    block = np.floor(xy[:, 0] / 2500) + 1000 * np.floor(-xy[:, 1] / 2500)  # 2.5 km demarcation districts
    frame["dd"] = np.where(rural & ~in_town, np.unique(block, return_inverse=True)[1].ravel() + 1, 0)
    frame = frame.sort_values(["y", "x"], kind="stable")
    town = frame.dd == 0
    bases = {p: int(b) for p, b in zip(sorted(set(prefix)), rng.integers(1, 900, len(set(prefix))), strict=True)}
    numbers = pd.Series("", index=frame.index, dtype=object)
    seq = frame[town].groupby("prefix").cumcount().to_numpy() + frame.prefix[town].map(bases).to_numpy()
    numbers[town] = [f"{p} {n}" for p, n in zip(frame.prefix[town], seq, strict=True)]
    seq = frame[~town].groupby("dd").cumcount().to_numpy() + 1 + (frame.dd[~town].to_numpy() * 37) % 500
    numbers[~town] = [f"Lot {n} in DD {d}" for n, d in zip(seq, frame.dd[~town], strict=True)]
    return numbers.sort_index().to_numpy()


def make_lots(zones: gpd.GeoDataFrame, n_lots: int, seed: int = SEED) -> gpd.GeoDataFrame:
    """Exactly ``n_lots`` convex, non-overlapping lots in the development zones (smaller when more).

    Each development zone gets a jittered grid of its own (cells twice as large in rural zones); the
    cell size is set so that about ``n_lots`` quadrilaterals fit wholly inside their zones, and a random
    (seeded) choice trims them to exactly ``n_lots``. Every real special-waiver building inside a
    development zone also gets a lot of its own around it (1,200-3,000 m²).

    Parameters
    ----------
    zones
        The zoning layer made by :func:`ozp_zones`.
    n_lots
        How many lots to make; few lots leave gaps, many (up to millions) fill the zones with small ones.
    seed
        Seed of every random choice.

    Returns
    -------
    geopandas.GeoDataFrame
        ``lot_number`` (unique), ``district`` (real district of the centroid), ``area_m2``, Polygon geometry
        in EPSG:2326.

    Raises
    ------
    ValueError
        ``n_lots`` below 1, or more than the zones can hold.
    """
    if n_lots < 1:
        raise ValueError(f"n_lots: must be at least 1, got {n_lots}")
    dev = zones[~zones.zone_code.isin(CONSERVATION)]
    geoms = dev.geometry.to_numpy()
    shapely.prepare(geoms)
    rural = dev.zone_code.isin(RURAL).to_numpy()
    shape_rng = _rng(seed, 5)
    works = dev.zone_code.isin(["I", "OU(B)", "B"]).to_numpy()  # industrial lots are large
    factor = shape_rng.uniform(0.7, 1.4, len(geoms)) * np.select([rural, works], [2.0, 1.5], 1.0)
    aspect = shape_rng.uniform(0.6, 1.6, len(geoms))
    size = np.sqrt(0.6 * (shapely.area(geoms) / factor**2).sum() / n_lots)
    for _ in range(12):
        quads, owner = _cells(geoms, size * factor, aspect, _rng(seed, 6))
        if len(quads) >= 1.1 * n_lots:
            break
        size *= 0.97 * np.sqrt(max(len(quads), 1) / n_lots) if len(quads) else 0.5
    else:
        raise ValueError(f"n_lots: cannot fit {n_lots} lots in the development zones")
    special, special_owner = _building_lots(geoms, _rng(seed, 10))
    clear = ~np.isin(np.arange(len(quads)), shapely.STRtree(quads).query(special, predicate="intersects")[1])
    quads, owner = quads[clear], owner[clear]
    pick_rng = _rng(seed, 7)
    if n_lots <= len(special):
        pick = np.sort(pick_rng.choice(len(special), n_lots, replace=False))
        quads, owner = special[pick], special_owner[pick]
    else:
        pick = np.sort(pick_rng.choice(len(quads), n_lots - len(special), replace=False))
        quads, owner = np.concatenate([special, quads[pick]]), np.concatenate([special_owner, owner[pick]])
    xy = shapely.get_coordinates(shapely.centroid(quads))
    district = _district_of(xy)
    numbers = _lot_numbers(xy, district, rural[owner], _rng(seed, 8))
    return gpd.GeoDataFrame({"lot_number": numbers, "district": district.astype(str),
                             "area_m2": np.round(shapely.area(quads), 2)}, geometry=quads, crs=CRS)


def substations(zones: gpd.GeoDataFrame, seed: int = SEED) -> gpd.GeoDataFrame:
    """Substations in development zones, favouring business and industrial areas (400/132/33/11 kV)."""
    rng = _rng(seed, 9)
    dev = zones[~zones.zone_code.isin(CONSERVATION)]
    weight = np.select([dev.zone_code.isin(["I", "OU(B)", "B"]), dev.zone_code.isin(URBAN)], [5.0, 2.0], 1.0)
    voltages = np.repeat([400, 132, 33, 11], [8, 70, 110, 260])
    pick = rng.choice(len(dev), len(voltages), replace=False, p=weight / weight.sum())
    points = shapely.point_on_surface(dev.geometry.to_numpy()[pick])
    order = np.lexsort((shapely.get_x(points), -shapely.get_y(points)))
    return gpd.GeoDataFrame({"name": [f"Synthetic S{i}" for i in range(1, len(pick) + 1)],
                             "voltage_kv": voltages[order].astype("int32")}, geometry=points[order], crs=CRS)


def mtr_stations(parks: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Stations every ~1.1 km along a few railway corridors, where that falls on land outside the parks."""
    land, unzoned = territory().land, shapely.union_all(parks.geometry.values)
    names, lines, points = [], [], []
    for line_name, code, vertices in LINES:
        track = shapely.LineString(vertices)
        stops = shapely.line_interpolate_point(track, np.linspace(0, track.length, round(track.length / 1100) + 1))
        ok = shapely.contains(land, stops) & ~shapely.intersects(unzoned, stops)
        names += [f"Synthetic {code}{k:02d}" for k in range(1, ok.sum() + 1)]
        lines += [line_name] * int(ok.sum())
        points += list(stops[ok])
    return gpd.GeoDataFrame({"name": names, "line": lines}, geometry=points, crs=CRS)


def make_planning_layers(n_lots: int, seed: int = SEED) -> dict[str, gpd.GeoDataFrame]:
    """All synthetic vector layers, keyed by layer id.

    Parameters
    ----------
    n_lots
        Number of lots in ``synthetic_lots`` (the sample has 10,000; the benchmark up to 1,000,000).
        Only the lots depend on it: the other layers are the same for every ``n_lots``.
    seed
        Seed of every random choice; the same seed gives the same features.

    Returns
    -------
    dict of str to geopandas.GeoDataFrame
        ``synthetic_ozp_zones``, ``synthetic_lots``, ``synthetic_substations``, ``synthetic_mtr_stations``,
        ``synthetic_flood_prone_areas`` and ``synthetic_country_park_areas``, all in EPSG:2326 inside
        Hong Kong's land outline, with the columns of the planning contract.
    """
    parks = country_park_areas(seed)
    zones = ozp_zones(parks, seed)
    return {
        "synthetic_ozp_zones": zones,
        "synthetic_lots": make_lots(zones, n_lots, seed),
        "synthetic_substations": substations(zones, seed),
        "synthetic_mtr_stations": mtr_stations(parks),
        "synthetic_flood_prone_areas": flood_prone_areas(seed),
        "synthetic_country_park_areas": parks,
    }


def write_sample(folder: Path = OUT, n_lots: int = SAMPLE_LOTS) -> None:
    """Write ``planning.gpkg`` (one layer per id) and ``dem.tif`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    gpkg = folder / GPKG.name
    gpkg.unlink(missing_ok=True)
    for layer_id, frame in make_planning_layers(n_lots).items():
        pyogrio.write_dataframe(frame, gpkg, layer=layer_id, driver="GPKG", layer_options={"SPATIAL_INDEX": "NO"})
    make_dem(folder / DEM_TIF.name)


if __name__ == "__main__":
    write_sample()
