"""Read a layer's source file into a GeoDataFrame, with its CRS and encoding settled.

pyogrio (GDAL) reads Shapefile, GeoPackage, GeoJSON and the other vector formats; explicit
fallbacks cover what GDAL gets wrong: DBF text is read as ISO-8859-1 and decoded here (see
:mod:`loaders.encoding`), a missing ``.shx`` is rebuilt in a scratch copy (the source is never
modified), and delimited text files go through :mod:`loaders.tables`.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError

from loaders import formats, tables
from loaders.encoding import LDID_CODECS, dbf_ldid, guess_codec, normalise_codec, read_cpg
from loaders.limits import Budget, check_sidecars, dataset_files, open_regular
from loaders.report import LoadReport
from loaders.tables import SPREADSHEET_SUFFIXES, TABLE_SUFFIXES
from sdi.crs import guess_from_bounds, parse_crs
from sdi.errors import CrsError, SourceFormatError, SourceNotFoundError
from sdi.layerdef import LayerDefinition

#: Arrow → pandas types that keep integers and booleans with NULLs as integers and booleans.
_NULLABLE = {pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.bool_(): pd.BooleanDtype()}


@dataclass
class RawLayer:
    """A source read into memory: features, the CRS they are in, and where that CRS came from."""

    frame: gpd.GeoDataFrame
    source_epsg: int
    crs_origin: str  #: "file", "declared" or "inferred"


def sha256_file(path: Path) -> str:
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path, suffix: str) -> Path | None:
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.exists():
            return candidate
    return None


def _check_file(path: Path, label: str) -> None:
    """Refuse a missing or unreadable source, anything but a regular file or a dataset folder (a FIFO or a
    device would block or never end), and special files among its sidecars or inside the folder."""
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise SourceNotFoundError(f"{label}: source.path: cannot use {str(path)[:120]!r}: {exc.strerror}") from exc
    if not exists:
        raise SourceNotFoundError(f"{label}: source file {path} does not exist")
    if formats.is_dataset_dir(path):  # a .gdb folder is one dataset
        dataset_files(path)
        return
    if not path.is_file():
        raise SourceNotFoundError(f"{label}: source {path} is not a file")
    check_sidecars(path)
    try:
        with open_regular(path) as fh:
            fh.read(1)
    except OSError as exc:
        raise SourceNotFoundError(f"{label}: cannot read source file {path}: {exc.strerror}") from exc
    if path.stat().st_size == 0:
        raise SourceFormatError(f"{path}: file is empty (0 bytes)")


def check_layer(path: Path, layer: str | None, label: str) -> None:
    """Check that GDAL reads ``path`` and that ``layer`` names one of its layers (or it has only one).

    Raises
    ------
    SourceFormatError
        Not a readable vector file, several layers and no ``source.layer``, or an unknown layer.
    """
    try:
        layers = pyogrio.list_layers(path)
    except (DataSourceError, OSError) as exc:
        raise SourceFormatError(f"{path}: not a readable vector file ({_first_line(exc)})") from exc
    names = [str(n) for n in layers[:, 0]] if len(layers) else []
    if layer is None and len(names) > 1:
        raise SourceFormatError(
            f"{label}: {path.name} has {len(names)} layers ({', '.join(names[:8])}); set source.layer"
        )
    if layer is not None and layer not in names:
        raise SourceFormatError(f"{label}: source.layer {layer!r} not in {path.name} (has: {', '.join(names)})")


def _read_ogr(path: Path, *, layer: str | None, encoding: str | None, label: str,
              report: LoadReport | None = None) -> gpd.GeoDataFrame:
    check_layer(path, layer, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                return pyogrio.read_dataframe(path, layer=layer, encoding=encoding, use_arrow=True,
                                              arrow_to_pandas_kwargs={"types_mapper": _NULLABLE.get})
            except shapely.errors.GEOSException:
                # GEOS refuses some WKB that GDAL passes through (e.g. unclosed rings): repair while parsing.
                return _read_ogr_fixing(path, layer=layer, encoding=encoding, report=report)
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        raise SourceFormatError(f"{path}: cannot read: {_first_line(exc)}") from exc


def _read_ogr_fixing(path: Path, *, layer: str | None, encoding: str | None,
                     report: LoadReport | None) -> gpd.GeoDataFrame:
    """Read through Arrow and parse WKB with ``on_invalid="fix"``, counting what had to be fixed."""
    meta, table = pyogrio.read_arrow(path, layer=layer, encoding=encoding)
    geom_col = meta.get("geometry_name") or "wkb_geometry"
    wkb = table.column(geom_col).to_numpy(zero_copy_only=False)
    strict = shapely.from_wkb(wkb, on_invalid="ignore")
    fixed = shapely.from_wkb(wkb, on_invalid="fix")
    repaired = int((shapely.is_missing(strict) & ~shapely.is_missing(fixed)).sum())
    if report is not None and repaired:
        report.repair("unparseable geometry fixed while reading (e.g. unclosed ring closed)", repaired)
    attrs = table.drop_columns([geom_col]).to_pandas(types_mapper=_NULLABLE.get)
    return gpd.GeoDataFrame(attrs, geometry=gpd.GeoSeries(fixed, index=attrs.index), crs=meta.get("crs"))


def first_line(exc: BaseException) -> str:
    """The first line of a GDAL error, without its advice."""
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "not recognized as being in a supported file format" in text:
        return "GDAL recognises no format in it"
    return text.splitlines()[0].split("; It might help")[0] if text else type(exc).__name__


def _decode_latin1_columns(frame: pd.DataFrame, codec: str) -> int:
    """Re-decode text columns read as ISO-8859-1 with ``codec``; return how many values changed."""
    changed = 0
    for column in frame.columns:
        if isinstance(frame, gpd.GeoDataFrame) and column == frame.geometry.name:
            continue
        series = frame[column]
        if series.dtype != object and not pd.api.types.is_string_dtype(series.dtype):
            continue
        mask = series.map(lambda v: isinstance(v, str) and any(ord(c) > 0x7F for c in v))
        if not mask.any():
            continue
        decoded = series[mask].map(lambda v: v.encode("latin-1").decode(codec, errors="replace"))
        frame[column] = series.astype(object).where(~mask, decoded)
        changed += int(mask.sum())
    return changed


def _raw_samples(frame: pd.DataFrame) -> list[bytes]:
    samples: list[bytes] = []
    for column in frame.columns:
        if isinstance(frame, gpd.GeoDataFrame) and column == frame.geometry.name:
            continue
        for value in frame[column].head(5000):
            if isinstance(value, str) and any(ord(c) > 0x7F for c in value):
                samples.append(value.encode("latin-1", errors="replace"))
    return samples


def _read_shapefile(path: Path, definition: LayerDefinition, report: LoadReport) -> gpd.GeoDataFrame:
    label = definition.label
    dbf = _sidecar(path, ".dbf")
    with tempfile.TemporaryDirectory(prefix="sdi-shp-") as scratch:
        read_path = path
        if _sidecar(path, ".shx") is None:
            # Rebuild the index in a scratch copy: the source folder is never written to.
            read_path = Path(scratch) / path.name
            for sibling in path.parent.glob(path.stem + ".*"):
                shutil.copy(sibling, Path(scratch) / sibling.name)
            with _restore_shx():
                try:
                    pyogrio.read_info(read_path)
                except DataSourceError as exc:
                    raise SourceFormatError(f"{path}: .shx missing and cannot be rebuilt: {_first_line(exc)}") from exc
            report.note(f"{path.stem}.shx was missing: index rebuilt from the .shp (SHAPE_RESTORE_SHX)")
        if dbf is None:
            _check_shapefile_set(read_path, None)
            report.warn(f"{path.stem}.dbf is missing: geometry-only layer, no attributes")
            frame = _read_ogr(read_path, layer=None, encoding=None, label=label, report=report)
            return frame
        codec, how = _dbf_codec(path, dbf, definition)
        _check_shapefile_set(read_path, dbf)
        frame = _read_ogr(read_path, layer=None, encoding="ISO-8859-1", label=label, report=report)
    if codec is None:
        codec = guess_codec(_raw_samples(frame))
        how = "detected from content" if codec else "all text is ASCII"
        codec = codec or "ascii"
    changed = _decode_latin1_columns(frame, codec) if codec not in ("latin-1", "iso8859-1") else 0
    report.encoding = codec
    report.note(f"DBF text decoded as {codec} ({how}); {changed} non-ASCII values")
    return frame


def _check_shapefile_set(shp: Path, dbf: Path | None) -> None:
    """Refuse a truncated .shp, or a set whose .shx (index) and .dbf (attributes) count different records.

    GDAL silently reads the shorter of the two, dropping shapes or attributes without a word.
    """
    shx = _sidecar(shp, ".shx")
    if shx is None:
        return
    raw = shx.read_bytes()
    if len(raw) < 100 or struct.unpack(">i", raw[:4])[0] != 9994 or struct.unpack(">i", raw[24:28])[0] * 2 != len(raw):
        raise SourceFormatError(f"{shx}: the .shx is corrupt (not a shape index); delete it and it is rebuilt "
                                f"from the .shp")
    shapes = (len(raw) - 100) // 8
    index = raw[100: 100 + 8 * shapes]
    if shapes:
        last_offset, last_length = struct.unpack(">ii", index[-8:])
        end = 2 * (last_offset + last_length) + 8
        size = shp.stat().st_size
        if end > size:
            complete = sum(1 for i in range(shapes)
                           if 2 * sum(struct.unpack(">ii", index[8 * i: 8 * i + 8])) + 8 <= size)
            raise SourceFormatError(f"{shp}: truncated: the .shx indexes {shapes} shapes but the .shp ends "
                                    f"after {complete} ({size:,} of {end:,} bytes)")
    records = shapes
    if dbf is not None:
        with dbf.open("rb") as fh:
            header = fh.read(12)
        if len(header) < 12:
            raise SourceFormatError(f"{dbf}: truncated .dbf header")
        records = int.from_bytes(header[4:8], "little")
    if dbf is not None and shapes != records:
        raise SourceFormatError(f"{shp}: the .shp has {shapes} shapes but the .dbf has {records} records; "
                                f"the files are not from the same export")


class _restore_shx:
    """Context manager setting GDAL's SHAPE_RESTORE_SHX=YES for the duration."""

    def __enter__(self) -> None:
        pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": "YES"})

    def __exit__(self, *exc: object) -> None:
        pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": None})


