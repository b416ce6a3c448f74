"""Planning: spatial joins on PostGIS, GeoPandas or Dask, and site selection (all in EPSG:2326 metres)."""

from __future__ import annotations

from sdi.planning.sources import ENGINES, Engine, Source

__all__ = ["ENGINES", "Engine", "Source"]
