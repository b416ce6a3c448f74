"""How the postgis and dask site-selection engines organise their work: cutting large polygons, Hilbert partitions."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from sdi.planning import site_selection
from sdi.planning.sites import postgis_engine
from sdi.planning.sites.dask_engine import hilbert_ordered
from sdi.settings import Settings


@pytest.mark.db
def test_cutting_every_polygon_into_pieces_changes_nothing(sample_layers: Settings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The postgis engine cuts only polygons above CUT_ABOVE vertices; cutting all of them finely gives the same."""
    whole = site_selection(settings=sample_layers, engine="postgis")
    monkeypatch.setattr(postgis_engine, "CUT_ABOVE", 0)
    monkeypatch.setattr(postgis_engine, "PIECE_VERTICES", 8)
    cut = site_selection(settings=sample_layers, engine="postgis")
    assert len(whole) > 0
    pd.testing.assert_frame_equal(pd.DataFrame(cut.drop(columns="geometry")),
                                  pd.DataFrame(whole.drop(columns="geometry")))


def test_hilbert_order_walks_a_grid_cell_by_neighbouring_cell() -> None:
    """Consecutive rows are neighbouring cells (a Hilbert curve property), whatever the input order."""
    ix, iy = np.meshgrid(np.arange(16), np.arange(16))
    cells = gpd.GeoDataFrame({"cell": np.arange(256)}, geometry=shapely.box(ix.ravel(), iy.ravel(),
                                                                            ix.ravel() + 1, iy.ravel() + 1),
                             crs=2326).sample(frac=1, random_state=1)
    ordered = hilbert_ordered(cells)
    assert sorted(ordered["cell"]) == list(range(256))
    centres = shapely.centroid(np.asarray(ordered.geometry.array, dtype=object))
    steps = np.abs(np.diff(shapely.get_x(centres))) + np.abs(np.diff(shapely.get_y(centres)))
    assert (steps == 1).all()
    assert hilbert_ordered(cells.iloc[:1]).equals(cells.iloc[:1])