def _dbf_codec(shp: Path, dbf: Path, definition: LayerDefinition) -> tuple[str | None, str]:
    if definition.source.encoding:
        return normalise_codec(definition.source.encoding), "declared in source.encoding"
    cpg = read_cpg(shp)
    if cpg:
        return cpg, "from the .cpg file"
    ldid = dbf_ldid(dbf)
    if ldid and ldid in LDID_CODECS:
        return LDID_CODECS[ldid], f"from the DBF language driver 0x{ldid:02X}"
    return None, ""


def read_source(definition: LayerDefinition, report: LoadReport, budget: Budget | None = None) -> gpd.GeoDataFrame:
    """Read the definition's source into a GeoDataFrame (CRS as found in the file, possibly none).

    Parameters
    ----------
    budget
        The limits of reading this source and what nested archives have used of them (default: a fresh
        budget with the default :class:`~loaders.limits.Limits`).

    Raises
    ------
    SourceNotFoundError
        The file does not exist or cannot be read.
    SourceFormatError
        Unknown format, corrupt or empty file, an ambiguous layer choice, a special file (FIFO, device,
        socket) among its files, or a limit passed (archive sizes and depth, table width, nesting).
    """
    path = definition.source_path
    budget = budget if budget is not None else Budget()
    _check_file(path, definition.label)
    try:
        return _read_source(path, definition, report, budget)
    except RecursionError as exc:  # a parser that recurses per level of nesting, on a hostile file
        raise SourceFormatError(f"{path}: nested too deeply to read (hundreds of levels of arrays, objects "
                                f"or elements)") from exc


