"""The normalised layer: what the normaliser hands to the writer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import geopandas as gpd
import numpy as np
import pandas as pd

from loaders.geometry import promote_to_multi
from loaders.report import FieldInfo, LoadReport
from loaders.reproject import finalise
from sdi.crs import HK_GRID


@dataclass(frozen=True)
class NormalisedLayer:
    """Typed attributes, one key column, and geometries valid for one geometry type.

    The geometries are in ``source_epsg`` until reprojected: the writer reprojects them chunk by
    chunk while COPY runs (see :mod:`loaders.reproject`); :meth:`reprojected` does it all at once.
    """

    frame: gpd.GeoDataFrame
    fields: list[FieldInfo]
    geometry_type: str
    primary_key: str
    promote: bool = False  #: single parts are written as one-part Multi* (see :meth:`geometries`)
    source_epsg: int = HK_GRID
    label: str = ""
    final: bool = False  #: geometries already reprojected and checked against Hong Kong's extent

    def __len__(self) -> int:
        return len(self.frame)

    @cached_property
    def _attributes(self) -> pd.DataFrame:
        return pd.DataFrame(self.frame.drop(columns=self.frame.geometry.name))

    @cached_property
    def _geometries(self) -> np.ndarray:
        return np.asarray(self.frame.geometry.array, dtype=object)

    def chunk(self, start: int, stop: int, report: LoadReport) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows ``start:stop`` ready to write: attributes and EPSG:2326 geometries (repairs counted)."""
        geoms = self._geometries[start:stop]
        attrs = self._attributes.iloc[start:stop]
        if not self.final:
            geoms, keep = finalise(geoms, self.source_epsg, self.geometry_type, report, where=self.label)
            if not keep.all():
                attrs, geoms = attrs.loc[keep], geoms[keep]
        return attrs, geoms

    def reprojected(self, report: LoadReport) -> NormalisedLayer:
        """This layer with every geometry in EPSG:2326 and inside Hong Kong (a no-op once done)."""
        if self.final:
            return self
        attrs, geoms = self.chunk(0, len(self), report)
        frame = gpd.GeoDataFrame(attrs, geometry=gpd.GeoSeries(geoms, index=attrs.index, crs=HK_GRID),
                                 crs=HK_GRID).rename_geometry("geom")
        return replace(self, frame=frame, source_epsg=HK_GRID, final=True)

    def geometries(self) -> np.ndarray:
        """The geometries as written (EPSG:2326 once reprojected), single parts promoted if ``promote``."""
        geoms = np.asarray(self.frame.geometry.array, dtype=object)
        return promote_to_multi(geoms) if self.promote else geoms
