"""Writing a layer's download files from a :class:`~sdi.distribution.source.LayerReader`, one page at a time.

=========  ========================================================================================================
``gpkg``   GeoPackage in EPSG:2326 through pyogrio (GDAL), appended page by page; an integer primary key is the FID.
``shp``    zipped Shapefile (:mod:`sdi.distribution.shapefile`).
``csv``    CSV written by PostgreSQL (:func:`sdi.query.statements.csv_row`): UTF-8 with a byte-order mark (so Excel
           reads Chinese), the properties, then ``wkt``: the geometry as WKT in EPSG:2326 (easting, northing; mm).
``geojson`` GeoJSON written by PostgreSQL: RFC 7946 (longitude/latitude in WGS 84, 8 decimals or about 1 mm, exterior
           rings counter-clockwise, no ``crs`` member).
``parquet`` GeoParquet 1.1 in EPSG:2326 (WKB ``geometry`` column, ``geo`` metadata with the CRS as PROJJSON), one row
           group per page, through pyarrow.
=========  ========================================================================================================

:func:`export_layer` writes one format of a layer's current load to a file atomically (temporary file, then rename);
``sdi export`` calls it, and the download cache (:mod:`sdi.distribution.cache`) through :func:`write_file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdi.crs import CRS84_URI, HK_GRID, STORAGE_CRS_URI, UriCrs
from sdi.distribution.formats import Format, get_format
from sdi.distribution.source import PAGE_ROWS, LayerReader, LoadChanged, open_connection, read_layer
from sdi.errors import ConfigError, ServiceBusyError
from sdi.query.statements import csv_header, csv_row, feature_json
from sdi.settings import Settings

#: EPSG:2326 in x/y order (easting, northing) to the millimetre: the geometry of the CSV download.
GRID_XY = UriCrs(STORAGE_CRS_URI, HK_GRID, False, False, 3)
#: RFC 7946 longitude/latitude, 8 decimals (about 1 mm): the geometry of the GeoJSON download.
LONLAT = UriCrs(CRS84_URI, 4326, False, True, 8)
BOM = "\ufeff"
ATTEMPTS = 3  #: exports started again when the layer is reloaded while it is being read
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")


@lru_cache(maxsize=1)
def grid_projjson() -> dict[str, Any]:
    """EPSG:2326 as PROJJSON (the GeoParquet ``crs``)."""
    from pyproj import CRS

    return dict(CRS.from_epsg(HK_GRID).to_json_dict())


def ogr_geometry_type(reader: LayerReader) -> str:
    """The layer's geometry type as GDAL names it (``Unknown`` for a generic column)."""
    kind = reader.layer.record.geometry_type or ""
    return kind if kind in GEOMETRY_TYPES else "Unknown"


def write_gpkg(reader: LayerReader, path: Path) -> None:
    """A GeoPackage layer named after the layer, in EPSG:2326, with its title and abstract."""
    import pyogrio

    layer, record = reader.layer, reader.layer.record
    options: dict[str, Any] = {"IDENTIFIER": record.title_en, "DESCRIPTION": record.abstract_en or ""}
    if layer.key_type in ("bigint", "integer", "smallint"):
        options["FID"] = layer.primary_key
    for i, table in enumerate(reader.tables()):
        pyogrio.write_arrow(table, str(path), layer=layer.id, driver="GPKG", geometry_name="geom",
                            geometry_type=ogr_geometry_type(reader), crs=f"EPSG:{HK_GRID}", append=i > 0,
                            layer_options=options if i == 0 else None)


def write_csv(reader: LayerReader, path: Path) -> None:
    """CSV, UTF-8 with BOM, ``CRLF`` line ends; see the module docstring."""
    names = list(reader.layer.columns)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(BOM + csv_header(names, True))
        for lines in reader.texts(csv_row(reader.layer, names, GRID_XY)):
            out.write("".join(lines))


def write_geojson(reader: LayerReader, path: Path) -> None:
    """An RFC 7946 FeatureCollection, one feature per line; see the module docstring."""
    names = list(reader.layer.columns)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write('{"type":"FeatureCollection","name":' + json.dumps(reader.layer.id) + ',"features":[\n')
        first = True
        for features in reader.texts(feature_json(reader.layer, names, LONLAT, right_hand=True)):
            out.write(("" if first else ",\n") + ",\n".join(features))
            first = False
        out.write("\n]}\n")


