"""Every GET operation of the served OpenAPI document, every documented query parameter and every path parameter,
and every leaf of a process execution body, with hostile values: NUL bytes, Unicode and other non-decimal digits,
extreme and non-finite numbers, huge and empty strings. The server answers each with a 2xx/3xx/4xx — never a 5xx
— and never with a traceback or a connection URL.

The server runs with enough heavy-request slots for the few client threads, so no request here ever has to wait
for another: the only 503 accepted is the one saying the heavy slots are all taken (see :func:`_failure`). A 503
for "the database did not answer" or "unavailable" would hide a bug and fails the test.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from sdi.publishing.process import PROCESS_ID
from tests.conftest import loaded_database
from tests.jsondoc import leaves
from tests.live_server import sdi_server
from tests.planning.sites_db import criteria_layers

pytestmark = pytest.mark.db
#: Non-decimal "digits" str.isdigit() or int() accept (superscript, Arabic-Indic, fullwidth, mathematical bold),
#: and integer spellings that are not a plain run of ASCII digits.
NOT_DECIMAL = ["²", "١٢", "５", "①", "0x10", "1_000", "+1", " 1", "1e3", "\u00a01"]
HOSTILE = ["\x00", "a\x00b", "1e308", "-1e308", "1e400", "9" * 40, "-9" * 20, "nan", "NaN", "inf", "-Infinity", "-1",
           "0", ",,,", "%", "'", "\"", "\\", "(((((", "x" * 5000, "", " ", "1,2,3,4,5,6,7", "2147483648",
           *NOT_DECIMAL]
#: The collections whose routes are fuzzed: small ones (every other layer's routes are the same code).
FUZZED = ("synthetic_substations", "synthetic_mudflat_elevation", "catalogue")
VALUES = {"collectionId": "synthetic_substations", "featureId": "1", "tileMatrixSetId": "HK80Grid", "tileMatrix": "3",
          "tileRow": "2", "tileCol": "1", "processId": PROCESS_ID, "jobId": str(uuid.uuid4()),
          "tileMatrixSetId_alt": "WebMercatorQuad"}
#: The only 503 a request may get here: every heavy slot taken (with these settings: never, in practice).
BUSY = "the server is busy with other heavy requests"
THREADS = 4


@dataclass(frozen=True)
class Served:
    url: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The site-selection layers and a small raster, served with a heavy slot for every client thread."""
    folder = tmp_path_factory.mktemp("fuzz_serve")
    layers = (*criteria_layers(), "synthetic_mudflat_elevation")
    with loaded_database(layers, data_dir=tmp_path_factory.mktemp("fuzz_store")) as settings, \
            sdi_server(settings, folder, extra_env={"SDI_HEAVY_REQUESTS": str(THREADS)}) as base:
        yield Served(base, folder / "server.log")


def _failure(answer: requests.Response, what: str) -> str | None:
    """Why ``answer`` is a failure (``None`` when it is a fine answer to a hostile request)."""
    busy = answer.status_code == 503 and answer.headers.get("Retry-After") and BUSY in answer.text
    if (answer.status_code >= 500 and not busy) or "Traceback" in answer.text or "postgresql://" in answer.text:
        return f"{answer.status_code} {what}: {answer.text[:160]}"
    return None


def _fan_out(calls: Iterable[tuple[str, Callable[[requests.Session], requests.Response]]]) -> tuple[int, list[str]]:
    """Run each ``(label, call)`` on a few threads (one session each); the number run and the failures."""
    local: dict[int, requests.Session] = {}

    def one(item: tuple[str, Callable[[requests.Session], requests.Response]]) -> str | None:
        session = local.setdefault(threading.get_ident(), requests.Session())
        try:
            return _failure(item[1](session), item[0])
        except requests.ConnectionError as exc:
            return f"connection error {item[0]}: {exc}"

    items = list(calls)
    with ThreadPoolExecutor(THREADS) as pool:
        found = [f for f in pool.map(one, items) if f is not None]
    for session in local.values():
        session.close()
    return len(items), found


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