def _read_source(path: Path, definition: LayerDefinition, report: LoadReport, budget: Budget) -> gpd.GeoDataFrame:
    """:func:`read_source` once the path is checked: dispatch on the format."""
    report.source_sha256 = formats.dataset_sha256(path)  # the file's digest; a .gdb folder's files in order
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        report.driver = "spreadsheet (xlsx)" if suffix in SPREADSHEET_SUFFIXES else "delimited text"
        return tables.read_table(path, definition, report, budget.limits)
    special = None if suffix == ".shp" else formats.read_other(path, definition, report, budget)
    if special is not None:
        frame = special
    elif suffix == ".shp":
        report.driver = "ESRI Shapefile"
        frame = _read_shapefile(path, definition, report)
    else:
        frame = _read_ogr(path, layer=definition.source.layer, encoding=definition.source.encoding,
                          label=definition.label, report=report)
        try:
            report.driver = str(pyogrio.read_info(path, layer=definition.source.layer)["driver"])
        except (DataSourceError, DataLayerError):
            report.driver = "unknown"
    if suffix in (".geojson", ".json") and path.is_file():
        nuls = path.read_bytes().count(b"\\u0000")
        if nuls:
            report.warn(f"{path.name} has {nuls} NUL character(s) (\\u0000) in text: GDAL cuts each such value "
                        f"short at the NUL; check those values in the source")
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        raise SourceFormatError(f"{path}: has no geometry column; for a table, set source.coordinates")
    return frame


