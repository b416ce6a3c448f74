"""Independent cross-check of site selection: every engine must agree with a plain-GeoPandas screening.

``benchmarks/naive_sites.py`` implements the shipped data-centre criteria from their written semantics
with textbook GeoPandas calls and no ``sdi.planning`` code. Here both run on the sample planning layers
loaded into the session's test database (fixture ``sample_layers`` of ``tests/planning/conftest.py``)
and must give the same sites in the same rank order with scores within 1e-6. The naive screening itself
is first checked on a hand-made territory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
import yaml

from loaders.raster import cog_path
from sdi.settings import Settings
from tests.conftest import ROOT

CRITERIA = ROOT / "sdi" / "planning" / "criteria" / "data_centre.yml"


def _import_naive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("naive_sites", ROOT / "benchmarks" / "naive_sites.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["naive_sites"] = module
    spec.loader.exec_module(module)
    return module


naive = _import_naive()


# --- the reference itself, on a territory small enough to reason about -------------------------------------

def _square(x: float, y: float, side: float) -> shapely.Polygon:
    return shapely.box(x, y, x + side, y + side)


def _frame(geoms: list[Any], **columns: list[Any]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=2326)


TOY_CRITERIA: dict[str, Any] = {
    "candidates": {"layer": "lots", "label": "lot"},
    "districts": {"layer": "districts", "name": "name_en"},
    "constraints": [
        {"id": "zoning", "any_of": [
            {"type": "in_zone", "layer": "zones", "where": {"column": "code", "in": ["I"]}},
            {"type": "contains", "layer": "waivers", "where": {"column": "use", "contains": "information tech"}}]},
        {"id": "min_area", "type": "min_area", "min_m2": 1000},
        {"id": "flood", "type": "exclude_within", "layer": "flood", "distance_m": 0},
        {"id": "slides", "type": "exclude_within", "layer": "slides", "distance_m": 100},
    ],
    "scores": [
        {"id": "sub", "type": "distance_to", "layer": "subs", "where": {"column": "kv", "min": 132}, "weight": 3,
         "full_at_m": 300, "zero_at_m": 3000},
        {"id": "area", "type": "area", "weight": 1, "zero_at_m2": 1000, "full_at_m2": 20000},
    ],
}


def _toy_layers() -> dict[str, gpd.GeoDataFrame]:
    x0, y0 = 830_000.0, 820_000.0
    lots = _frame([
        _square(x0, y0, 100),                 # A: industrial zone, 10,000 m2
        _square(x0 + 200, y0, 100),           # B: industrial, but touches the flood area's edge -> excluded
        _square(x0 + 400, y0, 20),            # C: industrial, 400 m2 -> too small
        _square(x0 + 600, y0, 100),           # D: industrial, landslide 99.5 m away -> excluded
        _square(x0 + 800, y0, 100),           # E: industrial, landslide 100.5 m away -> kept
        _square(x0, y0 + 3000, 100),          # F: not zoned I, but holds an IT waiver -> kept
        _square(x0, y0 + 6000, 100),          # G: not zoned I, waiver for another use -> excluded
        _square(x0 + 1000, y0, 100),          # H: like A, same score -> ranked after A by label
    ], lot=["A", "B", "C", "D", "E", "F", "G", "H"])
    return {
        "lots": lots,
        "zones": _frame([shapely.box(x0 - 10, y0 - 10, x0 + 1200, y0 + 200), shapely.box(x0 - 10, y0 + 2990,
                        x0 + 200, y0 + 6200)], code=["I", "GB"]),
        "waivers": _frame([shapely.Point(x0 + 50, y0 + 3050), shapely.Point(x0 + 50, y0 + 6050)],
                          use=["Information Technology and Telecommunications", "Art studio"]),
        "flood": _frame([shapely.box(x0 + 300, y0 - 50, x0 + 350, y0 + 50)]),
        "slides": _frame([shapely.Point(x0 + 650, y0 + 199.5), shapely.Point(x0 + 850, y0 + 200.5)]),
        "subs": _frame([*(shapely.Point(x0 + dx, y0 - 1650) for dx in (50, 850, 1050)),
                        shapely.Point(x0 + 50, y0 + 3000), shapely.Point(x0, 0)], kv=[400, 400, 132, 11, 132]),
        "districts": _frame([shapely.box(x0 - 5000, y0 - 5000, x0 + 5000, y0 + 2500),
                             shapely.box(x0 - 5000, y0 + 2500, x0 + 5000, y0 + 9000)], name_en=["SOUTH", "NORTH"]),
    }


def test_naive_screening_follows_the_written_semantics() -> None:
    result = naive.screen(TOY_CRITERIA, _toy_layers())

    assert list(result["site"]) == ["A", "E", "H", "F"]  # A, E, H tie: by label
    assert list(result["rank"]) == [1, 2, 3, 4]
    # A, E, H: a >=132 kV substation 1650 m from the lot's edge -> (3000-1650)/2700 = 0.5; area 9000/19000
    edge = 100 * (3 * 0.5 + 9000 / 19000) / 4
    # F: the 11 kV substation on its edge does not count; the nearest 400 kV one is 4650 m away -> 0
    assert result["score"].tolist() == pytest.approx([edge, edge, edge, 100 * (9000 / 19000) / 4], abs=1e-6)
    assert list(result["district"]) == ["SOUTH", "SOUTH", "SOUTH", "NORTH"]


def test_naive_screening_weights_override_changes_the_order() -> None:
    layers = _toy_layers()
    layers["lots"].loc[layers["lots"]["lot"] == "H", "geometry"] = _square(830_000 + 1000, 820_000, 120)

    default = naive.screen(TOY_CRITERIA, layers)
    area_only = naive.screen(TOY_CRITERIA, layers, weights={"sub": 0})

    assert list(default["site"][:2]) == ["H", "A"]
    assert list(area_only["site"]) == ["H", "A", "E", "F"]  # A, E, F tie on area: by label
    assert area_only["score"].iloc[0] == pytest.approx(100 * (14400 - 1000) / 19000, abs=1e-6)


def test_disagreement_names_the_first_difference() -> None:
    result = naive.screen(TOY_CRITERIA, _toy_layers())
    swapped = result.copy()
    swapped.loc[[0, 2], "site"] = ["H", "A"]
    nudged = result.copy()
    nudged.loc[3, "score"] += 2e-6

    assert naive.disagreement(result, result.copy()) is None
    assert "rank order" in str(naive.disagreement(result, swapped))
    assert "scores differ" in str(naive.disagreement(result, nudged))
    assert "3 sites" in str(naive.disagreement(result, result.iloc[:3]))


# --- the library against the reference, on the sample planning layers --------------------------------------

@pytest.fixture(scope="module")
def criteria() -> dict[str, Any]:
    return dict(yaml.safe_load(CRITERIA.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def inputs(sample_layers: Settings, criteria: dict[str, Any]) -> dict[str, gpd.GeoDataFrame]:
    vectors, _ = naive.layer_ids(criteria)
    return dict(naive.read_inputs(sample_layers.database_url, vectors))


@pytest.fixture(scope="module")
def dem(sample_layers: Settings) -> Path:
    path = cog_path("synthetic_dem", sample_layers)
    assert path.exists(), "the synthetic DEM was not loaded: the slope score would not be cross-checked"
    return path


@pytest.fixture(scope="module")
def reference(criteria: dict[str, Any], inputs: dict[str, gpd.GeoDataFrame], dem: Path) -> gpd.GeoDataFrame:
    result = naive.screen(criteria, inputs, dem=dem)
    lots = len(inputs[criteria["candidates"]["layer"]])
    assert 0 < len(result) < lots, "the sample layers must keep some lots and exclude others"
    assert result["score"].nunique() > 1
    return result


@pytest.mark.db
@pytest.mark.parametrize("engine", ["postgis", "geopandas", "dask"])
def test_site_selection_agrees_with_naive_geopandas(engine: str, sample_layers: Settings,
                                                    reference: gpd.GeoDataFrame) -> None:
    from sdi.planning import site_selection

    result = site_selection(CRITERIA, engine=engine, settings=sample_layers)

    assert naive.disagreement(reference, result) is None, naive.disagreement(reference, result)
    for column in (c for c in reference.columns if c.startswith("score_")):
        np.testing.assert_allclose(result[column].to_numpy(dtype=float), reference[column].to_numpy(), atol=1e-6,
                                   err_msg=column)


@pytest.mark.db
def test_weights_override_agrees_with_naive(sample_layers: Settings, criteria: dict[str, Any],
                                            inputs: dict[str, gpd.GeoDataFrame], dem: Path,
                                            reference: gpd.GeoDataFrame) -> None:
    from sdi.planning import site_selection

    weights = {"substation": 0, "mtr": 5, "slope": 2}
    expected = naive.screen(criteria, inputs, dem=dem, weights=weights)

    result = site_selection(CRITERIA, weights=weights, settings=sample_layers)

    assert list(expected["site"]) != list(reference["site"]), "the override must change the ranking"
    assert naive.disagreement(expected, result) is None, naive.disagreement(expected, result)


@pytest.mark.db
def test_district_filter_agrees_with_naive(sample_layers: Settings, reference: gpd.GeoDataFrame) -> None:
    from sdi.planning import site_selection

    district = str(reference["district"].value_counts().index[0])
    expected = reference[reference["district"] == district].reset_index(drop=True)
    expected["rank"] = np.arange(1, len(expected) + 1)

    result = site_selection(CRITERIA, district=district.lower(), settings=sample_layers)

    assert 0 < len(result) < len(reference)
    assert naive.disagreement(expected, result) is None, naive.disagreement(expected, result)
