"""The OpenAPI document `sdi serve` serves (sdi/web/openapi.py): self-contained, valid, true to what sdi does.

- Without the database: the components sdi ships (sdi/web/openapi_components.yml) are valid OpenAPI 3.0 and
  refer only to each other; every remote reference of pygeoapi 0.21's generator has a definition, whatever the
  host; a reference sdi has no definition for raises with ``strict`` and is a marked, permissive stub (and a
  warning) when serving; the items parameters are those of sdi.query.params.
- On a live `sdi serve` with two vector layers, the synthetic raster and the catalogue (so that coverage,
  records and process paths appear): no ``$ref`` leaves the document, it validates against the OpenAPI 3.0
  schema pygeoapi ships and every reference resolves; pygeoapi's own document of the same catalogue (``sdi
  publish``) is made self-contained strictly, its components kept; schemathesis loads every operation without
  help; the parameters, formats and tile matrix sets documented are those the routes accept; and no request
  schemathesis generates for any operation, nor the same with a NUL byte, an extreme number, a Unicode digit,
  an empty or a 10 kB string in any one parameter or execute-body value, is answered with a 5xx.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema
import pygeoapi
import pytest
import requests
import yaml

from sdi.publishing.config import publish
from sdi.publishing.process import PROCESS_ID
from sdi.query.params import ITEM_PARAMETERS, ITEMS_PARAMETERS
from sdi.query.tms import grids
from sdi.web.openapi import ITEMS, UNRESOLVED, UnresolvedReferenceError, local_ref, self_contained, shipped
from tests.jsondoc import leaves
from tests.live_server import Live, live_layers

VECTORS = ("districts_18", "landslide_incidents")
RASTER = "synthetic_mudflat_elevation"
OAS_SCHEMA = Path(pygeoapi.__file__).parent / "schemas" / "openapi" / "openapi-3.0.x.json"
FEATURES = "https://schemas.opengis.net/ogcapi/features/part1/1.0/openapi/ogcapi-features-1.yaml#/components/"
TILES = "https://schemas.opengis.net/ogcapi/tiles/part1/1.0/openapi/ogcapi-tiles-1.yaml#/components/"
PROCESSES = "https://schemas.opengis.net/ogcapi/processes/part1/1.0/openapi/"
RECORDS = "https://raw.githubusercontent.com/opengeospatial/ogcapi-records/master/core/openapi/parameters/"
#: Every remote reference of pygeoapi 0.21's document of sdi's catalogue → sdi's definition (kind, name).
PYGEOAPI_REFS = {
    **{f"{FEATURES}parameters/{n}": ("parameters", f"OGCFeatures.{n}") for n in ("datetime", "featureId")},
    **{f"{FEATURES}responses/{n}": ("responses", f"OGCFeatures.{n}")
       for n in ("LandingPage", "Collection", "Feature", "Features", "InvalidParameter", "NotFound", "ServerError")},
    **{f"{TILES}parameters/{n}": ("parameters", f"OGCTiles.{n}")
       for n in ("tileMatrixSetId", "tileMatrix", "tileRow", "tileCol")},
    f"{TILES}schemas/link": ("schemas", "OGCTiles.link"),
    **{f"{PROCESSES}responses/{n}.yaml": ("responses", f"OGCProcesses.{n}")
       for n in ("ExecuteAsync", "NotFound", "ProcessList", "ServerError")},
    **{f"{PROCESSES}schemas/{n}.yaml": ("schemas", f"OGCProcesses.{n}") for n in ("exception", "execute")},
    **{f"{RECORDS}{n}.yaml": ("parameters", f"OGCRecords.{n}") for n in ("q", "sortby")},
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` value in ``node``."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """What the local ``ref`` (``#/…``, a JSON pointer) names in ``doc``; KeyError if nothing."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def parameters(doc: dict[str, Any], operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The operation's parameters by name, references resolved."""
    found = [resolve(doc, p["$ref"]) if "$ref" in p else p for p in operation.get("parameters", [])]
    return {p["name"]: p for p in found}


def assert_valid_openapi(doc: dict[str, Any]) -> None:
    schema = json.loads(OAS_SCHEMA.read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in jsonschema.Draft4Validator(schema).iter_errors(doc)]
    assert not errors, "\n".join(errors[:20])
    unresolved = []
    for ref in set(refs(doc)):
        try:
            resolve(doc, ref)
        except (KeyError, AssertionError):
            unresolved.append(ref)
    assert not unresolved, unresolved


def minimal(paths: dict[str, Any], components: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"openapi": "3.0.2", "info": {"title": "t", "version": "1"}, "paths": paths,
            "components": components or {}}


# --- without the database ---------------------------------------------------------------------------------------


def test_shipped_components_are_valid_openapi_and_refer_only_to_each_other() -> None:
    components = shipped()[1]
    assert {"parameters", "responses", "schemas"} == set(components)
    assert_valid_openapi(minimal({}, copy.deepcopy(components)))
    assert all(ref.startswith("#/components/") for ref in refs(components))
    assert all(name.startswith(("OGCFeatures.", "OGCTiles.", "OGCProcesses.", "OGCRecords.", "SDI."))
               for kind in components.values() for name in kind)


@pytest.mark.parametrize("host", [None, "http://mirror.example.gov.hk/ogc", "/srv/ogc-schemas"],
                         ids=["as-generated", "mirror", "local-folder"])
def test_every_remote_reference_of_pygeoapi_has_a_definition(host: str | None) -> None:
    """Whatever the host or folder (pygeoapi's ``ogc_schemas_location`` may name a mirror)."""
    components = shipped()[1]
    for ref, (kind, name) in PYGEOAPI_REFS.items():
        moved = ref if host is None else ref.replace("https://schemas.opengis.net", host).replace(
            "https://raw.githubusercontent.com", host)
        assert local_ref(moved) == (kind, name), moved
        assert name in components[kind], name
    assert local_ref("https://example.org/other.yaml#/components/schemas/link") is None
    # a name only: that no such definition is shipped is self_contained's error (see below)
    assert local_ref(FEATURES + "schemas/nothing") == ("schemas", "OGCFeatures.nothing")


def test_grids_and_items_parameters_come_from_the_server_code() -> None:
    parameters_ = shipped()[1]["parameters"]
    assert parameters_["OGCTiles.tileMatrixSetId"]["schema"]["enum"] == list(grids()) == ["WebMercatorQuad",
                                                                                           "HK80Grid"]
    assert parameters_["OGCTiles.tileMatrix"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 20}
    assert all(parameters_[f"OGCTiles.{n}"]["schema"]["minimum"] == 0 for n in ("tileRow", "tileCol"))
    assert set(ITEMS) | {"limit", "properties"} == ITEMS_PARAMETERS
    sortby = parameters_["OGCRecords.sortby"]
    assert (sortby["style"], sortby["explode"], sortby["schema"]["type"]) == ("form", False, "array")


def test_an_unknown_remote_reference_raises_when_strict_and_is_a_marked_stub_when_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    unknown = "https://schemas.opengis.net/ogcapi/edr/1.0/openapi/schemas/edr.yaml"
    other = "https://example.org/api.yaml#/components/parameters/thing"
    doc = minimal({"/x": {"get": {"parameters": [{"$ref": other}], "responses": {
        "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": unknown}}}},
        "404": {"$ref": FEATURES + "responses/NotFound"}}}}})
    before = copy.deepcopy(doc)
    with pytest.raises(UnresolvedReferenceError, match=re.escape(other)):
        self_contained(doc, strict=True)
    with caplog.at_level(logging.WARNING, logger="sdi.web.openapi"):
        served = self_contained(doc)
    assert doc == before, "the input is not changed"
    assert unknown in caplog.text and other in caplog.text
    assert_valid_openapi(served)
    stubs = {kind: {n: d[UNRESOLVED] for n, d in defs.items() if UNRESOLVED in d}
             for kind, defs in served["components"].items()}
    assert sorted(ref for defs in stubs.values() for ref in defs.values()) == sorted([other, unknown])
    assert stubs["parameters"] and stubs["schemas"]  # each where it stands: a parameter, a schema
    assert served["components"]["responses"]["OGCFeatures.NotFound"] == shipped()[1]["responses"][
        "OGCFeatures.NotFound"]