def declared_crs(definition: LayerDefinition, file_epsg: int | None, report: LoadReport) -> int | None:
    """The EPSG code of ``source.crs`` when the layer declares one (recorded, and a clash with the file's
    own CRS warned about), else ``None``."""
    if definition.source.crs is None:
        return None
    declared = parse_crs(definition.source.crs, what=f"{definition.label}: source.crs").to_epsg()
    assert declared is not None
    if file_epsg is not None and file_epsg != declared:
        report.warn(f"source.crs EPSG:{declared} overrides the file's EPSG:{file_epsg}")
    report.source_crs, report.crs_origin = f"EPSG:{declared}", "declared"
    return declared


def resolve_crs(frame: gpd.GeoDataFrame, definition: LayerDefinition, report: LoadReport) -> RawLayer:
    """Settle the source CRS: declared ``source.crs`` wins, then the file's, then a safe inference.

    Inference happens only when the coordinates fit exactly one of HK1980 Grid, WGS84
    longitude/latitude, UTM 49N or UTM 50N around Hong Kong, and is reported as inferred.

    Raises
    ------
    CrsError
        When the file has no CRS, none is declared, and none is safely implied.
    """
    label = definition.label
    file_epsg: int | None = None
    if frame.crs is not None:
        crs = frame.crs.to_2d() if len(frame.crs.axis_info) > 2 else frame.crs  # 3D (e.g. EPSG:4979) -> 2D
        file_epsg = parse_crs(crs, what=f"{label}: CRS of {definition.source_path.name}").to_epsg()
    declared = declared_crs(definition, file_epsg, report)
    if declared is not None:
        return RawLayer(frame, declared, "declared")
    if file_epsg is not None:
        report.source_crs, report.crs_origin = f"EPSG:{file_epsg}", "file"
        return RawLayer(frame, file_epsg, "file")
    geoms = frame.geometry
    present = geoms[~(geoms.isna() | geoms.is_empty)]
    if len(present):
        bounds = tuple(float(v) for v in present.total_bounds)
        guessed = guess_from_bounds(bounds)  # type: ignore[arg-type]
        if guessed is not None:
            report.source_crs, report.crs_origin = f"EPSG:{guessed}", "inferred"
            report.warn(f"no CRS in the source: EPSG:{guessed} inferred from the coordinate ranges; "
                        f"declare source.crs to confirm")
            return RawLayer(frame, guessed, "inferred")
    raise CrsError(f"{label}: {definition.source_path.name} has no CRS and its coordinates do not imply one; "
                   f"set source.crs (for example EPSG:2326)")
