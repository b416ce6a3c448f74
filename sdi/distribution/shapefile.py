"""The zipped Shapefile download: what a Shapefile cannot hold is mapped, split or refused, and said so in the zip.

* **Encoding**: the ``.dbf`` is UTF-8, declared in a ``.cpg``; the ``.prj`` is EPSG:2326 (as GDAL writes it).
* **Field names** longer than 10 bytes (or not ASCII) get unique short names (:func:`short_names`): cut to 10
  characters (``relevant_d``), then numbered (``relevant_1``), or ``f001``... for names that are not ASCII. The zip
  holds ``fields.csv`` (UTF-8 with BOM): each field's name, Shapefile name, type, source name and how many of its
  values are in ``full_values.csv``.
* **Text** a ``.dbf`` cannot hold as it is goes in full into ``full_values.csv`` in the zip (primary key, field,
  Shapefile field, value): text longer than 254 bytes (the ``.dbf`` limit, cut at a character boundary) and text
  with leading or trailing spaces (which ``.dbf`` readers trim). Timestamps are written as ISO 8601 text (a ``.dbf``
  has dates only), JSON as its text.
* **Geometry**: one Shapefile holds one family (points, lines or polygons; single and multi parts mix). A layer whose
  column holds several families is split into ``<layer>_points.shp``, ``<layer>_lines.shp`` and
  ``<layer>_polygons.shp``; geometry collections are refused.
* **Size**: a ``.shp`` or ``.dbf`` may not pass 2 GB; a layer that would is refused (use the GeoPackage or GeoParquet).
"""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from sdi.crs import HK_GRID
from sdi.distribution.source import LayerReader
from sdi.errors import DataError, GeometryError
from sdi.query.layer import GEOMETRY_COLUMN

NAME_BYTES = 10  #: longest ``.dbf`` field name
TEXT_BYTES = 254  #: longest ``.dbf`` text value
MAX_FILE_BYTES = 2 * 1024**3 - 1  #: largest ``.shp`` or ``.dbf``
#: Geometry families: (file suffix when split, PostGIS types, the Shapefile's type when the layer mixes them).
FAMILIES = (("points", ("POINT", "MULTIPOINT"), "MultiPoint"),
            ("lines", ("LINESTRING", "MULTILINESTRING"), "MultiLineString"),
            ("polygons", ("POLYGON", "MULTIPOLYGON"), "MultiPolygon"))


def short_names(names: list[str]) -> dict[str, str]:
    """Unique ``.dbf`` field names (at most 10 ASCII bytes, compared without case) for ``names``, in order.

    Names that fit are kept; longer ASCII names are cut to 10 characters, then numbered on a clash
    (``relevant_d``, ``relevant_1``, ...); other names become ``f001``, ``f002``... (by position).
    """
    def fits(name: str) -> bool:
        return name.isascii() and 0 < len(name) <= NAME_BYTES

    taken: set[str] = set()
    kept: set[str] = set()
    for name in names:
        if fits(name) and name.lower() not in taken:
            taken.add(name.lower())
            kept.add(name)
    out: dict[str, str] = {}
    for position, name in enumerate(names, start=1):
        if name in kept:
            out[name] = name
            continue
        candidates: list[str] = []
        if name.isascii() and name:
            candidates = [name[:NAME_BYTES]] + [name[:NAME_BYTES - len(f"_{i}")] + f"_{i}" for i in range(1, 100)]
        candidates += [f"f{position:03d}"] + [f"f{position:03d}_{i}" for i in range(1, 100)]
        short = next(c for c in candidates if c.lower() not in taken)
        taken.add(short.lower())
        out[name] = short
    return out


@dataclass(frozen=True)
class Part:
    """One Shapefile of the zip: its file stem, geometry type, and the rows and geometry expression it takes."""

    stem: str
    geometry_type: str
    where: sql.Composable | None = None
    geometry: sql.Composable | None = None


def parts(reader: LayerReader) -> list[Part]:
    """The Shapefiles a layer needs (one unless its geometry column mixes families).

    Raises
    ------
    GeometryError
        When the layer holds geometry collections (or types no Shapefile holds).
    """
    layer_id, kind = reader.layer.id, reader.layer.record.geometry_type or ""
    if kind.upper() in {t for _, types, _ in FAMILIES for t in types}:
        return [Part(layer_id, kind)]
    present = reader.geometry_types()
    unknown = present - {t for _, types, _ in FAMILIES for t in types}
    if unknown:
        raise GeometryError(f"shp: {layer_id} holds {', '.join(sorted(unknown)).lower()} geometries, which a "
                            "Shapefile cannot hold; download the GeoPackage or GeoParquet")
    families = [(suffix, types, multi) for suffix, types, multi in FAMILIES if present & set(types)]
    column = sql.SQL("t.{}").format(sql.Identifier(GEOMETRY_COLUMN))
    return [Part(layer_id if len(families) == 1 else f"{layer_id}_{suffix}", multi,
                 sql.SQL("geometrytype({}) = any({})").format(column, sql.Literal(list(types))),
                 sql.SQL("st_multi({})").format(column))
            for suffix, types, multi in families] or [Part(layer_id, "Point")]


