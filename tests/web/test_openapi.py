"""The OpenAPI document `sdi serve` serves (sdi/web/openapi.py): self-contained, valid, true to what sdi does.

- Without the database: the components sdi ships (sdi/web/openapi_components.yml) are valid OpenAPI 3.0 and
  refer only to each other; every remote reference of pygeoapi 0.21's generator has a definition, whatever the
  host; a reference sdi has no definition for raises with ``strict`` and is a marked, permissive stub (and a
  warning) when serving; the items parameters are those of sdi.query.params.
- On a live `sdi serve` with two vector layers, the synthetic raster and the catalogue (so that coverage,
  records and process paths appear): no ``$ref`` leaves the document, it validates against the OpenAPI 3.0
  schema pygeoapi ships and every reference resolves; pygeoapi's own document of the same catalogue (``sdi
  publish``) is made self-contained strictly, its components kept; schemathesis loads every operation without
  help; the parameters, formats and tile matrix sets documented are those the routes accept, and generated
  requests to sdi's own routes are never answered with a 5xx.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pygeoapi
import pytest
import requests
import yaml

from sdi.publishing.config import publish
from sdi.query.params import ITEM_PARAMETERS, ITEMS_PARAMETERS
from sdi.query.tms import grids
from sdi.web.openapi import ITEMS, UNRESOLVED, UnresolvedReferenceError, local_ref, self_contained, shipped
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
    """`sdi serve` over two vector layers and the synthetic raster (with the catalogue and the process)."""
    with live_layers(tmp_path_factory.mktemp("openapi"), (*VECTORS, RASTER)) as served:
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


@pytest.mark.db
def test_generated_requests_to_sdis_own_routes_are_never_a_server_error(live: Live,
                                                                      document: dict[str, Any]) -> None:
    """schemathesis on the document as served (positive and negative, 5 examples an operation, derandomized)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.generation import GenerationMode

    layers = "|".join(VECTORS)
    schema = schemathesis.openapi.from_dict(document).include(
        method="GET", path_regex=rf"^/(conformance|collections|TileMatrixSets.*|collections/({layers})(/.*)?)$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 4 + 11 * len(VECTORS)
    errors: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:

            @settings(max_examples=5, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(base_url=live.url, timeout=60)
                if response.status_code >= 500:
                    errors.append(f"{response.status_code} {response.request.url}: {response.text[:200]}")

            call()
    assert not errors, "\n".join(errors[:10])
