"""A database with the layers the notebooks use, a live `sdi serve` over it, and a Jupyter kernel of this venv."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database
from tests.live_server import sdi_server

#: Real sample layers the notebooks read (01-03) and the data-centre criteria screen against (04).
SAMPLE_LAYERS = ("districts_18", "public_libraries_2013", "industrial_special_waivers", "landslide_incidents",
                 "oil_storage_installations", "country_parks")
#: Synthetic planning layers of the data-centre model (made by data/sample/synthetic/planning.py).
PLANNING_LAYERS = ("synthetic_ozp_zones", "synthetic_lots", "synthetic_substations", "synthetic_mtr_stations",
                   "synthetic_flood_prone_areas", "synthetic_country_park_areas", "synthetic_dem")
KERNEL_NAME = "hk-sdi-test-python3"


@dataclass(frozen=True)
class NotebookStack:
    """What a notebook run needs: the database, the API, the kernel's Jupyter path and the data folder."""

    settings: Settings
    api_url: str
    jupyter_path: Path
    missing_layers: tuple[str, ...]  #: planning layers without a YAML in layers/ (not loaded)


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data folder holding a kernelspec that runs this interpreter (``sys.executable``).

    Put first on ``JUPYTER_PATH`` it wins over any user-installed ``python3`` kernel, so the notebooks run
    in the project's venv whatever the machine has.
    """
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "HK SDI tests (venv)", "language": "python"}), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def notebook_stack(tmp_path_factory: pytest.TempPathFactory, kernel_dir: Path) -> Iterator[NotebookStack]:
    """A fresh database with :data:`SAMPLE_LAYERS` and the available :data:`PLANNING_LAYERS`, served by `sdi serve`."""
    data_dir = tmp_path_factory.mktemp("notebook_store")
    missing = tuple(layer for layer in PLANNING_LAYERS if not (LAYERS / f"{layer}.yml").is_file())
    layers = SAMPLE_LAYERS + tuple(p for p in PLANNING_LAYERS if p not in missing)
    with loaded_database(layers, data_dir=data_dir) as settings, \
            sdi_server(settings, tmp_path_factory.mktemp("notebook_serve")) as base:
        yield NotebookStack(settings, base, kernel_dir, missing)