# --- on a live server -------------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`sdi serve` over two vector layers and the synthetic raster (with the catalogue and the process).

    A heavy request waits up to 60 s for its slot (not 1 s) and a worker runs up to 8 jobs: the fuzz test sends
    a few requests at once, and their queueing is not the overload a 503 answers.
    """
    with live_layers(tmp_path_factory.mktemp("openapi"), (*VECTORS, RASTER),
                     extra_env={"SDI_HEAVY_WAIT_S": "60", "SDI_ASYNC_JOBS": "8"}) as served:
        yield served


@pytest.fixture(scope="module")
def document(live: Live) -> dict[str, Any]:
    response = requests.get(f"{live.url}/openapi?f=json", timeout=60)
    assert response.status_code == 200, response.text[:500]
    return dict(response.json())


@pytest.mark.db
def test_no_reference_leaves_the_document(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for path in ("/collections/catalogue/items", f"/collections/{RASTER}/coverage", "/processes",
                 "/TileMatrixSets/{tileMatrixSetId}", f"/collections/{VECTORS[0]}/tiles/{{tileMatrixSetId}}"):
        assert path in paths, path
    assert [ref for ref in refs(document) if not ref.startswith("#/")] == []
    assert UNRESOLVED not in json.dumps(document), "a reference sdi has no definition for"


@pytest.mark.db
def test_document_is_valid_openapi_30_and_every_reference_resolves(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0")
    assert_valid_openapi(document)


@pytest.mark.db
def test_pygeoapis_own_document_is_made_self_contained_strictly(live: Live, tmp_path: Path) -> None:
    """The document `sdi publish` writes (pygeoapi's generator as is) for the same catalogue: every remote
    reference has a definition, and pygeoapi's components are kept and not clashed with."""
    raw = yaml.safe_load(publish(live.settings, output_dir=tmp_path).openapi.read_text(encoding="utf-8"))
    assert {ref for ref in refs(raw) if not ref.startswith("#")} == set(PYGEOAPI_REFS)
    served = self_contained(raw, strict=True)
    assert_valid_openapi(served)
    shipped_names = {(kind, name) for kind, defs in shipped()[1].items() for name in defs}
    for kind, defs in raw["components"].items():
        assert not shipped_names & {(kind, name) for name in defs}, "a shipped name clashes with pygeoapi's"
        for name, definition in defs.items():
            assert served["components"][kind][name] == localised(definition), (kind, name)


def localised(node: Any) -> Any:
    """``node`` with each remote reference replaced by the local one sdi gives it."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            kind, name = local_ref(ref) or ("", "")
            return {"$ref": f"#/components/{kind}/{name}"}
        return {key: localised(value) for key, value in node.items()}
    return [localised(value) for value in node] if isinstance(node, list) else node


@pytest.mark.db
def test_schemathesis_loads_every_operation(document: dict[str, Any]) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    count = sum(1 for item in document["paths"].values() for method in item if method in METHODS)
    assert len(operations) == count > 30


@pytest.mark.db
def test_items_document_exactly_the_parameters_the_server_accepts(live: Live, document: dict[str, Any]) -> None:
    assert not [p for p, item in document["paths"].items() if "options" in item], "OPTIONS is a 405 (but CORS)"
    for layer in VECTORS:
        queryables = requests.get(f"{live.url}/collections/{layer}/queryables?f=json", timeout=30).json()
        properties = {name for name, schema in queryables["properties"].items()
                      if schema.get("x-ogc-role") != "primary-geometry"}
        items = parameters(document, document["paths"][f"/collections/{layer}/items"]["get"])
        assert set(items) == ITEMS_PARAMETERS | properties, set(items) ^ (ITEMS_PARAMETERS | properties)
        assert items["f"]["schema"]["enum"] == ["json", "html", "csv"]
        for f in items["f"]["schema"]["enum"]:
            answer = requests.get(f"{live.url}/collections/{layer}/items", params={"f": f, "limit": 2}, timeout=30)
            assert answer.status_code == 200, (layer, f, answer.text[:200])
        assert items["filter-lang"]["schema"]["enum"] == ["cql2-text", "cql2-json", "ecql"]
        assert items["resulttype"]["schema"]["enum"] == ["results", "hits"]
        item = parameters(document, document["paths"][f"/collections/{layer}/items/{{featureId}}"]["get"])
        assert set(item) == ITEM_PARAMETERS | {"featureId"}
        for which in ("queryables", "schema"):
            operation = document["paths"][f"/collections/{layer}/{which}"]["get"]
            assert set(parameters(document, operation)) == {"f", "lang"}  # `profile` is ignored
            assert "application/schema+json" in resolve(document, operation["responses"]["200"]["$ref"])["content"]
    url = f"{live.url}/collections/{VECTORS[0]}/items"
    filters = {"cql2-text": "objectid > 2", "ecql": "objectid > 2",
               "cql2-json": json.dumps({"op": ">", "args": [{"property": "objectid"}, 2]})}
    for lang, text in filters.items():
        answer = requests.get(url, params={"filter": text, "filter-lang": lang, "f": "json"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["numberReturned"] == 16, (lang, answer.text[:300])
    hits = requests.get(url, params={"resulttype": "hits", "q": "wan", "f": "json"}, timeout=30).json()
    assert hits["numberReturned"] == 0 and hits["numberMatched"] > 0
    assert requests.get(url, params={"f": "jsonld"}, timeout=30).status_code == 400


@pytest.mark.db
def test_tiles_and_formats_are_those_the_routes_answer(live: Live, document: dict[str, Any]) -> None:
    paths, layer = document["paths"], VECTORS[0]
    tile_path = f"/collections/{layer}/tiles/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
    tile = parameters(document, paths[tile_path]["get"])
    assert tile["tileMatrixSetId"]["schema"]["enum"] == list(grids())
    assert all(tile[n]["schema"]["type"] == "integer" and tile[n]["schema"]["minimum"] == 0
               for n in ("tileMatrix", "tileRow", "tileCol"))
    for f in tile["f"]["schema"]["enum"]:
        answer = requests.get(f"{live.url}/collections/{layer}/tiles/HK80Grid/0/0/0?f={f}", timeout=30)
        assert answer.status_code in (200, 204), (f, answer.status_code)
    tileset = parameters(document, paths[f"/collections/{layer}/tiles/{{tileMatrixSetId}}"]["get"])
    assert tileset["f"]["schema"]["enum"] == ["json", "tilejson", "html"]
    for tms in tileset["tileMatrixSetId"]["schema"]["enum"]:
        for f in tileset["f"]["schema"]["enum"]:
            answer = requests.get(f"{live.url}/collections/{layer}/tiles/{tms}?f={f}", timeout=30)
            assert answer.status_code == 200, (tms, f, answer.status_code)
        assert requests.get(f"{live.url}/TileMatrixSets/{tms}?f=json", timeout=30).json()["id"] == tms
    tms_ids = parameters(document, paths["/TileMatrixSets/{tileMatrixSetId}"]["get"])["tileMatrixSetId"]
    assert tms_ids["schema"]["enum"] == ["WebMercatorQuad", "HK80Grid"]
    listed = requests.get(f"{live.url}/TileMatrixSets?f=json", timeout=30).json()["tileMatrixSets"]
    assert [t["id"] for t in listed] == tms_ids["schema"]["enum"]
    for path in ("/conformance", "/collections", f"/collections/{layer}", f"/collections/{layer}/tiles",
                 "/TileMatrixSets", "/openapi"):
        for f in parameters(document, paths[path]["get"])["f"]["schema"]["enum"]:
            assert requests.get(f"{live.url}{path}?f={f}", timeout=30).status_code == 200, (path, f)
    responses = {path: paths[path]["get"]["responses"]["200"]["$ref"].rsplit("/", 1)[1]
                 for path in ("/conformance", "/collections", f"/collections/{RASTER}/coverage")}
    assert responses == {"/conformance": "OGCFeatures.ConformanceDeclaration",
                         "/collections": "OGCFeatures.Collections",
                         f"/collections/{RASTER}/coverage": "SDI.Coverage"}


@pytest.mark.db
def test_downloads_history_and_changes_are_documented_as_served(live: Live, document: dict[str, Any]) -> None:
    paths = document["paths"]
    for layer in (*VECTORS, RASTER):
        history = parameters(document, paths[f"/collections/{layer}/history"]["get"])
        assert set(history) == {"f", "lang", "limit", "offset"}
        for f in history["f"]["schema"]["enum"]:
            answer = requests.get(f"{live.url}/collections/{layer}/history", params={"f": f}, timeout=30)
            assert answer.status_code == 200, (layer, f, answer.status_code)
        too_many = history["limit"]["schema"]["maximum"] + 1
        assert requests.get(f"{live.url}/collections/{layer}/history", params={"limit": too_many},
                            timeout=30).status_code in (200, 400)  # capped, never unbounded
        changes = parameters(document, paths[f"/collections/{layer}/changes"]["get"])
        assert set(changes) == {"f", "lang", "load", "limit", "offset"}
        answer = requests.get(f"{live.url}/collections/{layer}/changes?f=json", timeout=30)
        assert answer.status_code == 200 and "feature_ids" in answer.json(), (layer, answer.text[:200])
    assert f"/collections/{RASTER}/download/{{format}}" not in paths  # rasters have no vector downloads
    operation = paths[f"/collections/{VECTORS[0]}/download/{{format}}"]["get"]
    formats = parameters(document, operation)["format"]["schema"]["enum"]
    content = resolve(document, operation["responses"]["200"]["$ref"])["content"]
    for fmt in formats:
        answer = requests.head(f"{live.url}/collections/{VECTORS[0]}/download/{fmt}", timeout=120)
        assert answer.status_code == 200, (fmt, answer.status_code)
        assert answer.headers["Content-Type"] in content, (fmt, answer.headers["Content-Type"])
    assert requests.head(f"{live.url}/collections/{VECTORS[0]}/download/kml", timeout=30).status_code == 404


# --- hostile values in every parameter of every operation (schemathesis) -------------------------------------------

#: Values each parameter and body leaf is set to in turn: (label, text in a path or query, JSON token in a body).
HOSTILE: tuple[tuple[str, str, str], ...] = (
    *((label, text, json.dumps(text)) for label, text in (
        ("NUL", "\x00"), ("a-NUL-b", "a\x00b"), ("superscript-2", "²"), ("arabic-indic-12", "١٢"),
        ("fullwidth-5", "５"), ("empty", ""), ("10kB", "x" * 10_000))),
    *((text if len(text) < 12 else f"{text[:4]}…({len(text)})", text, text) for text in (
        "1e308", "-1e308", "1e400", "9" * 40, "9" * 400, str(2**63), str(-(2**63) - 1), "NaN", "Infinity",
        "-0")),
)
#: Per-layer paths are fuzzed for one vector layer and the raster (the other vector layer's are the same code).
FUZZED_LAYERS = (VECTORS[0], RASTER)
#: A criteria document on the layers served here, so that an execution runs (small: one district).
EXECUTE_BODY: dict[str, Any] = {"inputs": {
    "criteria": {"id": "t", "title": {"en": "T"}, "candidates": {"layer": VECTORS[0], "label": "name_en"},
                 "districts": {"layer": VECTORS[0], "name": "name_en", "name_zh": "name_zh"},
                 "constraints": [{"id": "big", "type": "min_area", "min_m2": 1000}],
                 "scores": [{"id": "area", "type": "area", "weight": 1, "full_at_m2": 1e8, "zero_at_m2": 1000},
                            {"id": "slide", "type": "distance_to", "layer": VECTORS[1], "weight": 1,
                             "full_at_m": 10, "zero_at_m": 1000}]},
    "district": "Kwun Tong", "limit": 2, "weights": {"area": 2}}}
#: Array parameters whose elements are also set one at a time, from this value when the base has none.
ELEMENTS = {"bbox": "114.1,22.25,114.3,22.4"}
CONCURRENCY = 3


@dataclass(frozen=True)
class Call:
    """One request: the operation's label, what was made hostile (or where the case comes from: ``positive``,
    ``negative``, ``minimal``) and the request itself (only that counts when requests are compared)."""

    label: str = field(compare=False)
    what: str = field(compare=False)
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    def url(self, base: str) -> str:
        return base + self.path + ("?" + urlencode(self.query, quote_via=quote) if self.query else "")


def wire(value: Any) -> str:
    """A generated query value as sent (schemathesis has already joined ``form`` arrays with commas)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(wire(v) for v in value)
    return str(value)