def geo_metadata(reader: LayerReader) -> dict[str, Any]:
    """The GeoParquet 1.1 ``geo`` metadata of the layer's ``geometry`` column."""
    kind = ogr_geometry_type(reader)
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": [kind] if kind != "Unknown" else [],
                              "crs": grid_projjson()}
    extent = reader.extent()
    if extent is not None:
        column["bbox"] = list(extent)
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def write_parquet(reader: LayerReader, path: Path) -> None:
    """GeoParquet; see the module docstring."""
    import pyarrow.parquet as pq

    names = [*reader.schema.names[:-1], "geometry"]
    schema = reader.schema.empty_table().rename_columns(names).schema.with_metadata(
        {"geo": json.dumps(geo_metadata(reader))})
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for table in reader.tables():
            writer.write_table(table.rename_columns(names).replace_schema_metadata(schema.metadata))


def write_shp(reader: LayerReader, path: Path) -> None:
    """A zipped Shapefile (:func:`sdi.distribution.shapefile.write_shapefile_zip`)."""
    from sdi.distribution.shapefile import write_shapefile_zip

    write_shapefile_zip(reader, path)


WRITERS: dict[str, Callable[[LayerReader, Path], None]] = {
    "gpkg": write_gpkg, "shp": write_shp, "csv": write_csv, "geojson": write_geojson, "parquet": write_parquet}


@dataclass(frozen=True)
class Written:
    """A file written by :func:`write_file`."""

    path: Path
    layer_id: str
    load_id: int
    format: Format
    features: int
    size: int
    sha256: str


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def part_path(path: Path) -> Path:
    """A temporary name beside ``path`` with the same extension (GDAL looks at extensions)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{path.suffix}")


def write_file(reader: LayerReader, fmt: Format, path: Path) -> Written:
    """Write ``reader``'s layer as ``fmt`` to ``path`` atomically (a temporary file beside it, then a rename).

    Raises
    ------
    LoadChanged
        When the layer was reloaded or dropped while it was read (nothing is left behind).
    """
    temp = part_path(path)
    try:
        WRITERS[fmt.id](reader, temp)
        size, digest = temp.stat().st_size, sha256_of(temp)
        os.replace(temp, path)
    finally:
        for leftover in temp.parent.glob(f"{temp.name}*"):  # GDAL's -journal/-wal files too
            leftover.unlink(missing_ok=True)
    return Written(path, reader.layer.id, reader.layer.load_id, fmt, reader.layer.record.feature_count, size, digest)


def export_layer(settings: Settings, layer_id: str, fmt: Format | str, output: Path, *,
                 page_rows: int = PAGE_ROWS, statement_timeout_ms: int | None = None) -> Written:
    """Write the current load of vector layer ``layer_id`` as ``fmt`` to ``output`` (atomically).

    Parameters
    ----------
    settings
        The database (``SDI_DATABASE_URL``).
    layer_id
        A loaded vector layer.
    fmt
        A :class:`Format` or its id (``gpkg``, ``shp``, ``csv``, ``geojson``, ``parquet``).
    output
        The file to write; its folder must exist.
    page_rows
        Features read per statement (memory is bounded by one page).
    statement_timeout_ms
        Longest statement, when given.

    Raises
    ------
    LayerNotFoundError
        No such vector layer.
    ConfigError
        An unknown format, or an output folder that does not exist.
    ServiceBusyError
        The layer was reloaded during each of :data:`ATTEMPTS` tries.
    """
    fmt = fmt if isinstance(fmt, Format) else get_format(fmt)
    if not output.parent.is_dir():
        raise ConfigError(f"--output: folder {str(output.parent)!r} does not exist")
    with open_connection(settings, statement_timeout_ms) as conn:
        for _ in range(ATTEMPTS):
            reader = read_layer(conn, layer_id, page_rows)
            try:
                return write_file(reader, fmt, output)
            except LoadChanged:
                continue
    raise ServiceBusyError(f"{layer_id}: the layer was reloaded while it was being exported; retry")
