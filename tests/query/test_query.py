"""The query core (sdi.query) against a real PostGIS: parameters, statements, CRS axis order, exact boxes, CQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pyproj
import pytest

from sdi.errors import CrsError, QueryError
from sdi.query.layer import LayerMeta
from sdi.query.params import Limits, feature_key, parse_item, parse_items
from sdi.query.statements import hits_statement, item_statement, page_statement
from tests.conftest import DATA, loaded_database

pytestmark = pytest.mark.db

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}".format
LANDSD_EN = (835411.431, 817266.016)  # easting, northing
LANDSD_LONLAT = (114.168562005, 22.294313001)
CENTRAL_CRS84 = [114.150, 22.276, 114.165, 22.290]  # lon/lat box around Central
M_PER_DEG_LAT, M_PER_DEG_LON = 110_770.0, 102_900.0  # at 22.3° N


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a database holding the LandsD points, the public libraries, the 18 districts and the industrial
    special waivers (a layer with a date column)."""
    with loaded_database(("public_libraries_2013", "districts_18", "industrial_special_waivers"),
                         definitions=[DATA / "publishing" / "landsd_reference.yml"],
                         data_dir=tmp_path_factory.mktemp("store")) as settings:
        yield settings.database_url


@pytest.fixture(scope="module")
def conn(database: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to :func:`database`."""
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


def layer(conn: psycopg.Connection, layer_id: str) -> LayerMeta:
    meta = LayerMeta.read(conn, layer_id)
    assert meta is not None, layer_id
    return meta


def page(conn: psycopg.Connection, layer_id: str, **params: Any) -> dict[str, Any]:
    """One items page through the statement the API runs, as the document the API writes."""
    meta = layer(conn, layer_id)
    query = parse_items({k: str(v) for k, v in params.items()}, meta, Limits(10, 1000))
    if query.hits:
        statement = hits_statement(meta, query)
        row = conn.execute(statement.query, statement.params).fetchone()
        return {"numberMatched": row[0] if row else 0, "features": []}
    statement = page_statement(meta, query)
    rows = conn.execute(statement.query, statement.params).fetchall()
    features = json.loads("[" + ",".join(r[2] for r in rows if r[2]) + "]")
    return {"numberMatched": rows[0][0], "numberReturned": sum(r[1] or 0 for r in rows), "features": features}


def landsd(features: list[dict[str, Any]]) -> list[float]:
    return next(f for f in features if f["properties"]["code"] == "A")["geometry"]["coordinates"]


@pytest.mark.parametrize("crs", [None, CRS84, EPSG(4326), EPSG(2326), EPSG(3857)])
def test_landsd_point_in_every_crs_in_that_crs_axis_order(conn: psycopg.Connection, crs: str | None) -> None:
    got = landsd(page(conn, "landsd_reference", **({"crs": crs} if crs else {}))["features"])
    lon, lat = LANDSD_LONLAT
    if crs in (None, CRS84):
        assert abs(got[0] - lon) * M_PER_DEG_LON < 0.01 and abs(got[1] - lat) * M_PER_DEG_LAT < 0.01, got
        assert len(str(got[0]).split(".")[1]) <= 7
    elif crs == EPSG(4326):
        assert abs(got[0] - lat) * M_PER_DEG_LAT < 0.01 and abs(got[1] - lon) * M_PER_DEG_LON < 0.01, got
    elif crs == EPSG(2326):
        assert got == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)  # northing first
    else:
        x, y = pyproj.Transformer.from_crs(2326, 3857, always_xy=True).transform(*LANDSD_EN)
        assert got == pytest.approx([x, y], abs=0.02)


def test_item_by_id_and_unknown_id(conn: psycopg.Connection) -> None:
    meta = layer(conn, "landsd_reference")
    fid = next(f["id"] for f in page(conn, "landsd_reference")["features"] if f["properties"]["code"] == "A")
    statement = item_statement(meta, feature_key(meta, str(fid)), parse_item({"crs": EPSG(2326)}, meta))
    one = json.loads(conn.execute(statement.query, statement.params).fetchone()[0])
    assert one["type"] == "Feature" and one["id"] == fid
    assert one["geometry"]["coordinates"] == pytest.approx([LANDSD_EN[1], LANDSD_EN[0]], abs=0.01)
    assert feature_key(meta, "abc") is None  # not a key of a bigint column: the API answers 404
    missing = item_statement(meta, 999999, parse_item({}, meta))
    assert conn.execute(missing.query, missing.params).fetchone() is None


def test_counts_paging_and_hits(conn: psycopg.Connection) -> None:
    assert page(conn, "public_libraries_2013", resulttype="hits")["numberMatched"] == 260
    seen: list[int] = []
    for offset in range(0, 300, 70):
        body = page(conn, "public_libraries_2013", offset=offset, limit=70)
        assert body["numberMatched"] == 260
        assert body["numberReturned"] == len(body["features"])
        seen += [f["id"] for f in body["features"]]
    assert seen == sorted(seen) and len(set(seen)) == 260
    empty = page(conn, "public_libraries_2013", offset=1000)
    assert empty["features"] == [] and empty["numberMatched"] == 260
    filtered = page(conn, "public_libraries_2013", bbox=",".join(map(str, CENTRAL_CRS84)), offset=1000)
    assert filtered["features"] == [] and 0 < filtered["numberMatched"] < 260  # counted even past the end


def test_sortby_properties_select_and_skip_geometry(conn: psycopg.Connection) -> None:
    meta = layer(conn, "public_libraries_2013")
    assert meta.schema()["fid"] == {"type": "integer"} and meta.schema()["easting"] == {"type": "number"}
    assert meta.schema()["name_zh"] == {"type": "string"} and "geom" not in meta.schema()
    names = [f["properties"]["english_name"] for f in page(conn, "public_libraries_2013", limit=300,
                                                            sortby="-english_name")["features"]]
    assert names == sorted(names, reverse=True)
    district = page(conn, "public_libraries_2013", limit=1)["features"][0]["properties"]["district"]
    body = page(conn, "public_libraries_2013", limit=300, district=district, properties="district,english_name",
                skipGeometry="true")
    assert 0 < body["numberMatched"] == len(body["features"]) < 260
    assert all(f["geometry"] is None and set(f["properties"]) == {"district", "english_name"}
               and f["properties"]["district"] == district for f in body["features"])
    assert page(conn, "public_libraries_2013", q="central", limit=300)["numberMatched"] >= 1


@pytest.mark.parametrize(("params", "names"), [
    ({"fid": "not-a-number"}, "fid"), ({"sortby": "nope"}, "sortby"), ({"properties": "nope"}, "properties"),
    ({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"), ({"offset": "-1"}, "offset"),
    ({"bbox": "1,2,3"}, "bbox"), ({"bbox": "114.2,22.3,114.1,22.4"}, "bbox"), ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "nan,22,114,23"}, "bbox"), ({"bbox-crs": EPSG(2326)}, "bbox-crs"),
    ({"bbox": "1,2,3,4", "bbox-crs": EPSG(2000)}, "bbox-crs"), ({"crs": EPSG(32650)}, "crs"),
    ({"datetime": "not-a-date"}, "datetime"), ({"datetime": "2021-01-01/2020-01-01"}, "datetime"),
    ({"filter": "code = = 'A'"}, "filter"), ({"filter": "nope = 1"}, "filter"), ({"limt": "5"}, "limt"),
    ({"skipGeometry": "maybe"}, "skipGeometry"), ({"resulttype": "all"}, "resulttype"),
    ({"filter": "code = 'A'", "filter-lang": "sql"}, "filter-lang"), ({"code": "A\x00"}, "code"),
])
def test_bad_parameters_name_themselves(conn: psycopg.Connection, params: dict[str, str], names: str) -> None:
    meta = layer(conn, "landsd_reference" if "code" in params else "public_libraries_2013")
    with pytest.raises((QueryError, CrsError), match=names):
        parse_items(params, meta, Limits(10, 1000))


def test_limit_is_clamped_to_the_maximum(conn: psycopg.Connection) -> None:
    meta = layer(conn, "districts_18")
    assert parse_items({"limit": "1000000"}, meta, Limits(10, 1000)).limit == 1000
    assert parse_items({}, meta, Limits(10, 1000)).limit == 10


def _bbox_ids(conn: psycopg.Connection, bbox: list[float], bbox_crs: str) -> set[int]:
    body = page(conn, "public_libraries_2013", bbox=",".join(map(repr, bbox)), limit=1000, **{"bbox-crs": bbox_crs})
    return {f["id"] for f in body["features"]}


def test_bbox_in_crs84_and_in_hk1980_northing_first_select_the_same(conn: psycopg.Connection) -> None:
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    to_grid = pyproj.Transformer.from_crs(4326, 2326, always_xy=True)
    e0, n0 = to_grid.transform(lon0, lat0)
    e1, n1 = to_grid.transform(lon1, lat1)
    in_crs84 = _bbox_ids(conn, CENTRAL_CRS84, CRS84)
    assert 0 < len(in_crs84) < 260
    assert _bbox_ids(conn, [n0, e0, n1, e1], EPSG(2326)) == in_crs84  # bbox-crs=EPSG:2326: northing first (OGC)
    assert _bbox_ids(conn, [lat0, lon0, lat1, lon1], EPSG(4326)) == in_crs84
    points = page(conn, "landsd_reference", bbox=",".join(map(str, CENTRAL_CRS84)))
    assert [f["properties"]["code"] for f in points["features"]] == ["B"]


def test_a_wide_lonlat_box_is_exact_at_its_edges(conn: psycopg.Connection) -> None:
    """A box whose southern parallel runs 2 m south of the LandsD point: in the grid that parallel bows north
    away from the central meridian, so a box through the two corners (or a coarse one) would miss the point."""
    south = LANDSD_LONLAT[1] - 2 / M_PER_DEG_LAT
    for bbox, crs in (([113.80, south, 114.50, 22.60], CRS84), ([south, 113.80, 22.60, 114.50], EPSG(4326))):
        body = page(conn, "landsd_reference", bbox=",".join(map(repr, bbox)), **{"bbox-crs": crs})
        assert [f["properties"]["code"] for f in body["features"]] == ["A"]
    north = LANDSD_LONLAT[1] + 2 / M_PER_DEG_LAT  # and 2 m north of it, the point is outside
    body = page(conn, "landsd_reference", bbox=f"113.8,{north!r},114.5,22.6")
    assert "A" not in [f["properties"]["code"] for f in body["features"]]


@pytest.mark.parametrize("bbox", ["-180,-90,180,90", "0,-90,180,90", "113,22,115,23"])
def test_boxes_wider_than_hong_kong_select_every_feature(conn: psycopg.Connection, bbox: str) -> None:
    assert page(conn, "districts_18", bbox=bbox, limit=1)["numberMatched"] == 18
    world = "-20037508,-20037508,20037508,20037508"
    assert page(conn, "districts_18", bbox=world, limit=1, **{"bbox-crs": EPSG(3857)})["numberMatched"] == 18


def test_boxes_away_from_hong_kong_select_nothing(conn: psycopg.Connection) -> None:
    assert page(conn, "districts_18", bbox="-10,40,10,50")["numberMatched"] == 0
    assert page(conn, "districts_18", bbox="120.5,22,121,23")["numberMatched"] == 0


def test_cql_filters(conn: psycopg.Connection) -> None:
    def codes(text: str, crs: str | None = None, lang: str | None = None) -> list[str]:
        params = {"filter": text, **({"filter-crs": crs} if crs else {}), **({"filter-lang": lang} if lang else {})}
        return sorted(f["properties"]["code"] for f in page(conn, "landsd_reference", **params)["features"])

    assert codes("name_zh = '中環'") == ["B"]
    assert codes("code <> 'B' AND name LIKE 'Lands%'") == ["A"]
    assert codes("code LIKE '_'") == ["A", "B"]  # '_' is one character
    assert codes("code IN ('A', 'B') AND NOT code = 'A'") == ["B"]
    assert codes("fid BETWEEN 1 AND 2") == ["A", "B"]
    assert codes("name IS NULL OR name ILIKE 'central'") == ["B"]
    assert codes("CASEI(name) = casei('CENTRAL')") == ["B"]
    assert codes("fid + 1 = 3") == ["B"]
    lon0, lat0, lon1, lat1 = CENTRAL_CRS84
    poly84 = f"POLYGON(({lon0} {lat0}, {lon1} {lat0}, {lon1} {lat1}, {lon0} {lat1}, {lon0} {lat0}))"
    assert codes(f"S_INTERSECTS(geom, {poly84})") == ["B"]
    assert codes(f"INTERSECTS(geom, {poly84})") == ["B"]
    assert codes(f"S_INTERSECTS(geom, BBOX({lon0},{lat0},{lon1},{lat1}))") == ["B"]
    assert codes(f"WITHIN(geom, {poly84})") == ["B"]
    assert codes(f"DISJOINT(geom, {poly84})") == ["A"]
    e, n = LANDSD_EN  # a 2 m square around the LandsD point, in EPSG:2326 axis order (northing easting)
    square = f"POLYGON(({n - 1} {e - 1}, {n - 1} {e + 1}, {n + 1} {e + 1}, {n + 1} {e - 1}, {n - 1} {e - 1}))"
    assert codes(f"S_INTERSECTS(geom, {square})", EPSG(2326)) == ["A"]
    assert codes(f"DWITHIN(geom, POINT({LANDSD_LONLAT[0]} {LANDSD_LONLAT[1]}), 5, meters)") == ["A"]
    as_json = {"op": "s_intersects", "args": [{"property": "geom"}, {"bbox": [lon0, lat0, lon1, lat1]}]}
    assert codes(json.dumps(as_json), lang="cql2-json") == ["B"]
    assert codes(json.dumps({"op": "=", "args": [{"property": "code"}, "A"]}), lang="cql2-json") == ["A"]
    hit = page(conn, "districts_18", filter=f"S_CONTAINS(geom, POINT({LANDSD_LONLAT[0]} {LANDSD_LONLAT[1]}))")
    assert [f["properties"]["name_en"] for f in hit["features"]] == ["YAU TSIM MONG"]


def test_a_filter_comparing_text_with_a_number_fails_in_postgresql(conn: psycopg.Connection) -> None:
    """The web layer turns this SQLSTATE into a 400 (sdi.web.runtime); the statement itself must not run."""
    meta = layer(conn, "landsd_reference")
    statement = page_statement(meta, parse_items({"filter": "code = 1"}, meta))
    with pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute(statement.query, statement.params)


def test_filters_that_are_too_big_are_refused(conn: psycopg.Connection) -> None:
    meta = layer(conn, "landsd_reference")
    deep = " OR ".join(f"fid = {i}" for i in range(300))
    with pytest.raises(QueryError, match="levels deep"):
        parse_items({"filter": deep}, meta)
    wide = "fid IN (" + ",".join(map(str, range(1500))) + ")"
    with pytest.raises(QueryError, match="more than"):
        parse_items({"filter": wide}, meta)
    fine = " OR ".join(f"fid = {i}" for i in range(150))
    assert page_statement(meta, parse_items({"filter": fine}, meta))
    with pytest.raises(QueryError, match="longer than"):
        parse_items({"filter": "code = '" + "x" * 30_000 + "'"}, meta)


def test_datetime_filters_the_first_date_column(conn: psycopg.Connection, tmp_path: Any) -> None:
    """Layers without a date column accept and ignore ``datetime`` (OGC API – Features /req/core/fc-time-response)."""
    meta = layer(conn, "landsd_reference")
    assert meta.time_field is None
    assert page(conn, "landsd_reference", datetime="2020-01-01T00:00:00Z/..")["numberMatched"] == 2


@pytest.mark.parametrize("zone", ["Etc/UTC", "Asia/Hong_Kong", "America/Los_Angeles"])
def test_datetime_and_temporal_filters_on_a_layer_with_dates(database: str, zone: str) -> None:
    """``datetime`` and temporal filters select the same days whatever the session's ``TimeZone`` (a date column
    compared with UTC date-times used to lose the first day of an interval east of UTC)."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("select set_config('timezone', %s, false)", (zone,))
        assert conn.execute("show timezone").fetchone() == (zone,)
        _dated_layer_filters(conn)


