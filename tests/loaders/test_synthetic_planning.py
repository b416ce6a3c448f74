"""The synthetic planning layers: generator invariants, the committed sample, and loading them.

The oracle for "inside Hong Kong" is read here, independently of the generator: the 18-district
shapefile converted with a plain pyproj transformer (always_xy) and unioned.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import geopandas as gpd
import numpy as np
import psycopg
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer

from loaders import load
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, SAMPLE

VECTOR_IDS = ["synthetic_ozp_zones", "synthetic_lots", "synthetic_substations", "synthetic_mtr_stations",
              "synthetic_flood_prone_areas", "synthetic_country_park_areas"]
ZONE_CODES = {"I", "OU(B)", "B", "C", "R(A)", "R(B)", "R(C)", "G/IC", "O", "GB", "CA", "SSSI", "CPA", "AGR", "V"}
COLUMNS = {
    "synthetic_ozp_zones": ["zone_id", "zone_code", "zone_name", "plan_no"],
    "synthetic_lots": ["lot_number", "district", "area_m2"],
    "synthetic_substations": ["name", "voltage_kv"],
    "synthetic_mtr_stations": ["name", "line"],
    "synthetic_flood_prone_areas": ["area_id", "severity"],
    "synthetic_country_park_areas": ["name_en", "name_zh"],
}
GPKG = SAMPLE / "synthetic" / "planning" / "planning.gpkg"
DEM = SAMPLE / "synthetic" / "planning" / "dem.tif"


def _generator() -> ModuleType:
    name = "hk_sdi_synthetic_planning"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SAMPLE / "synthetic" / "planning.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


@pytest.fixture(scope="module")
def districts() -> gpd.GeoDataFrame:
    raw = pyogrio.read_dataframe(SAMPLE / "districts18" / "Hong_Kong_18_Districts.shp")
    to_grid = Transformer.from_crs(raw.crs, 2326, always_xy=True)
    geoms = shapely.make_valid(shapely.transform(raw.geometry.values, lambda xy: np.column_stack(
        to_grid.transform(xy[:, 0], xy[:, 1]))))
    return gpd.GeoDataFrame({"name_en": raw["ENAME"]}, geometry=geoms, crs=2326)


@pytest.fixture(scope="module")
def land(districts: gpd.GeoDataFrame) -> shapely.Geometry:
    outline = shapely.union_all(districts.geometry.values)
    shapely.prepare(outline)
    return outline


@pytest.fixture(scope="module")
def sample(gen: ModuleType) -> dict[str, gpd.GeoDataFrame]:
    return gen.make_planning_layers(gen.SAMPLE_LOTS)


@pytest.fixture(scope="module")
def small(gen: ModuleType) -> dict[str, gpd.GeoDataFrame]:
    return gen.make_planning_layers(2_000)


def _committed(layer_id: str) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(GPKG, layer=layer_id)


def _assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns.drop("geometry"):
        assert a[column].tolist() == b[column].tolist(), column
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=1e-6).all()


def _inside(geoms: np.ndarray, land: shapely.Geometry) -> np.ndarray:
    """Inside the land outline, allowing 1 cm for the coordinates of clipped edges."""
    inside = shapely.contains(land, geoms)
    rest = np.flatnonzero(~inside)
    if len(rest):
        outside = shapely.difference(geoms[rest], land)
        inside[rest] = shapely.is_empty(outside) | (shapely.area(outside) < 1e-4) & (
            shapely.hausdorff_distance(geoms[rest], shapely.intersection(geoms[rest], land)) < 0.01)
    return inside


def _check_lots(lots: gpd.GeoDataFrame, land: shapely.Geometry, districts: gpd.GeoDataFrame) -> None:
    geoms = lots.geometry.values
    assert lots.lot_number.is_unique and not lots.lot_number.isna().any()
    # convex quadrilaterals: 4 corners (+ closing point), area equal to the convex hull's
    assert (shapely.get_num_coordinates(geoms) == 5).all()
    np.testing.assert_allclose(shapely.area(shapely.convex_hull(geoms)), shapely.area(geoms), rtol=1e-9)
    assert shapely.is_valid(geoms).all()
    # never overlapping: intersecting pairs share at most a boundary
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    assert (shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])) < 1e-6).all()
    assert _inside(geoms, land).all()
    np.testing.assert_allclose(lots.area_m2, shapely.area(geoms), atol=0.01)
    joined = gpd.sjoin(gpd.GeoDataFrame(geometry=lots.centroid, crs=2326), districts, predicate="within")
    match = (joined.name_en == lots.district.loc[joined.index]).groupby(level=0).any()  # districts overlap a bit
    assert match.all()
    assert len(joined.index.unique()) >= 0.99 * len(lots)


def test_generator_is_deterministic(gen: ModuleType, small: dict[str, gpd.GeoDataFrame]) -> None:
    again = gen.make_planning_layers(2_000)
    assert list(again) == VECTOR_IDS
    for layer_id in VECTOR_IDS:
        _assert_same(small[layer_id], again[layer_id])
    assert not gen.make_planning_layers(2_000, seed=7)["synthetic_lots"].geometry.values[0].equals(
        small["synthetic_lots"].geometry.values[0])


def test_committed_sample_equals_a_fresh_generation(sample: dict[str, gpd.GeoDataFrame], gen: ModuleType,
                                                    tmp_path: Path) -> None:
    assert {name for name, _ in pyogrio.list_layers(GPKG)} == set(VECTOR_IDS)
    for layer_id in VECTOR_IDS:
        _assert_same(sample[layer_id], _committed(layer_id))
    fresh = gen.make_dem(tmp_path / "dem.tif")
    with rasterio.open(fresh) as new, rasterio.open(DEM) as old:
        assert {**new.profile, "nodata": 0} == {**old.profile, "nodata": 0} and new.tags() == old.tags()
        assert np.isnan(new.nodata) and np.isnan(old.nodata)
        assert np.array_equal(new.read(1), old.read(1), equal_nan=True)


def test_sample_files_are_small() -> None:
    files = [GPKG, DEM, SAMPLE / "synthetic" / "planning.py"]
    assert sum(f.stat().st_size for f in files) <= 6 * 1024 * 1024


def test_layers_have_the_contract_columns(sample: dict[str, gpd.GeoDataFrame]) -> None:
    for layer_id, columns in COLUMNS.items():
        frame = sample[layer_id]
        assert list(frame.columns) == [*columns, "geometry"] and frame.crs.to_epsg() == 2326
        assert len(frame) > 0 and not frame.geometry.isna().any()
    zones = sample["synthetic_ozp_zones"]
    assert set(zones.zone_code) <= ZONE_CODES and zones.zone_id.is_unique
    assert set(sample["synthetic_substations"].voltage_kv) == {400, 132, 33, 11}
    assert set(sample["synthetic_flood_prone_areas"].severity) == {"high", "medium"}
    assert zones.plan_no.str.fullmatch(r"S/[A-Z0-9-]+/\d+").all()


def test_sample_lots_are_convex_disjoint_inside_hong_kong(sample: dict[str, gpd.GeoDataFrame],
                                                          land: shapely.Geometry,
                                                          districts: gpd.GeoDataFrame) -> None:
    _check_lots(sample["synthetic_lots"], land, districts)
    numbers = sample["synthetic_lots"].lot_number
    assert numbers.str.startswith("KTIL ").any() and numbers.str.fullmatch(r"Lot \d+ in DD \d+").any()


def test_lots_avoid_parks_and_conservation_zones(sample: dict[str, gpd.GeoDataFrame]) -> None:
    lots = sample["synthetic_lots"].geometry.values
    zones = sample["synthetic_ozp_zones"]
    closed = np.concatenate([sample["synthetic_country_park_areas"].geometry.values,
                             zones.geometry.values[zones.zone_code.isin(["CA", "SSSI", "CPA", "GB"])]])
    left, right = shapely.STRtree(closed).query(lots, predicate="intersects")
    assert (shapely.area(shapely.intersection(lots[left], closed[right])) < 1e-6).all()


def test_every_layer_is_inside_hong_kong(sample: dict[str, gpd.GeoDataFrame], land: shapely.Geometry) -> None:
    for layer_id in VECTOR_IDS:
        assert _inside(sample[layer_id].geometry.values, land).all(), layer_id
    parks = sample["synthetic_country_park_areas"]
    real = pyogrio.read_dataframe(SAMPLE / "geodatastore" / "country_parks.geojson").to_crs(2326)
    assert set(parks.name_en) <= set(real["Facility Name"]) and len(parks) >= 0.9 * len(real)
    named = real.set_index("Facility Name").loc[parks.name_en]
    assert (shapely.distance(parks.geometry.values, named.geometry.values) < 1500).all()


def test_dem_is_a_float32_hk1980_grid_nan_over_the_sea(land: shapely.Geometry) -> None:
    with rasterio.open(DEM) as dem:
        assert dem.crs.to_epsg() == 2326 and dem.dtypes == ("float32",) and np.isnan(dem.nodata)
        assert dem.tags()["SYNTHETIC"] == "yes" and dem.profile["compress"] == "lzw"
        assert 50 <= dem.res[0] <= 100
        grid = dem.read(1)
        rows, cols = np.indices(grid.shape)
        xs, ys = dem.xy(rows.ravel(), cols.ravel())
    on_land = shapely.contains_xy(land, np.asarray(xs), np.asarray(ys)).reshape(grid.shape)
    assert np.mean(on_land == ~np.isnan(grid)) > 0.999  # NaN exactly over the sea (cell centres)
    assert 300 < np.nanmax(grid) < 1000 and np.nanmin(grid) >= 0


def test_shipped_criteria_pass_some_sites(land: shapely.Geometry) -> None:
    """The data-centre screening (contract) passes a reasonable number of sample lots, some only via a waiver."""
    lots, zones = _committed("synthetic_lots"), _committed("synthetic_ozp_zones")
    read = lambda path: pyogrio.read_dataframe(SAMPLE / path).to_crs(2326)  # noqa: E731
    waivers = read("geodatastore/industrial_special_waivers.geojson")
    waivers = waivers[waivers.userEN.str.contains("information technology", case=False)]
    centroids = gpd.GeoDataFrame(geometry=lots.centroid, crs=2326)
    works = zones[zones.zone_code.isin(["I", "OU(B)", "B"])]
    in_zone = lots.index.isin(gpd.sjoin(centroids, works, predicate="within").index)
    contains = lots.index.isin(gpd.sjoin(lots, waivers, predicate="covers").index)

    def near(frame: gpd.GeoDataFrame, metres: float) -> np.ndarray:
        zone = gpd.GeoDataFrame(geometry=frame.geometry.buffer(metres) if metres else frame.geometry, crs=2326)
        return lots.index.isin(gpd.sjoin(lots, zone, predicate="intersects").index)

    passing = ((in_zone | contains) & (lots.area_m2 >= 1000) & ~near(_committed("synthetic_flood_prone_areas"), 0)
               & ~near(read("landslides/landslides_extract.shp"), 100)
               & ~near(read("geodatastore/oil_storage_installations.geojson"), 1000)
               & ~near(_committed("synthetic_country_park_areas"), 0)
               & ~near(zones[zones.zone_code.isin(["CA", "SSSI", "CPA", "GB"])], 0))
    assert 50 <= passing.sum() <= 300
    assert (passing & contains & ~in_zone).sum() >= 1
    assert lots.district[passing].nunique() >= 5 and (lots.district[passing] == "KWUN TONG").sum() >= 10


def test_more_lots_are_smaller_and_fill_the_same_land(gen: ModuleType, small: dict[str, gpd.GeoDataFrame],
                                                      land: shapely.Geometry, districts: gpd.GeoDataFrame) -> None:
    few = small["synthetic_lots"]
    assert len(few) == 2_000
    _check_lots(few, land, districts)
    zones = small["synthetic_ozp_zones"]
    many, more = gen.make_lots(zones, 20_000), gen.make_lots(zones, 200_000)
    assert len(many) == 20_000 and len(more) == 200_000
    _check_lots(many, land, districts)
    # ten times the lots: much smaller lots covering about the same land, in every district
    assert 4 < many.area_m2.median() / more.area_m2.median() < 25
    assert 0.6 < many.area_m2.sum() / more.area_m2.sum() < 1.5
    assert many.district.nunique() == more.district.nunique() == 18
    np.testing.assert_allclose(many.total_bounds, more.total_bounds, atol=3000)


def test_too_few_lots_is_an_error(gen: ModuleType, small: dict[str, gpd.GeoDataFrame]) -> None:
    with pytest.raises(ValueError, match="n_lots"):
        gen.make_lots(small["synthetic_ozp_zones"], 0)


@pytest.mark.db
def test_layers_load_through_the_catalogue(settings: Settings, db: psycopg.Connection) -> None:
    real_parks = len(pyogrio.read_dataframe(SAMPLE / "geodatastore" / "country_parks.geojson"))
    for layer_id in [*VECTOR_IDS, "synthetic_dem"]:
        definition = read_definition(LAYERS / f"{layer_id}.yml")
        assert definition.synthetic and definition.title.en.endswith("(synthetic)")
        assert definition.title.zh is not None and definition.title.zh.endswith("（合成數據）")
        report = load(definition, settings)
        row = db.execute("select synthetic, kind, feature_count from sdi.layer where id = %s",
                         (layer_id,)).fetchone()
        assert row is not None and row[0] is True
        if layer_id == "synthetic_dem":
            assert row[1] == "raster"
            continue
        assert row[1] == "vector" and row[2] == len(_committed(layer_id)) == report.features_written
    lots = db.execute("select count(*), count(distinct lot_number), max(abs(st_area(geom) - area_m2)) "
                      "from layers.synthetic_lots").fetchone()
    assert lots is not None and lots[0] == lots[1] == _generator().SAMPLE_LOTS and lots[2] <= 0.01
    parks = db.execute("select count(*) from layers.synthetic_country_park_areas").fetchone()
    assert parks is not None and 0.9 * real_parks <= parks[0] <= real_parks
