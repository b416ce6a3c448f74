"""Raster layers (GeoTIFF, ASCII grid) → Cloud Optimized GeoTIFF in EPSG:2326. (Stub.)"""

from __future__ import annotations

from collections.abc import Callable

from loaders.report import LoadReport
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

Progress = Callable[[int, int], None]

#: File suffixes loaded as rasters (lower case, with the dot).
RASTER_SUFFIXES: frozenset[str] = frozenset()


def load_raster(definition: LayerDefinition, settings: Settings, *, dry_run: bool = False,
                progress: Progress | None = None, stage: Callable[[str], None] | None = None) -> LoadReport:
    """Load a raster layer (stub: no raster format is handled yet)."""
    raise SourceFormatError(f"{definition.source_path}: raster sources are not supported yet")
