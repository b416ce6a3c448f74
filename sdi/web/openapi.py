"""The OpenAPI document as served: self-contained, and right about what sdi's own routes do.

pygeoapi's generator (``pygeoapi.openapi.get_oas``) refers to the OGC's OpenAPI files on schemas.opengis.net and
raw.githubusercontent.com, which a server without the internet (and the browsers of its users) cannot fetch:
ReDoc then fails and Swagger UI cannot expand an operation. :func:`self_contained` replaces each such ``$ref`` by
a local one to a definition sdi ships (``openapi_components.yml`` next to this module, written from the OGC
standards) and adds the definitions used, and those they use, to the document's ``components``.

It also corrects what the generator says about the routes sdi answers itself (see :func:`correct`): the
parameters of the items of vector layers (:data:`sdi.query.params.ITEMS_PARAMETERS` and every property), the
formats each route offers, the tile matrix sets, the responses of the conformance, collections, queryables,
tiles and coverage routes, and the paths of the tile matrix sets, tilesets, downloads, load history and changes,
which pygeoapi does not list.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from sdi.distribution.formats import FORMATS
from sdi.publishing.config import CATALOGUE_ID
from sdi.query.cql import MAX_FILTER_CHARS
from sdi.query.params import ITEMS_PARAMETERS, MAX_Q_CHARS
from sdi.query.tms import grids
from sdi.web.history import CHANGES_LIMITS, HISTORY_LIMITS, MAX_OFFSET

LOGGER = logging.getLogger(__name__)
COMPONENTS_FILE = "openapi_components.yml"
KINDS = ("schemas", "responses", "parameters", "examples", "requestBodies", "headers", "securitySchemes", "links",
         "callbacks")
UNRESOLVED = "x-sdi-unresolved"  #: marks a stub standing for a reference sdi has no definition of
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SUFFIXES = (".yaml", ".yml", ".json")


class UnresolvedReferenceError(ValueError):
    """A ``$ref`` of the OpenAPI document that sdi has no definition for."""


@cache
def shipped() -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The sources and components of ``openapi_components.yml``, with the values sdi fills in.

    Returns
    -------
    tuple
        Remote document path suffix → prefix of local names, and kind (``parameters``, ...) → name →
        definition. Cached: copy a definition before changing it.
    """
    data = yaml.safe_load(files("sdi.web").joinpath(COMPONENTS_FILE).read_text(encoding="utf-8"))
    components: dict[str, dict[str, Any]] = data["components"]
    parameters = components["parameters"]
    ids = list(grids())
    parameters["OGCTiles.tileMatrixSetId"]["schema"]["enum"] = ids
    parameters["SDI.tms"]["schema"]["enum"] = ids
    parameters["OGCTiles.tileMatrix"]["schema"]["maximum"] = max(g.max_zoom for g in grids().values())
    parameters["SDI.q"]["schema"]["maxLength"] = MAX_Q_CHARS
    parameters["SDI.filter"]["schema"]["maxLength"] = MAX_FILTER_CHARS
    parameters["SDI.download-format"]["schema"]["enum"] = list(FORMATS)
    parameters["SDI.history-limit"]["schema"].update(default=HISTORY_LIMITS[0], maximum=HISTORY_LIMITS[1])
    parameters["SDI.changes-limit"]["schema"].update(default=CHANGES_LIMITS[0], maximum=CHANGES_LIMITS[1])
    parameters["SDI.offset"]["schema"]["maximum"] = MAX_OFFSET
    binary = {"schema": {"type": "string", "format": "binary"}}
    for name in ("SDI.Download", "SDI.PartialDownload"):
        components["responses"][name]["content"] = {f.media_type: binary for f in FORMATS.values()}
    return dict(data["sources"]), components