def _dated_layer_filters(conn: psycopg.Connection) -> None:
    meta = layer(conn, "industrial_special_waivers")
    column = meta.time_field
    assert column is not None and meta.columns[column] == "date"

    def truth(where: str) -> int:
        row = conn.execute(f"select count(*) from layers.industrial_special_waivers where {where}").fetchone()
        return int(row[0]) if row else -1

    in_2010 = truth(f"{column} between '2010-01-01' and '2010-12-31'")
    assert 0 < in_2010 < truth("true")
    assert page(conn, "industrial_special_waivers", datetime="2010-01-01/2010-12-31")["numberMatched"] == in_2010
    assert page(conn, "industrial_special_waivers",
                datetime="2010-01-01T00:00:00Z/2010-12-31T23:59:59Z")["numberMatched"] == in_2010
    since = truth(f"{column} >= '2015-01-01'")
    assert page(conn, "industrial_special_waivers", datetime="2015-01-01T00:00:00Z/..")["numberMatched"] == since
    day = conn.execute(f"select min({column}) from layers.industrial_special_waivers").fetchone()[0]
    assert page(conn, "industrial_special_waivers", datetime=day.isoformat())["numberMatched"] == \
        truth(f"{column} = '{day.isoformat()}'")
    text = f"{column} >= DATE('2015-01-01')"
    assert page(conn, "industrial_special_waivers", filter=text)["numberMatched"] == since
    ecql = f"{column} AFTER 2014-12-31T23:59:59Z"
    assert page(conn, "industrial_special_waivers", filter=ecql)["numberMatched"] == since
    on_day = truth(f"{column} = '{day.isoformat()}'")
    assert page(conn, "industrial_special_waivers", datetime=f"{day.isoformat()}T10:00:00Z")["numberMatched"] == \
        on_day
    during = f"{column} DURING 2010-01-01T00:00:00Z/2010-12-31T23:59:59Z"
    assert page(conn, "industrial_special_waivers", filter=during, **{"filter-lang": "ecql"})["numberMatched"] == \
        truth(f"{column} > '2010-01-01' and {column} < '2010-12-31'")


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_datetime_beyond_the_calendar_in_utc_names_datetime(conn: psycopg.Connection, value: str) -> None:
    """The check is shared with ``filter``, whose name it used to give."""
    with pytest.raises(QueryError, match=r"^datetime: .* is out of range"):
        page(conn, "industrial_special_waivers", datetime=value)
