"""Zipped inputs: a ``.zip`` holding any supported dataset (possibly another zip or a KMZ), and a KMZ's document.

The zip is extracted to a scratch folder within the source's :class:`~loaders.limits.Budget` (member size,
total size across every nested archive, nesting depth). With one dataset inside, it is read (and
``source.layer`` is its layer). With several, ``source.layer`` is ``"<path in zip>"`` or
``"<path in zip>:<layer>"`` (the path may be just the file name when that is unique). Messages name the
zip, never the scratch folder.
"""

from __future__ import annotations

import tempfile
import zipfile
import zlib
from pathlib import Path

import geopandas as gpd

from loaders.formats import _JSON_SUFFIXES, _first_line, _layers, _listing, read_other
from loaders.limits import Budget, refuse_special_members
from loaders.report import LoadReport
from sdi.errors import SdiError, SourceFormatError
from sdi.layerdef import LayerDefinition

_ZIP_DATASETS = {".shp", ".gpkg", ".geojson", ".json", ".topojson", ".kml", ".kmz", ".gpx", ".csv", ".tsv",
                 ".fgb", ".gml", ".sqlite", ".zip", ".gdb"}


def _zip_datasets(folder: Path) -> list[str]:
    """Paths (relative, POSIX) of the datasets in an extracted zip, sorted."""
    found: list[str] = []
    for item in sorted(folder.rglob("*")):
        rel = item.relative_to(folder)
        if any(part.startswith(("__MACOSX", "._")) for part in rel.parts):
            continue
        if any(p.suffix.lower() == ".gdb" for p in rel.parents if p != Path(".")):
            continue  # inside a geodatabase
        suffix = item.suffix.lower()
        if suffix not in _ZIP_DATASETS or (suffix == ".gdb") != item.is_dir():
            continue
        if suffix in _JSON_SUFFIXES:
            try:
                _layers(item)
            except SourceFormatError:
                continue  # metadata JSON, not a dataset
        found.append(rel.as_posix())
    return found


def _pick_member(zip_path: Path, datasets: list[str], layer: str | None) -> tuple[str, str | None]:
    """The dataset in the zip that ``source.layer`` (``"<path>[:<layer>]"``) names, and the layer in it."""
    if layer is not None:
        for member in datasets:
            name = member.rsplit("/", 1)[-1]
            unique = sum(d.rsplit("/", 1)[-1] == name for d in datasets) == 1
            for key in (member, name) if unique else (member,):
                if layer == key or layer.startswith(key + ":"):
                    return member, layer[len(key) + 1:] or None
    if len(datasets) == 1:
        return datasets[0], layer
    listed = ", ".join(datasets)
    if layer is not None:
        raise SourceFormatError(f"{zip_path}: source.layer {layer!r} names none of the zip's datasets ({listed})")
    raise SourceFormatError(f"{zip_path}: zip has {len(datasets)} datasets ({listed}); "
                            f"set source.layer to '<path in zip>' or '<path in zip>:<layer>'")


def kmz_document(path: Path, budget: Budget) -> bytes:
    """The KML document of a KMZ (``doc.kml``, else the first ``.kml``), read within ``budget``.

    Every ``.kml`` member is decompressed (and counted), so that whichever one GDAL reads next has been
    checked against the limits; only the document is kept.
    """
    with budget.archive(path), zipfile.ZipFile(path) as kmz:
        infos = kmz.infolist()
        refuse_special_members(path, infos)
        kml = [i for i in infos if i.filename.lower().endswith(".kml")]
        if not kml:
            raise SourceFormatError(f"{path}: KMZ has no .kml inside (contains: {_listing(kmz.namelist())})")
        chosen = next((i for i in kml if i.filename == "doc.kml"), kml[0])
        budget.check_listing(path, kml)
        document = b""
        for info in kml:
            data = budget.read(kmz, info, path)
            document = data if info is chosen else document
        return document


def read_zip(path: Path, definition: LayerDefinition, report: LoadReport, budget: Budget) -> gpd.GeoDataFrame:
    """Extract a zip within ``budget`` and read the dataset ``source.layer`` picks (or the only one).

    Raises
    ------
    SourceFormatError
        Not a zip, nothing readable inside, an ambiguous choice, or a limit of ``budget`` passed.
    """
    from loaders.read import read_source  # read imports formats, which imports this module

    with budget.archive(path), tempfile.TemporaryDirectory(prefix="sdi-zip-") as scratch:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                budget.extract(archive, Path(scratch), path)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError) as exc:
            raise SourceFormatError(f"{path}: not a readable zip file ({_first_line(exc)})") from exc
        datasets = _zip_datasets(Path(scratch))
        if not datasets:
            raise SourceFormatError(f"{path}: zip holds no readable dataset (contains: {_listing(names)})")
        member, layer = _pick_member(path, datasets, definition.source.layer)
        inner = Path(scratch) / member
        inner_def = definition.model_copy(update={"source": definition.source.model_copy(
            update={"path": inner, "layer": layer})})
        sha256 = report.source_sha256
        try:
            frame = (read_other(inner, inner_def, report, budget) if inner.is_dir()
                     else read_source(inner_def, report, budget))
        except SdiError as exc:
            raise type(exc)(str(exc).replace(str(Path(scratch).resolve()), str(path))
                            .replace(scratch, str(path))) from exc
        finally:
            report.source_sha256 = sha256
    assert frame is not None
    report.driver = f"{report.driver} (zipped)"
    report.note(f"read {member} from {path.name}" + (f" (one of {len(datasets)} datasets)" if len(datasets) > 1
                                                     else ""))
    return frame
