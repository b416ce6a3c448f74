"""Site selection on a handmade territory whose answer is stated, and on the sample data (engines agree)."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from sdi.errors import CriteriaError, LayerNotFoundError, PlanningError
from sdi.planning import site_selection
from sdi.planning.criteria import load_criteria
from sdi.planning.result import SiteSelectionResult
from sdi.planning.sources import ENGINES
from sdi.settings import Settings
from tests.planning.conftest import CRITERIA, HANDMADE, HANDMADE_SLOPE_DEG, X0, Y0

HANDMADE_CRITERIA = CRITERIA / "handmade.yml"
PASSING = {"L-BIG", "L-SLIDE101", "L-FAR", "L-WAIVER"}


def _run(settings: Settings, engine: str, scheduler: str | None, criteria: object = HANDMADE_CRITERIA,
         **kwargs: Any) -> SiteSelectionResult:
    return site_selection(criteria, settings=settings, engine=engine,
                          scheduler=scheduler if engine == "dask" else None, **kwargs)


def _lot(name: str) -> shapely.Geometry:
    return next(r["geometry"] for r in HANDMADE["crit_lots"] if r["lot_number"] == name)


def _linear(value: float, full: float, zero: float) -> float:
    return min(1.0, max(0.0, (value - zero) / (full - zero)))


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_handmade_answer(engine: str, handmade_layers: Settings, dask_scheduler: str) -> None:
    result = _run(handmade_layers, engine, dask_scheduler)
    assert isinstance(result, SiteSelectionResult) and result.crs.to_epsg() == 2326
    assert result.attrs["criteria"] == "handmade"
    # excluded: inside the flood area, 99 m from a landslide, in/touching Green Belt, R(A) without an IT&T waiver,
    # too small; passing: 101 m from a landslide, and L-WAIVER only through its waiver point
    assert set(result["site"]) == PASSING
    assert list(result["rank"]) == [1, 2, 3, 4]
    assert result["site"].iloc[0] == "L-BIG"
    assert list(result.columns) == [
        "rank", "site", "score", "district", "area_m2", "why_zoning", "why_min_area", "why_flood", "why_landslide",
        "why_conservation", "why_substation", "why_area", "why_slope", "score_substation", "score_area",
        "score_slope", "geometry"]
    by_site = result.set_index("site")
    assert by_site.loc["L-WAIVER", "why_zoning"] == "lease permits IT & telecom: special waiver at 1 Test Road"
    assert by_site.loc["L-WAIVER", "district"] == "BETA"
    assert by_site.loc["L-BIG", "why_zoning"] == "zone I (Z1)"
    assert by_site.loc["L-FAR", "why_min_area"] == "area 1,600 m² ≥ 1,000 m²"
    assert by_site.loc["L-SLIDE101", "why_landslide"] == "no landslide incident within 100 m"
    assert by_site.loc["L-BIG", "why_substation"] == "nearest ≥132 kV substation 'S-132' 50 m → 1.00 × weight 3"
    assert shapely.equals(by_site.loc["L-FAR", "geometry"], _lot("L-FAR"))


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_scores_follow_the_formula_and_dem_absent_renormalises(engine: str, handmade_layers: Settings,
                                                                dask_scheduler: str) -> None:
    result = _run(handmade_layers, engine, dask_scheduler).set_index("site")
    lot = _lot("L-FAR")  # 40 m square at (100, 800); the 132 kV substation is at (800, 675), the 11 kV one ignored
    distance = math.hypot(800 - 140, 800 - 675)
    s_sub, s_area = _linear(distance, 100, 2000), _linear(lot.area, 20_000, 1000)
    # the DEM 'crit_dem_not_loaded' is absent: slope is not scored and only weights 3 and 2 count
    assert result.loc["L-FAR", "score"] == pytest.approx(100 * (3 * s_sub + 2 * s_area) / 5, abs=1e-6)
    assert result.loc["L-FAR", "score_substation"] == pytest.approx(s_sub, abs=1e-6)
    assert result.loc["L-FAR", "why_substation"] == f"nearest ≥132 kV substation 'S-132' {round(distance)} m → " \
                                                   f"{s_sub:.2f} × weight 3"
    assert result.loc["L-FAR", "why_area"] == f"area 1,600 m² → {s_area:.2f} × weight 2"
    assert (result["why_slope"] == "no DEM loaded: not scored (raster 'crit_dem_not_loaded')").all()
    assert result["score_slope"].isna().all()
    assert result.loc["L-BIG", "score"] == 100.0


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_slope_from_a_loaded_dem(engine: str, handmade_layers: Settings, dask_scheduler: str) -> None:
    criteria = load_criteria(HANDMADE_CRITERIA).model_dump(by_alias=True, exclude_none=True)
    criteria["scores"][2]["raster"] = "crit_dem"  # a plane rising 1 m in 10 m
    result = _run(handmade_layers, engine, dask_scheduler, criteria).set_index("site")
    s_slope = _linear(HANDMADE_SLOPE_DEG, 0, 15)
    assert result["score_slope"].to_numpy() == pytest.approx(np.full(len(result), s_slope), abs=1e-6)
    assert (result["why_slope"] == f"slope {HANDMADE_SLOPE_DEG:.1f}° → {s_slope:.2f} × weight 1").all()
    assert result.loc["L-BIG", "score"] == pytest.approx(100 * (3 + 2 + s_slope) / 6, abs=1e-6)


@pytest.mark.db
@pytest.mark.parametrize("district", ["BETA", "beta", " Beta ", "乙區", "乙"])
def test_district_filter_english_chinese_any_case(district: str, handmade_layers: Settings) -> None:
    result = site_selection(HANDMADE_CRITERIA, settings=handmade_layers, district=district)
    assert list(result["site"]) == ["L-WAIVER"] and list(result["rank"]) == [1]


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_district_filter_on_every_engine(engine: str, handmade_layers: Settings, dask_scheduler: str) -> None:
    result = _run(handmade_layers, engine, dask_scheduler, district="alpha")
    assert set(result["site"]) == PASSING - {"L-WAIVER"} and set(result["district"]) == {"ALPHA"}


@pytest.mark.db
@pytest.mark.parametrize(("district", "problem"), [("GAMMA", "'GAMMA' is not a district"), ("", "is empty"),
                                                   ("  ", "is empty")])
def test_unknown_or_empty_district_lists_valid_names(district: str, problem: str, handmade_layers: Settings) -> None:
    with pytest.raises(PlanningError, match=rf"^district: {problem} \(valid: ALPHA, BETA, DELTA;"):
        site_selection(HANDMADE_CRITERIA, settings=handmade_layers, district=district)


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_district_without_sites_is_empty_not_an_error(engine: str, handmade_layers: Settings,
                                                      dask_scheduler: str) -> None:
    result = _run(handmade_layers, engine, dask_scheduler, district="丁區")
    assert len(result) == 0 and "why_zoning" in result.columns and result.crs.to_epsg() == 2326


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("dropped", "lots"), [
    (["flood"], {"L-FLOOD"}), (["landslide"], {"L-SLIDE99"}), (["conservation"], {"L-EDGE-GB"}),
    (["min_area"], {"L-SMALL"}), (["zoning"], {"L-RA"}), (["zoning", "conservation"], {"L-RA", "L-GB", "L-EDGE-GB"})])
def test_each_constraint_excludes_its_lots(engine: str, dropped: list[str], lots: set[str],
                                          handmade_layers: Settings, dask_scheduler: str) -> None:
    """Without a constraint, exactly the lots it excluded come back (so each is excluded for the stated reason)."""
    criteria = load_criteria(HANDMADE_CRITERIA).model_dump(by_alias=True, exclude_none=True)
    criteria["constraints"] = [c for c in criteria["constraints"] if c["id"] not in dropped]
    result = _run(handmade_layers, engine, dask_scheduler, criteria)
    assert set(result["site"]) == PASSING | lots
    assert not {f"why_{d}" for d in dropped} & set(result.columns)


@pytest.mark.db
def test_limit_keeps_the_best(handmade_layers: Settings) -> None:
    full = site_selection(HANDMADE_CRITERIA, settings=handmade_layers)
    top = site_selection(HANDMADE_CRITERIA, settings=handmade_layers, limit=2)
    pd.testing.assert_frame_equal(pd.DataFrame(top), pd.DataFrame(full.head(2)))
    assert len(site_selection(HANDMADE_CRITERIA, settings=handmade_layers, limit=0)) == 0
    with pytest.raises(PlanningError, match="limit: -1"):
        site_selection(HANDMADE_CRITERIA, settings=handmade_layers, limit=-1)


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_weights_override_changes_the_ranking(engine: str, handmade_layers: Settings, dask_scheduler: str) -> None:
    by_area = _run(handmade_layers, engine, dask_scheduler, weights={"substation": 0})
    areas = {r["lot_number"]: r["geometry"].area for r in HANDMADE["crit_lots"]}
    assert list(by_area["site"]) == sorted(PASSING, key=lambda s: -areas[s])  # L-BIG, L-WAIVER, L-SLIDE101, L-FAR
    assert by_area["why_substation"].str.endswith("× weight 0").all()
    with pytest.raises(CriteriaError, match="weights: unknown score id 'power'"):
        _run(handmade_layers, engine, dask_scheduler, weights={"power": 1})
    with pytest.raises(CriteriaError, match=r"weights\.area: 'x' is not a number"):
        _run(handmade_layers, engine, dask_scheduler, weights={"area": "x"})


@pytest.mark.db
def test_reproducible(handmade_layers: Settings) -> None:
    first = site_selection(HANDMADE_CRITERIA, settings=handmade_layers)
    second = site_selection(HANDMADE_CRITERIA, settings=handmade_layers)
    pd.testing.assert_frame_equal(pd.DataFrame(first), pd.DataFrame(second))


@pytest.mark.db
def test_unknown_layer_and_column(handmade_layers: Settings) -> None:
    with pytest.raises(LayerNotFoundError, match="crit_no_such_layer"):
        site_selection(CRITERIA / "bad_unknown_layer.yml", settings=handmade_layers)
    criteria = load_criteria(HANDMADE_CRITERIA).model_dump(by_alias=True, exclude_none=True)
    criteria["scores"][0]["label"] = "title"
    with pytest.raises(PlanningError, match=r"scores\.substation\.label: layer 'crit_substations' has no column "
                                            r"'title' \(columns: "):
        site_selection(criteria, settings=handmade_layers)
    with pytest.raises(PlanningError, match="engine 'spark'"):
        site_selection(HANDMADE_CRITERIA, settings=handmade_layers, engine="spark")


@pytest.mark.db
def test_minimal_criteria_ranks_every_lot(handmade_layers: Settings) -> None:
    result = site_selection(CRITERIA / "good_minimal.yml", settings=handmade_layers, engine="geopandas")
    assert len(result) == len(HANDMADE["crit_lots"]) and result["site"].iloc[0] == "L-BIG"
    assert result["district"].isna().all()  # no districts layer in these criteria


@pytest.mark.db
def test_dask_local_cluster(handmade_layers: Settings) -> None:
    """Without a scheduler the dask engine starts (and stops) a local cluster."""
    local = site_selection(HANDMADE_CRITERIA, settings=handmade_layers, engine="dask")
    assert set(local["site"]) == PASSING


# ---- the sample data (synthetic planning layers + real layers), shipped data-centre criteria ------------------------

def _comparable(result: gpd.GeoDataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(result.drop(columns="geometry"))
    frame["wkb"] = shapely.to_wkb(shapely.normalize(result.geometry.values), hex=True)
    return frame


@pytest.fixture(scope="module")
def sample_postgis(sample_layers: Settings) -> SiteSelectionResult:
    return site_selection(settings=sample_layers)


@pytest.mark.db
def test_sample_has_ranked_passing_sites(sample_postgis: SiteSelectionResult, sample_layers: Settings) -> None:
    result = sample_postgis
    assert len(result) > 0 and list(result["rank"]) == list(range(1, len(result) + 1))
    assert result["score"].is_monotonic_decreasing
    assert result["score"].between(0, 100).all() and (result["area_m2"] >= 1000).all()
    assert result["why_slope"].str.startswith("slope ").any()  # the synthetic DEM is loaded
    # an independent check of two exclusions with shapely on the layers as loaded
    from sdi.db import connect
    from sdi.planning.sources import read_layer

    with connect(sample_layers) as conn:
        slides = read_layer(conn, "landslide_incidents", columns=[])
        oil = read_layer(conn, "oil_storage_installations", columns=[])
    sites = np.asarray(result.geometry.values, dtype=object)[:, None]
    assert shapely.distance(sites, np.asarray(slides.geometry.values, dtype=object)[None, :]).min() > 100
    assert shapely.distance(sites, np.asarray(oil.geometry.values, dtype=object)[None, :]).min() > 1000


@pytest.mark.db
@pytest.mark.parametrize("engine", ["geopandas", "dask"])
def test_sample_engines_agree(engine: str, sample_postgis: SiteSelectionResult, sample_layers: Settings,
                              dask_scheduler: str) -> None:
    other = _run(sample_layers, engine, dask_scheduler, None)
    expected, got = _comparable(sample_postgis), _comparable(other)
    assert list(got["site"]) == list(expected["site"])
    assert list(got["rank"]) == list(expected["rank"])
    numeric = ["score", "area_m2"] + [c for c in expected.columns if c.startswith("score_")]
    np.testing.assert_allclose(got[numeric].to_numpy(float), expected[numeric].to_numpy(float), atol=1e-6)
    text = [c for c in expected.columns if c.startswith("why_")] + ["district", "wkb"]
    pd.testing.assert_frame_equal(got[text], expected[text])


@pytest.mark.db
def test_sample_district_names(sample_layers: Settings) -> None:
    english = site_selection(settings=sample_layers, district="Kwun Tong")
    chinese = site_selection(settings=sample_layers, district="觀塘區")
    pd.testing.assert_frame_equal(pd.DataFrame(english), pd.DataFrame(chinese))
    assert set(english["district"]) <= {"KWUN TONG"}


def test_handmade_layout_is_as_stated() -> None:
    """The fixture's distances are what the comments say (so the expected answers above hold)."""
    slides = {r["incident"]: r["geometry"] for r in HANDMADE["crit_landslides"]}
    assert _lot("L-SLIDE99").distance(slides["LS-A"]) == pytest.approx(99)
    assert _lot("L-SLIDE101").distance(slides["LS-B"]) == pytest.approx(101)
    assert _lot("L-SLIDE101").distance(slides["LS-A"]) > 100
    assert _lot("L-BIG").distance(next(r["geometry"] for r in HANDMADE["crit_substations"])) == pytest.approx(50)
    assert _lot("L-SMALL").area == 400 and (X0, Y0) == (830_000.0, 820_000.0)