@dataclass
class Cuts:
    """Text values a ``.dbf`` cannot hold as they are: counts per field, and the full values."""

    counts: dict[str, int] = field(default_factory=dict)
    rows: list[tuple[Any, str, str, str]] = field(default_factory=list)


def _cut_text(column: pa.Array, name: str, short: str, keys: list[Any], cuts: Cuts) -> pa.Array:
    """``column`` with values over :data:`TEXT_BYTES` cut at a character boundary; those and values with leading or
    trailing white space are kept in full in ``cuts``."""
    odd = pc.or_(pc.greater(pc.binary_length(column), TEXT_BYTES),
                 pc.not_equal(pc.utf8_trim_whitespace(column), column))
    if not pc.any(odd).as_py():
        return column
    values = column.to_pylist()
    for i in pc.indices_nonzero(pc.fill_null(odd, False)).to_pylist():
        value = values[i]
        values[i] = value.encode("utf-8")[:TEXT_BYTES].decode("utf-8", "ignore")
        cuts.rows.append((keys[i], name, short, value))
        cuts.counts[name] = cuts.counts.get(name, 0) + 1
    return pa.array(values, pa.string())


def dbf_table(table: pa.Table, names: dict[str, str], key: str, cuts: Cuts) -> pa.Table:
    """A page as the ``.dbf`` takes it: short names, timestamps as ISO 8601 text, long text cut (see ``cuts``)."""
    keys = table.column(key).to_pylist()
    arrays, fields = [], []
    for column, schema_field in zip(table.columns, table.schema, strict=True):
        array = column.combine_chunks()
        name = schema_field.name
        if name == GEOMETRY_COLUMN:
            arrays.append(array)
            fields.append(schema_field)
            continue
        if pa.types.is_timestamp(array.type):
            array = pa.array([v.isoformat() if isinstance(v, dt.datetime) else None for v in array.to_pylist()],
                             pa.string())
        if pa.types.is_string(array.type):
            array = _cut_text(array, name, names[name], keys, cuts)
        arrays.append(array)
        fields.append(pa.field(names[name], array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _check_size(folder: Path, stem: str, limit: int) -> None:
    for suffix in (".shp", ".dbf"):
        file = folder / f"{stem}{suffix}"
        if file.exists() and file.stat().st_size > limit:
            raise DataError(f"shp: {stem} is too large for a Shapefile ({suffix} over {limit / 1024**3:.3g} GB); "
                            "download the GeoPackage or GeoParquet")


def _write_csv(path: Path, header: list[str], rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def write_shapefile_zip(reader: LayerReader, path: Path, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Write the layer as a zip of Shapefile(s) with ``fields.csv`` (and ``full_values.csv``); see the module docstring.

    Raises
    ------
    GeometryError
        Geometry collections.
    DataError
        A ``.shp`` or ``.dbf`` over ``max_file_bytes``.
    """
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    layer = reader.layer
    names = short_names(list(layer.columns))
    cuts = Cuts()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{layer.id}.shp-") as tmp:
        folder = Path(tmp)
        written: list[Path] = []
        for part in parts(reader):
            target = folder / f"{part.stem}.shp"
            for i, table in enumerate(reader.tables(part.where, part.geometry)):
                try:
                    pyogrio.write_arrow(dbf_table(table, names, layer.primary_key, cuts), str(target),
                                        layer=part.stem, driver="ESRI Shapefile", geometry_name=GEOMETRY_COLUMN,
                                        geometry_type=part.geometry_type, crs=f"EPSG:{HK_GRID}", encoding="UTF-8",
                                        append=i > 0, layer_options={"2GB_LIMIT": "YES"})
                except (DataLayerError, DataSourceError) as exc:
                    _check_size(folder, part.stem, max_file_bytes)
                    raise DataError(f"shp: {layer.id} cannot be written as a Shapefile: "
                                    f"{str(exc).splitlines()[0][:200]}") from exc
                _check_size(folder, part.stem, max_file_bytes)
            written += sorted(folder.glob(f"{part.stem}.*"))
        originals = {str(f.get("name")): str(f.get("original_name") or "") for f in layer.record.fields}
        _write_csv(folder / "fields.csv", ["name", "shapefile_name", "type", "original_name", "full_values"],
                   [(n, s, layer.columns[n], originals.get(n, ""), cuts.counts.get(n, 0)) for n, s in names.items()])
        written.append(folder / "fields.csv")
        if cuts.rows:
            _write_csv(folder / "full_values.csv", [layer.primary_key, "name", "shapefile_name", "value"], cuts.rows)
            written.append(folder / "full_values.csv")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for file in written:
                archive.write(file, arcname=file.name)
