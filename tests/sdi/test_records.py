"""OGC API – Records over the catalogue: the pygeoapi provider directly, then through a real pygeoapi server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from babel import Locale
from pygeoapi.provider.base import ProviderInvalidQueryError, ProviderItemNotFoundError

from sdi.catalogue.records_provider import CatalogueRecordsProvider, parse_interval
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database
from tests.live_server import sdi_server

SAMPLES = ["district_council_2001", "districts_18", "landslide_incidents", "public_libraries_2013",
           "public_hospitals_2013", "weather_stations", "oil_storage_installations", "traffic_hotzone_streets",
           "industrial_special_waivers", "country_parks"]
PROVIDER = "sdi.catalogue.records_provider.CatalogueRecordsProvider"


@pytest.fixture(scope="module")
def catalogue_url(database_url: str) -> Iterator[str]:
    """A database holding the sample layers only (other tests load other layers into theirs)."""
    with loaded_database(SAMPLES) as settings:
        yield settings.database_url


@pytest.fixture
def provider(catalogue_url: str) -> CatalogueRecordsProvider:
    return CatalogueRecordsProvider({"name": PROVIDER, "type": "record", "data": catalogue_url,
                                     "languages": ["en-US", "zh-HK"]})


def ids(collection: dict[str, Any]) -> list[str]:
    return [f["id"] for f in collection["features"]]


def zh_title(layer_id: str) -> str:
    title = read_definition(LAYERS / f"{layer_id}.yml").title.zh
    assert title
    return title


# --- the provider directly -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "expected"), [("landslide", "landslide_incidents"), ("選區", "district_council_2001"),
                                             ("圖書館", "public_libraries_2013")])
def test_q_in_english_and_chinese_ranks_expected_record_first(provider: CatalogueRecordsProvider, q: str,
                                                              expected: str) -> None:
    result = provider.query(q=q, limit=5)
    assert ids(result)[0] == expected
    assert result["numberMatched"] < len(SAMPLES)  # a search, not everything


def test_record_follows_the_records_schema(provider: CatalogueRecordsProvider) -> None:
    record = provider.get("weather_stations")
    props = record["properties"]
    assert record["type"] == "Feature" and record["id"] == "weather_stations"
    assert props["type"] == "dataset" and props["title"] == "Network of weather stations in Hong Kong"
    assert props["themes"][0]["concepts"] == [{"id": "climatologyMeteorologyAtmosphere"}]
    assert props["contacts"] == [{"organization": "Hong Kong Observatory", "roles": ["custodian"]}]
    assert props["formats"][0]["mediaType"] == "application/geo+json" and props["license"]
    ring = record["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and 113.8 < ring[0][0] < 114.5 and 22.1 < ring[0][1] < 22.6
    start, end = record["time"]["interval"]
    assert start.startswith("2021-01-19") and end.startswith("2021-01-20")
    hrefs = {link["href"] for link in record["links"] if link["rel"] == "describedby"}
    assert any(h.endswith("/metadata/weather_stations.xml") for h in hrefs)
    assert any(h.endswith("/metadata/weather_stations.jsonld") for h in hrefs)


def test_bbox_returns_records_whose_extent_intersects(provider: CatalogueRecordsProvider) -> None:
    box = (113.85, 22.20, 113.95, 22.30)  # western Lantau: no Kowloon-only layers
    everything = provider.query(limit=100)["features"]

    def hits(feature: dict[str, Any]) -> bool:
        ring = feature["geometry"]["coordinates"][0]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        return min(xs) <= box[2] and max(xs) >= box[0] and min(ys) <= box[3] and max(ys) >= box[1]

    expected = {f["id"] for f in everything if hits(f)}
    result = provider.query(bbox=list(box), limit=100)
    assert set(ids(result)) == expected and 0 < len(expected) < len(SAMPLES)
    assert "traffic_hotzone_streets" not in expected
    assert provider.query(bbox=[0, 0, 1, 1])["numberMatched"] == 0


@pytest.mark.parametrize(("interval", "expected"), [
    ("2021-01-01/2021-12-31", {"weather_stations", "industrial_special_waivers"}),  # the latter spans 2010-2022
    ("2009-06", {"country_parks"}),
    ("2022-01-01/..", {"industrial_special_waivers", "oil_storage_installations"}),
    ("../2009-12-31", {"country_parks"}),
    ("1990-01-01/1990-12-31", set()),
])
def test_datetime_intersects_temporal_extent(provider: CatalogueRecordsProvider, interval: str,
                                             expected: set[str]) -> None:
    result = provider.query(datetime_=interval, limit=100)
    assert set(ids(result)) == expected and result["numberMatched"] == len(expected)


def test_parse_interval_covers_partial_dates() -> None:
    start, end = parse_interval("2010-02")
    assert (start.day, end.month, end.day, end.hour) == (1, 2, 28, 23)
    with pytest.raises(ProviderInvalidQueryError):
        parse_interval("not a date")
    with pytest.raises(ProviderInvalidQueryError):
        parse_interval("2020-01-01/2019-01-01")


def test_property_filters(provider: CatalogueRecordsProvider) -> None:
    assert set(ids(provider.query(properties=[("theme", "boundaries")], limit=100))) == {
        "district_council_2001", "districts_18"}
    assert ids(provider.query(properties=[("custodian", "hong kong observatory")])) == ["weather_stations"]
    assert provider.query(properties=[("synthetic", "true")])["numberMatched"] == 0
    assert provider.query(properties=[("synthetic", "false")], limit=1)["numberMatched"] == len(SAMPLES)
    points = provider.query(properties=[("geometry_type", "point"), ("kind", "vector")], limit=100)
    assert points["numberMatched"] >= 5
    assert {f["properties"]["geometry_type"] for f in points["features"]} == {"Point"}
    with pytest.raises(ProviderInvalidQueryError, match="synthetic"):
        provider.query(properties=[("synthetic", "perhaps")])
    stations = provider.query(properties=[("feature_count", "49")], limit=100)
    assert "weather_stations" in ids(stations)
    for not_ascii in ("４９", "٤٩", "4_9", "0x31"):  # int() reads the first three as 49
        with pytest.raises(ProviderInvalidQueryError, match="feature_count: expected an integer"):
            provider.query(properties=[("feature_count", not_ascii)])


def test_sortby_and_paging_agree(provider: CatalogueRecordsProvider) -> None:
    counts = [f["properties"]["feature_count"] for f in provider.query(sortby=[
        {"property": "feature_count", "order": "-"}], limit=100)["features"]]
    assert counts == sorted(counts, reverse=True) and len(counts) == len(SAMPLES)
    titles = [f["properties"]["title"] for f in provider.query(sortby=[{"property": "title", "order": "+"}],
                                                                limit=100)["features"]]
    assert titles == sorted(titles, key=str.casefold)
    pages = [provider.query(sortby=[{"property": "title", "order": "+"}], limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert [p["numberReturned"] for p in pages] == [3, 3, 3, 1]
    assert {p["numberMatched"] for p in pages} == {len(SAMPLES)}
    assert [f["properties"]["title"] for p in pages for f in p["features"]] == titles


def test_paging_without_sort(provider: CatalogueRecordsProvider) -> None:
    first, last = provider.query(limit=4), provider.query(limit=4, offset=8)
    assert first["numberMatched"] == last["numberMatched"] == len(SAMPLES)
    assert last["numberReturned"] == 2 and not set(ids(first)) & set(ids(last))
    hits = provider.query(resulttype="hits")
    assert hits["numberMatched"] == len(SAMPLES) and hits["features"] == []


def test_get_unknown_id_is_not_found(provider: CatalogueRecordsProvider) -> None:
    with pytest.raises(ProviderItemNotFoundError):
        provider.get("no_such_layer")


def test_language_zh_hk_returns_chinese(provider: CatalogueRecordsProvider) -> None:
    zh = provider.query(q="landslide", language=Locale.parse("zh-HK", sep="-"))["features"][0]["properties"]
    assert zh["title"] == zh_title("landslide_incidents") and zh["language"]["code"] == "zh-HK"
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in k) for k in zh["keywords"])
    en = provider.get("landslide_incidents", language=Locale.parse("en-US", sep="-"))["properties"]
    assert en["title"] != zh["title"] and en["language"]["code"] == "en"
    assert provider.get("districts_18", language="zh-HK")["properties"]["title"] == zh_title("districts_18")


def test_bad_parameters_are_invalid_queries(provider: CatalogueRecordsProvider) -> None:
    with pytest.raises(ProviderInvalidQueryError, match="bbox"):
        provider.query(bbox=[114.5, 22.0, 114.0, 22.5])
    with pytest.raises(ProviderInvalidQueryError, match="sortby"):
        provider.query(sortby=[{"property": "colour", "order": "+"}])


def test_provider_does_not_connect_until_queried() -> None:
    p = CatalogueRecordsProvider({"name": PROVIDER, "type": "record", "data": "postgresql://nobody@127.0.0.1:1/x"})
    assert "q" in p.fields and "feature_count" in p.fields  # pygeoapi builds providers for OpenAPI, offline


# --- through sdi serve ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(catalogue_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` over the catalogue database (pygeoapi answers the records through sdi's bridge)."""
    settings = Settings(database_url=catalogue_url, data_dir=tmp_path_factory.mktemp("records_store"))
    with sdi_server(settings, tmp_path_factory.mktemp("records_serve")) as base:
        yield base