def _operations(server: str) -> list[tuple[str, dict[str, str], list[str]]]:
    """(path template, valid value of each path parameter, query parameter names) of every GET operation.

    A collection's own routes (``/collections/synthetic_lots/items``) are written with a ``{collectionId}``
    parameter, so that the collection id is fuzzed like any path parameter.
    """
    doc = requests.get(f"{server}/openapi", params={"f": "json"}, timeout=60).json()
    out = []
    for path, item in doc["paths"].items():
        get = item.get("get")
        if get is None or "stac" in path:
            continue
        template, values = path, {}
        match = re.match(r"/collections/([^/{}]+)", path)
        if match:
            if match.group(1) not in FUZZED:
                continue
            template = "/collections/{collectionId}" + path[match.end():]
            values["collectionId"] = match.group(1)
        for name in re.findall(r"\{([^}]+)\}", path):
            values[name] = VALUES.get(name, "1")
        params = _parameters(doc, get, item)
        out.append((template, values, sorted({p["name"] for p in params if p.get("in") == "query"})))
    return out


def _url(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def test_hostile_values_in_every_parameter_are_never_a_server_error(server: Served) -> None:
    operations = _operations(server.url)
    assert len(operations) > 20

    def calls() -> Iterator[tuple[str, Callable[[requests.Session], requests.Response]]]:
        for template, values, names in operations:
            url = f"{server.url}{_url(template, values)}"
            for name in [*names, "f"]:
                for value in HOSTILE:
                    yield (f"{url}?{name}={value[:20]!r}",
                           lambda s, u=url, p={name: value}: s.get(u, params=p, timeout=60))

    count, failures = _fan_out(calls())
    assert count > 1000
    assert not failures, f"{len(failures)} failures of {count}:\n" + "\n".join(failures[:25])


def test_hostile_values_in_every_path_parameter_are_never_a_server_error(server: Served) -> None:
    operations = [op for op in _operations(server.url) if op[1]]
    named = {name for _, values, _ in operations for name in values}
    assert {"collectionId", "featureId", "tileMatrixSetId", "tileMatrix", "tileRow", "tileCol", "jobId"} <= named

    def calls() -> Iterator[tuple[str, Callable[[requests.Session], requests.Response]]]:
        for template, values, _ in operations:
            for name in values:
                for value in HOSTILE:
                    url = f"{server.url}{_url(template, {**values, name: value})}"
                    yield f"{template} {name}={value[:20]!r}", lambda s, u=url: s.get(u, timeout=60)

    count, failures = _fan_out(calls())
    assert count > 500
    assert not failures, f"{len(failures)} failures of {count}:\n" + "\n".join(failures[:25])


LAYER = "/collections/synthetic_substations"
INTEGER_PARAMETERS = [
    (f"{LAYER}/items?limit={{}}", "limit"), (f"{LAYER}/items?offset={{}}", "offset"),
    ("/collections/catalogue/items?limit={}", "limit"), ("/collections/catalogue/items?offset={}", "offset"),
    ("/jobs?limit={}", "limit"), ("/jobs?offset={}", "offset"), (f"{LAYER}/history?limit={{}}", "limit"),
    (f"{LAYER}/changes?load={{}}", "load"), (f"{LAYER}/tiles/WebMercatorQuad/{{}}/0/0", "tileMatrix"),
    (f"{LAYER}/tiles/WebMercatorQuad/0/{{}}/0", "tileRow"), (f"{LAYER}/tiles/WebMercatorQuad/0/0/{{}}", "tileCol")]


@pytest.mark.parametrize(("template", "name"), INTEGER_PARAMETERS, ids=[
    f"{t.removeprefix(LAYER).removeprefix('/collections/').strip('/').split('?')[0].split('/')[0]}-{n}"
    for t, n in INTEGER_PARAMETERS])
def test_integers_are_ascii_digits_only(server: Served, template: str, name: str) -> None:
    """'²' passed str.isdigit() and then broke int() (a 500); '١٢' and '５' were read as 12 and 5."""
    assert requests.get(f"{server.url}{template.format('1')}", timeout=60).status_code in (200, 204, 404)
    for value in ("²", "١٢", "５", "1_000", "0x10", "1e3"):
        answer = requests.get(f"{server.url}{template.format(quote(value))}", timeout=60)
        assert answer.status_code == 400, (value, answer.status_code, answer.text[:200])
        description = answer.json()["description"]
        assert description.startswith(f"{name}:") and "\n" not in description, description


# --- the process execution body ------------------------------------------------------------------------------

CRITERIA: dict[str, Any] = {
    "id": "fuzz", "title": {"en": "Fuzz", "zh": "模糊"},
    "candidates": {"layer": "synthetic_lots", "label": "lot_number"},
    "districts": {"layer": "districts_18", "name": "name_en", "name_zh": "name_zh"},
    "constraints": [
        {"id": "zoning", "any_of": [
            {"type": "in_zone", "layer": "synthetic_ozp_zones", "where": {"column": "zone_code", "in": ["I", "B"]},
             "name": "zone", "label": "zone_id"},
            {"type": "contains", "layer": "industrial_special_waivers",
             "where": {"column": "user_en", "contains": "Information"}, "name": "waiver", "label": "location_en"}]},
        {"id": "flood", "type": "exclude_within", "layer": "synthetic_flood_prone_areas", "distance_m": 0,
         "name": "flood"},
        {"id": "min_area", "type": "min_area", "min_m2": 100}],
    "scores": [
        {"id": "substation", "type": "distance_to", "layer": "synthetic_substations",
         "where": {"column": "voltage_kv", "min": 132, "max": 400}, "weight": 3, "full_at_m": 300,
         "zero_at_m": 3000, "name": "substation", "label": "name"},
        {"id": "area", "type": "area", "weight": 2, "zero_at_m2": 100, "full_at_m2": 20000}]}
INPUTS: dict[str, Any] = {"criteria": CRITERIA, "district": "kwun tong", "limit": 1, "engine": "postgis",
                          "weights": {"substation": 1, "area": 1}, "min_area_m2": 100}
BODY_STRINGS = ["a\x00", "²", "x" * 300, "'; select pg_sleep(10); --", ""]
#: Numbers, and JSON number tokens json.dumps cannot write (1e400 parses as infinity; NaN and -Infinity are
#: extensions Python's parser accepts).
BODY_NUMBERS: list[Any] = [1e308, -1e308, 2**63, -(2**63) - 1, "1e400", "NaN", "-Infinity", "9" * 400]
RAW = "@@raw@@"


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


def _body(inputs: Any) -> str:
    """The execution body; a ``RAW``-marked string becomes the bare JSON token after the mark."""
    return re.sub(f'"{RAW}([^"]*)"', r"\1", json.dumps({"inputs": inputs}))


def _execute(session: requests.Session, url: str, body: str) -> requests.Response:
    return session.post(f"{url}/processes/{PROCESS_ID}/execution", data=body.encode("utf-8"), timeout=120,
                        headers={"Content-Type": "application/json"})


def test_hostile_leaves_of_an_execution_body_are_never_a_server_error(server: Served) -> None:
    """Every string leaf of a valid execution (criteria included) gets NUL bytes and other hostile text, every
    number extreme or non-finite values, one at a time; every answer is a 200 or a one-line 400."""
    valid = requests.post(f"{server.url}/processes/{PROCESS_ID}/execution", json={"inputs": INPUTS}, timeout=120)
    assert valid.status_code == 200, valid.text[:300]
    found = list(leaves(INPUTS))
    strings = [path for path, value in found if isinstance(value, str)]
    numbers = [path for path, value in found if isinstance(value, int | float)]
    assert len(strings) > 25 and len(numbers) > 10

    def calls() -> Iterator[tuple[str, Callable[[requests.Session], requests.Response]]]:
        for paths, values in ((strings, BODY_STRINGS), (numbers, BODY_NUMBERS)):
            for path in paths:
                for value in values:
                    token = f"{RAW}{value}" if isinstance(value, str) and values is BODY_NUMBERS else value
                    body = _body(_replaced(INPUTS, path, token))
                    yield (f"{'.'.join(map(str, path))}={value!r:.20}",
                           lambda s, b=body: _one_line_or_ok(_execute(s, server.url, b)))

    count, failures = _fan_out(calls())
    assert count > 200
    assert not failures, f"{len(failures)} failures of {count}:\n" + "\n".join(failures[:25])
    log = server.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _one_line_or_ok(answer: requests.Response) -> requests.Response:
    """``answer``; a 400 whose description is not one line is made to look like a failure (status 599)."""
    if answer.status_code == 400:
        try:
            one_line = "\n" not in answer.json()["description"]
        except (ValueError, KeyError, TypeError):
            one_line = False
        if not one_line:
            answer.status_code = 599
    return answer


NUL_PLACES = [
    (("criteria", "constraints", 0, "any_of", 0, "where", "in", 0),
     "inputs.criteria.constraints[0].any_of[0].where.in[0]"),
    (("criteria", "constraints", 0, "any_of", 1, "where", "contains"),
     "inputs.criteria.constraints[0].any_of[1].where.contains"),
    (("criteria", "title", "zh"), "inputs.criteria.title.zh"),
    (("district",), "inputs.district"),
    (("criteria", "scores", 0, "label"), "inputs.criteria.scores[0].label")]


@pytest.mark.parametrize(("path", "where"), NUL_PLACES, ids=[w for _, w in NUL_PLACES])
def test_a_nul_anywhere_in_the_body_is_a_400_naming_where(server: Served, path: tuple[Any, ...], where: str) -> None:
    """A NUL in a ``where.in`` value reached PostgreSQL (a 500); every string is checked before any work."""
    for prefer in ({}, {"Prefer": "respond-async"}):
        answer = requests.post(f"{server.url}/processes/{PROCESS_ID}/execution", timeout=60, headers=prefer,
                               data=_body(_replaced(INPUTS, path, "a\x00b")).encode())
        assert answer.status_code == 400, answer.text[:300]
        assert answer.json()["description"] == f"body: {where} contains a NUL character"
    key = requests.post(f"{server.url}/processes/{PROCESS_ID}/execution", timeout=60,
                        data=json.dumps({"inputs": {**INPUTS, "weights": {"sub\x00": 1}}}).encode())
    assert key.status_code == 400
    assert key.json()["description"] == "body: inputs.weights has a key with a NUL character"


@pytest.mark.parametrize(("token", "problem"), [
    ("NaN", "is not a finite number"), ("Infinity", "is not a finite number"),
    ("-Infinity", "is not a finite number"), ("1e400", "is not a finite number"),
    ("1" + "0" * 400, "is out of range"), (str(-(2**63)), "is out of range")])
@pytest.mark.parametrize(("path", "where"), [(("weights", "area"), "inputs.weights.area"),
                                             (("min_area_m2",), "inputs.min_area_m2")])
def test_a_number_that_is_not_finite_or_too_big_is_a_400_naming_where(server: Served, token: str, problem: str,
                                                                      path: tuple[Any, ...], where: str) -> None:
    """``NaN``, ``Infinity`` and ``1e400`` parse as floats: they were taken as a weight (scores of null) or an
    area; a 400-digit whole number overflowed ``math.isfinite`` (a 500). A number in the body must be finite and
    fit in 64 bits."""
    answer = requests.post(f"{server.url}/processes/{PROCESS_ID}/execution", timeout=60,
                           data=_body(_replaced(INPUTS, path, RAW + token)).encode())
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["description"] == f"body: {where} {problem}"


@pytest.mark.parametrize("path", [f"{LAYER}/items/%00", "/collections/%00", f"{LAYER}/tiles/HK80Grid/%00/0/0",
                                  f"{LAYER}/tiles/%00/0/0/0", "/metadata/%00",
                                  "/TileMatrixSets/%00", "/jobs/%00/results", "/processes/%00"])
def test_nul_bytes_in_paths_are_400(server: Served, path: str) -> None:
    answer = requests.get(f"{server.url}{path}", timeout=30)
    assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
