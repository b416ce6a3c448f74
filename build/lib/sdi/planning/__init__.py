"""Planning: spatial joins on PostGIS, GeoPandas or Dask, and site selection (all in EPSG:2326 metres).

The public functions are imported lazily, so ``import sdi`` does not import dask.
"""

from __future__ import annotations

import importlib
from typing import Any

from sdi.planning.sources import ENGINES, Engine, Source

_LAZY = {
    "sjoin": "sdi.planning.joins", "within_distance": "sdi.planning.joins", "nearest": "sdi.planning.joins",
    "overlay": "sdi.planning.joins", "clip": "sdi.planning.joins", "summarise_by": "sdi.planning.joins",
    "site_selection": "sdi.planning.sites", "Criteria": "sdi.planning.criteria",
    "load_criteria": "sdi.planning.criteria", "SiteSelectionResult": "sdi.planning.result",
}

__all__ = ["ENGINES", "Engine", "Source", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdi.planning' has no attribute {name!r}")