def local_ref(ref: str, sources: dict[str, str] | None = None) -> tuple[str, str] | None:
    """The kind and name of the shipped definition standing for a remote ``ref``.

    ``https://…/ogcapi-features-1.yaml#/components/responses/NotFound`` → ``("responses",
    "OGCFeatures.NotFound")``; ``https://…/ogcapi/processes/part1/1.0/openapi/schemas/execute.yaml`` →
    ``("schemas", "OGCProcesses.execute")``. The host does not matter (pygeoapi's ``ogc_schemas_location`` may
    name a mirror). ``None`` when no source matches; whether that name is shipped is not checked here.
    """
    sources = shipped()[0] if sources is None else sources
    document, _, fragment = ref.partition("#")
    path = unquote(urlsplit(document).path).rstrip("/")
    if fragment:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in fragment.strip("/").split("/")]
        if len(parts) != 3 or parts[0] != "components":
            return None
        base, kind, name = path, parts[1], parts[2]
    else:
        pieces = path.rsplit("/", 2)
        if len(pieces) != 3 or not pieces[2].endswith(_SUFFIXES):
            return None
        base, kind, name = pieces[0], pieces[1], re.sub(r"\.(ya?ml|json)$", "", pieces[2])
    prefix = next((p for s, p in sources.items() if base == s or base.endswith("/" + s)), None)
    return None if prefix is None or kind not in KINDS else (kind, prefix + name)


def _refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every object of ``node`` that has a string ``$ref``."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _kind_hints(node: Any, hint: str = "schemas") -> Iterator[tuple[dict[str, Any], str]]:
    """Every ``$ref`` object of ``node`` with the kind of object expected where it stands (parameter, …)."""
    if isinstance(node, list):
        for value in node:
            yield from _kind_hints(value, hint)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$ref"), str):
        yield node, hint
        return
    for key, value in node.items():
        if key == "components" and isinstance(value, dict):
            for kind, definitions in value.items():
                for definition in definitions.values() if isinstance(definitions, dict) else ():
                    yield from _kind_hints(definition, kind)
        elif key in ("responses", "headers", "examples", "links", "callbacks", "properties") \
                and isinstance(value, dict):
            for item in value.values():
                yield from _kind_hints(item, "schemas" if key == "properties" else key)
        else:
            yield from _kind_hints(value, {"parameters": "parameters", "requestBody": "requestBodies"}.get(
                key, "schemas"))


