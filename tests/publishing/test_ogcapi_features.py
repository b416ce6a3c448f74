"""OGC API – Features Part 1 (core, GeoJSON, HTML, OAS 3.0) and Part 2 (CRS by reference) abstract tests.

Run against a live `sdi serve` (the session fixture ``live`` in tests/publishing/conftest.py) serving the Lands
Department reference point (code A: HK1980 Grid E 835411.431 N 817266.016 = 22.294313001 N, 114.168562005 E),
a point in Central (code B) and the sample layers public_libraries_2013 and districts_18. Each test names the
abstract test (ATS) it implements.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest
import requests
from psycopg import sql
from pyproj import Transformer

from sdi.web.settings import WebSettings
from tests.publishing.conftest import OGC_LAYERS, REFERENCE, LiveServer

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
HK1980 = EPSG.format(2326)
WGS84 = EPSG.format(4326)
HK_LONLAT = (113.8, 22.1, 114.5, 22.6)  #: Hong Kong (with a margin) in CRS84
PART1 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
PART2_CRS = "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs"
CM_IN_DEGREES = 1e-7  #: ~1.1 cm of latitude; less in longitude at 22° N
#: Around Central and Admiralty: holds the reference point A and Central (B)
CENTRAL_CRS84 = (114.150, 22.275, 114.175, 22.300)
DEFAULT_LIMIT, MAX_LIMIT = (WebSettings.model_fields[n].default for n in ("default_items", "max_items"))


def get(url: str, **params: Any) -> requests.Response:
    return requests.get(url, params={"f": "json", **params}, timeout=30)


def ok(url: str, **params: Any) -> dict[str, Any]:
    response = get(url, **params)
    assert response.status_code == 200, f"{response.url}: {response.status_code} {response.text[:500]}"
    body: dict[str, Any] = response.json()
    return body


def rels(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for link in doc.get("links", []):
        found.setdefault(link["rel"], []).append(link)
    return found


def all_pages(url: str, **params: Any) -> tuple[list[dict[str, Any]], int, int]:
    """Follow ``next`` links from ``url``; (features, numberMatched of page 1, pages read). At most 200 pages."""
    page = ok(url, **params)
    matched, features, pages = int(page["numberMatched"]), list(page["features"]), 1
    while (nxt := rels(page).get("next")) and pages < 200:
        assert len(nxt) == 1
        response = requests.get(nxt[0]["href"], params={"f": "json"}, timeout=30)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["numberMatched"] == matched
        assert page["numberReturned"] == len(page["features"])
        features.extend(page["features"])
        pages += 1
    return features, matched, pages


def stored(live: LiveServer, layer: str, where: str = "true",
           args: tuple[Any, ...] = ()) -> dict[str, tuple[float, float]]:
    """``{id: (st_x, st_y)}`` of the features of ``layer`` (point-on-surface for polygons) matching ``where``."""
    with psycopg.connect(live.settings.database_url) as conn:
        row = conn.execute("select primary_key from sdi.layer where id = %s", (layer,)).fetchone()
        assert row is not None
        rows = conn.execute(sql.SQL(
            "select {pk}::text, st_x(st_pointonsurface(geom)), st_y(st_pointonsurface(geom)) from {table} as t"
            " where " + where).format(pk=sql.Identifier(row[0]), table=sql.Identifier("layers", layer)),
            args).fetchall()
    return {str(fid): (float(x), float(y)) for fid, x, y in rows}


def reference_a(live: LiveServer) -> tuple[str, float, float]:
    """Feature id, easting and northing of code A, as stored in PostGIS."""
    with psycopg.connect(live.settings.database_url) as conn:
        row = conn.execute("select fid::text, st_x(geom), st_y(geom) from layers.landsd_reference"
                           " where code = 'A'").fetchone()
    assert row is not None
    return str(row[0]), float(row[1]), float(row[2])


# --- Part 1: landing page, conformance, OpenAPI ------------------------------------------------------------------

def test_landing_page_links(live: LiveServer) -> None:
    """ATS /conf/core/root-op, /conf/core/root-success: links self, service-desc/service-doc, conformance, data."""
    landing = ok(f"{live.url}/")
    links = rels(landing)
    for rel in ("self", "service-desc", "service-doc", "conformance", "data"):
        assert rel in links, rel
    assert landing.get("title")
    for rel in ("service-desc", "conformance", "data"):
        href = links[rel][0]["href"]
        assert href.startswith(live.url), href
        assert requests.get(href, timeout=30).status_code == 200, href
    assert "openapi" in links["service-desc"][0]["type"]
    doc = requests.get(links["service-doc"][0]["href"], timeout=30)
    assert doc.status_code == 200 and doc.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("conformance_class", [
    PART1 + "core", PART1 + "geojson", PART1 + "html", PART1 + "oas30", PART2_CRS])
def test_conformance_declares(live: LiveServer, conformance_class: str) -> None:
    """ATS /conf/core/conformance-success; Part 2 /conf/crs/conformance."""
    assert conformance_class in ok(f"{live.url}/conformance")["conformsTo"]


def test_openapi_document_lists_collection_paths(live: LiveServer) -> None:
    """ATS /conf/oas30/oas-definition-1..2, /conf/oas30/oas-impl: an OpenAPI 3.0 document with every collection."""
    response = get(f"{live.url}/openapi")
    assert response.status_code == 200
    assert "application/vnd.oai.openapi+json" in response.headers["content-type"]
    doc = response.json()
    assert doc["openapi"].startswith("3.0")
    for path in ("/", "/conformance", "/collections"):
        assert "get" in doc["paths"][path], path
    for layer in OGC_LAYERS:
        for path in ("/collections/{}", "/collections/{}/items", "/collections/{}/items/{{featureId}}"):
            assert "get" in doc["paths"][path.format(layer)], path.format(layer)
    params = doc["paths"][f"/collections/{REFERENCE}/items"]["get"]["parameters"]
    refs = {p.get("$ref", "").rsplit("/", 1)[-1] or p.get("name") for p in params}
    assert {"bbox", "limit", "crs", "bbox-crs"} <= refs


@pytest.mark.parametrize("path", ["/", "/conformance", "/collections", f"/collections/{REFERENCE}",
                                  f"/collections/{REFERENCE}/items", f"/collections/{REFERENCE}/items/1"])
def test_html_encoding(live: LiveServer, path: str) -> None:
    """ATS /conf/html/content, /conf/html/definition: f=html gives an HTML document."""
    response = requests.get(f"{live.url}{path}", params={"f": "html"}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().lower().startswith("<!doctype html")
    assert "</html>" in response.text.lower()


# --- Part 1: collections -----------------------------------------------------------------------------------------

def _check_collection(collection: dict[str, Any], live: LiveServer) -> None:
    links = rels(collection)
    assert "items" in links or any(link["href"].split("?")[0].endswith(f"/{collection['id']}/items")
                                   for link in collection["links"]), collection["id"]
    bbox = collection["extent"]["spatial"]["bbox"][0]
    assert collection["extent"]["spatial"].get("crs", CRS84) == CRS84
    assert len(bbox) == 4
    assert HK_LONLAT[0] <= bbox[0] < bbox[2] <= HK_LONLAT[2] or bbox[0] == bbox[2], bbox
    assert HK_LONLAT[1] <= bbox[1] <= bbox[3] <= HK_LONLAT[3], bbox
    assert collection["crs"][:2] == [CRS84, HK1980]
    assert WGS84 in collection["crs"]
    assert collection["storageCrs"] == HK1980


def test_collections(live: LiveServer) -> None:
    """ATS /conf/core/fc-md-op, /conf/core/fc-md-success, /conf/core/fc-md-items, /conf/core/fc-md-extent;
    Part 2 /conf/crs/fc-md-crs-list, /conf/crs/fc-md-storageCrs."""
    body = ok(f"{live.url}/collections")
    assert "self" in rels(body)
    collections = {c["id"]: c for c in body["collections"]}
    assert set(OGC_LAYERS) <= set(collections)
    for layer in OGC_LAYERS:
        _check_collection(collections[layer], live)


@pytest.mark.parametrize("layer", OGC_LAYERS)
def test_collection(live: LiveServer, layer: str) -> None:
    """ATS /conf/core/sfc-md-op, /conf/core/sfc-md-success: the same description at /collections/{id}."""
    collection = ok(f"{live.url}/collections/{layer}")
    assert collection["id"] == layer
    assert collection.get("itemType", "feature") == "feature"
    assert rels(collection)["self"][0]["href"].split("?")[0].rstrip("/").endswith(f"/collections/{layer}")
    _check_collection(collection, live)
    lon0, lat0, lon1, lat1 = collection["extent"]["spatial"]["bbox"][0]
    to_lonlat = Transformer.from_crs(2326, 4326, always_xy=True)
    for east, north in stored(live, layer).values():  # the extent holds every feature (a point inside each one)
        lon, lat = to_lonlat.transform(east, north)
        assert lon0 - 1e-6 <= lon <= lon1 + 1e-6 and lat0 - 1e-6 <= lat <= lat1 + 1e-6


def test_collection_links_on_this_server(live: LiveServer) -> None:
    """self, alternate, items, queryables and schema links of a collection resolve on this server."""
    collection = ok(f"{live.url}/collections/{REFERENCE}")
    local = [link for link in collection["links"] if link["rel"] not in ("license", "describedby")]
    assert {"self", "alternate", "root"} <= {link["rel"] for link in local}
    for link in local:
        assert link["href"].startswith(live.url), link
        assert requests.get(link["href"], timeout=30).status_code == 200, link


def test_metadata_links_point_at_this_server(live: LiveServer) -> None:
    collection = ok(f"{live.url}/collections/{REFERENCE}")
    described = rels(collection)["describedby"]
    assert {link["type"] for link in described} >= {"application/vnd.iso.19139+xml", "application/ld+json"}
    for link in described:
        assert link["href"].startswith(f"{live.url}/metadata/"), link
        assert requests.get(link["href"], timeout=30).status_code == 200, link


def test_unknown_collection_is_404(live: LiveServer) -> None:
    assert get(f"{live.url}/collections/no_such_layer").status_code == 404
    assert get(f"{live.url}/collections/no_such_layer/items").status_code == 404


# --- Part 1: items -------------------------------------------------------------------------------------------------

def test_items_response(live: LiveServer) -> None:
    """ATS /conf/core/fc-op, /conf/core/fc-response, /conf/geojson/content: a GeoJSON FeatureCollection."""
    response = get(f"{live.url}/collections/public_libraries_2013/items")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in ("application/geo+json", "application/json")
    body = response.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberMatched"] == len(stored(live, "public_libraries_2013"))
    assert body["numberReturned"] == len(body["features"]) == min(DEFAULT_LIMIT, body["numberMatched"])
    assert "self" in rels(body)
    for feature in body["features"]:
        assert feature["type"] == "Feature"
        assert feature["id"] is not None
        assert feature["geometry"]["type"] in ("Point", "MultiPoint")
        assert isinstance(feature["properties"], dict)


@pytest.mark.parametrize("limit", [1, 7, 100, MAX_LIMIT])
def test_limit_within_bounds(live: LiveServer, limit: int) -> None:
    """ATS /conf/core/fc-limit-definition, /conf/core/fc-limit-response-1."""
    body = ok(f"{live.url}/collections/public_libraries_2013/items", limit=limit)
    assert body["numberReturned"] == len(body["features"]) == min(limit, body["numberMatched"])


def test_limit_above_the_maximum_is_clamped(live: LiveServer) -> None:
    """A limit above server.limits.max_items (on_exceed: throttle) is served with the maximum, not refused."""
    body = ok(f"{live.url}/collections/districts_18/items", limit=10**6)
    assert body["numberReturned"] == len(body["features"]) == min(MAX_LIMIT, body["numberMatched"]) == 18


@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1.5"])
def test_limit_out_of_range_is_400(live: LiveServer, limit: str) -> None:
    """ATS /conf/core/query-param-invalid: limit has minimum 1 in the OpenAPI definition."""
    response = get(f"{live.url}/collections/public_libraries_2013/items", limit=limit)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == "InvalidParameterValue"


@pytest.mark.parametrize(("layer", "limit"), [("public_libraries_2013", 7), ("districts_18", 5), (REFERENCE, 1)])
def test_next_links_yield_every_feature_once(live: LiveServer, layer: str, limit: int) -> None:
    """ATS /conf/core/fc-links, /conf/core/fc-response (paging): next links to the end give numberMatched features."""
    features, matched, pages = all_pages(f"{live.url}/collections/{layer}/items", limit=limit)
    ids = [str(f["id"]) for f in features]
    assert len(ids) == matched == len(set(ids))
    assert set(ids) == set(stored(live, layer))
    # pygeoapi also links `next` from a full last page (it checks numberReturned == limit), to an empty page
    assert pages in (math.ceil(matched / limit), matched // limit + 1)


def test_bbox_crs84(live: LiveServer) -> None:
    """ATS /conf/core/fc-bbox-definition, /conf/core/fc-bbox-response: exactly the features in a CRS84 box."""
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    expected = stored(live, "public_libraries_2013",
                      "st_intersects(t.geom, st_transform(st_segmentize(st_makeenvelope(%s, %s, %s, %s, 4326),"
                      " 0.0005), 2326))", (lon0, lat0, lon1, lat1))
    assert expected, "the test box should hold libraries"
    features, matched, _ = all_pages(f"{live.url}/collections/public_libraries_2013/items",
                                     bbox=",".join(map(str, CENTRAL_CRS84)), limit=3)
    assert {str(f["id"]) for f in features} == set(expected)
    assert matched == len(expected)
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"][:2]
        assert lon0 <= lon <= lon1 and lat0 <= lat <= lat1
    reference = ok(f"{live.url}/collections/{REFERENCE}/items", bbox=",".join(map(str, CENTRAL_CRS84)))
    assert {f["properties"]["code"] for f in reference["features"]} == {"A", "B"}
    outside = ok(f"{live.url}/collections/{REFERENCE}/items", bbox="114.20,22.30,114.30,22.40")
    assert outside["numberMatched"] == outside["numberReturned"] == 0 and outside["features"] == []


@pytest.mark.parametrize("bbox", ["114.1,22.2,114.2", "a,b,c,d", "114.1,22.2,114.2,22.3,1"])
def test_invalid_bbox_is_400(live: LiveServer, bbox: str) -> None:
    """ATS /conf/core/query-param-invalid for bbox."""
    assert get(f"{live.url}/collections/{REFERENCE}/items", bbox=bbox).status_code == 400


@pytest.mark.parametrize("value", ["2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z/..", "../2030-12-31T23:59:59Z",
                                   "2020-01-01T00:00:00Z/2030-12-31T23:59:59Z"])
def test_datetime_is_accepted(live: LiveServer, value: str) -> None:
    """ATS /conf/core/fc-time-definition: no layer here has a temporal property, so a valid datetime filters nothing."""
    body = ok(f"{live.url}/collections/{REFERENCE}/items", datetime=value)
    assert body["numberMatched"] == 2


@pytest.mark.parametrize("value", ["not-a-date", "2020-13-45T99:00:00Z", "2020-01-01T00:00:00Z/x"])
def test_invalid_datetime_is_400(live: LiveServer, value: str) -> None:
    """ATS /conf/core/query-param-invalid for datetime."""
    assert get(f"{live.url}/collections/{REFERENCE}/items", datetime=value).status_code == 400


@pytest.mark.parametrize("sortby", ["", ",", "code,,name"])
def test_empty_sortby_is_400(live: LiveServer, sortby: str) -> None:
    """ATS /conf/core/query-param-invalid (found by schemathesis in test_clients.py)."""
    assert get(f"{live.url}/collections/{REFERENCE}/items", sortby=sortby).status_code == 400


def test_sortby(live: LiveServer) -> None:
    body = ok(f"{live.url}/collections/{REFERENCE}/items", sortby="-code")
    codes = [f["properties"]["code"] for f in body["features"]]
    assert codes == ["B", "A"]
    assert get(f"{live.url}/collections/{REFERENCE}/items", sortby="no_such_column").status_code == 400


@pytest.mark.parametrize("param", ["limt", "bbox_crs", "crs84"])
def test_unknown_parameter_is_400(live: LiveServer, param: str) -> None:
    """ATS /conf/core/query-param-unknown."""
    response = get(f"{live.url}/collections/{REFERENCE}/items", **{param: "1"})
    assert response.status_code == 400
    assert repr(param) in response.json()["description"]


def test_feature(live: LiveServer) -> None:
    """ATS /conf/core/f-op, /conf/core/f-success: /items/{id} gives the feature, with a self link to itself."""
    fid, _, _ = reference_a(live)
    body = ok(f"{live.url}/collections/{REFERENCE}/items/{fid}")
    assert body["type"] == "Feature" and str(body["id"]) == fid
    assert body["properties"]["code"] == "A"
    links = rels(body)
    assert "collection" in links
    self_href = links["self"][0]["href"]
    assert self_href.split("?")[0] == f"{live.url}/collections/{REFERENCE}/items/{fid}"
    again = requests.get(self_href, timeout=30)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert get(f"{live.url}/collections/{REFERENCE}/items/999999").status_code == 404
    assert get(f"{live.url}/collections/{REFERENCE}/items/not-an-id").status_code == 404


def test_items_are_their_own_features(live: LiveServer) -> None:
    """Every feature of a page is served again, equal, at /items/{id}."""
    for feature in ok(f"{live.url}/collections/public_libraries_2013/items", limit=5)["features"]:
        single = ok(f"{live.url}/collections/public_libraries_2013/items/{feature['id']}")
        assert single["id"] == feature["id"]
        assert single["geometry"] == feature["geometry"]
        assert single["properties"] == feature["properties"]


# --- Part 2: CRS by reference -------------------------------------------------------------------------------------

def test_default_crs_is_crs84_with_content_crs(live: LiveServer) -> None:
    """Part 2 /conf/crs/ogc-crs-header (default), Part 1 /conf/geojson: lon,lat in CRS84 within 1 cm."""
    fid, east, north = reference_a(live)
    response = get(f"{live.url}/collections/{REFERENCE}/items/{fid}")
    assert response.headers["Content-Crs"] == f"<{CRS84}>"
    lon, lat = response.json()["geometry"]["coordinates"]
    want_lon, want_lat = Transformer.from_crs(2326, 4326, always_xy=True).transform(east, north)
    assert abs(lon - want_lon) <= CM_IN_DEGREES and abs(lat - want_lat) <= CM_IN_DEGREES
    assert abs(lon - 114.168562005) <= CM_IN_DEGREES and abs(lat - 22.294313001) <= CM_IN_DEGREES  # LandsD


@pytest.mark.parametrize("single", [False, True], ids=["items", "item"])
@pytest.mark.parametrize("crs", [HK1980, WGS84, CRS84])
def test_crs_axis_order_and_content_crs(live: LiveServer, crs: str, single: bool) -> None:
    """Part 2 /conf/crs/fc-crs-definition, /conf/crs/fc-crs-valid-value, /conf/crs/f-crs-*, /conf/crs/ogc-crs-header:
    coordinates in the axis order of the CRS (EPSG:2326 northing,easting; EPSG:4326 lat,lon; CRS84 lon,lat)."""
    fid, east, north = reference_a(live)
    url = f"{live.url}/collections/{REFERENCE}/items" + (f"/{fid}" if single else "")
    response = get(url, crs=crs)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Crs"] == f"<{crs}>"
    body = response.json()
    feature = body if single else next(f for f in body["features"] if str(f["id"]) == fid)
    first, second = feature["geometry"]["coordinates"]
    if crs == HK1980:
        assert abs(first - north) <= 0.01 and abs(second - east) <= 0.01, (first, second, north, east)
        assert abs(first - 817266.016) <= 0.01 and abs(second - 835411.431) <= 0.01  # the LandsD values
        return
    lon, lat = Transformer.from_crs(2326, 4326, always_xy=True).transform(east, north)
    want = (lat, lon) if crs == WGS84 else (lon, lat)
    assert abs(first - want[0]) <= CM_IN_DEGREES and abs(second - want[1]) <= CM_IN_DEGREES, (first, second, want)


def test_every_point_in_hk1980_matches_postgis(live: LiveServer) -> None:
    """crs=EPSG:2326 returns the stored coordinates (st_y, st_x) of every library within 1 cm."""
    features, _, _ = all_pages(f"{live.url}/collections/public_libraries_2013/items", crs=HK1980, limit=MAX_LIMIT)
    want = stored(live, "public_libraries_2013")
    assert len(features) == len(want)
    for feature in features:
        coords = feature["geometry"]["coordinates"]
        north, east = coords[0] if feature["geometry"]["type"] == "MultiPoint" else coords
        x, y = want[str(feature["id"])]
        assert abs(north - y) <= 0.01 and abs(east - x) <= 0.01


def test_bbox_crs_hk1980_selects_like_crs84(live: LiveServer) -> None:
    """Part 2 /conf/crs/fc-bbox-crs-action: a northing-first EPSG:2326 bbox of the area around Central selects the
    same features as the CRS84 bbox of that area (and exactly those stored inside it)."""
    to_grid = Transformer.from_crs(4326, 2326, always_xy=True)
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    e0, n0 = to_grid.transform(lon0, lat0)
    e1, n1 = to_grid.transform(lon1, lat1)
    grid_bbox = f"{n0},{e0},{n1},{e1}"  # EPSG:2326 axis order: northing first
    expected = stored(live, "public_libraries_2013", "st_intersects(t.geom, st_makeenvelope(%s, %s, %s, %s, 2326))",
                      (e0, n0, e1, n1))
    for layer in ("public_libraries_2013", REFERENCE):
        grid, grid_matched, _ = all_pages(f"{live.url}/collections/{layer}/items", bbox=grid_bbox,
                                          **{"bbox-crs": HK1980}, limit=50)
        lonlat, lonlat_matched, _ = all_pages(f"{live.url}/collections/{layer}/items",
                                              bbox=",".join(map(str, CENTRAL_CRS84)), limit=50)
        assert grid_matched == lonlat_matched and grid_matched > 0
        assert {str(f["id"]) for f in grid} == {str(f["id"]) for f in lonlat}
        if layer == REFERENCE:
            assert {f["properties"]["code"] for f in grid} == {"A", "B"}
        else:
            assert {str(f["id"]) for f in grid} == set(expected)
    easting_first = ok(f"{live.url}/collections/{REFERENCE}/items", bbox=f"{e0},{n0},{e1},{n1}",
                       **{"bbox-crs": HK1980})
    assert easting_first["numberMatched"] == 0  # easting-first values are a box far outside Hong Kong


@pytest.mark.parametrize(("param", "value"), [
    ("crs", "EPSG:2326"), ("crs", EPSG.format(2000)), ("crs", "http://www.opengis.net/def/crs/EPSG/0/32650"),
    ("bbox-crs", EPSG.format(2000))])
def test_unsupported_crs_is_400(live: LiveServer, param: str, value: str) -> None:
    """Part 2 /conf/crs/fc-crs-valid-value, /conf/crs/fc-bbox-crs-valid-value: a CRS not in the list is a 400."""
    params = {param: value, **({"bbox": "1,2,3,4"} if param == "bbox-crs" else {})}
    response = get(f"{live.url}/collections/{REFERENCE}/items", **params)
    assert response.status_code == 400, response.text[:300]
    single = get(f"{live.url}/collections/{REFERENCE}/items/1", **params) if param == "crs" else None
    assert single is None or single.status_code == 400


@pytest.mark.parametrize("lang", [None, "cql2-text"])
def test_cql2_text_filter_pages_like_ecql(live: LiveServer, lang: str | None) -> None:
    """OGC API – Features Part 3: a CQL2-text ``filter`` (``filter-lang=cql2-text`` or none) selects what the
    same ECQL filter selects, on every page reached through ``next`` links (which pygeoapi 0.21 builds)."""
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    poly = f"POLYGON(({lon0} {lat0}, {lon1} {lat0}, {lon1} {lat1}, {lon0} {lat1}, {lon0} {lat0}))"
    expected = stored(live, "public_libraries_2013",
                      "st_intersects(t.geom, st_transform(st_makeenvelope(%s, %s, %s, %s, 4326), 2326))",
                      (lon0, lat0, lon1, lat1))
    assert len(expected) >= 2, "the test box should hold two pages of libraries"
    url = f"{live.url}/collections/public_libraries_2013/items"
    extra = {"filter-lang": lang} if lang else {}
    cql2, matched, pages = all_pages(url, filter=f"S_INTERSECTS(geom, {poly})", limit=1, **extra)
    ecql, _, _ = all_pages(url, filter=f"INTERSECTS(geom, {poly})", limit=1)
    assert pages > 1
    assert {str(f["id"]) for f in cql2} == {str(f["id"]) for f in ecql} == set(expected) and matched == len(expected)
    bad = get(url, filter=f"S_INTERSECTS(geom, {poly}", **extra)
    assert bad.status_code == 400 and "CQL" in bad.text
