"""``sdi export``: a loaded vector layer as a GeoPackage, zipped Shapefile, CSV, GeoJSON or GeoParquet file.

The same files the API serves at ``/collections/<id>/download/<format>`` (:mod:`sdi.distribution`), written straight
from the database, atomically (a temporary file beside the output, then a rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sdi.cli._common import clean_errors, consoles, settings_from_env


@clean_errors
def export_cmd(
    layer_id: Annotated[str, typer.Argument(help="A loaded vector layer's id.")],
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="gpkg (GeoPackage, EPSG:2326), shp (zipped Shapefile, EPSG:2326), csv (UTF-8 with "
        "BOM, geometry as WKT in EPSG:2326), geojson (RFC 7946, longitude/latitude) or parquet (GeoParquet, "
        "EPSG:2326).")] = "gpkg",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The file to write (default: <id>.<extension> here; the Shapefile is a .zip).")] = None,
) -> None:
    """Export a loaded vector layer to a file in one of the download formats."""
    from sdi.distribution.formats import get_format
    from sdi.distribution.writers import export_layer
    from sdi.errors import ConfigError, SdiError

    chosen = get_format(fmt, "--format")  # before touching the database
    target = output if output is not None else Path(chosen.filename(layer_id))
    if target.is_dir():
        raise ConfigError(f"--output: {str(target)!r} is a folder; name a file")
    if chosen.id == "shp" and target.suffix.lower() == ".shp":
        raise ConfigError(f"--output: the Shapefile export is a zip (.shp, .dbf, .prj, .cpg, fields.csv); "
                          f"name it {target.with_suffix('.zip').name}")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--output: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--output: folder {str(folder)!r} is not writable")
    try:
        written = export_layer(settings_from_env(), layer_id, chosen, target)
    except SdiError:  # some are OSErrors too (an unreachable database)
        raise
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {target}: {exc.strerror or exc}") from exc
    consoles.err.print(f"wrote {written.features:,} features of {layer_id} (load {written.load_id}) as {chosen.name} "
                       f"to {target} ({written.size:,} bytes, SHA-256 {written.sha256})", markup=False)