def get(url: str, **params: Any) -> requests.Response:
    return requests.get(url, params={"f": "json", **params}, timeout=30)


def test_pygeoapi_serves_the_catalogue_collection(server: str) -> None:
    response = get(f"{server}/collections/catalogue")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "catalogue" and body["itemType"] == "record"


def test_pygeoapi_q_english_and_chinese(server: str) -> None:
    english = get(f"{server}/collections/catalogue/items", q="landslide")
    assert english.status_code == 200, english.text
    assert ids(english.json())[0] == "landslide_incidents"
    chinese = get(f"{server}/collections/catalogue/items", q="選區").json()
    assert ids(chinese)[0] == "district_council_2001"


def test_pygeoapi_bbox_paging_and_sortby(server: str) -> None:
    far = get(f"{server}/collections/catalogue/items", bbox="0,0,1,1").json()
    assert far["numberMatched"] == 0 and far["features"] == []
    page = get(f"{server}/collections/catalogue/items", limit=4, offset=4, sortby="-feature_count").json()
    assert page["numberMatched"] == len(SAMPLES) and page["numberReturned"] == 4
    counts = [f["properties"]["feature_count"] for f in page["features"]]
    assert counts == sorted(counts, reverse=True)
    assert any(link["rel"] == "next" and "offset=8" in link["href"] for link in page["links"])
    themed = get(f"{server}/collections/catalogue/items", theme="boundaries").json()
    assert set(ids(themed)) == {"district_council_2001", "districts_18"}


def test_pygeoapi_lang_zh_hk(server: str) -> None:
    body = get(f"{server}/collections/catalogue/items", q="landslide", lang="zh-HK").json()
    assert body["features"][0]["properties"]["title"] == zh_title("landslide_incidents")
    item = get(f"{server}/collections/catalogue/items/districts_18", lang="zh-HK")
    assert item.json()["properties"]["title"] == zh_title("districts_18")


def test_pygeoapi_item_and_unknown_item(server: str) -> None:
    item = get(f"{server}/collections/catalogue/items/landslide_incidents")
    assert item.status_code == 200
    assert item.json()["properties"]["title"] == read_definition(LAYERS / "landslide_incidents.yml").title.en
    assert get(f"{server}/collections/catalogue/items/no_such_layer").status_code == 404


def test_pygeoapi_bad_datetime_is_400(server: str) -> None:
    assert get(f"{server}/collections/catalogue/items", datetime="not-a-date").status_code == 400
