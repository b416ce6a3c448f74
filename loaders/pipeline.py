"""The load pipeline: read → normalise → write, each a separate step."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import geopandas as gpd

from loaders import attributes, geometry
from loaders.read import read_source, resolve_crs
from loaders.report import LoadReport
from loaders.write import NormalisedLayer, Progress, write_layer
from sdi import __version__
from sdi.db import connect
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

Stage = Callable[[str], None]


def read(definition: LayerDefinition, report: LoadReport) -> tuple[gpd.GeoDataFrame, int]:
    """Read the source and settle its CRS; return the frame and the source EPSG code."""
    frame = read_source(definition, report)
    report.features_read = len(frame)
    raw = resolve_crs(frame, definition, report)
    return raw.frame, raw.source_epsg


def normalise(frame: gpd.GeoDataFrame, source_epsg: int, definition: LayerDefinition,
              report: LoadReport) -> NormalisedLayer:
    """Clean, reproject to EPSG:2326, repair and type a frame read from a source."""
    frame = geometry.drop_unpublishable(frame, report)
    frame = geometry.reproject(frame, source_epsg, definition, report)
    frame = geometry.repair(frame, report)
    frame, geometry_type = geometry.unify_type(frame, definition, report)
    attrs = attributes.normalise_attributes(frame, definition, report)
    report.geometry_type = geometry_type
    report.fields = attrs.fields
    return NormalisedLayer(attrs.frame, attrs.fields, geometry_type, attrs.primary_key)


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
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    report = LoadReport(layer_id=definition.id, source_path=str(definition.source_path), dry_run=dry_run)
    if stage:
        stage("read")
    frame, source_epsg = read(definition, report)
    if stage:
        stage("normalise")
    layer = normalise(frame, source_epsg, definition, report)
    if not dry_run:
        if stage:
            stage("write")
        with connect(settings) as conn:
            report.load_id = write_layer(conn, definition, layer, report, settings, started_at=started_at,
                                         loader_version=__version__, progress=progress)
    else:
        report.features_written = 0
    report.seconds = round(time.perf_counter() - started, 3)
    return report
