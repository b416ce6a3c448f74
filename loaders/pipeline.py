"""The load pipeline: read → normalise → write, each a separate step."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import geopandas as gpd

from loaders import attributes, geometry
from loaders.batches import streamed_count
from loaders.formats import RASTER_SUFFIXES
from loaders.layer import NormalisedLayer
from loaders.limits import Budget, Limits
from loaders.read import read_source, resolve_crs
from loaders.report import LoadReport
from loaders.reproject import to_storage
from loaders.stream import StreamedLayer
from loaders.write import Progress, write_layer
from sdi import __version__
from sdi.crs import reprojection
from sdi.db import connect
from sdi.errors import CrsError
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

Stage = Callable[[str], None]


def read(definition: LayerDefinition, report: LoadReport,
         limits: Limits | None = None) -> tuple[gpd.GeoDataFrame, int]:
    """Read the source and settle its CRS; return the frame and the source EPSG code.

    ``limits`` caps what reading may cost (archive sizes and depth, table width); default: the defaults of
    :class:`~sdi.settings.Settings`.
    """
    frame = read_source(definition, report, Budget(limits if limits is not None else Limits()))
    report.features_read = len(frame)
    raw = resolve_crs(frame, definition, report)
    return raw.frame, raw.source_epsg


def normalise(frame: gpd.GeoDataFrame, source_epsg: int, definition: LayerDefinition,
              report: LoadReport) -> NormalisedLayer:
    """Clean, reproject to EPSG:2326, repair and type a frame read from a source.

    Null, empty and non-finite geometries are dropped and Z/M dropped to 2D; the rest are reprojected
    (extent checked) and repaired in EPSG:2326 (:func:`loaders.reproject.to_storage`); then one
    geometry type is settled and the attributes are named, cleaned and typed.
    """
    try:  # the transformation is checked (EPSG:1825, no ballpark) before any work is done
        report.transformation = reprojection(source_epsg).description
    except CrsError as exc:
        raise CrsError(f"{definition.label}: {exc}") from exc
    frame = geometry.drop_unpublishable(frame, report)
    frame = to_storage(frame, source_epsg, report, where=definition.label)
    target, promote = geometry.unify_type(frame, definition, report)
    attrs = attributes.normalise_attributes(frame, definition, report)
    report.geometry_type = target
    report.fields = attrs.fields
    return NormalisedLayer(attrs.frame, attrs.fields, target, attrs.primary_key, promote)


def _write(definition: LayerDefinition, layer: NormalisedLayer, report: LoadReport, settings: Settings,
           started_at: dt.datetime, progress: Progress | None) -> int:
    with connect(settings) as conn:
        return write_layer(conn, definition, layer, report, settings, started_at=started_at,
                           loader_version=__version__, progress=progress)


def load(definition: LayerDefinition, settings: Settings, *, dry_run: bool = False,
         progress: Progress | None = None, stage: Stage | None = None) -> LoadReport:
    """Load one layer: read, normalise and (unless ``dry_run``) write it to ``layers.<id>``.

    Parameters
    ----------
    definition
        The layer definition.
    settings
        Settings naming the database.
    dry_run
        Read and normalise only; the database is not touched.
    progress
        Called as ``progress(rows_written, rows_total)`` during the COPY.
    stage
        Called with the name of each step as it starts ("read", "normalise", "write").

    Returns
    -------
    LoadReport
        What was read, repaired, dropped and written.

    Raises
    ------
    SdiError
        Any load problem; the database is then unchanged.
    """
    if definition.source_path.suffix.lower() in RASTER_SUFFIXES:
        from loaders.raster import load_raster  # rasterio only for rasters

        return load_raster(definition, settings, dry_run=dry_run, progress=progress, stage=stage)
    count = streamed_count(definition, settings.load_chunk_rows)
    if count is not None:
        return _load_streamed(definition, settings, count, dry_run=dry_run, progress=progress, stage=stage)
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    report = LoadReport(layer_id=definition.id, source_path=str(definition.source_path), dry_run=dry_run)
    step = time.perf_counter()

    def timed(name: str) -> None:
        """Close the current step's timing and announce the next one."""
        nonlocal step
        now = time.perf_counter()
        if report.timings or name != "read":
            previous = ("read", "normalise", "write")[len(report.timings)]
            report.timings[previous] = round(now - step, 3)
        step = now
        if stage and name != "done":
            stage(name)

    timed("read")
    frame, source_epsg = read(definition, report, Limits.from_settings(settings))
    timed("normalise")
    layer = normalise(frame, source_epsg, definition, report)
    if not dry_run:
        timed("write")
        report.load_id = _write(definition, layer, report, settings, started_at, progress)
    else:
        report.features_written = 0
    timed("done")
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _load_streamed(definition: LayerDefinition, settings: Settings, count: int, *, dry_run: bool,
                   progress: Progress | None, stage: Stage | None) -> LoadReport:
    """:func:`load` for a large file read chunk by chunk (:mod:`loaders.stream`): one overlapped step."""
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    report = LoadReport(layer_id=definition.id, source_path=str(definition.source_path), dry_run=dry_run)
    report.note(f"streamed in chunks of {settings.load_chunk_rows:,} features (SDI_LOAD_CHUNK_ROWS)")
    if stage:
        stage("stream")
    source = StreamedLayer(definition, count, report, settings.load_chunk_rows)
    if dry_run:
        for _ in source.encoded(report):
            pass
        report.features_written = 0
    else:
        with connect(settings) as conn:
            report.load_id = write_layer(conn, definition, source, report, settings, started_at=started_at,
                                         loader_version=__version__, progress=progress)
    report.geometry_type, report.fields = source.geometry_type, list(source.fields)
    report.seconds = round(time.perf_counter() - started, 3)
    report.timings["stream"] = report.seconds
    return report
