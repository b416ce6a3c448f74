"""OGC API – Features Part 3 (Filtering, OGC 19-079r2) and CQL2 (OGC 21-065r2) abstract tests against a live server.

Runs against the live `sdi serve` of tests/publishing/conftest.py (fixture ``live``: the LandsD reference points,
public_libraries_2013 and districts_18). Every filter is checked against a ground truth computed directly in
PostGIS with SQL on the same table (the fixture's database owner URL): the server must return exactly the ids the
SQL selects, once each, with ``numberMatched`` equal to their count. No expected count is written down here; each
case asserts that its truth is neither empty nor (unless said) the whole layer, so that it can tell a working
operator from one that ignores its operands. Each test names the abstract test (ATS) or CQL2 conformance class it
implements.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import requests
from psycopg import sql
from pyproj import CRS, Transformer

from tests.publishing.conftest import OGC_LAYERS, REFERENCE, LiveServer
from tests.publishing.test_ogcapi_features import get, ok  # the Part 1 suite's request helpers

LIBRARIES, DISTRICTS = "public_libraries_2013", "districts_18"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
HK1980 = "http://www.opengis.net/def/crs/EPSG/0/2326"
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
SCHEMA_JSON = "application/schema+json"
JSON_SCHEMAS = ("https://json-schema.org/draft/2019-09/schema", "https://json-schema.org/draft/2020-12/schema")
PART3 = "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/"
CQL2 = "http://www.opengis.net/spec/cql2/1.0/conf/"
PAGE = 10_000  #: a limit that holds every feature of these layers on one page
#: Around Central and Admiralty (CRS84): holds the reference points A and B and a few libraries
CENTRAL = (114.150, 22.275, 114.175, 22.300)
#: A box over Kowloon and the harbour that cuts across several district boundaries
KOWLOON = (114.155, 22.295, 114.205, 22.335)
FAR_AWAY = (113.0, 21.0, 113.1, 21.1)  #: sea south-west of Hong Kong: no feature of any layer


def polygon_wkt(box: tuple[float, float, float, float]) -> str:
    x0, y0, x1, y1 = box
    return f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


def polygon_json(box: tuple[float, float, float, float]) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def prop(name: str) -> dict[str, str]:
    return {"property": name}


def op(name: str, *args: Any) -> dict[str, Any]:
    return {"op": name, "args": list(args)}


#: A CRS84 geometry as a PostGIS geometry in the tables' SRID, for the ground truth (``%s``: its WKT).
LONLAT = "st_transform(st_setsrid(st_geomfromtext(%s), 4326), 2326)"
#: A CRS84 box as a PostGIS polygon in EPSG:2326, its sides densified (a parallel is curved in the HK grid).
LONLAT_BOX = "st_transform(st_segmentize(st_makeenvelope(%s, %s, %s, %s, 4326), 0.0001), 2326)"


@dataclass(frozen=True)
class Case:
    """One CQL2 filter in both encodings (``None``: not written in that one) and its SQL ground truth.

    ``where`` is a condition over the table alias ``t`` with ``%s`` placeholders for ``args``; ``everything``
    allows a truth that is the whole layer; ``bug_text``/``bug_json`` mark a known server bug (strict xfail).
    """

    cls: str
    name: str
    layer: str
    text: str | None
    cql_json: Any
    where: str
    args: tuple[Any, ...] = ()
    everything: bool = False
    bug_text: str | None = None
    bug_json: str | None = None


APOSTROPHE_NAME = "Neighbourhood & Worker's Service Centre Community Library"
GEOMETRY_COLLECTION_WKT = "GEOMETRYCOLLECTION(POINT(114.158 22.282), LINESTRING(114.16 22.33, 114.22 22.37))"
LINE_WKT = "LINESTRING(114.10 22.30, 114.25 22.36)"
POINT_B = (114.158, 22.282)  #: Central (reference point B)
POINT_B_WKT = f"POINT({POINT_B[0]} {POINT_B[1]})"
MULTIPOINT_WKT = "MULTIPOINT((114.158 22.282), (114.17 22.32), (114.2 22.45))"
MULTILINE_WKT = "MULTILINESTRING((114.10 22.30, 114.25 22.36), (113.95 22.40, 114.05 22.45))"
MULTIPOLYGON_WKT = (f"MULTIPOLYGON((({CENTRAL[0]} {CENTRAL[1]}, {CENTRAL[2]} {CENTRAL[1]}, {CENTRAL[2]} {CENTRAL[3]}, "
                    f"{CENTRAL[0]} {CENTRAL[3]}, {CENTRAL[0]} {CENTRAL[1]})), ((114.20 22.27, 114.24 22.27, "
                    "114.24 22.30, 114.20 22.30, 114.20 22.27)))")
MULTIPOLYGON_JSON = {"type": "MultiPolygon", "coordinates": [
    polygon_json(CENTRAL)["coordinates"], polygon_json((114.20, 22.27, 114.24, 22.30))["coordinates"]]}
GEOMETRY_COLLECTION_JSON = {"type": "GeometryCollection", "geometries": [
    {"type": "Point", "coordinates": list(POINT_B)},
    {"type": "LineString", "coordinates": [[114.16, 22.33], [114.22, 22.37]]}]}

CASES = [
    # --- basic-cql2: comparisons, IS NULL, AND/OR/NOT, literals ---------------------------------------------------
    Case("basic-cql2", "eq", LIBRARIES, "district = 'SHA TIN'", op("=", prop("district"), "SHA TIN"),
         "t.district = %s", ("SHA TIN",)),
    Case("basic-cql2", "ne", LIBRARIES, "library_type <> 'MOBILE LIBRARY'",
         op("<>", prop("library_type"), "MOBILE LIBRARY"), "t.library_type <> %s", ("MOBILE LIBRARY",)),
    Case("basic-cql2", "lt", LIBRARIES, "easting < 830000", op("<", prop("easting"), 830000), "t.easting < %s",
         (830000,)),
    Case("basic-cql2", "le", DISTRICTS, "fid <= 5", op("<=", prop("fid"), 5), "t.fid <= %s", (5,)),
    Case("basic-cql2", "gt", LIBRARIES, "northing > 835000", op(">", prop("northing"), 835000), "t.northing > %s",
         (835000,)),
    Case("basic-cql2", "ge", DISTRICTS, "shape_are >= 100000000", op(">=", prop("shape_are"), 100000000),
         "t.shape_are >= %s", (100000000,)),
    Case("basic-cql2", "eq-number-left", DISTRICTS, "7 = objectid", op("=", 7, prop("objectid")),
         "%s = t.objectid", (7,)),
    Case("basic-cql2", "is-null", LIBRARIES, "website IS NULL", op("isNull", prop("website")), "t.website is null"),
    Case("basic-cql2", "is-not-null", LIBRARIES, "website IS NOT NULL", op("not", op("isNull", prop("website"))),
         "t.website is not null"),
    Case("basic-cql2", "and-or-not", LIBRARIES,
         "district = 'EASTERN' AND (library_type = 'STATIC LIBRARY' OR NOT (easting > 842000))",
         op("and", op("=", prop("district"), "EASTERN"),
            op("or", op("=", prop("library_type"), "STATIC LIBRARY"), op("not", op(">", prop("easting"), 842000)))),
         "t.district = %s and (t.library_type = %s or not t.easting > %s)", ("EASTERN", "STATIC LIBRARY", 842000)),
    Case("basic-cql2", "not-of-or", LIBRARIES,
         "district = 'EASTERN' AND NOT (library_type = 'STATIC LIBRARY' OR easting > 842000)",
         op("and", op("=", prop("district"), "EASTERN"),
            op("not", op("or", op("=", prop("library_type"), "STATIC LIBRARY"), op(">", prop("easting"), 842000)))),
         "t.district = %s and not (t.library_type = %s or t.easting > %s)", ("EASTERN", "STATIC LIBRARY", 842000)),
    Case("basic-cql2", "or", REFERENCE, "code = 'A' OR name = 'Central'",
         op("or", op("=", prop("code"), "A"), op("=", prop("name"), "Central")), "t.code = %s or t.name = %s",
         ("A", "Central"), everything=True),
    Case("basic-cql2", "chinese-literal", DISTRICTS, "name_zh = '中西區'", op("=", prop("name_zh"), "中西區"),
         "t.name_zh = %s", ("中西區",)),
    Case("basic-cql2", "quote-escape", LIBRARIES, "english_name = '" + APOSTROPHE_NAME.replace("'", "''") + "'",
         op("=", prop("english_name"), APOSTROPHE_NAME), "t.english_name = %s", (APOSTROPHE_NAME,)),
    Case("basic-cql2", "boolean-literal", LIBRARIES, "district = 'TAI PO' AND TRUE",
         op("and", op("=", prop("district"), "TAI PO"), True), "t.district = %s and true", ("TAI PO",)),
    # --- advanced-comparison-operators: LIKE, BETWEEN, IN -------------------------------------------------------
    Case("advanced-comparison-operators", "like", LIBRARIES, "english_name LIKE '%Library%'",
         op("like", prop("english_name"), "%Library%"), "t.english_name like %s", ("%Library%",)),
    Case("advanced-comparison-operators", "like-single-character", LIBRARIES, "district LIKE 'TAI P_'",
         op("like", prop("district"), "TAI P_"), "t.district like %s", ("TAI P_",)),
    Case("advanced-comparison-operators", "not-like", LIBRARIES, "english_name NOT LIKE '%Library%'",
         op("not", op("like", prop("english_name"), "%Library%")), "t.english_name not like %s", ("%Library%",)),
    Case("advanced-comparison-operators", "between", LIBRARIES, "easting BETWEEN 835000 AND 840000",
         op("between", prop("easting"), 835000, 840000), "t.easting between %s and %s", (835000, 840000)),
    Case("advanced-comparison-operators", "not-between", LIBRARIES, "easting NOT BETWEEN 835000 AND 840000",
         op("not", op("between", prop("easting"), 835000, 840000)), "t.easting not between %s and %s",
         (835000, 840000)),
    Case("advanced-comparison-operators", "in", LIBRARIES, "district IN ('WAN CHAI', 'EASTERN')",
         op("in", prop("district"), ["WAN CHAI", "EASTERN"]), "t.district in (%s, %s)", ("WAN CHAI", "EASTERN")),
    Case("advanced-comparison-operators", "not-in", LIBRARIES, "district NOT IN ('WAN CHAI', 'EASTERN')",
         op("not", op("in", prop("district"), ["WAN CHAI", "EASTERN"])), "t.district not in (%s, %s)",
         ("WAN CHAI", "EASTERN")),
    Case("advanced-comparison-operators", "in-numbers", DISTRICTS, "fid IN (1, 4, 9)",
         op("in", prop("fid"), [1, 4, 9]), "t.fid in (%s, %s, %s)", (1, 4, 9)),
    # --- case-insensitive-comparison: CASEI -----------------------------------------------------------------------
    Case("case-insensitive-comparison", "casei-eq", LIBRARIES, "CASEI(district) = casei('sha Tin')",
         op("=", op("casei", prop("district")), op("casei", "sha Tin")), "lower(t.district) = lower(%s)",
         ("sha Tin",)),
    Case("case-insensitive-comparison", "casei-in", LIBRARIES,
         "CASEI(district) IN (CASEI('wan chai'), CASEI('Eastern'))",
         op("in", op("casei", prop("district")), [op("casei", "wan chai"), op("casei", "Eastern")]),
         "lower(t.district) in (lower(%s), lower(%s))", ("wan chai", "Eastern")),
    Case("case-insensitive-comparison", "casei-like", LIBRARIES, "CASEI(english_name) LIKE CASEI('%LIBRARY%')",
         op("like", op("casei", prop("english_name")), op("casei", "%LIBRARY%")),
         "lower(t.english_name) like lower(%s)", ("%LIBRARY%",)),
    # --- basic-spatial-functions: S_INTERSECTS with POINT, POLYGON, BBOX ------------------------------------------
    Case("basic-spatial-functions", "s_intersects-point", DISTRICTS, f"S_INTERSECTS(geom, {POINT_B_WKT})",
         op("s_intersects", prop("geom"), {"type": "Point", "coordinates": list(POINT_B)}),
         f"st_intersects(t.geom, {LONLAT})", (POINT_B_WKT,)),
    Case("basic-spatial-functions", "s_intersects-polygon", LIBRARIES, f"S_INTERSECTS(geom, {polygon_wkt(CENTRAL)})",
         op("s_intersects", prop("geom"), polygon_json(CENTRAL)), f"st_intersects(t.geom, {LONLAT})",
         (polygon_wkt(CENTRAL),)),
    Case("basic-spatial-functions", "s_intersects-bbox", LIBRARIES,
         "S_INTERSECTS(geom, BBOX({}, {}, {}, {}))".format(*CENTRAL), op("s_intersects", prop("geom"),
                                                                          {"bbox": list(CENTRAL)}),
         f"st_intersects(t.geom, {LONLAT_BOX})", CENTRAL),
    Case("basic-spatial-functions", "s_intersects-bbox-polygons", DISTRICTS,
         "S_INTERSECTS(geom, BBOX({}, {}, {}, {}))".format(*KOWLOON), op("s_intersects", prop("geom"),
                                                                          {"bbox": list(KOWLOON)}),
         f"st_intersects(t.geom, {LONLAT_BOX})", KOWLOON),
    # --- basic-spatial-functions-plus: the other geometry literals ------------------------------------------------
    Case("basic-spatial-functions-plus", "s_intersects-linestring", DISTRICTS, f"S_INTERSECTS(geom, {LINE_WKT})",
         op("s_intersects", prop("geom"), {"type": "LineString", "coordinates": [[114.10, 22.30], [114.25, 22.36]]}),
         f"st_intersects(t.geom, {LONLAT})", (LINE_WKT,)),
    Case("basic-spatial-functions-plus", "s_intersects-multipoint", DISTRICTS, f"S_INTERSECTS(geom, {MULTIPOINT_WKT})",
         op("s_intersects", prop("geom"), {"type": "MultiPoint", "coordinates": [[114.158, 22.282], [114.17, 22.32],
                                                                                 [114.2, 22.45]]}),
         f"st_intersects(t.geom, {LONLAT})", (MULTIPOINT_WKT,)),
    Case("basic-spatial-functions-plus", "s_intersects-multilinestring", DISTRICTS,
         f"S_INTERSECTS(geom, {MULTILINE_WKT})",
         op("s_intersects", prop("geom"), {"type": "MultiLineString", "coordinates": [
             [[114.10, 22.30], [114.25, 22.36]], [[113.95, 22.40], [114.05, 22.45]]]}),
         f"st_intersects(t.geom, {LONLAT})", (MULTILINE_WKT,)),
    Case("basic-spatial-functions-plus", "s_intersects-multipolygon", LIBRARIES,
         f"S_INTERSECTS(geom, {MULTIPOLYGON_WKT})", op("s_intersects", prop("geom"), MULTIPOLYGON_JSON),
         f"st_intersects(t.geom, {LONLAT})", (MULTIPOLYGON_WKT,)),
    Case("basic-spatial-functions-plus", "s_intersects-geometrycollection", DISTRICTS,
         f"S_INTERSECTS(geom, {GEOMETRY_COLLECTION_WKT})", op("s_intersects", prop("geom"), GEOMETRY_COLLECTION_JSON),
         f"st_intersects(t.geom, {LONLAT})", (GEOMETRY_COLLECTION_WKT,)),
    # --- spatial-functions: the other spatial predicates ----------------------------------------------------------
    Case("spatial-functions", "s_within", LIBRARIES, f"S_WITHIN(geom, {polygon_wkt(CENTRAL)})",
         op("s_within", prop("geom"), polygon_json(CENTRAL)), f"st_within(t.geom, {LONLAT})",
         (polygon_wkt(CENTRAL),)),
    Case("spatial-functions", "s_contains", DISTRICTS, f"S_CONTAINS(geom, {POINT_B_WKT})",
         op("s_contains", prop("geom"), {"type": "Point", "coordinates": list(POINT_B)}),
         f"st_contains(t.geom, {LONLAT})", (POINT_B_WKT,)),
    Case("spatial-functions", "s_disjoint", LIBRARIES, f"S_DISJOINT(geom, {polygon_wkt(KOWLOON)})",
         op("s_disjoint", prop("geom"), polygon_json(KOWLOON)), f"st_disjoint(t.geom, {LONLAT})",
         (polygon_wkt(KOWLOON),)),
    Case("spatial-functions", "s_crosses", DISTRICTS, f"S_CROSSES(geom, {LINE_WKT})",
         op("s_crosses", prop("geom"), {"type": "LineString", "coordinates": [[114.10, 22.30], [114.25, 22.36]]}),
         f"st_crosses(t.geom, {LONLAT})", (LINE_WKT,)),
    Case("spatial-functions", "s_overlaps", DISTRICTS, f"S_OVERLAPS(geom, {polygon_wkt(KOWLOON)})",
         op("s_overlaps", prop("geom"), polygon_json(KOWLOON)), f"st_overlaps(t.geom, {LONLAT})",
         (polygon_wkt(KOWLOON),)),
    # --- arithmetic: + - * / ----------------------------------------------------------------------------------------
    Case("arithmetic", "add", LIBRARIES, "easting + 1000 > 845000",
         op(">", op("+", prop("easting"), 1000), 845000), "t.easting + %s > %s", (1000, 845000)),
    Case("arithmetic", "subtract-properties", LIBRARIES, "northing - easting < -10000",
         op("<", op("-", prop("northing"), prop("easting")), -10000), "t.northing - t.easting < %s", (-10000,)),
    Case("arithmetic", "multiply", LIBRARIES, "easting * 2 >= 1680000",
         op(">=", op("*", prop("easting"), 2), 1680000), "t.easting * %s >= %s", (2, 1680000)),
    Case("arithmetic", "divide", DISTRICTS, "shape_are / 1000000 > 100",
         op(">", op("/", prop("shape_are"), 1000000), 100), "t.shape_are / %s > %s", (1000000, 100)),
    Case("arithmetic", "nested", LIBRARIES, "(easting + northing) * 2 / 4 > 832000",
         op(">", op("/", op("*", op("+", prop("easting"), prop("northing")), 2), 4), 832000),
         "(t.easting + t.northing) * %s / %s > %s", (2, 4, 832000)),
    Case("arithmetic", "divide-integers", DISTRICTS, "fid / 2 = 3", op("=", op("/", prop("fid"), 2), 3),
         "t.fid::numeric / %s = %s", (2, 3)),  # CQL2 '/' is division (integer division is 'div'): only 6 / 2 = 3
]

LANGS = ("cql2-text", "cql2-json", "default")


def _case_params() -> Iterator[Any]:
    for case in CASES:
        for lang in LANGS:
            expression = case.cql_json if lang == "cql2-json" else case.text
            if expression is None:
                continue
            bug = case.bug_json if lang == "cql2-json" else case.bug_text
            marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
            yield pytest.param(case, lang, id=f"{case.cls}/{case.name}[{lang}]", marks=marks)


# --- helpers ---------------------------------------------------------------------------------------------------------

def filter_params(expression: Any, lang: str, **extra: Any) -> dict[str, Any]:
    """Query parameters for ``expression`` in ``lang`` (``default``: CQL2 text without ``filter-lang``)."""
    params = {"filter": json.dumps(expression) if lang == "cql2-json" else expression, **extra}
    if lang != "default":
        params["filter-lang"] = lang
    return params


def next_link(page: dict[str, Any]) -> str | None:
    hrefs = [link["href"] for link in page.get("links", []) if link["rel"] == "next"]
    assert len(hrefs) <= 1
    return hrefs[0] if hrefs else None


def fetch_all(url: str, **params: Any) -> tuple[list[str], int, list[str]]:
    """(ids of every feature reached through ``next`` links, numberMatched of page 1, the next hrefs followed)."""
    page = ok(url, **params)
    matched, ids = int(page["numberMatched"]), [str(f["id"]) for f in page["features"]]
    followed: list[str] = []
    while (href := next_link(page)) and len(followed) < 100:
        followed.append(href)
        response = requests.get(href, timeout=30)
        assert response.status_code == 200, f"{href}: {response.text[:300]}"
        page = response.json()
        assert page["numberMatched"] == matched, href
        assert page["numberReturned"] == len(page["features"])
        ids.extend(str(f["id"]) for f in page["features"])
    return ids, matched, followed


class Truth:
    """Ground truth read with SQL from the table of a layer (the fixture's database, as its owner)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._keys: dict[str, str] = {}

    def key(self, layer: str) -> str:
        if layer not in self._keys:
            row = self.conn.execute("select primary_key from sdi.layer where id = %s", (layer,)).fetchone()
            assert row is not None, layer
            self._keys[layer] = str(row[0])
        return self._keys[layer]

    def ids(self, layer: str, where: str = "true", args: tuple[Any, ...] = ()) -> set[str]:
        """Ids of the features of ``layer`` for which ``where`` (over alias ``t``, ``%s`` placeholders) holds."""
        query = sql.SQL("select t.{}::text from {} as t where ").format(
            sql.Identifier(self.key(layer)), sql.Identifier("layers", layer)) + sql.SQL(where)
        return {str(r[0]) for r in self.conn.execute(query, args).fetchall()}

    def columns(self, layer: str) -> dict[str, str]:
        """Column name → ``information_schema`` data type (``USER-DEFINED`` for the geometry)."""
        rows = self.conn.execute("select column_name, data_type from information_schema.columns"
                                 " where table_schema = 'layers' and table_name = %s order by ordinal_position",
                                 (layer,)).fetchall()
        return {str(name): str(kind) for name, kind in rows}


@pytest.fixture(scope="module")
def truth(live: LiveServer) -> Iterator[Truth]:
    """One connection for the module's ground-truth queries."""
    with psycopg.connect(live.settings.database_url, autocommit=True) as conn:
        yield Truth(conn)


def queryables(live: LiveServer, layer: str) -> dict[str, Any]:
    response = requests.get(f"{live.url}/collections/{layer}/queryables", headers={"Accept": SCHEMA_JSON},
                            timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].split(";")[0] == SCHEMA_JSON
    doc: dict[str, Any] = response.json()
    return doc


def simple_queryables(live: LiveServer, layer: str) -> list[str]:
    """The queryables of ``layer`` with a simple value (string, number, integer, boolean)."""
    return [name for name, schema in queryables(live, layer)["properties"].items()
            if schema.get("type") in ("string", "number", "integer", "boolean")]


def check_error(response: requests.Response, parameter: str) -> None:
    """A 400 whose one-line description names ``parameter``."""
    assert response.status_code == 400, f"{response.url}: {response.status_code} {response.text[:300]}"
    description = response.json()["description"]
    assert description.startswith(f"{parameter}:") or repr(parameter) in description, description
    assert "\n" not in description and "Traceback" not in description


# --- conformance -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", [
    *(PART3 + c for c in ("queryables", "queryables-query-parameters", "filter", "features-filter")),
    *(CQL2 + c for c in ("cql2-text", "cql2-json", "basic-cql2", "advanced-comparison-operators",
                         "case-insensitive-comparison", "basic-spatial-functions", "basic-spatial-functions-plus",
                         "spatial-functions", "arithmetic"))])
