"""Planning fixtures: the session's test database with planning layers loaded through the normal loader.

``planning_settings`` points at the session database with its own data folder (rasters land there).
``sample_layers`` loads the layers the shipped data-centre criteria read (and the synthetic DEM), once
per session; ``handmade_layers`` loads a tiny territory whose answer can be stated (see
:data:`HANDMADE`), under ids starting with ``crit_``. ``dask_cli_cluster`` starts a scheduler and two
workers with the ``dask`` command-line tools (loopback only) for a test module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.transform
import yaml
from shapely.geometry import Point, box

from loaders import load
from sdi.layerdef import read_definition
from sdi.planning.cli_cluster import CliCluster, cli_cluster
from sdi.planning.criteria import load_criteria
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS

CRITERIA = DATA / "criteria"
X0, Y0 = 830_000.0, 820_000.0  # south-west corner of the handmade territory (HK1980 Grid, Kowloon)


def _sq(x: float, y: float, w: float, h: float | None = None) -> Any:
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + (w if h is None else h))


def _pt(x: float, y: float) -> Point:
    return Point(X0 + x, Y0 + y)


#: The handmade territory, 4 km x 1 km (lots in the west 2 km), coordinates relative to (X0, Y0) in metres.
#: Expected (criteria tests/data/criteria/handmade.yml): pass = L-SLIDE101, L-WAIVER, L-BIG, L-FAR;
#: L-BIG ranks first (largest, 50 m from the 132 kV substation).
HANDMADE: dict[str, list[dict[str, Any]]] = {
    "crit_districts": [
        {"name_en": "ALPHA", "name_zh": "甲區", "geometry": _sq(0, 0, 1000, 1000)},
        {"name_en": "BETA", "name_zh": "乙區", "geometry": _sq(1000, 0, 1000, 1000)},
        {"name_en": "DELTA", "name_zh": "丁區", "geometry": _sq(3000, 0, 1000, 1000)},  # no lots
    ],
    "crit_zones": [
        {"zone_id": "Z1", "zone_code": "I", "geometry": _sq(0, 0, 1600, 1000)},
        {"zone_id": "Z2", "zone_code": "GB", "geometry": _sq(1600, 0, 400, 500)},
        {"zone_id": "Z3", "zone_code": "R(A)", "geometry": _sq(1600, 500, 400, 500)},
    ],
    "crit_lots": [
        {"lot_number": "L-FLOOD", "geometry": _sq(100, 100, 50)},  # inside the flood area
        {"lot_number": "L-SLIDE99", "geometry": _sq(300, 100, 50)},  # landslide point 99 m east
        {"lot_number": "L-SLIDE101", "geometry": _sq(300, 300, 50)},  # landslide point 101 m east
        {"lot_number": "L-GB", "geometry": _sq(1700, 100, 50)},  # inside Green Belt
        {"lot_number": "L-EDGE-GB", "geometry": _sq(1550, 100, 60, 50)},  # centroid in I, 10 m into GB
        {"lot_number": "L-WAIVER", "geometry": _sq(1700, 700, 60)},  # R(A), holds an IT & T waiver
        {"lot_number": "L-RA", "geometry": _sq(1800, 800, 60)},  # R(A), holds a waiver for offices only
        {"lot_number": "L-SMALL", "geometry": _sq(500, 500, 20)},  # 400 m²
        {"lot_number": "L-BIG", "geometry": _sq(600, 600, 150)},  # 22,500 m², 50 m from the substation
        {"lot_number": "L-FAR", "geometry": _sq(100, 800, 40)},  # 1,600 m², far from the substation
    ],
    "crit_flood": [{"area_id": "F1", "severity": "high", "geometry": _sq(80, 80, 120)}],
    "crit_landslides": [{"incident": "LS-A", "geometry": _pt(449, 125)},
                        {"incident": "LS-B", "geometry": _pt(451, 325)}],
    "crit_waivers": [
        {"user_en": "Information Technology and Telecommunications Industries", "location_en": "1 Test Road",
         "geometry": _pt(1730, 730)},
        {"user_en": "Office", "location_en": "2 Test Road", "geometry": _pt(1830, 830)},
    ],
    "crit_substations": [{"name": "S-132", "voltage_kv": 132, "geometry": _pt(800, 675)},
                         {"name": "S-11", "voltage_kv": 11, "geometry": _pt(150, 850)}],
}


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """Address of a small dask cluster shared by the session's tests (workers are threads of this process)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _settings(database_url: str, data_dir: Path, layers_dir: Path = LAYERS) -> Settings:
    return Settings(database_url=database_url, layers_dir=layers_dir, data_dir=data_dir)


