"""Raster layers: GeoTIFF and ASCII grid → COG in EPSG:2326, registry rows, atomic publishing, bad input."""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import rasterio.shutil
from pyproj import Transformer
from rasterio.transform import from_origin
from typer.testing import CliRunner

from loaders import load
from loaders.formats import RASTER_SUFFIXES
from loaders.raster import gdal_operation
from sdi.cli import app
from sdi.crs import reprojection
from sdi.errors import CrsError, ExtentError, SdiError, SourceFormatError
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, ROOT, SAMPLE, db_snapshot

DEM_LAYERS = sorted(p.stem for p in LAYERS.glob("synthetic_mudflat_elevation*.yml"))
DEM_1991 = SAMPLE / "synthetic" / "dem_deepbay_synthetic.tif"
RASTER = DATA / "raster"


def _cog(settings: Settings, layer_id: str) -> Path:
    return settings.data_dir / "rasters" / f"{layer_id}.tif"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(settings: Settings, db: psycopg.Connection) -> tuple[object, ...]:
    """Database rows plus every file under data_dir with its digest: what a failed load must not change."""
    folder = settings.data_dir
    files = sorted((str(p.relative_to(folder)), _sha(p)) for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []
    return db_snapshot(db), tuple(files)


def _write_tif(path: Path, data: np.ndarray, *, west: float, north: float, res: float, crs: str | None,
               nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=from_origin(west, north, res, res), nodata=nodata) as dst:
        dst.write(data, 1)
    return path


def _lonlat_grid(tmp_path: Path) -> Path:
    """300 x 200 pixels of 0.0002° over Kowloon/Sha Tin in EPSG:4326, float32 codes 1..50 (6 columns each)."""
    data = np.tile(np.arange(300, dtype="float32") // 6 + 1, (200, 1))
    data[:30, :30] = -9999.0
    return _write_tif(tmp_path / "lonlat.tif", data, west=114.15, north=22.38, res=0.0002, crs="EPSG:4326",
                      nodata=-9999.0)


@pytest.mark.parametrize("layer_id", DEM_LAYERS)
def test_sample_dem_loads_as_cog(layer_id: str, settings: Settings, db: psycopg.Connection) -> None:
    definition = read_definition(LAYERS / f"{layer_id}.yml")
    report = load(definition, settings)
    cog = _cog(settings, layer_id)
    with rasterio.open(cog) as out, rasterio.open(definition.source_path) as src:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and out.profile["tiled"]
        assert out.overviews(1) and out.crs.to_epsg() == 2326
        assert math.isnan(out.nodata) and math.isnan(src.nodata)
        assert out.transform == src.transform and out.shape == src.shape == (229, 186)
        source = src.read(1)
        np.testing.assert_array_equal(out.read(1), source)  # NaN where NaN, every value identical
        assert out.descriptions == src.descriptions and out.descriptions[0]
        assert out.tags()["AREA_OR_POINT"] == "Area"
        assert out.tags()["SDI_LOAD_ID"] == str(report.load_id) and out.tags()["SDI_LAYER_ID"] == layer_id
    with rasterio.open(cog, overview_level=0) as overview:  # nearest overviews keep codes and heights
        values = overview.read(1)
    assert set(np.unique(values[~np.isnan(values)])) <= set(np.unique(source[~np.isnan(source)]))
    assert report.driver == "GTiff" and (report.source_crs, report.crs_origin) == ("EPSG:2326", "file")
    assert report.features_read == report.features_written == 186 * 229 and not report.dry_run
    assert any(n.startswith("written as COG with") and "nodata=nan" in n for n in report.notes)
    history = db.execute("select layer_id, source_sha256, features_written, report->>'driver' from sdi.load_history"
                         " where load_id = %s", (report.load_id,)).fetchone()
    assert history == (layer_id, _sha(definition.source_path), 186 * 229, "GTiff")
    row = db.execute("select kind, file_path, table_name, srid, feature_count, load_id, raster->>'dtype',"
                     " raster->>'nodata', (raster->>'band_count')::int, raster->'bands'->0->>'description',"
                     " st_xmin(extent), st_ymin(extent), st_xmax(extent), st_ymax(extent)"
                     " from sdi.layer where id = %s", (layer_id,)).fetchone()
    with rasterio.open(definition.source_path) as src:
        description = src.descriptions[0]
    assert row == ("raster", f"rasters/{layer_id}.tif", None, 2326, 186 * 229, report.load_id, "float32", "NaN",
                   1, description, 816300.0, 836790.0, 821880.0, 843660.0)
    catalogue = db.execute("select keywords_zh, st_srid(extent_crs84), theme, lineage->>'load_id', links::text"
                           " from sdi.layer where id = %s", (layer_id,)).fetchone()
    assert catalogue is not None and "泥灘" in catalogue[0] and catalogue[1:4] == (4326, "elevation",
                                                                                str(report.load_id))
    assert "coverage?f=GTiff" in catalogue[4]
    valid = int((~np.isnan(source)).sum())
    assert db.execute("select (raster->'bands'->0->>'valid_pixels')::int from sdi.layer where id = %s",
                      (layer_id,)).fetchone() == (valid,)


def test_reload_replaces_cog_and_keeps_history(settings: Settings, db: psycopg.Connection,
                                               layer_yaml: Callable[..., Path]) -> None:
    first = load(read_definition(layer_yaml("dem_twice", DEM_1991)), settings)
    second = load(read_definition(layer_yaml("dem_twice", DEM_1991)), settings)
    assert first.load_id is not None and second.load_id is not None and second.load_id > first.load_id
    with rasterio.open(_cog(settings, "dem_twice")) as out:
        assert out.tags()["SDI_LOAD_ID"] == str(second.load_id)
    assert db.execute("select count(*) from sdi.load_history where layer_id = 'dem_twice'").fetchone() == (2,)
    assert db.execute("select load_id from sdi.layer where id = 'dem_twice'").fetchone() == (second.load_id,)
    assert sorted(p.name for p in _cog(settings, "dem_twice").parent.iterdir()) == ["dem_twice.tif"]


def test_lonlat_raster_is_reprojected_to_where_pyproj_puts_it(tmp_path: Path, settings: Settings,
                                                             layer_yaml: Callable[..., Path]) -> None:
    source = _lonlat_grid(tmp_path)
    report = load(read_definition(layer_yaml("lonlat_grid", source)), settings)
    assert (report.source_crs, report.crs_origin) == ("EPSG:4326", "file")
    assert "Hong Kong 1980 to WGS 84 (1)" in report.transformation
    to_grid = Transformer.from_crs(4326, 2326, always_xy=True)
    left, bottom, right, top = to_grid.transform_bounds(114.15, 22.34, 114.21, 22.38, densify_pts=21)
    with rasterio.open(_cog(settings, "lonlat_grid")) as out:
        assert out.crs.to_epsg() == 2326 and out.nodata == -9999.0 and out.overviews(1)
        xres, yres = out.res
        # anchored at the top-left of the reprojected bounds; GDAL rounds the size to whole pixels
        assert abs(out.bounds.left - left) < 0.01 and abs(out.bounds.top - top) < 0.01
        assert abs(out.bounds.right - right) <= xres / 2 and abs(out.bounds.bottom - bottom) <= yres / 2
        # a pixel centre converted with pyproj holds the source value there (column 183 holds 31)
        x, y = to_grid.transform(114.15 + 183.5 * 0.0002, 22.38 - 100.5 * 0.0002)
        assert next(out.sample([(x, y)]))[0] == 31.0
        corner_x, corner_y = to_grid.transform(114.151, 22.379)  # inside the nodata block
        assert next(out.sample([(corner_x, corner_y)]))[0] == -9999.0
        assert set(np.unique(out.read(1))) <= {-9999.0, *range(1, 51)}  # nearest neighbour: no new values
    assert any("nearest-neighbour" in n for n in report.notes)


@pytest.mark.parametrize(("name", "source_keys", "origin"), [
    ("deepbay_extract.asc", {"crs": "EPSG:2326"}, "declared"),
    ("deepbay_extract_prj.asc", {}, "file"),
])
def test_ascii_grid_loads(name: str, source_keys: dict[str, str], origin: str, settings: Settings,
                          db: psycopg.Connection, layer_yaml: Callable[..., Path]) -> None:
    assert ".asc" in RASTER_SUFFIXES
    report = load(read_definition(layer_yaml("asc_grid", RASTER / name, source_keys)), settings)
    assert report.driver == "AAIGrid" and (report.source_crs, report.crs_origin) == ("EPSG:2326", origin)
    with rasterio.open(_cog(settings, "asc_grid")) as out:
        data = out.read(1)
        assert out.crs.to_epsg() == 2326 and out.nodata == -9999.0 and out.shape == (10, 12)
        assert out.descriptions == ("band 1",)
    with rasterio.open(DEM_1991) as dem:  # the extract's cells (rows 85-94, cols 105-116), to two decimals
        window = ((85, 95), (105, 117))
        expected = np.round(dem.read(1, window=window), 2)
        corner = dem.window_transform(window) * (0, 0)
    assert (out.bounds.left, out.bounds.top) == corner
    np.testing.assert_allclose(np.where(data == -9999.0, np.nan, data), expected, atol=0.006)
    assert any("band descriptions set" in n and "band 1" in n for n in report.notes)
    assert db.execute("select kind, feature_count from sdi.layer where id = 'asc_grid'").fetchone() == ("raster", 120)


def test_dry_run_reads_and_writes_nothing(settings: Settings, db: psycopg.Connection,
                                          layer_yaml: Callable[..., Path]) -> None:
    before = _state(settings, db)
    report = load(read_definition(layer_yaml("dem_dry", DEM_1991)), settings, dry_run=True)
    assert report.dry_run and report.features_read == 186 * 229 and report.features_written == 0
    assert report.source_sha256 == _sha(DEM_1991) and report.load_id is None
    assert not settings.data_dir.exists() and _state(settings, db) == before


def _previous_load(settings: Settings, layer_yaml: Callable[..., Path], layer_id: str = "dem_prev") -> str:
    load(read_definition(layer_yaml(layer_id, DEM_1991)), settings)
    return _sha(_cog(settings, layer_id))


def _truncated_header(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.tif"  # the sample keeps its IFD at the end: cut it off
    path.write_bytes(DEM_1991.read_bytes()[:30_000])
    return path


def _truncated_tiles(tmp_path: Path) -> Path:
    cog = tmp_path / "whole.tif"  # a COG keeps its IFDs first: cut into the tiles
    rasterio.shutil.copy(DEM_1991, cog, driver="COG", BLOCKSIZE=64, COMPRESS="DEFLATE")
    path = tmp_path / "truncated_tiles.tif"
    path.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])
    return path


def _outside(tmp_path: Path) -> Path:  # Tokyo, in EPSG:4326
    return _write_tif(tmp_path / "tokyo.tif", np.ones((10, 10), "uint8"), west=139.7, north=35.7, res=0.01,
                      crs="EPSG:4326")


def _lonlat_labelled_grid(tmp_path: Path) -> Path:  # lon/lat numbers in a file that says EPSG:2326
    return _write_tif(tmp_path / "mislabelled.tif", np.ones((10, 10), "uint8"), west=114.1, north=22.4, res=0.01,
                      crs="EPSG:2326")


def _no_crs(tmp_path: Path) -> Path:
    return _write_tif(tmp_path / "no_crs.tif", np.ones((10, 10), "float32"), west=830000, north=830000, res=10,
                      crs=None)


@pytest.mark.parametrize(("make", "error", "message"), [
    (_truncated_header, SourceFormatError, "truncated.tif: not a readable raster"),
    (_truncated_tiles, SourceFormatError, "band 1 cannot be read at row"),
    (_outside, ExtentError, "tokyo.tif: coordinates lie outside Hong Kong"),
    (_lonlat_labelled_grid, ExtentError, "look like longitude/latitude"),
    (_no_crs, CrsError, "no_crs.tif has no CRS; set source.crs"),
])
def test_bad_raster_fails_in_one_line_and_changes_nothing(
        make: Callable[[Path], Path], error: type[SdiError], message: str, tmp_path: Path, settings: Settings,
        db: psycopg.Connection, layer_yaml: Callable[..., Path]) -> None:
    previous = _previous_load(settings, layer_yaml)
    before = _state(settings, db)
    with pytest.raises(error) as info:
        load(read_definition(layer_yaml("dem_prev", make(tmp_path))), settings)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _state(settings, db) == before and _sha(_cog(settings, "dem_prev")) == previous


@pytest.mark.parametrize("fail_at", ["warp", "commit"])
def test_failure_mid_load_keeps_previous_cog_and_rows(fail_at: str, settings: Settings, db: psycopg.Connection,
                                                      layer_yaml: Callable[..., Path]) -> None:
    previous = _previous_load(settings, layer_yaml)
    before = _state(settings, db)
    calls: list[tuple[int, int]] = []

    def fail(done: int, total: int) -> None:
        calls.append((done, total))
        if fail_at == "warp" or len(calls) == 2:  # 2nd call: COG swapped in and rows written, not committed
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        load(read_definition(layer_yaml("dem_prev", DEM_1991)), settings, progress=fail)
    assert _state(settings, db) == before and _sha(_cog(settings, "dem_prev")) == previous
    assert calls == ([(1, 1)] if fail_at == "warp" else [(1, 1), (1, 1)])


def test_failure_on_first_load_leaves_no_file(settings: Settings, db: psycopg.Connection,
                                             layer_yaml: Callable[..., Path]) -> None:
    def fail(done: int, total: int, calls: list[int] = []) -> None:  # noqa: B006 - counts calls
        calls.append(done)
        if len(calls) == 2:
            raise RuntimeError("injected failure")

    before = db_snapshot(db)
    with pytest.raises(RuntimeError):
        load(read_definition(layer_yaml("dem_first", DEM_1991)), settings, progress=fail)
    assert db_snapshot(db) == before and list((settings.data_dir / "rasters").iterdir()) == []


def test_stale_temporary_files_are_removed_and_reported(settings: Settings, layer_yaml: Callable[..., Path]) -> None:
    folder = settings.data_dir / "rasters"
    folder.mkdir(parents=True)
    stale, other = folder / ".dem_stale.7.staging.tif", folder / ".dem_other.7.staging.tif"
    stale.write_bytes(b"x")
    other.write_bytes(b"x")
    report = load(read_definition(layer_yaml("dem_stale", DEM_1991, primary_key="id")), settings)
    assert not stale.exists() and other.exists()  # only this layer's leftovers (we hold its lock)
    assert any("removed 1 temporary file" in w for w in report.warnings)
    assert any("ignored for a raster layer: primary_key" in w for w in report.warnings)


def test_migration_keeps_vector_rows_and_checks_raster_rows(settings: Settings, db: psycopg.Connection) -> None:
    load(read_definition(LAYERS / "oil_storage_installations.yml"), settings)
    row = db.execute("select kind, file_path, raster from sdi.layer where id = 'oil_storage_installations'")
    assert row.fetchone() == ("vector", None, None)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("update sdi.layer set kind = 'raster' where id = 'oil_storage_installations'")


def test_cli_prints_a_raster_summary(settings: Settings, tmp_path: Path) -> None:
    env = {"SDI_DATABASE_URL": settings.database_url, "SDI_LAYERS_DIR": str(LAYERS),
           "SDI_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["load", DEM_LAYERS[0]], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "EPSG:2326 (file)" in out and "(GTiff)" in out and "read 42,594, written 42,594" in out
    assert "written as COG with 1 overview level(s) [2]" in out and "band 1 'SYNTHETIC elevation" in out
    assert _cog(settings, DEM_LAYERS[0]).exists()
    shutil.rmtree(settings.data_dir)


def test_gdal_pipeline_is_the_checked_transformation_in_authority_axis_order() -> None:
    op = gdal_operation(reprojection(4326))  # EPSG:4326 is lat/lon and EPSG:2326 northing/easting
    swap = "+step +proj=axisswap +order=2,1"
    assert op.startswith(f"+proj=pipeline {swap}") and op.endswith(swap)
    assert "+proj=helmert +x=-162.619 +y=-276.959 +z=-161.764" in op  # EPSG:1825's parameters
    northing, easting = Transformer.from_pipeline(op).transform(22.3, 114.17)
    x, y = Transformer.from_crs(4326, 2326, always_xy=True).transform(114.17, 22.3)
    assert abs(easting - x) < 1e-6 and abs(northing - y) < 1e-6
    utm = gdal_operation(reprojection(32650))  # UTM is easting first: no swap on the way in
    assert not utm.startswith(f"+proj=pipeline {swap}") and utm.endswith(swap)


REAL_DEM = ROOT.parent / "shared" / "data" / "hk" / "dem_mudflat_deepbay"


@pytest.mark.skipif(not REAL_DEM.is_dir(), reason="the real Deep Bay rasters are not redistributed; "
                                                   "they are read from ../shared when it is there")
@pytest.mark.parametrize("period", ["1991-2000", "2001-2010", "2011-2020"])
def test_real_deep_bay_dem_reads_without_change(period: str, tmp_path: Path) -> None:
    from sdi.layerdef import parse_definition

    source = REAL_DEM / f"MudflatElevation_DeepBayHK_{period}.tif"
    definition = parse_definition({"id": "real_dem", "title": {"en": "t"}, "abstract": {"en": "a"},
                                   "custodian": "c", "licence": "l", "source": {"path": str(source)}},
                                  where="real_dem.yml")
    report = load(definition, Settings(database_url="postgresql://127.0.0.1:1/none", data_dir=tmp_path),
                  dry_run=True)
    with rasterio.open(source) as src:
        assert (report.source_crs, report.crs_origin) == ("EPSG:2326", "file")
        assert report.features_read == src.width * src.height == 186 * 229
    assert report.load_id is None and not any(tmp_path.iterdir())