def test_conformance_declares(live: LiveServer, uri: str) -> None:
    """ATS /conf/filter/get-conformance, /conf/features-filter/get-conformance (and each CQL2 class)."""
    response = requests.get(f"{live.url}/conformance", headers={"Accept": "application/json"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert uri in response.json()["conformsTo"]


# --- queryables ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_collection_links_to_queryables(live: LiveServer, layer: str) -> None:
    """ATS /conf/queryables/get-queryables-uris (/req/queryables/queryables-link): the collection links to
    ``{apiURI}/collections/{id}/queryables`` with rel ogc queryables, and the link resolves."""
    collection = ok(f"{live.url}/collections/{layer}")
    links = [link for link in collection["links"] if link["rel"] == QUERYABLES_REL]
    assert links, collection["links"]
    href = links[0]["href"]
    assert href.split("?")[0] == f"{live.url}/collections/{layer}/queryables"
    assert links[0].get("type") == SCHEMA_JSON
    assert requests.get(href, timeout=30).status_code == 200


@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_queryables_document_is_a_json_schema(live: LiveServer, truth: Truth, layer: str) -> None:
    """ATS /conf/queryables/get-queryables (/req/queryables/get-queryables-response): ``$schema`` 2019-09 or 2020-12,
    ``$id`` the URL without query, type object, every column of the table a property whose JSON type matches its
    PostgreSQL type, and the geometry a property whose schema names the table's geometry type."""
    doc = queryables(live, layer)
    assert doc["$schema"] in JSON_SCHEMAS
    assert doc["$id"] == f"{live.url}/collections/{layer}/queryables"
    assert doc["type"] == "object"
    properties = doc["properties"]
    assert isinstance(properties, dict) and properties
    columns = truth.columns(layer)
    assert set(properties) == set(columns)
    expected = {"bigint": "integer", "integer": "integer", "smallint": "integer", "double precision": "number",
                "numeric": "number", "real": "number", "text": "string", "character varying": "string",
                "boolean": "boolean"}
    for name, kind in columns.items():
        if kind == "USER-DEFINED":
            continue
        assert properties[name].get("type") == expected[kind], (name, kind, properties[name])
    row = truth.conn.execute("select f_geometry_column, type from geometry_columns"
                             " where f_table_schema = 'layers' and f_table_name = %s", (layer,)).fetchone()
    assert row is not None
    geometry = properties[row[0]]
    assert geometry.get("x-ogc-role") == "primary-geometry"
    assert geometry.get("format") == f"geometry-{str(row[1]).lower()}"
    assert geometry.get("$ref", "").lower() == f"https://geojson.org/schema/{str(row[1]).lower()}.json"


def test_every_collection_has_queryables(live: LiveServer) -> None:
    """ATS /conf/filter/get-collections, /conf/filter/get-queryables: every feature collection of /collections
    answers ``queryables`` as a JSON Schema object with its own URL as ``$id``."""
    collections = ok(f"{live.url}/collections")["collections"]
    features = [c["id"] for c in collections if c.get("itemType", "feature") == "feature"]
    assert set(OGC_LAYERS) <= set(features)
    for collection_id in features:
        doc = ok(f"{live.url}/collections/{collection_id}/queryables")
        assert doc["type"] == "object" and isinstance(doc["properties"], dict), collection_id
        assert doc["$id"] == f"{live.url}/collections/{collection_id}/queryables", collection_id


# --- queryables as query parameters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_every_queryable_is_a_query_parameter(live: LiveServer, truth: Truth, layer: str) -> None:
    """ATS /conf/queryables-query-parameters/parameters: ``name=value`` for every simple queryable (its most common
    value in the table, or a value no row holds when the column is all NULL) selects exactly the rows SQL's
    ``= value`` selects."""
    items = f"{live.url}/collections/{layer}/items"
    names = simple_queryables(live, layer)
    assert names
    for name in names:
        column = sql.Identifier(name)
        row = truth.conn.execute(sql.SQL("select {c} from {t} where {c} is not null group by {c}"
                                         " order by count(*) desc, {c} limit 1").format(
            c=column, t=sql.Identifier("layers", layer))).fetchone()
        value = row[0] if row is not None else "no such value"
        want = truth.ids(layer, sql.SQL("t.{} = %s").format(column).as_string(truth.conn), (value,))
        assert row is None or want, name
        ids, matched, _ = fetch_all(items, **{name: str(value)}, limit=PAGE)
        assert sorted(ids) == sorted(want), f"{name}={value!r}"
        assert matched == len(want), f"{name}={value!r}"


def test_queryable_parameter_combines_with_filter_and_bbox(live: LiveServer, truth: Truth) -> None:
    """ATS /conf/filter/mixing-expression: a property parameter, ``bbox`` and ``filter`` are ANDed."""
    items = f"{live.url}/collections/{LIBRARIES}/items"
    want = truth.ids(LIBRARIES, "t.district = %s and t.easting > %s", ("EASTERN", 841000))
    assert want and want != truth.ids(LIBRARIES, "t.district = %s", ("EASTERN",))
    ids, matched, _ = fetch_all(items, district="EASTERN", filter="easting > 841000", limit=PAGE)
    assert sorted(ids) == sorted(want) and matched == len(want)
    contradiction = ok(items, district="EASTERN", filter="district = 'SHA TIN'")
    assert contradiction["numberMatched"] == 0 and contradiction["features"] == []
    want = truth.ids(LIBRARIES, f"t.library_type = %s and st_intersects(t.geom, {LONLAT_BOX})",
                     ("STATIC LIBRARY", *CENTRAL))
    assert want and want != truth.ids(LIBRARIES, f"st_intersects(t.geom, {LONLAT_BOX})", CENTRAL)
    ids, matched, _ = fetch_all(items, bbox=",".join(map(str, CENTRAL)), filter="library_type = 'STATIC LIBRARY'",
                                limit=PAGE)
    assert sorted(ids) == sorted(want) and matched == len(want)


@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_filter_and_bbox_of_the_extent(live: LiveServer, truth: Truth, layer: str) -> None:
    """ATS /conf/filter/mixing-expression and /conf/filter/filter-crs-wgs84: ``S_INTERSECTS`` with the collection's
    WGS 84 extent as BBOX gives every feature, with the same ``bbox`` too; with a ``bbox`` far from it, none."""
    lon0, lat0, lon1, lat1 = ok(f"{live.url}/collections/{layer}")["extent"]["spatial"]["bbox"][0]
    extent = (lon0 - 0.001, lat0 - 0.001, lon1 + 0.001, lat1 + 0.001)
    expression = "S_INTERSECTS(geom, BBOX({}, {}, {}, {}))".format(*extent)
    items = f"{live.url}/collections/{layer}/items"
    everything = truth.ids(layer)
    ids, matched, _ = fetch_all(items, filter=expression, **{"filter-lang": "cql2-text"}, limit=PAGE)
    assert sorted(ids) == sorted(everything) and matched == len(everything)
    ids, matched, _ = fetch_all(items, filter=expression, bbox=",".join(map(str, extent)), limit=PAGE)
    assert sorted(ids) == sorted(everything) and matched == len(everything)
    none = ok(items, filter=expression, bbox=",".join(map(str, FAR_AWAY)))
    assert none["numberMatched"] == 0 and none["features"] == []


# --- filter, filter-lang: the ATS defaults ({queryable} IS NULL, THIS IS NOT A FILTER) -------------------------------

@pytest.mark.parametrize("lang", ["cql2-text", "default"])
@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_is_null_on_every_queryable(live: LiveServer, truth: Truth, layer: str, lang: str) -> None:
    """ATS /conf/filter/filter-param, /conf/filter/filter-lang-default, /conf/features-filter/filter-on-items:
    ``{queryable} IS NULL`` for every queryable (the geometry too) selects the rows SQL's ``IS NULL`` selects."""
    items = f"{live.url}/collections/{layer}/items"
    for name in queryables(live, layer)["properties"]:
        want = truth.ids(layer, sql.SQL("t.{} is null").format(sql.Identifier(name)).as_string(truth.conn))
        ids, matched, _ = fetch_all(items, **filter_params(f"{name} IS NULL", lang), limit=PAGE, skipGeometry="true")
        assert sorted(ids) == sorted(want) and matched == len(want), name


@pytest.mark.parametrize(("lang", "expression"), [
    ("cql2-text", "THIS IS NOT A FILTER"), ("default", "THIS IS NOT A FILTER"), ("cql2-text", "district = "),
    ("cql2-text", "S_INTERSECTS(geom, POINT(114.1 22.3)"), ("cql2-json", "THIS IS NOT A FILTER"),
    ("cql2-json", '{"op": "=", "args": [{"property": "district"}'), ("cql2-json", '{"op": "no_such_op", "args": [1]}'),
    ("cql2-json", '{"filter": 1, "op"}')])
def test_malformed_filter_is_400(live: LiveServer, lang: str, expression: str) -> None:
    """ATS /conf/filter/filter-param (invalid filter): 400 naming ``filter``."""
    response = get(f"{live.url}/collections/{LIBRARIES}/items",
                   **{"filter": expression, **({"filter-lang": lang} if lang != "default" else {})})
    check_error(response, "filter")


@pytest.mark.parametrize("lang", ["cql2-text", "cql2-json"])
def test_unknown_queryable_in_filter_is_400(live: LiveServer, lang: str) -> None:
    """ATS /conf/filter/expression-construction: a filter on ``this_is_not_a_queryable`` is a 400 naming it."""
    expression: Any = ("this_is_not_a_queryable IS NULL" if lang == "cql2-text"
                       else op("isNull", prop("this_is_not_a_queryable")))
    response = get(f"{live.url}/collections/{LIBRARIES}/items", **filter_params(expression, lang))
    check_error(response, "filter")
    assert "this_is_not_a_queryable" in response.json()["description"]


@pytest.mark.parametrize("lang", ["cql2", "sql", "cql2-xml"])
def test_unknown_filter_lang_is_400(live: LiveServer, lang: str) -> None:
    """/req/filter/filter-lang-param: a ``filter-lang`` other than cql2-text and cql2-json is a 400 naming it."""
    response = get(f"{live.url}/collections/{LIBRARIES}/items", filter="district = 'SHA TIN'",
                   **{"filter-lang": lang})
    check_error(response, "filter-lang")
    alone = get(f"{live.url}/collections/{LIBRARIES}/items", **{"filter-lang": lang})  # no filter: still a typo
    check_error(alone, "filter-lang")


# --- filter-crs ------------------------------------------------------------------------------------------------------

def _in_crs(uri: str, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """CRS84 ``points`` in the CRS ``uri``, in that CRS's axis order."""
    crs = CRS.from_user_input("OGC:CRS84" if uri == CRS84 else "EPSG:" + uri.rsplit("/", 1)[-1])
    moved = [Transformer.from_crs("OGC:CRS84", crs, always_xy=True).transform(x, y) for x, y in points]
    north_first = crs.axis_info[0].direction.lower() in ("north", "south")
    return [(y, x) if north_first else (x, y) for x, y in moved]


def _crs_list(live: LiveServer) -> list[str]:
    crs: list[str] = ok(f"{live.url}/collections/{LIBRARIES}")["crs"]
    assert crs[:2] == [CRS84, HK1980]
    return crs


def test_filter_crs_polygons_select_the_same_features(live: LiveServer, truth: Truth) -> None:
    """ATS /conf/filter/filter-crs-param, /conf/filter/filter-crs-wgs84: the polygon around Central written in every
    CRS of the collection (``filter-crs``, that CRS's axis order: EPSG:2326 northing first, EPSG:4326 latitude first)
    selects what SQL selects with the CRS84 polygon, in CQL2 text and JSON; so do the EPSG:2326 polygon in SQL and
    the CRS84 one without ``filter-crs``."""
    corners = [(CENTRAL[0], CENTRAL[1]), (CENTRAL[2], CENTRAL[1]), (CENTRAL[2], CENTRAL[3]),
               (CENTRAL[0], CENTRAL[3]), (CENTRAL[0], CENTRAL[1])]
    want = truth.ids(LIBRARIES, f"st_intersects(t.geom, {LONLAT})", (polygon_wkt(CENTRAL),))
    grid = Transformer.from_crs("OGC:CRS84", "EPSG:2326", always_xy=True)
    grid_wkt = "POLYGON((" + ", ".join("{} {}".format(*grid.transform(x, y)) for x, y in corners) + "))"
    assert truth.ids(LIBRARIES, "st_intersects(t.geom, st_geomfromtext(%s, 2326))", (grid_wkt,)) == want
    assert want and len(want) < len(truth.ids(LIBRARIES))
    items = f"{live.url}/collections/{LIBRARIES}/items"
    for uri in [None, *_crs_list(live)]:
        points = _in_crs(uri, corners) if uri else corners
        text = "S_INTERSECTS(geom, POLYGON((" + ", ".join(f"{a} {b}" for a, b in points) + ")))"
        cql_json = op("s_intersects", prop("geom"), {"type": "Polygon", "coordinates": [[list(p) for p in points]]})
        extra = {"filter-crs": uri} if uri else {}
        for lang, expression in (("cql2-text", text), ("cql2-json", cql_json)):
            ids, matched, _ = fetch_all(items, **filter_params(expression, lang, **extra), limit=PAGE)
            assert sorted(ids) == sorted(want), (uri, lang)
            assert matched == len(want), (uri, lang)


def test_filter_crs_bbox_of_the_extent_selects_everything(live: LiveServer, truth: Truth) -> None:
    """ATS /conf/filter/filter-crs-param: the collection's WGS 84 extent (with a margin), its corners transformed to
    each CRS of the collection, as a ``BBOX`` with that ``filter-crs``, selects every feature."""
    lon0, lat0, lon1, lat1 = ok(f"{live.url}/collections/{LIBRARIES}")["extent"]["spatial"]["bbox"][0]
    margin = 0.02
    everything = truth.ids(LIBRARIES)
    for uri in _crs_list(live):
        (a0, b0), (a1, b1) = _in_crs(uri, [(lon0 - margin, lat0 - margin), (lon1 + margin, lat1 + margin)])
        expression = f"S_INTERSECTS(geom, BBOX({a0}, {b0}, {a1}, {b1}))"
        body = ok(f"{live.url}/collections/{LIBRARIES}/items", filter=expression, **{"filter-crs": uri},
                  resulttype="hits")
        assert body["numberMatched"] == len(everything), uri


@pytest.mark.parametrize("crs", ["http://www.opengis.net/def/crs/OGC/0/does_not_exist",
                                 "http://www.opengis.net/def/crs/EPSG/0/2000", "EPSG:2326x"])
def test_unknown_filter_crs_is_400(live: LiveServer, crs: str) -> None:
    """ATS /conf/filter/filter-crs-param (unknown CRS): 400 naming ``filter-crs``."""
    response = get(f"{live.url}/collections/{LIBRARIES}/items", filter="S_INTERSECTS(geom, BBOX(1, 2, 3, 4))",
                   **{"filter-crs": crs})
    check_error(response, "filter-crs")


def test_out_of_range_lonlat_literal_is_400(live: LiveServer) -> None:
    """ATS /conf/filter/filter-crs-wgs84 (second part): ``BBOX(1000000, 1000000, 2000000, 2000000)`` without
    ``filter-crs`` is not a WGS 84 box, so the request is refused (as ``bbox`` refuses such values)."""
    response = get(f"{live.url}/collections/{LIBRARIES}/items",
                   filter="S_INTERSECTS(geom, BBOX(1000000, 1000000, 2000000, 2000000))")
    check_error(response, "filter")


@pytest.mark.parametrize("lang", ["cql2-text", "cql2-json"])
def test_s_equals_and_s_touches_in_hk1980(live: LiveServer, truth: Truth, lang: str) -> None:
    """CQL2 spatial-functions S_EQUALS and S_TOUCHES with exact EPSG:2326 literals (``filter-crs``, northing first):
    a library's stored point equals that library only; a vertex of Central and Western's boundary touches the
    districts whose boundary passes through it (and lies inside none)."""
    fid, east, north = truth.conn.execute(
        "select fid::text, st_x(st_geometryn(geom, 1)), st_y(st_geometryn(geom, 1)) from layers.public_libraries_2013"
        " where district = 'EASTERN' order by fid limit 1").fetchone() or (None, 0.0, 0.0)
    assert fid is not None
    point = f"POINT({east} {north})"
    want = truth.ids(LIBRARIES, "st_equals(t.geom, st_geomfromtext(%s, 2326))", (point,))
    assert fid in want and len(want) < len(truth.ids(LIBRARIES))
    expression: Any = (f"S_EQUALS(geom, POINT({north} {east}))" if lang == "cql2-text"
                       else op("s_equals", prop("geom"), {"type": "Point", "coordinates": [north, east]}))
    ids, matched, _ = fetch_all(f"{live.url}/collections/{LIBRARIES}/items",
                                **filter_params(expression, lang, **{"filter-crs": HK1980}), limit=PAGE)
    assert sorted(ids) == sorted(want) and matched == len(want)

    vertex = truth.conn.execute(
        "select st_x(p), st_y(p) from (select st_pointn(st_exteriorring(st_geometryn(geom, 1)), 1) as p"
        " from layers.districts_18 where name_en = 'CENTRAL & WESTERN') as v").fetchone()
    assert vertex is not None
    east, north = vertex
    point = f"POINT({east} {north})"
    want = truth.ids(DISTRICTS, "st_touches(t.geom, st_geomfromtext(%s, 2326))", (point,))
    assert want
    expression = (f"S_TOUCHES(geom, POINT({north} {east}))" if lang == "cql2-text"
                  else op("s_touches", prop("geom"), {"type": "Point", "coordinates": [north, east]}))
    ids, matched, _ = fetch_all(f"{live.url}/collections/{DISTRICTS}/items",
                                **filter_params(expression, lang, **{"filter-crs": HK1980}), limit=PAGE)
    assert sorted(ids) == sorted(want) and matched == len(want)


# --- paging --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_next_links_keep_the_filter(live: LiveServer, truth: Truth, lang: str) -> None:
    """ATS /conf/features-filter/filter-on-items with Part 1 paging: ``next`` links carry ``filter``,
    ``filter-lang`` and ``filter-crs`` unchanged, and following them returns every match exactly once."""
    want = truth.ids(LIBRARIES, "t.library_type = %s and t.easting > %s", ("MOBILE LIBRARY", 830000))
    limit = 7
    assert len(want) > 2 * limit
    expression: Any = ("library_type = 'MOBILE LIBRARY' AND easting > 830000" if lang != "cql2-json" else
                       op("and", op("=", prop("library_type"), "MOBILE LIBRARY"), op(">", prop("easting"), 830000)))
    params = filter_params(expression, lang, **{"filter-crs": CRS84})
    ids, matched, followed = fetch_all(f"{live.url}/collections/{LIBRARIES}/items", **params, limit=limit)
    assert len(followed) >= len(want) // limit - 1
    for href in followed:
        query = parse_qs(urlsplit(href).query)
        for name, value in params.items():
            assert query.get(name) == [value], (name, href)
    assert len(ids) == len(set(ids)) == matched == len(want)
    assert set(ids) == want


# --- CQL2 operators, both encodings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "lang"), _case_params())
def test_cql2_operator(live: LiveServer, truth: Truth, case: Case, lang: str) -> None:
    """CQL2 conformance classes basic-cql2, advanced-comparison-operators, case-insensitive-comparison,
    basic-spatial-functions(-plus), spatial-functions and arithmetic through ``filter`` (ATS
    /conf/features-filter/filter-on-items): exactly the ids SQL selects, ``numberMatched`` their count."""
    want = truth.ids(case.layer, case.where, case.args)
    assert want, f"the case {case.name} should select something"
    assert case.everything or want != truth.ids(case.layer), f"the case {case.name} should not select everything"
    expression = case.cql_json if lang == "cql2-json" else case.text
    ids, matched, _ = fetch_all(f"{live.url}/collections/{case.layer}/items", **filter_params(expression, lang),
                                limit=PAGE, skipGeometry="true")
    assert sorted(ids) == sorted(want)
    assert matched == len(want)


def test_bbox_cases_lie_clear_of_the_box_edges(truth: Truth) -> None:
    """The BBOX cases' features lie clear of the box edges: their truth is the same whether the box's sides are
    densified (as sdi does for CQL2 text BBOX) or straight chords between the corners (CQL2 JSON bbox)."""
    for case in CASES:
        if "BBOX" in (case.text or ""):
            straight = truth.ids(case.layer, "st_intersects(t.geom, st_transform(st_makeenvelope(%s, %s, %s, %s,"
                                             " 4326), 2326))", case.args)
            assert straight == truth.ids(case.layer, case.where, case.args), case.name
