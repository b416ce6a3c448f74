"""Every GET operation of the served OpenAPI document, every documented query parameter, hostile values: NUL
bytes, extreme and non-finite numbers, huge and empty strings. The server answers each with a 2xx/3xx/4xx or a
503 — never another 5xx — and never with a traceback or a connection URL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sdi.publishing.process import PROCESS_ID
from tests.conftest import loaded_database
from tests.live_server import sdi_server

pytestmark = pytest.mark.db
HOSTILE = ["\x00", "a\x00b", "1e308", "-1e308", "1e400", "9" * 40, "-9" * 20, "nan", "NaN", "inf", "-Infinity", "-1",
           "0", ",,,", "%", "'", "\"", "\\", "(((((", "x" * 5000, "", " ", "1,2,3,4,5,6,7", "2147483648"]
VALUES = {"collectionId": "districts_18", "featureId": "1", "tileMatrixSetId": "HK80Grid", "tileMatrix": "3",
          "tileRow": "2", "tileCol": "1", "processId": PROCESS_ID, "jobId": str(uuid.uuid4()),
          "tileMatrixSetId_alt": "WebMercatorQuad"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with loaded_database(("districts_18", "synthetic_mudflat_elevation"),
                         data_dir=tmp_path_factory.mktemp("fuzz_store")) as settings, \
            sdi_server(settings, tmp_path_factory.mktemp("fuzz_serve")) as base:
        yield base


def _parameters(doc: dict[str, Any], operation: dict[str, Any], path_item: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for param in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
        while "$ref" in param:
            node: Any = doc
            for part in param["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            param = node
        found.append(param)
    return found


def _operations(server: str) -> list[tuple[str, list[str]]]:
    doc = requests.get(f"{server}/openapi", params={"f": "json"}, timeout=60).json()
    out = []
    for path, item in doc["paths"].items():
        get = item.get("get")
        if get is None or "stac" in path:
            continue
        params = _parameters(doc, get, item)
        url = path
        for name in re.findall(r"\{([^}]+)\}", path):
            url = url.replace("{" + name + "}", VALUES.get(name, "1"))
        queries = sorted({p["name"] for p in params if p.get("in") == "query"})
        out.append((url, queries))
    return out


def test_hostile_values_in_every_parameter_are_never_a_server_error(server: str) -> None:
    operations = _operations(server)
    assert len(operations) > 20
    failures: list[str] = []
    calls = 0
    for url, names in operations:
        for name in [*names, "f"]:
            for value in HOSTILE:
                answer = requests.get(f"{server}{url}", params={name: value}, timeout=60)
                calls += 1
                bad = answer.status_code >= 500 and answer.status_code != 503
                if bad or "Traceback" in answer.text or "postgresql://" in answer.text:
                    failures.append(f"{answer.status_code} {url}?{name}={value[:20]!r}: {answer.text[:160]}")
    assert calls > 500
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:25])


@pytest.mark.parametrize("path", ["/collections/districts_18/items/%00", "/collections/%00",
                                  "/collections/districts_18/tiles/HK80Grid/%00/0/0",
                                  "/collections/districts_18/tiles/%00/0/0/0", "/metadata/%00",
                                  "/TileMatrixSets/%00", "/jobs/%00/results", "/processes/%00"])
def test_nul_bytes_in_paths_are_400(server: str, path: str) -> None:
    answer = requests.get(f"{server}{path}", timeout=30)
    assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