@pytest.mark.db
@pytest.mark.parametrize("engine", ENGINES)
def test_later_zone_test_and_mixed_any_of(engine: str, handmade_layers: Settings, dask_scheduler: str) -> None:
    """A second in_zone constraint, and an any_of of an area test and an exclusion, after the first constraint."""
    criteria = load_criteria(HANDMADE_CRITERIA).model_dump(by_alias=True, exclude_none=True)
    criteria["constraints"] += [
        {"id": "zone_z1", "type": "in_zone", "layer": "crit_zones", "where": {"column": "zone_id", "in": ["Z1"]},
         "label": "zone_code"},
        {"id": "big_or_dry", "any_of": [{"type": "min_area", "min_m2": 3000},
                                        {"type": "exclude_within", "layer": "crit_landslides", "distance_m": 300,
                                         "name": "landslide incident"}]}]
    result = _run(handmade_layers, engine, dask_scheduler, criteria).set_index("site")
    # L-WAIVER is in Z3, not Z1; L-SLIDE101 (2,500 m²) is 101 m from a landslide; L-FAR is 568 m from both
    assert set(result.index) == {"L-BIG", "L-FAR"}
    assert result.loc["L-BIG", "why_zone_z1"] == "in crit_zones Z1 (I)"
    assert result.loc["L-BIG", "why_big_or_dry"] == "area 22,500 m² ≥ 3,000 m²"
    assert result.loc["L-FAR", "why_big_or_dry"] == "no landslide incident within 300 m"
