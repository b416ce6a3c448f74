"""Vector formats that need more than pyogrio's defaults: KML/KMZ, TopoJSON, GPX, File Geodatabase,
Esri JSON, and zipped inputs of any supported format.

(Stub: the generic pyogrio reader in :mod:`loaders.read` handles every path for now.)
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from loaders.report import LoadReport
from sdi.layerdef import LayerDefinition

#: File suffixes this module reads itself (lower case, with the dot).
SUFFIXES: frozenset[str] = frozenset()


def read_other(path: Path, definition: LayerDefinition, report: LoadReport) -> gpd.GeoDataFrame | None:
    """Read ``path`` if it is one of this module's formats; return ``None`` to use the generic reader."""
    return None