def scalars(doc: Any) -> Iterator[tuple[Any, ...]]:
    """The location of every string and number (not bool) in a JSON document."""
    return (at for at, value in leaves(doc) if isinstance(value, str | int | float) and not isinstance(value, bool))


def with_token(doc: Any, at: tuple[Any, ...], token: str) -> str:
    """``doc`` as JSON text with the leaf at ``at`` replaced by the raw JSON ``token`` (``NaN``, ``1e400`` …)."""
    marker = "\x01sdi-hostile\x01"
    copied = copy.deepcopy(doc)
    node = copied
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = marker
    text = json.dumps(copied)
    assert text.count(json.dumps(marker)) == 1
    return text.replace(json.dumps(marker), token)


class Fuzzer:
    """The operations of the document, a base case for each and the hostile variants of each base."""

    def __init__(self, live: Live, document: dict[str, Any], known: dict[str, str]) -> None:
        import schemathesis
        from schemathesis.core.result import Ok

        self.live, self.known = live, known
        doc = copy.deepcopy(document)
        # every route sdi answers is in the document, so fuzzing the document reaches every route
        tileset_alias = f"/collections/{VECTORS[0]}/tiles/{{tileMatrixSetId}}/metadata"
        assert {"/metadata/{name}", tileset_alias} <= set(doc["paths"])
        fuzzed = re.compile(r"^/collections/([^/]+)(/.*)?$")
        doc["paths"] = {path: item for path, item in doc["paths"].items()
                        if not (m := fuzzed.match(path)) or m[1] in (*FUZZED_LAYERS, "catalogue")}
        results = list(schemathesis.openapi.from_dict(doc).get_all_operations())
        assert all(isinstance(result, Ok) for result in results), results
        self.operations = [result.ok() for result in results if isinstance(result, Ok)]
        self.local = threading.local()

    def path_value(self, path: str, name: str) -> str:
        """A real value of the path parameter ``name`` of ``path`` (a feature id, a record id, a job id …)."""
        if name == "featureId":
            return self.known["record" if path.startswith("/collections/catalogue/") else "feature"]
        return self.known[name]

    def send(self, call: Call) -> tuple[Call, int, str]:
        """Make the request (one session a thread); its status and the start of its body, status 0 if none."""
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        headers = dict(call.headers)
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        for _ in range(2):
            try:
                response = session.request(call.method, call.url(self.live.url), headers=headers, timeout=120,
                                           data=call.body)
                return call, response.status_code, response.text[:300]
            except requests.RequestException as exc:
                error = f"no answer: {exc!r}"
                if not isinstance(exc, requests.ConnectionError):
                    break
                session = self.local.session = requests.Session()  # after a 500 the connection is closed
        return call, 0, error

    def generated(self, operation: Any, mode: Any, count: int) -> list[Call]:
        """``count`` cases schemathesis makes for ``operation`` (derandomized), path parameters made real."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis.errors import Unsatisfiable
        from schemathesis.core import NOT_SET

        cases: list[Any] = []

        @settings(max_examples=count, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def collect(case: Any) -> None:
            cases.append(case)

        try:
            collect()
        except Unsatisfiable:  # a negative case of an operation without parameters
            return []
        positive = mode.value == "positive"
        calls = []
        for case in cases:
            body = case.body if isinstance(case.body, bytes) else None if case.body is NOT_SET else json.dumps(
                case.body).encode("utf-8")
            calls.append(self.call(operation, str(mode.value), {} if positive else dict(case.path_parameters or {}),
                                   {k: wire(v) for k, v in (case.query or {}).items()}, body,
                                   dict(case.headers or {}), encoded=not positive))
        return calls

    def call(self, operation: Any, what: str, path_params: dict[str, str], query: dict[str, str],
             body: bytes | None, headers: dict[str, str] | None = None, *, encoded: bool = False) -> Call:
        """The request of ``operation`` with these values (real ones for the path parameters not given;
        ``encoded``: the given ones are percent-encoded already)."""
        path = operation.path
        for name in re.findall(r"\{([^}]+)\}", path):
            value = path_params.get(name)
            value = quote(self.path_value(operation.path, name) if value is None else str(value),
                          safe="%" if encoded and value is not None else "")
            path = path.replace("{" + name + "}", value)
        method = "HEAD" if "/download/" in operation.path else operation.method.upper()
        return Call(operation.label, what, method, path, tuple(sorted(query.items())),
                    tuple(sorted((headers or {}).items())), body)

    def base(self, candidates: list[Call]) -> tuple[list[tuple[Call, int, str]], tuple[Call, int, str]]:
        """Send every candidate; the answers, and the base of the variants: of those that succeed, the one with
        the most parameters and body values (schemathesis's own cases first), else the last candidate."""
        answers = [self.send(call) for call in candidates]
        passed = [answer for answer in answers if answer[1] < 400] or answers[-1:]
        return answers, max(passed, key=lambda answer: len(answer[0].query) + len(answer[0].headers) + (
            len(list(scalars(json.loads(answer[0].body)))) if answer[0].body else 0))

    def minimal(self, operation: Any) -> Call:
        """The request with real path values, no query, and :data:`EXECUTE_BODY` as the body of a POST."""
        body = json.dumps(EXECUTE_BODY).encode("utf-8") if operation.method.upper() == "POST" else None
        return self.call(operation, "minimal", {}, {}, body)

    def variants(self, operation: Any, base: Call) -> Iterator[Call]:
        """The base with each path, query and header parameter, each element of an array parameter and each
        leaf of the JSON body set to each hostile value in turn."""
        query, headers = dict(base.query), dict(base.headers)
        for parameter in operation.iter_parameters():
            name, where = parameter.name, str(parameter.location.value)
            kind = (parameter.definition.get("schema") or {}).get("type")
            for label, text, _ in HOSTILE:
                what = f"{where} {name}={label}"
                if where == "path":
                    yield self.call(operation, what, {name: text}, query, base.body, headers)
                elif where == "query":
                    yield self.call(operation, what, {}, {**query, name: text}, base.body, headers)
                    elements = (query.get(name) or ELEMENTS.get(name, "")).split(",")
                    for i in range(len(elements) if kind == "array" and len(elements) > 1 else 0):
                        joined = ",".join(text if j == i else e for j, e in enumerate(elements))
                        yield self.call(operation, f"{what} at [{i}]", {}, {**query, name: joined}, base.body,
                                        headers)
                elif where == "header" and text.isprintable() and text.isascii():
                    yield self.call(operation, what, {}, query, base.body, {**headers, name: text})
        if base.body is not None:
            doc = json.loads(base.body)
            for at in scalars(doc):
                for label, _, token in HOSTILE:
                    body = with_token(doc, at, token).encode("utf-8")
                    yield self.call(operation, f"body {'/'.join(map(str, at))}={label}", {}, query, body, headers)
                    if "NUL" in label and any(p.name == "Prefer" for p in operation.iter_parameters()):
                        yield self.call(operation, f"async body {'/'.join(map(str, at))}={label}", {}, query, body,
                                        {**headers, "Prefer": "respond-async"})


@pytest.fixture(scope="module")
def known(live: Live) -> dict[str, str]:
    """Real path parameter values: a feature, a catalogue record, a tile, a download format, a finished job."""
    feature = requests.get(f"{live.url}/collections/{VECTORS[0]}/items", params={"f": "json", "limit": "1"},
                           timeout=60).json()["features"][0]["id"]
    created = requests.post(f"{live.url}/processes/{PROCESS_ID}/execution", json=EXECUTE_BODY, timeout=120,
                            headers={"Prefer": "respond-async"})
    assert created.status_code == 201, created.text[:300]
    job = created.headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 60
    while requests.get(f"{live.url}/jobs/{job}", params={"f": "json"}, timeout=30).json()["status"] in (
            "accepted", "running"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)
    return {"feature": str(feature), "record": VECTORS[0], "tileMatrixSetId": "HK80Grid", "tileMatrix": "1",
            "tileRow": "0", "tileCol": "0", "jobId": job, "format": "geojson", "name": f"{VECTORS[0]}.xml"}


@pytest.mark.db
def test_hostile_values_in_every_parameter_of_every_operation_are_never_a_server_error(
        live: Live, document: dict[str, Any], known: dict[str, str]) -> None:
    """Every operation of the served document (which lists every route sdi answers), each path, query and
    header parameter, each element of a comma-separated array and each string or number of the execute body,
    in turn set to a NUL byte, an extreme or non-finite number, a Unicode digit, an empty or a 10 kB string,
    on top of a base case that succeeds: among a few positive cases schemathesis generates (derandomized; real
    path values) and one with no query, the one with the most parameters. An execute body with a NUL is also
    sent for an asynchronous execution, and schemathesis's negative cases are sent as well.
    Nothing may answer 5xx: not 500, and not 503 either, since the server is otherwise idle (heavy requests
    wait for their slot, see ``live``). About 3,200 requests, three at a time, in about 30 s.
    """
    from schemathesis.generation import GenerationMode

    fuzzer = Fuzzer(live, document, known)
    operations = fuzzer.operations
    by_method = Counter(op.method.upper() for op in operations)
    assert by_method["POST"] == 1 and by_method["DELETE"] == 1 and by_method["GET"] > 30, by_method
    last = [op for op in operations if op.method.upper() == "DELETE"]  # it removes the job the others read
    first = [op for op in operations if op.method.upper() != "DELETE"]
    answers: list[tuple[Call, int, str]] = []
    failed_bases: list[str] = []
    started = time.monotonic()
    for group in (first, last):  # hypothesis generates in this thread only (it is not thread-safe)
        candidates = [[*fuzzer.generated(op, GenerationMode.POSITIVE, 6), fuzzer.minimal(op)] for op in group]
        negative = [call for op in group for call in fuzzer.generated(op, GenerationMode.NEGATIVE, 3)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bases = list(pool.map(fuzzer.base, candidates))
            answers += [answer for sent, _ in bases for answer in sent]
            failed_bases += [f"{call.label}: {status} {text[:100]}" for _, (call, status, text) in bases
                             if status >= 400]
            variants = [call for op, (_, (base, _, _)) in zip(group, bases, strict=True)
                        for call in fuzzer.variants(op, base)]
            answers += pool.map(fuzzer.send, list(dict.fromkeys([*negative, *variants])))
    elapsed = time.monotonic() - started
    assert len(answers) > 2000, len(answers)
    assert not failed_bases, "the hostile values must reach past a base that succeeds:\n" + "\n".join(failed_bases)
    failures = [f"{status} {call.label} [{call.what}] {call.method} {call.url('')[:120]!r}: {text[:160]}"
                for call, status, text in answers if status >= 500 or status == 0]
    assert not failures, f"{len(failures)} of {len(answers)} requests in {elapsed:.0f} s:\n" + "\n".join(
        failures[:40])
