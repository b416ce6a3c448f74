"""Both clients fail fast with the same SDI error classes and one-line messages naming the parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import sdi
from sdi.client.remote import RemoteUnavailableError
from sdi.client.remote import connect as remote_connect
from sdi.errors import ConfigError, CrsError, DatabaseUnavailableError, LayerNotFoundError, SdiError
from tests.client.conftest import RASTER, Pair
from tests.live_server import free_port

pytestmark = pytest.mark.db

BOTH = ["local", "remote"]


def _read(pair: Pair, side: str) -> Callable[..., Any]:
    return pair.local.read if side == "local" else pair.remote.read


@pytest.mark.parametrize("side", BOTH)
@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"layer": "no_such_layer"}, LayerNotFoundError, ["no_such_layer"]),
    ({"layer": "districts_18", "columns": ["nope"]}, ConfigError, ["columns", "nope"]),
    ({"layer": "districts_18", "bbox": (1, 2, 3)}, ConfigError, ["bbox"]),
    ({"layer": "districts_18", "bbox": (5, 5, 1, 1)}, ConfigError, ["bbox", "min <= max"]),
    ({"layer": "districts_18", "crs": "EPSG:99999"}, CrsError, ["crs", "99999"]),
    ({"layer": "districts_18", "limit": 0}, ConfigError, ["limit"]),
    ({"layer": "districts_18", "where": "nope = 1"}, ConfigError, ["unknown property", "nope"]),
    ({"layer": "districts_18", "where": "name_en > 5"}, ConfigError, ["does not match the type"]),
    ({"layer": "districts_18", "where": "name_en ==== 1"}, ConfigError, ["CQL"]),
    ({"layer": RASTER}, ConfigError, [RASTER, "vector"]),
], ids=["unknown-layer", "unknown-column", "short-bbox", "inverted-bbox", "unknown-crs", "zero-limit",
        "unknown-property", "type-mismatch", "bad-cql", "raster"])
def test_read_errors(pair: Pair, side: str, kwargs: dict[str, Any], error: type[SdiError], words: list[str]) -> None:
    with pytest.raises(error) as info:
        _read(pair, side)(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_http_errors_carry_the_server_message(pair: Pair) -> None:
    """A 400 from the API becomes a ConfigError (a ValueError) with the path, status and server's description."""
    with pytest.raises(ValueError, match=r"/collections/districts_18/items: HTTP 400: .*32650"):
        pair.remote.read("districts_18", crs="EPSG:32650")  # the API does not offer UTM 50N


def test_unreachable_api() -> None:
    with pytest.raises(RemoteUnavailableError, match="unreachable") as info:
        remote_connect(f"http://127.0.0.1:{free_port()}", timeout=5)
    assert isinstance(info.value, ConnectionError)


def test_unreachable_database() -> None:
    with pytest.raises(DatabaseUnavailableError):
        sdi.connect("postgresql:///sdi_no_such_database_for_client_tests")


def test_catalogue_get_unknown(pair: Pair) -> None:
    for client in (pair.local, pair.remote):
        with pytest.raises(LayerNotFoundError):
            client.catalogue.get("no_such_layer")
