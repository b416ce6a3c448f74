"""Reading a vector file in Arrow batches, for streamed loads (see :mod:`loaders.stream`).

GeoPackage, FlatGeobuf and (Geo)JSON sources larger than ``SDI_LOAD_CHUNK_ROWS`` features are read
through GDAL's Arrow stream (:func:`pyogrio.open_arrow`), one batch at a time, and each batch becomes
a GeoDataFrame exactly as :func:`pyogrio.read_dataframe` would have made it for those rows (nullable
integers and booleans, ISO 8601 datetimes, JSON fields parsed), so a streamed load and a whole-file
load see the same values. Other formats (Shapefiles, whose text encoding is detected over the whole
file, tables, KML, Esri JSON, archives, File Geodatabases) are read whole.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError

from loaders import formats
from loaders.read import _NULLABLE, check_layer, first_line
from loaders.report import LoadReport
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition

#: Suffixes of the files a load may stream (a JSON file only when it is plain GeoJSON).
STREAM_SUFFIXES = frozenset({".gpkg", ".fgb", ".geojson", ".json", ".geojsonl", ".geojsons"})
_JSON = frozenset({".geojson", ".json"})


def streamed_count(definition: LayerDefinition, chunk_rows: int) -> int | None:
    """The source's feature count when it is to be streamed in chunks of ``chunk_rows``, else ``None``.

    A source is streamed when it is a single file of a streamable format (:data:`STREAM_SUFFIXES`)
    holding more than ``chunk_rows`` features; anything GDAL cannot describe cheaply, or whose layer
    choice is wrong, is left to the whole-file reader (which reports the problem).
    """
    path = definition.source_path
    suffix = path.suffix.lower()
    try:
        if suffix not in STREAM_SUFFIXES or not path.is_file():
            return None
        if suffix in _JSON and formats.json_flavour(path) is not None:
            return None  # TopoJSON or Esri JSON: read by loaders.formats
        check_layer(path, definition.source.layer, definition.label)
        info = pyogrio.read_info(path, layer=definition.source.layer, force_feature_count=True)
    except (SourceFormatError, DataSourceError, DataLayerError, OSError):
        return None  # the whole-file reader says what is wrong (a name too long, a special file, ...)
    count = int(info.get("features", -1))
    return count if count > chunk_rows else None


def _parse_datetimes(series: pd.Series) -> pd.Series:
    """ISO 8601 text from GDAL as datetimes, as :func:`pyogrio.read_dataframe` does (mixed offsets in UTC)."""
    try:
        return pd.to_datetime(series, format="ISO8601")
    except ValueError as exc:
        if "Mixed timezones" in str(exc) or "mixed time zones" in str(exc):
            try:
                return pd.to_datetime(series, format="ISO8601", utc=True)
            except ValueError:
                return series
        return series


@dataclass
class RawBatch:
    """One batch as read: attributes converted as :func:`pyogrio.read_dataframe` would, geometries still WKB."""

    attrs: pd.DataFrame  #: indexed by the features' positions in the file
    wkb: pa.Array  #: the geometries as GDAL wrote them (WKB)
    crs: object


def _raw(batch: pa.RecordBatch, meta: dict[str, object], start: int) -> RawBatch:
    """One Arrow batch as attributes (indexed from ``start``, the batch's first row in the file) and WKB."""
    geom_col = str(meta.get("geometry_name") or "wkb_geometry")
    table = pa.Table.from_batches([batch])
    if geom_col not in table.column_names:
        raise SourceFormatError("has no geometry column; for a table, set source.coordinates")
    wkb = table.column(geom_col).combine_chunks()
    frame = table.drop_columns([geom_col]).to_pandas(types_mapper=_NULLABLE.get)
    frame.index = pd.RangeIndex(start, start + len(frame))
    fields = [str(f) for f in meta.get("fields", [])]  # type: ignore[attr-defined]
    dtypes = list(meta.get("dtypes", []))  # type: ignore[call-overload]
    subtypes = list(meta.get("ogr_subtypes", [None] * len(fields)))  # type: ignore[call-overload]
    for column, dtype, subtype in zip(fields, dtypes, subtypes, strict=False):
        if column not in frame.columns:
            continue
        if dtype is not None and str(dtype).startswith("datetime") and dtype != "datetime64[D]":
            frame[column] = _parse_datetimes(frame[column])
        if subtype == "OFSTJSON" and pd.api.types.infer_dtype(frame[column]) == "string":
            try:
                frame[column] = frame[column].map(json.loads, na_action="ignore")
            except ValueError:
                warnings.warn(f"Could not parse column '{column}' as JSON; leaving as string", stacklevel=2)
    return RawBatch(frame, wkb, meta.get("crs"))


def to_frame(raw: RawBatch, report: LoadReport) -> gpd.GeoDataFrame:
    """The batch as a GeoDataFrame: its WKB parsed (repairing what GEOS cannot parse, as loaders.read does)."""
    wkb = raw.wkb.to_numpy(zero_copy_only=False)
    try:
        geoms = shapely.from_wkb(wkb)
    except shapely.errors.GEOSException:
        strict = shapely.from_wkb(wkb, on_invalid="ignore")
        geoms = shapely.from_wkb(wkb, on_invalid="fix")
        report.repair("unparseable geometry fixed while reading (e.g. unclosed ring closed)",
                      int((shapely.is_missing(strict) & ~shapely.is_missing(geoms)).sum()))
    return gpd.GeoDataFrame(raw.attrs, geometry=gpd.GeoSeries(geoms, index=raw.attrs.index), crs=raw.crs)


def read_batches(path: Path, definition: LayerDefinition, rows: int) -> Generator[RawBatch, None, None]:
    """Yield the features of ``path`` in batches of at most ``rows`` features, in file order (:func:`to_frame`
    makes each a GeoDataFrame).

    Raises
    ------
    SourceFormatError
        GDAL cannot read the file (or a later part of it), or it has no geometry column.
    """
    start = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pyogrio.open_arrow(path, layer=definition.source.layer, encoding=definition.source.encoding,
                                    batch_size=rows, use_pyarrow=True) as (meta, reader):
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    try:
                        raw = _raw(batch, meta, start)
                    except SourceFormatError as exc:
                        raise SourceFormatError(f"{path}: {exc}") from None
                    start += len(raw.wkb)
                    yield raw
    except (DataSourceError, DataLayerError, OSError, pa.ArrowException) as exc:
        raise SourceFormatError(f"{path}: cannot read: {first_line(exc)}") from exc
