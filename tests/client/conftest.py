"""One database with a few sample layers and a live `sdi serve` over it, shared by the client tests.

The layers cover points (public libraries, Chinese names; special waivers, dates), polygons (18 districts,
Chinese names; building footprints, JSON columns) and lines (traffic hot-zone streets).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sdi.client.local import LocalClient
from sdi.client.remote import RemoteClient
from sdi.client.remote import connect as remote_connect
from sdi.settings import Settings
from tests.conftest import loaded_database
from tests.live_server import sdi_server

CLIENT_LAYERS = ("public_libraries_2013", "districts_18", "industrial_special_waivers", "buildings_with_carparks",
                 "traffic_hotzone_streets", "weather_stations", "synthetic_mudflat_elevation")
RASTER = "synthetic_mudflat_elevation"  #: the one raster (and the one synthetic layer) among them


@dataclass(frozen=True)
class Pair:
    """The same SDI reached both ways."""

    local: LocalClient
    remote: RemoteClient
    settings: Settings


@pytest.fixture(scope="session")
def client_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A fresh database with :data:`CLIENT_LAYERS` loaded."""
    with loaded_database(CLIENT_LAYERS, data_dir=tmp_path_factory.mktemp("client_store")) as settings:
        yield settings


@pytest.fixture(scope="session")
def client_api(client_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi publish` + `sdi serve` over :func:`client_store`; yields the base URL."""
    with sdi_server(client_store, tmp_path_factory.mktemp("client_serve")) as base:
        yield base


@pytest.fixture(scope="session")
def pair(client_store: Settings, client_api: str) -> Pair:
    """A local and a remote client of the same data."""
    return Pair(LocalClient(client_store), remote_connect(client_api), client_store)
