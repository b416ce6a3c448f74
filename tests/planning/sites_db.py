"""A temporary database with every layer the shipped data-centre criteria use (test helper, not a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from loaders import load
from sdi.layerdef import read_definition
from sdi.planning.criteria import SlopeScore, load_criteria
from sdi.settings import Settings
from tests.conftest import LAYERS, fresh_database


def criteria_layers() -> list[str]:
    """Ids of the vector layers and rasters of the shipped criteria (each has a ``layers/<id>.yml``)."""
    criteria = load_criteria()
    return criteria.vector_layers() + [s.raster for s in criteria.scores if isinstance(s, SlopeScore)]


@contextmanager
def planning_database(data_dir: Path) -> Iterator[Settings]:
    """A fresh, initialised database with :func:`criteria_layers` loaded from ``layers/``; dropped afterwards."""
    with fresh_database() as url:
        settings = Settings(database_url=url, layers_dir=LAYERS, data_dir=data_dir)
        for layer in criteria_layers():
            path = LAYERS / f"{layer}.yml"
            if not path.is_file():
                pytest.fail(f"{path} is missing: the site-selection tests need every layer of the criteria")
            load(read_definition(path), settings)
        yield settings
