"""The result of a site selection: a GeoDataFrame of ranked sites that knows how to show itself."""

from __future__ import annotations

from typing import Any

import geopandas as gpd


class SiteSelectionResult(gpd.GeoDataFrame):
    """Ranked candidate sites (EPSG:2326): ``rank``, ``site``, ``score``, ``why_*`` and ``score_*`` columns.

    A plain :class:`geopandas.GeoDataFrame` in every respect; pandas operations that keep the
    frame's shape return this class again, so the Jupyter display survives ``head()`` and slicing.
    """

    @property
    def _constructor(self) -> Any:  # keep the subclass through pandas operations
        return _constructor_with_fallback


def _constructor_with_fallback(*args: Any, **kwargs: Any) -> Any:
    frame = SiteSelectionResult(*args, **kwargs)
    return frame if "geometry" in frame.columns or frame._geometry_column_name in frame.columns else \
        gpd.GeoDataFrame(frame)