def _stub(kind: str, ref: str) -> tuple[str, dict[str, Any]]:
    """A permissive local stand-in for ``ref`` (which sdi has no definition of): its name and definition."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", ref.rstrip("/").rsplit("/", 1)[-1])[-40:]
    name = f"SDI.unresolved.{tail}-{hashlib.sha1(ref.encode()).hexdigest()[:8]}"
    definition: dict[str, Any] = {UNRESOLVED: ref}
    if kind == "parameters":
        definition.update(name=re.sub(r"\.(ya?ml|json)$", "", tail), schema={},
                          **{"in": "query", "required": False})
    elif kind == "responses":
        definition["description"] = f"(see {ref})"
    return name, definition


def _resolves(doc: dict[str, Any], ref: str) -> bool:
    """Whether the local ``ref`` (a JSON pointer after ``#``) names something in ``doc``."""
    node: Any = doc
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        key = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def _unresolved(message: str, strict: bool) -> None:
    if strict:
        raise UnresolvedReferenceError(f"{message}: add a definition to sdi/web/{COMPONENTS_FILE}")
    LOGGER.warning("OpenAPI document: %s; serving a permissive stub instead", message)


def self_contained(doc: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """The OpenAPI document sdi serves: ``doc`` corrected (:func:`correct`) and with every ``$ref`` local.

    Parameters
    ----------
    doc
        pygeoapi's OpenAPI 3.0 document (not changed).
    strict
        Raise on a ``$ref`` that sdi has no definition for; else (when serving) log a warning and put a
        permissive stub marked ``x-sdi-unresolved`` in its place, so that the document is always served.

    Returns
    -------
    dict
        A new document whose ``$ref``\\ s all point into itself.

    Raises
    ------
    UnresolvedReferenceError
        With ``strict``, naming the first reference sdi cannot resolve.
    """
    sources, definitions = shipped()
    out = correct(copy.deepcopy(doc))
    components = out.setdefault("components", {})
    for node, hint in list(_kind_hints(out)):
        ref = node["$ref"]
        if ref.startswith("#"):
            continue
        found = local_ref(ref, sources)
        if found is None or found[1] not in definitions.get(found[0], {}):
            _unresolved(f"no definition of {ref}", strict)
            kind = found[0] if found else hint
            name, stub = _stub(kind, ref)
            components.setdefault(kind, {})[name] = stub
            found = (kind, name)
        node.clear()
        node["$ref"] = f"#/components/{found[0]}/{found[1]}"
    _add_definitions(out, definitions, strict)
    return out


def _add_definitions(doc: dict[str, Any], definitions: dict[str, dict[str, Any]], strict: bool) -> None:
    """Add to ``doc`` the shipped definitions its local references name, and those they name, recursively."""
    components = doc.setdefault("components", {})
    while True:
        added = False
        for ref in sorted({node["$ref"] for node in _refs(doc)}):
            if _resolves(doc, ref):
                continue
            parts = ref.split("/")
            if len(parts) == 4 and parts[:2] == ["#", "components"] and parts[3] in definitions.get(parts[2], {}):
                components.setdefault(parts[2], {})[parts[3]] = copy.deepcopy(definitions[parts[2]][parts[3]])
            else:
                _unresolved(f"{ref} names nothing in the document", strict)
                kind = parts[2] if len(parts) == 4 and parts[1] == "components" else "schemas"
                name, stub = _stub(kind, ref)
                components.setdefault(kind, {})[name] = stub
                for node in _refs(doc):
                    if node["$ref"] == ref:
                        node["$ref"] = f"#/components/{kind}/{name}"
            added = True
        if not added:
            return


# --- corrections: what sdi's own routes do -----------------------------------------------------------------------

def _p(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _r(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


#: Items of vector layers: each parameter of ITEMS_PARAMETERS but ``limit`` and ``properties`` (pygeoapi's are
#: right: the server's page sizes and the layer's property names).
ITEMS = {"f": _p("SDI.f-items"), "lang": _p("lang"), "bbox": _p("bbox"), "bbox-crs": _p("bbox-crs"),
         "crs": _p("crs"), "datetime": _p("OGCFeatures.datetime"), "filter": _p("SDI.filter"),
         "filter-lang": _p("SDI.filter-lang"), "filter-crs": _p("SDI.filter-crs"), "offset": _p("offset"),
         "q": _p("SDI.q"), "resulttype": _p("SDI.resulttype"), "skipGeometry": _p("skipGeometry"),
         "sortby": _p("OGCRecords.sortby")}
ERRORS = {"400": _r("OGCFeatures.InvalidParameter"), "404": _r("OGCFeatures.NotFound"),
          "500": _r("OGCFeatures.ServerError")}


def _name(doc: dict[str, Any], parameter: dict[str, Any]) -> str | None:
    """The name of a parameter object or of the one its ``$ref`` names (remote: the last part)."""
    ref = parameter.get("$ref")
    if not isinstance(ref, str):
        return parameter.get("name")
    if ref.startswith("#/components/parameters/"):
        key = ref.rsplit("/", 1)[1]
        found = doc.get("components", {}).get("parameters", {}).get(key) or shipped()[1]["parameters"].get(key)
        return found.get("name") if found else None
    return re.sub(r"\.(ya?ml|json)$", "", ref.rstrip("/").rsplit("/", 1)[-1])


def _get(doc: dict[str, Any], path: str) -> dict[str, Any] | None:
    operation = doc.get("paths", {}).get(path, {}).get("get")
    return operation if isinstance(operation, dict) else None


def _set_f(doc: dict[str, Any], operation: dict[str, Any], f: str = "SDI.f") -> None:
    """Replace the operation's ``f`` by the shipped parameter ``f`` (added first when it had none)."""
    parameters = operation.setdefault("parameters", [])
    where = next((i for i, p in enumerate(parameters) if _name(doc, p) == "f"), None)
    if where is None:
        parameters.insert(0, _p(f))
    else:
        parameters[where] = _p(f)


def _title(doc: dict[str, Any], layer: str) -> str:
    summary = str((_get(doc, f"/collections/{layer}") or {}).get("summary", ""))
    return summary.removeprefix("Get ").removesuffix(" metadata") if summary.endswith(" metadata") else layer


def _vector_items(doc: dict[str, Any], layer: str) -> None:
    """The items, item, queryables and schema routes of a vector layer."""
    items, item = _get(doc, f"/collections/{layer}/items"), _get(doc, f"/collections/{layer}/items/{{featureId}}")
    if items is None:
        return
    inline = {p["name"]: p for p in items.get("parameters", []) if "$ref" not in p and "name" in p}
    standard = {**ITEMS, "limit": inline.get("limit", _p("OGCFeatures.limit"))}
    if "properties" in inline:
        standard["properties"] = inline["properties"]
    by_property = [p for name, p in inline.items() if name not in ITEMS_PARAMETERS]
    items["parameters"] = [standard[name] for name in sorted(standard, key=_items_order)] + by_property
    items["responses"] = {"200": _r("OGCFeatures.Features"), **ERRORS}
    if item is not None:
        item["parameters"] = [_p("OGCFeatures.featureId"), _p("SDI.f"), _p("lang"), _p("crs"),
                              *([inline["properties"]] if "properties" in inline else []), _p("skipGeometry")]
        item["responses"] = {"200": _r("OGCFeatures.Feature"), **ERRORS}
    for which in ("queryables", "schema"):  # not `properties` (400), nor `profile` (accepted, but ignored)
        operation = _get(doc, f"/collections/{layer}/{which}")
        if operation is not None:
            operation["parameters"] = [_p("SDI.f"), _p("lang")]


def _layer_files(doc: dict[str, Any], layer: str, vector: bool) -> None:
    """The history and changes routes of a layer and, for a vector layer, its downloads."""
    here, title = f"/collections/{layer}", _title(doc, layer)
    tags = list((_get(doc, here) or {}).get("tags", [layer]))
    operation = f"{re.sub(r'[^A-Za-z0-9]', '', layer.title())}"
    doc["paths"][f"{here}/history"] = {"get": {
        "summary": f"The load history of {title}", "tags": tags, "operationId": f"get{operation}History",
        "description": "The collection's loads, newest first, each with what it changed.",
        "parameters": [_p("SDI.f"), _p("lang"), _p("SDI.history-limit"), _p("SDI.offset")],
        "responses": {"200": _r("SDI.History"), **ERRORS}}}
    doc["paths"][f"{here}/changes"] = {"get": {
        "summary": f"The features a load of {title} added, removed and changed", "tags": tags,
        "operationId": f"get{operation}Changes",
        "description": "The ids the latest load (or `load`) added, removed and changed, so a copy can be updated.",
        "parameters": [_p("SDI.f-json"), _p("lang"), _p("SDI.load"), _p("SDI.changes-limit"), _p("SDI.offset")],
        "responses": {"200": _r("SDI.Changes"), **ERRORS}}}
    if vector:
        doc["paths"][f"{here}/download/{{format}}"] = {"get": {
            "summary": f"Download {title} as one file", "tags": tags, "operationId": f"download{operation}",
            "description": "The whole layer in one of the download formats, made once per load and cached.",
            "parameters": [_p("SDI.download-format")],
            "responses": {"200": _r("SDI.Download"), "206": _r("SDI.PartialDownload"), **ERRORS}}}


def _items_order(name: str) -> tuple[int, str]:
    return ("f", "lang").index(name) if name in ("f", "lang") else 2, name.lower()


def _tiles(doc: dict[str, Any], layer: str) -> None:
    """The tilesets list, tileset and tile routes of a vector layer."""
    tiles = f"/collections/{layer}/tiles"
    listing = _get(doc, tiles)
    if listing is None:
        return
    listing.update(parameters=[_p("SDI.f"), _p("lang"), _p("SDI.tms")],
                   responses={"200": _r("OGCTiles.TileSetsList"), **ERRORS})
    tile = _get(doc, f"{tiles}/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}")
    if tile is not None:
        tile.update(parameters=[_p("OGCTiles.tileMatrixSetId"), _p("OGCTiles.tileMatrix"), _p("OGCTiles.tileRow"),
                                _p("OGCTiles.tileCol"), _p("SDI.f-tile")],
                    responses={"200": _r("OGCTiles.VectorTile"), "204": _r("OGCTiles.EmptyTile"), **ERRORS})
    operation_id = str(listing.get("operationId", f"describe{layer.capitalize()}.collection.vector"))
    for suffix, summary in (("", "Fetch a {} tileset"), ("/metadata", "Fetch a {} tileset (the same document)")):
        doc["paths"][f"{tiles}/{{tileMatrixSetId}}{suffix}"] = {"get": {
            "summary": summary.format(_title(doc, layer)), "description": listing.get("description", ""),
            "tags": listing.get("tags", [layer]),
            "operationId": operation_id.replace("getTileSetsList", "getTileSet") + ("Metadata" if suffix else ""),
            "parameters": [_p("OGCTiles.tileMatrixSetId"), _p("SDI.f-tileset"), _p("lang")],
            "responses": {"200": _r("OGCTiles.TileSet"), **ERRORS}}}


def _metadata(doc: dict[str, Any]) -> None:
    """``/metadata/{name}``: a catalogue record as ISO 19139 XML, DCAT JSON-LD or pygeometa MCF YAML."""
    doc["paths"]["/metadata/{name}"] = {"get": {
        "summary": "A catalogue record as a metadata document",
        "description": "`<id>.xml` (ISO 19139), `<id>.jsonld` (DCAT JSON-LD) or `<id>.yml` (pygeometa MCF) of the "
                       "catalogue record `<id>`.",
        "tags": ["metadata"], "operationId": "getMetadataDocument",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "description": "The record id and the format's suffix, e.g. `districts_18.xml`.",
                        "schema": {"type": "string", "pattern": r"^[^/]+\.(xml|jsonld|yml)$"}}],
        "responses": {"200": {"description": "The metadata document.", "content": {
            "application/vnd.iso.19139+xml": {"schema": {"type": "string"}},
            "application/ld+json": {"schema": {"type": "object"}},
            "application/x-yaml": {"schema": {"type": "string"}}}}, **ERRORS}}}


def _tile_matrix_sets(doc: dict[str, Any]) -> None:
    doc.setdefault("paths", {})["/TileMatrixSets"] = {"get": {
        "summary": "Tile matrix sets", "description": "The tile matrix sets (tiling schemes) of the vector tiles.",
        "tags": ["tiles"], "operationId": "getTileMatrixSetsList", "parameters": [_p("SDI.f"), _p("lang")],
        "responses": {"200": _r("OGCTiles.TileMatrixSetsList"), "400": ERRORS["400"], "500": ERRORS["500"]}}}
    doc["paths"]["/TileMatrixSets/{tileMatrixSetId}"] = {"get": {
        "summary": "Tile matrix set", "description": "The definition of a tile matrix set (OGC 2D TMS JSON).",
        "tags": ["tiles"], "operationId": "getTileMatrixSet",
        "parameters": [_p("OGCTiles.tileMatrixSetId"), _p("SDI.f"), _p("lang")],
        "responses": {"200": _r("OGCTiles.TileMatrixSet"), **ERRORS}}}


def _collection(doc: dict[str, Any], layer: str) -> None:
    """A collection's description (sdi's route for every collection: JSON or HTML), queryables and coverage."""
    operation = _get(doc, f"/collections/{layer}")
    if operation is not None:
        _set_f(doc, operation)
        operation["responses"] = {"200": _r("OGCFeatures.Collection"), **ERRORS}
    for which in ("queryables", "schema"):
        operation = _get(doc, f"/collections/{layer}/{which}")
        if operation is not None:
            operation.setdefault("responses", {})["200"] = _r("SDI.Queryables")
    operation = _get(doc, f"/collections/{layer}/coverage")
    if operation is not None:
        _set_f(doc, operation, "SDI.f-coverage")
        operation.setdefault("responses", {})["200"] = _r("SDI.Coverage")


def correct(doc: dict[str, Any]) -> dict[str, Any]:
    """Correct, in place, what pygeoapi's document says about the routes sdi answers itself; returns ``doc``.

    * ``options`` operations go: sdi answers ``OPTIONS`` only as a CORS preflight (else 405);
    * ``f`` is ``json`` or ``html`` for the conformance, collections, ``/openapi`` and sdi's vector routes,
      ``json``, ``tilejson`` or ``html`` for a tileset, ``mvt`` for a tile, ``json`` (CoverageJSON) for a
      coverage; the responses of conformance, collections, queryables, schema and coverage say what they are;
    * items of vector layers document exactly :data:`sdi.query.params.ITEMS_PARAMETERS` plus one parameter per
      property; an item, ``crs``, ``properties`` and ``skipGeometry``; no route takes undeclared parameters
      (pygeoapi's ``vendorSpecificParameters``: sdi answers 400 to an unknown parameter);
    * tiles: the grids sdi serves (``tileMatrixSetId``), whole-number tile indices, ``204`` for an empty tile,
      and the tileset paths; the ``/TileMatrixSets`` paths when a layer has tiles;
    * the ``history`` and ``changes`` paths of every layer, the ``download/{format}`` path of vector layers, a
      tileset's ``/metadata`` alias and, with the catalogue, ``/metadata/{name}``: routes pygeoapi does not know.
    """
    paths: dict[str, Any] = doc.setdefault("paths", {})
    for item in paths.values():
        item.pop("options", None)
        for method in METHODS:
            operation = item.get(method)
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [p for p in operation["parameters"]
                                           if _name(doc, p) != "vendorSpecificParameters"]
    for path, response in (("/conformance", "OGCFeatures.ConformanceDeclaration"),
                           ("/collections", "OGCFeatures.Collections"), ("/openapi", None)):
        operation = _get(doc, path)
        if operation is not None:
            _set_f(doc, operation)
            if response:
                operation.setdefault("responses", {})["200"] = _r(response)
    collections = sorted({p.split("/")[2] for p in paths if re.fullmatch(r"/collections/[^/{}]+", p)})
    for layer in collections:
        _collection(doc, layer)
        if layer != CATALOGUE_ID:
            _vector_items(doc, layer)
            _tiles(doc, layer)
            _layer_files(doc, layer, vector=f"/collections/{layer}/items" in paths)
    if any(re.fullmatch(r"/collections/[^/]+/tiles", path) for path in paths):
        _tile_matrix_sets(doc)
    if CATALOGUE_ID in collections:
        _metadata(doc)
    return doc


def add_security(doc: dict[str, Any]) -> dict[str, Any]:
    """Say, in place, that every operation may be called anonymously or with ``Authorization: Bearer``."""
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerAuth"] = {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`sdi keys create`) or an OpenID Connect access token of the configured identity "
                       "provider. Without it only public layers exist; with it, also the layers of its groups. "
                       "A bad, revoked or expired credential is answered 401."}
    doc["security"] = [{}, {"bearerAuth": []}]
    return doc
