"""Tables with point coordinates in columns: delimited text (CSV, TSV, TXT) and xlsx workbooks.

GDAL cannot open the UTF-16 "CSV" files departments publish, so tables are read with pandas: the
encoding comes from ``source.encoding``, a byte-order mark, the NUL-byte pattern of UTF-16 without a
BOM, or strict decoding (UTF-8, then Big5-HKSCS); the delimiter is the one that splits the first
records into the same number of fields (quotes respected). Workbooks are read with openpyxl; the
sheet is ``source.layer`` or the only non-empty one. A header wider than ``SDI_MAX_TABLE_COLUMNS`` is
refused before pandas parses the table (see :mod:`loaders.table_files`, which reads the files).

Coordinate columns come from ``source.coordinates`` or are recognised by name in English or Chinese,
whatever the case, spacing, brackets or units (``EASTING``, ``Easting (m)``, ``坐標東``, ``東坐標``,
``LATITUDE(N)``, ``緯度``, ``X_COORD``...). Latitude/longitude given as degrees-minutes-seconds
(``22°29'36"``) are converted to decimal degrees. No CRS is set from column names: ``source.crs``
or the coordinate ranges decide (see :func:`loaders.read.resolve_crs`), and the report says which.
When a row has both an easting/northing and a latitude/longitude pair, the geometry comes from the
grid pair, and the latitude/longitude pair is converted to EPSG:2326 (EPSG:1825) and compared: rows
further apart than :data:`CROSSCHECK_TOLERANCE_M` are flagged in ``coord_mismatch`` /
``coord_mismatch_m`` and counted in a warning.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from loaders.limits import Limits
from loaders.report import LoadReport
from loaders.table_files import detect_delimiter as detect_delimiter
from loaders.table_files import detect_encoding as detect_encoding
from loaders.table_files import read_delimited, read_spreadsheet
from sdi.crs import HK_GRID, guess_from_bounds, parse_crs, reprojection
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition

#: File suffixes read by :func:`read_table` (``loaders.read`` should import this).
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".tab", ".xlsx", ".xlsm"})
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm"})
#: Rows whose lat/lon pair lands further than this from their easting/northing are flagged (metres).
#: Raised per row to half the rounding step of the lat/lon text (whole seconds of arc: about 21 m).
CROSSCHECK_TOLERANCE_M = 5.0
MISMATCH_FLAG, MISMATCH_DISTANCE = "coord_mismatch", "coord_mismatch_m"
_M_PER_DEGREE = 111_320.0

#: Column-name vocabulary after normalisation (see :func:`_name_keys`): key → (kind, axis).
_VOCABULARY: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("easting", "eastings", "east", "坐標東", "東坐標", "座標東", "東座標", "東距", "東向坐標"),
                    ("grid", "x")),
    **dict.fromkeys(("northing", "northings", "north", "坐標北", "北坐標", "座標北", "北座標", "北距", "北向坐標"),
                    ("grid", "y")),
    **dict.fromkeys(("longitude", "lon", "long", "lng", "經度", "東經", "经度"), ("lonlat", "x")),
    **dict.fromkeys(("latitude", "lat", "緯度", "北緯", "纬度"), ("lonlat", "y")),
    **dict.fromkeys(("x", "x坐標", "x座標", "xcoordinate", "橫坐標"), ("xy", "x")),
    **dict.fromkeys(("y", "y坐標", "y座標", "ycoordinate", "縱坐標"), ("xy", "y")),
}
_GRID_WORDS = frozenset({"hk1980", "hk80", "hkgrid", "grid"})
_QUALIFIERS = _GRID_WORDS | frozenset({
    "wgs84", "wgs", "84", "1980", "hk", "coord", "coords", "coordinate", "coordinates", "point", "pt", "m", "metre",
    "metres", "meter", "meters", "deg", "degree", "degrees", "dd", "dms", "decimal", "dec", "geo", "centroid",
    "value", "米", "度"})
_HEMISPHERES = frozenset({"n", "e", "s", "w"})
_KINDS = ("grid", "lonlat", "xy")
_KIND_LABEL = {"grid": "easting/northing", "lonlat": "longitude/latitude", "xy": "x/y"}
_DMS = (r"""^\s*(?P<h1>[NSEWnsew])?\s*(?P<sign>[-+])?(?P<d>\d+(?:\.\d+)?)\s*(?:[°º˚:]|\s)\s*"""
        r"""(?:(?P<m>\d+(?:\.\d+)?)\s*(?:['′’:]|\s)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*(?:"|″|”|''|′′)?)?)?"""
        r"""\s*(?P<h2>[NSEWnsew])?\s*$""")


def _name_keys(name: str) -> tuple[list[str], bool]:
    """Normalised keys for a column name (brackets dropped, then brackets kept) and whether a grid word is in it."""
    text = unicodedata.normalize("NFKC", str(name)).strip()
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", text)
    text = re.sub(r"(?<=[A-Za-z0-9])(?=[^\x00-\x7f])|(?<=[^\x00-\x7f])(?=[A-Za-z0-9])", "_", text).lower()
    keys, grid = [], False
    for variant in (re.sub(r"[(\[{][^)\]}]*[)\]}]", " ", text), re.sub(r"[()\[\]{}]", " ", text)):
        tokens = [t for t in re.split(r"[\W_]+", variant) if t]
        grid |= any(t in _GRID_WORDS for t in tokens)
        core = [t for t in tokens if t not in _QUALIFIERS]
        if len(core) > 1:
            core = [t for t in core if t not in _HEMISPHERES] or core
        keys.append("".join(core))
    return keys, grid


def classify_column(name: str) -> tuple[str, str] | None:
    """Return ``(kind, axis)`` for a coordinate column name (kind grid/lonlat/xy, axis x/y), else ``None``.

    >>> classify_column("LATITUDE(N)"), classify_column("Easting (m)"), classify_column("坐標北")
    (('lonlat', 'y'), ('grid', 'x'), ('grid', 'y'))
    """
    keys, grid = _name_keys(name)
    for key in keys:
        if key in _VOCABULARY:
            return _VOCABULARY[key]
        if grid and key in ("e", "n"):
            return "grid", "x" if key == "e" else "y"
    return None


def coordinate_pairs(columns: list[str]) -> dict[str, tuple[str, str]]:
    """Return every complete coordinate pair by kind: ``{"grid": (x, y), "lonlat": (lon, lat), ...}``.

    The first column of each role wins (bilingual tables repeat ``EASTING`` as ``坐標東``).
    """
    roles: dict[tuple[str, str], str] = {}
    for column in columns:
        role = classify_column(column)
        if role is not None:
            roles.setdefault(role, column)
    return {k: (roles[(k, "x")], roles[(k, "y")]) for k in _KINDS if (k, "x") in roles and (k, "y") in roles}


def find_coordinate_columns(columns: list[str]) -> tuple[str, str, str] | None:
    """Find the x and y columns by name; return ``(x, y, kind)`` or ``None``.

    ``kind`` is ``"grid"`` (easting/northing), ``"lonlat"`` or ``"xy"``. Grid pairs win over
    longitude/latitude when a table carries both, and both win over plain x/y.
    """
    pairs = coordinate_pairs(columns)
    kind = next((k for k in _KINDS if k in pairs), None)
    return None if kind is None else (*pairs[kind], kind)


def _blank(series: pd.Series) -> pd.Series:
    if series.dtype != object:
        return series.isna()
    return series.isna() | (series.fillna("").astype(str).str.strip() == "")


def _tidy(frame: pd.DataFrame, report: LoadReport) -> tuple[pd.DataFrame, pd.Series]:
    """Strip column names, drop empty unnamed columns; return the frame and a mask of rows with every field blank.

    Blank rows are kept (with no geometry) so that the normaliser drops and counts them with the other
    rows that have no geometry, and ``features_read`` still counts every row of the file.
    """
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    empty = [c for c in frame.columns if c.startswith("Unnamed:") and _blank(frame[c]).all()]
    if empty:
        frame = frame.drop(columns=empty)
        report.note(f"dropped {len(empty)} empty unnamed column(s) (trailing delimiter)")
    frame = frame.reset_index(drop=True)
    rows = pd.Series(len(frame.columns) > 0, index=frame.index)
    for column in frame.columns:  # each pass only looks at rows blank so far: cheap on real tables
        candidates = rows[rows].index
        if candidates.empty:
            break
        rows[candidates] = _blank(frame.loc[candidates, column]).to_numpy()
    if rows.any():
        report.note(f"{int(rows.sum())} blank rows (every field empty): no geometry, dropped as null geometries")
    return frame, rows


def _decimals(text: pd.Series) -> pd.Series:
    """How many digits follow the decimal point of each number written as text (0 when none)."""
    text = text.astype("string[pyarrow]")
    has = text.str.contains(r"\.\d+$", regex=True).fillna(False).astype(bool)
    return (text.str.len() - text.str.rfind(".") - 1).astype("float64").where(has, 0.0)


def _numbers(series: pd.Series, degrees: bool) -> tuple[pd.Series, pd.Series, int]:
    """Coordinates as floats, their rounding step (degrees; zero unless ``degrees``), and how many were DMS text."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = pd.to_numeric(series, errors="coerce").astype("float64")
        text = values.astype(str).where(values.notna(), "").astype("string[pyarrow]")
    else:
        text = series.astype("string[pyarrow]").fillna("").str.strip().str.replace(",", "", regex=False)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
    step = 10.0 ** -_decimals(text) if degrees else pd.Series(0.0, index=series.index)
    dms = 0
    failed = values.isna() & (text != "")
    if degrees and failed.any():
        parts = text[failed].astype(object).str.extract(_DMS)
        ok = parts["d"].notna()
        d, m, s = (pd.to_numeric(parts[k], errors="coerce").fillna(0.0) for k in ("d", "m", "s"))
        ok &= (m < 60) & (s < 60)
        sign = np.where(parts["sign"].eq("-") | parts["h1"].str.upper().isin(["S", "W"])
                        | parts["h2"].str.upper().isin(["S", "W"]), -1.0, 1.0)
        last = parts["s"].where(parts["s"].notna(), parts["m"].where(parts["m"].notna(), parts["d"]))
        divisor = np.where(parts["s"].notna(), 3600.0, np.where(parts["m"].notna(), 60.0, 1.0))
        values[ok[ok].index] = (sign * (d + m / 60 + s / 3600))[ok.to_numpy()]
        step[ok[ok].index] = (10.0 ** -_decimals(last.fillna("")) / divisor)[ok.to_numpy()]
        dms = int(ok.sum())
    values[~np.isfinite(values)] = np.nan
    return values, step, dms


def _choose_columns(frame: pd.DataFrame, definition: LayerDefinition, path: Path) -> tuple[str, str, str, str]:
    """Return ``(x, y, kind, how)`` from ``source.coordinates`` or the column names."""
    columns = list(frame.columns)
    if definition.source.coordinates:
        x, y = definition.source.coordinates.x, definition.source.coordinates.y
        missing = [c for c in (x, y) if c not in columns]
        if missing:
            raise SourceFormatError(f"{definition.label}: source.coordinates: no column {missing[0]!r} in {path.name}")
        roles = classify_column(x), classify_column(y)
        kind = roles[0][0] if roles[0] and roles[1] and roles[0][0] == roles[1][0] else "declared"
        return x, y, kind, "declared in source.coordinates"
    found = find_coordinate_columns(columns)
    if found is None:
        halves = [c for c in columns if classify_column(c)]
        seen = f"; found only {', '.join(map(repr, halves[:4]))}" if halves else ""
        raise SourceFormatError(f"{path}: no coordinate columns found (looked for a pair such as EASTING/NORTHING, "
                                f"X/Y, longitude/latitude, 坐標東/坐標北, 經度/緯度){seen}; set source.coordinates")
    return *found, "detected by name"


def _check_swapped(xs: pd.Series, ys: pd.Series, x: str, y: str, kind: str, where: str, crs_declared: bool) -> None:
    """Fail with a suggested ``source.coordinates`` when the values show the two columns are swapped.

    Easting/northing are checked only without ``source.crs`` (with one, the extent check explains it).
    """
    ok = xs.notna() & ys.notna()
    if not ok.any():
        return
    fix = f"set source.coordinates: {{x: {y}, y: {x}}}"
    if kind == "lonlat" and ys[ok].abs().max() > 90 and xs[ok].abs().max() <= 90:
        raise SourceFormatError(f"{where}: column {y!r} holds values up to {ys[ok].abs().max():.6g}, beyond 90, "
                                f"so it is not a latitude: {x!r} and {y!r} look swapped; {fix}")
    if kind == "grid" and not crs_declared:
        bounds = (xs[ok].min(), ys[ok].min(), xs[ok].max(), ys[ok].max())
        swapped = (bounds[1], bounds[0], bounds[3], bounds[2])
        if guess_from_bounds(bounds) is None and guess_from_bounds(swapped) == HK_GRID:
            raise SourceFormatError(f"{where}: the values of {x!r} and {y!r} fit Hong Kong only with the axes "
                                    f"swapped (northing in {x!r}); {fix}")


def read_table(path: Path, definition: LayerDefinition, report: LoadReport,
               limits: Limits | None = None) -> gpd.GeoDataFrame:
    """Read a delimited text file or xlsx sheet and build point geometries from its coordinate columns.

    The result has no CRS: the caller settles it from ``source.crs`` or the coordinate ranges.
    Rows whose coordinates are missing or not numbers keep a null geometry, to be dropped and
    counted by the normaliser (and a warning here names the first bad value).

    Parameters
    ----------
    limits
        ``table_columns`` caps the header's width (default: ``SDI_MAX_TABLE_COLUMNS``'s default).

    Raises
    ------
    SourceFormatError
        Unreadable file, a header wider than the limit, ambiguous sheet, no coordinate columns, or
        columns that are visibly swapped.
    """
    limits = limits if limits is not None else Limits()
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        frame = read_spreadsheet(path, definition, report, limits)
    else:
        frame = read_delimited(path, definition, report, limits)
    frame, blank = _tidy(frame, report)
    x, y, kind, how = _choose_columns(frame, definition, path)
    degrees = kind in ("lonlat", "declared", "xy")
    xs, _, xdms = _numbers(frame[x], degrees)
    ys, _, ydms = _numbers(frame[y], degrees)
    report.note(f"point coordinates from columns {x!r}, {y!r} ({how}; {_KIND_LABEL.get(kind, 'x/y')}); "
                f"the CRS comes from source.crs or the coordinate ranges, not from the names")
    if xdms or ydms:
        report.note(f"{xdms + ydms} degrees-minutes-seconds values in {x!r}/{y!r} converted to decimal degrees")
    _check_swapped(xs, ys, x, y, kind, definition.label, definition.source.crs is not None)
    ok = (xs.notna() & ys.notna()).to_numpy()
    lacking = ~ok & ~blank.to_numpy()
    if lacking.any():
        raw = frame[[x, y]].astype(object).where(frame[[x, y]].notna(), None)
        unusable = [v for v in raw.to_numpy()[lacking].ravel() if v is not None and str(v).strip()]
        first = f"; first value that is not a coordinate: {str(unusable[0])[:30]!r}" if unusable else ""
        report.warn(f"{int(lacking.sum())} rows have no usable coordinates in {x!r}/{y!r}{first}: "
                    f"they get no geometry and are dropped")
    geometry = gpd.points_from_xy(xs.fillna(0.0), ys.fillna(0.0))
    geometry[~ok] = None
    pairs = coordinate_pairs(list(frame.columns))
    if kind == "grid" and "lonlat" in pairs and pairs["lonlat"] != (x, y):
        frame = _crosscheck(frame, xs, ys, pairs["lonlat"], (x, y), definition, report)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=None)


def _unique(name: str, columns: list[str]) -> str:
    candidate, n = name, 2
    while candidate in columns:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _crosscheck(frame: pd.DataFrame, east: pd.Series, north: pd.Series, lonlat: tuple[str, str],
                grid: tuple[str, str], definition: LayerDefinition, report: LoadReport) -> pd.DataFrame:
    """Compare each row's lat/lon pair, converted to EPSG:2326 with EPSG:1825, with its easting/northing."""
    lon_col, lat_col = lonlat
    what = f"{lat_col!r}/{lon_col!r} against {grid[0]!r}/{grid[1]!r}"
    declared = definition.source.crs
    if declared is not None and parse_crs(declared, what=f"{definition.label}: source.crs").to_epsg() != HK_GRID:
        report.note(f"cross-check of {what} skipped: source.crs is not EPSG:2326")
        return frame
    ok = east.notna() & north.notna()
    bounds = (east[ok].min(), north[ok].min(), east[ok].max(), north[ok].max())
    if not ok.any() or guess_from_bounds(bounds) != HK_GRID:
        report.note(f"cross-check of {what} skipped: the easting/northing values are not all in HK1980 Grid range")
        return frame
    lon, lon_step, _ = _numbers(frame[lon_col], True)
    lat, lat_step, _ = _numbers(frame[lat_col], True)
    both = ok & lon.notna() & lat.notna()
    if lat[both].abs().max() > 90 or lon[both].abs().max() > 180:
        report.warn(f"{lat_col!r}/{lon_col!r} hold values beyond ±90/±180 (not degrees, or swapped): "
                    f"not cross-checked against {grid[0]!r}/{grid[1]!r}")
        return frame
    transformer = reprojection(4326).transformer
    assert transformer is not None
    e, n = transformer.transform(lon[both].to_numpy(), lat[both].to_numpy())
    distance = pd.Series(np.nan, index=frame.index)
    distance[both] = np.round(np.hypot(e - east[both].to_numpy(), n - north[both].to_numpy()), 2)
    allowance = 0.5 * np.hypot(lat_step * _M_PER_DEGREE, lon_step * _M_PER_DEGREE * np.cos(np.radians(lat.fillna(22))))
    tolerance = np.maximum(CROSSCHECK_TOLERANCE_M, allowance)
    flag = pd.Series((distance > tolerance).to_numpy(), index=frame.index, dtype="boolean").where(both, pd.NA)
    frame = frame.copy()
    flag_name = _unique(MISMATCH_FLAG, list(frame.columns))
    dist_name = _unique(MISMATCH_DISTANCE, [*frame.columns, flag_name])
    frame[flag_name], frame[dist_name] = flag, distance
    checked, bad = int(both.sum()), int(flag.fillna(False).sum())
    tol = float(tolerance[both].max()) if checked else CROSSCHECK_TOLERANCE_M
    tol_text = f"{CROSSCHECK_TOLERANCE_M:g} m" + (f" (up to {tol:.0f} m for the rounding of the lat/lon text)"
                                                  if tol > CROSSCHECK_TOLERANCE_M else "")
    biggest = float(distance.max()) if checked else 0.0
    if bad:
        report.warn(f"{bad} of {checked} rows: {what} (converted with EPSG:1825) disagree by more than {tol_text}, "
                    f"max {biggest:.1f} m; flagged in {flag_name}/{dist_name}")
    else:
        report.note(f"cross-checked {what} on {checked} rows (EPSG:1825): all within {tol_text}, "
                    f"max {biggest:.1f} m; distances in {dist_name}")
    return frame
