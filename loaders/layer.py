"""The normalised layer: what the normaliser hands to the writer."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd

from loaders.geometry import promote_to_multi
from loaders.report import FieldInfo


@dataclass(frozen=True)
class NormalisedLayer:
    """Typed attributes, one key column, and geometries in EPSG:2326, valid for one geometry type."""

    frame: gpd.GeoDataFrame
    fields: list[FieldInfo]
    geometry_type: str
    primary_key: str
    promote: bool = False  #: single parts are written as one-part Multi* (see :meth:`geometries`)

    def __len__(self) -> int:
        return len(self.frame)

    def chunk(self, start: int, stop: int) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows ``start:stop`` ready to write: attributes and geometries."""
        part = self.frame.iloc[start:stop]
        return pd.DataFrame(part.drop(columns=part.geometry.name)), np.asarray(part.geometry.array, dtype=object)

    def geometries(self) -> np.ndarray:
        """The geometries as written, single parts promoted if ``promote``."""
        geoms = np.asarray(self.frame.geometry.array, dtype=object)
        return promote_to_multi(geoms) if self.promote else geoms
