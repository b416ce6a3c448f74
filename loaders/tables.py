"""Delimited text tables (CSV, TSV, TXT) with point coordinates in columns.

GDAL cannot open the UTF-16 "CSV" files departments publish, so tables are read with pandas: the
encoding comes from ``source.encoding``, a byte-order mark, or strict decoding (UTF-8, then
Big5-HKSCS); the delimiter is sniffed; coordinate columns come from ``source.coordinates`` or are
detected by name (EASTING/NORTHING, X/Y, 坐標東/坐標北, longitude/latitude ...).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from loaders.encoding import normalise_codec
from loaders.report import LoadReport
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition

#: Column-name candidates for coordinates, most specific first: (x names, y names, kind).
COORDINATE_NAMES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("easting", "east", "坐標東", "東坐標", "x坐標", "hk1980_e", "hk80_e", "grid_e"),
     ("northing", "north", "坐標北", "北坐標", "y坐標", "hk1980_n", "hk80_n", "grid_n"), "grid"),
    (("longitude", "lon", "long", "lng", "經度", "wgs84_lon", "wgs84_long"),
     ("latitude", "lat", "緯度", "wgs84_lat"), "lonlat"),
    (("x", "x_coord", "xcoord", "coord_x", "point_x"), ("y", "y_coord", "ycoord", "coord_y", "point_y"), "xy"),
)

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _key(name: str) -> str:
    return re.sub(r"[\s()（）\[\]]+", "", str(name)).lower()


def detect_encoding(raw: bytes) -> tuple[str, str]:
    """Return ``(codec, how)`` for raw table bytes: a BOM, else strict UTF-8, else Big5-HKSCS.

    Raises
    ------
    SourceFormatError
        When no candidate decodes the bytes.
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return codec, "byte-order mark"
    if raw[:4096].count(b"\x00") > len(raw[:4096]) // 4:
        return ("utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be"), "NUL byte pattern (UTF-16 without BOM)"
    for codec in ("utf-8", "big5hkscs"):
        try:
            raw.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec, "strict decoding"
    raise SourceFormatError("text is neither UTF-8, UTF-16 nor Big5-HKSCS; set source.encoding")


def detect_delimiter(text: str) -> str:
    """Return the delimiter of a delimited-text sample: tab, comma, semicolon or pipe."""
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters="\t,;|").delimiter
    except csv.Error:
        counts = {d: sample.count(d) for d in "\t,;|"}
        return max(counts, key=lambda d: counts[d])


def find_coordinate_columns(columns: list[str]) -> tuple[str, str, str] | None:
    """Find the x and y columns by name; return ``(x, y, kind)`` or ``None``.

    ``kind`` is ``"grid"`` (easting/northing), ``"lonlat"`` or ``"xy"``. Grid pairs win over
    longitude/latitude when a table carries both.
    """
    by_key = {_key(c): c for c in columns}
    for xs, ys, kind in COORDINATE_NAMES:
        x = next((by_key[k] for k in xs if k in by_key), None)
        y = next((by_key[k] for k in ys if k in by_key), None)
        if x is not None and y is not None:
            return x, y, kind
    return None


def read_table(path: Path, definition: LayerDefinition, report: LoadReport) -> gpd.GeoDataFrame:
    """Read a delimited text file and build point geometries from its coordinate columns.

    The result has no CRS: the caller settles it from ``source.crs`` or the coordinate ranges.
    Rows whose coordinates are missing or not numbers keep an empty geometry, to be dropped and
    counted by the normaliser.
    """
    raw = path.read_bytes()
    if definition.source.encoding:
        codec, how = normalise_codec(definition.source.encoding), "declared in source.encoding"
    else:
        try:
            codec, how = detect_encoding(raw)
        except SourceFormatError as exc:
            raise SourceFormatError(f"{path}: {exc}") from exc
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(f"{path}: cannot decode as {codec}: byte {exc.start}") from exc
    text = text.lstrip("\ufeff")
    delimiter = detect_delimiter(text)
    report.encoding = codec
    report.note(f"table decoded as {codec} ({how}); delimiter {delimiter!r}")
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                            quotechar='"', skipinitialspace=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceFormatError(f"{path}: not a readable table: {str(exc).splitlines()[0]}") from exc
    empty = [c for c in frame.columns if str(c).startswith("Unnamed:") and (frame[c].str.strip() == "").all()]
    if empty:
        frame = frame.drop(columns=empty)
        report.note(f"dropped {len(empty)} empty unnamed column(s) (trailing delimiter)")
    if definition.source.coordinates:
        x, y = definition.source.coordinates.x, definition.source.coordinates.y
        missing = [c for c in (x, y) if c not in frame.columns]
        if missing:
            raise SourceFormatError(f"{definition.label}: source.coordinates: no column {missing[0]!r} in {path.name}")
        how_cols = "declared in source.coordinates"
    else:
        found = find_coordinate_columns([str(c) for c in frame.columns])
        if found is None:
            raise SourceFormatError(
                f"{path}: no coordinate columns found (looked for EASTING/NORTHING, X/Y, lon/lat); "
                f"set source.coordinates"
            )
        x, y, _ = found
        how_cols = "detected by name"
    report.note(f"point coordinates from columns {x!r}, {y!r} ({how_cols})")
    xs = pd.to_numeric(frame[x].str.strip().str.replace(",", "", regex=False), errors="coerce")
    ys = pd.to_numeric(frame[y].str.strip().str.replace(",", "", regex=False), errors="coerce")
    ok = xs.notna() & ys.notna() & np.isfinite(xs) & np.isfinite(ys)
    geometry = gpd.points_from_xy(xs.where(ok, 0.0), ys.where(ok, 0.0))
    geometry[~ok.to_numpy()] = None
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=None)