@pytest.fixture(scope="session")
def planning_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session's test database with a data folder of its own (for raster COGs)."""
    return _settings(database_url, tmp_path_factory.mktemp("planning_store"))


@pytest.fixture(scope="session")
def load_layers(planning_settings: Settings) -> Callable[[list[Path]], None]:
    """Load layer YAML files (each once per session) with the normal loader."""
    done: set[Path] = set()

    def run(paths: list[Path]) -> None:
        for path in paths:
            if path not in done:
                load(read_definition(path), planning_settings)
                done.add(path)

    return run


@pytest.fixture(scope="session")
def sample_layers(load_layers: Callable[[list[Path]], None], planning_settings: Settings) -> Settings:
    """Load the layers the shipped data-centre criteria read, and the synthetic DEM; return the settings."""
    load_layers([LAYERS / f"{layer_id}.yml" for layer_id in load_criteria().layers()])
    return planning_settings


@pytest.fixture(scope="session")
def handmade_layers(load_layers: Callable[[list[Path]], None], planning_settings: Settings,
                    tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Load the :data:`HANDMADE` territory (layers ``crit_*``); return the settings."""
    folder = tmp_path_factory.mktemp("handmade")
    paths = []
    for layer_id, rows in HANDMADE.items():
        source = folder / f"{layer_id}.gpkg"
        gpd.GeoDataFrame(rows, geometry="geometry", crs=2326).to_file(source, driver="GPKG")
        doc = {"id": layer_id, "title": {"en": f"Handmade test layer {layer_id} (synthetic)"},
               "abstract": {"en": "A tiny made-up layer for site-selection tests."}, "custodian": "HK SDI tests",
               "licence": "test data", "synthetic": True, "source": {"path": str(source)}}
        path = folder / f"{layer_id}.yml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        paths.append(path)
    paths.append(_tilted_dem(folder))
    load_layers(paths)
    return planning_settings


#: Slope of the handmade DEM, a plane rising 1 m every 10 m eastwards: atan(0.1) = 5.71 degrees.
HANDMADE_SLOPE_DEG = math.degrees(math.atan(0.1))


def _tilted_dem(folder: Path) -> Path:
    """Write layer ``crit_dem``: a tilted plane (10 m cells) over the handmade territory, as a GeoTIFF."""
    cell, width, height = 10.0, 230, 130
    x = (np.arange(width) + 0.5) * cell - 100.0  # cell centres relative to X0
    dem = np.tile((50.0 + 0.1 * x).astype("float32"), (height, 1))
    source = folder / "crit_dem.tif"
    transform = rasterio.transform.from_origin(X0 - 100.0, Y0 + 1100.0, cell, cell)
    with rasterio.open(source, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:2326", transform=transform, nodata=np.nan) as dst:
        dst.write(dem, 1)
    doc = {"id": "crit_dem", "title": {"en": "Handmade tilted DEM (synthetic)"},
           "abstract": {"en": "A made-up plane rising eastwards, for slope tests."}, "custodian": "HK SDI tests",
           "licence": "test data", "synthetic": True, "source": {"path": str(source)}}
    path = folder / "crit_dem.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dask_cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """A ``dask scheduler`` and two ``dask worker`` processes (one thread each), all on 127.0.0.1, for a module
    (:func:`sdi.planning.cli_cluster.cli_cluster`: the distributed command-line tools of this venv)."""
    with cli_cluster(tmp_path_factory.mktemp("dask_cli"), workers=2) as cluster:
        yield cluster
