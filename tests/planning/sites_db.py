"""A temporary database with every layer the shipped data-centre criteria use (test helper, not a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdi.planning.criteria import load_criteria
from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database


def criteria_layers() -> list[str]:
    """Ids of the vector layers and rasters of the shipped criteria (each has a ``layers/<id>.yml``)."""
    return load_criteria().layers()


@contextmanager
def planning_database(data_dir: Path) -> Iterator[Settings]:
    """A fresh, initialised database with :func:`criteria_layers` loaded from ``layers/``; dropped afterwards."""
    layers = criteria_layers()
    for path in (LAYERS / f"{layer}.yml" for layer in layers):
        if not path.is_file():
            pytest.fail(f"{path} is missing: the site-selection tests need every layer of the criteria")
    with loaded_database(layers, data_dir=data_dir) as settings:
        yield settings
