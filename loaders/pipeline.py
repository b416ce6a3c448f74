"""The load pipeline: read → normalise → write, each a separate step."""

from __future__ import annotations

import copy
import datetime as dt
import time
from collections.abc import Callable

import geopandas as gpd

from loaders import attributes, geometry
from loaders.layer import NormalisedLayer
from loaders.limits import Budget, Limits
from loaders.raster import RASTER_SUFFIXES, load_raster
from loaders.read import read_source, resolve_crs
from loaders.report import LoadReport
from loaders.reproject import TypeChangedError
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


def normalise(frame: gpd.GeoDataFrame, source_epsg: int, definition: LayerDefinition, report: LoadReport, *,
              defer_reprojection: bool = False, geometry_type: str | None = None) -> NormalisedLayer:
    """Clean, repair and type a frame read from a source, and reproject it to EPSG:2326.

    Parameters
    ----------
    defer_reprojection
        Leave the geometries in the source CRS; the writer reprojects them chunk by chunk while
        the server ingests rows. The extent check then happens during the write (which rolls back).
    geometry_type
        Force the layer's geometry type (used to widen it after a repair during reprojection).
    """
    try:  # the transformation is checked (EPSG:1825, no ballpark) before any work is done
        report.transformation = reprojection(source_epsg).description
    except CrsError as exc:
        raise CrsError(f"{definition.label}: {exc}") from exc
    frame = geometry.drop_unpublishable(frame, report)
    frame = geometry.repair(frame, report)
    target, promote = geometry.unify_type(frame, definition, report, override=geometry_type)
    attrs = attributes.normalise_attributes(frame, definition, report)
    report.geometry_type = target
    report.fields = attrs.fields
    layer = NormalisedLayer(attrs.frame, attrs.fields, target, attrs.primary_key, promote, source_epsg,
                            definition.label)
    return layer if defer_reprojection else layer.reprojected(report)


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
        return load_raster(definition, settings, dry_run=dry_run, progress=progress, stage=stage)
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
    as_read = copy.deepcopy(report)  # what reading found, for a second normalising pass
    layer = normalise(frame, source_epsg, definition, report, defer_reprojection=not dry_run)
    if not dry_run:
        timed("write")
        try:
            report.load_id = _write(definition, layer, report, settings, started_at, progress)
        except TypeChangedError as exc:  # a repair after reprojection needs a wider column type
            report = copy.deepcopy(as_read)
            report.warn(f"geometry type widened to {exc.geometry_type}: repairs after reprojection made it")
            layer = normalise(frame, source_epsg, definition, report, defer_reprojection=True,
                              geometry_type=exc.geometry_type)
            report.load_id = _write(definition, layer, report, settings, started_at, progress)
    else:
        report.features_written = 0
    timed("done")
    report.seconds = round(time.perf_counter() - started, 3)
    return report
