"""Downloads through a live `sdi serve` (two workers): the route, its headers and cache, the links that announce it
in the collection document, its HTML page, the catalogue record and the DCAT/ISO exports, and ``f=csv`` items."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyogrio
import pytest
import requests
import shapely
from shapely.geometry import shape

from loaders import load
from sdi.distribution.formats import FORMATS
from sdi.layerdef import read_definition
from tests.conftest import LAYERS
from tests.live_server import Live, live_layers

pytestmark = pytest.mark.db
LAYER = "industrial_special_waivers"
RELOADED = "traffic_hotzone_streets"
GRID = "http://www.opengis.net/def/crs/EPSG/0/2326"



@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_layers(tmp_path_factory.mktemp("web"), (LAYER, "districts_18", "public_libraries_2013", RELOADED),
                     extra_env={"SDI_REFRESH_S": "0.5"}) as served:
        yield served


def get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=120, **kwargs)


def enclosures(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Format id → enclosure link of a document's links."""
    return {link["href"].rsplit("/", 1)[1]: link for link in doc["links"] if link["rel"] == "enclosure"}


def files(live: Live, layer_id: str) -> list[Path]:
    """A layer's download files and their records (not the lock files)."""
    return sorted(p for p in (live.settings.data_dir / "downloads" / layer_id).rglob("*.*")
                  if not p.name.startswith("."))


# --- the route --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_download_has_its_type_length_and_digest_and_reads_back(live: Live, fmt: str, tmp_path: Path) -> None:
    url = f"{live.url}/collections/{LAYER}/download/{fmt}"
    answer = get(url, headers={"Accept-Encoding": "gzip, br"})
    assert answer.status_code == 200, answer.text[:300]
    body, headers, kind = answer.content, answer.headers, FORMATS[fmt]
    digest = hashlib.sha256(body).digest()
    assert headers["Content-Type"].split(";")[0] == kind.media_type.split(";")[0]
    assert headers["Content-Disposition"] == f'attachment; filename="{kind.filename(LAYER)}"'
    assert int(headers["Content-Length"]) == len(body) and "Content-Encoding" not in headers
    assert headers["ETag"] == f'"{digest.hex()}"'
    assert headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert headers["Digest"] == f"SHA-256={base64.b64encode(digest).decode()}"
    link = enclosures(get(f"{live.url}/collections/{LAYER}?f=json").json())[fmt]
    assert link["type"] == kind.media_type and link["length"] == len(body)
    path = tmp_path / kind.filename(LAYER)
    path.write_bytes(body)
    if fmt == "parquet":
        import geopandas as gpd

        assert len(gpd.read_parquet(path)) == 149
    else:
        assert pyogrio.read_info(path, layer=LAYER if fmt in ("gpkg", "shp") else None)["features"] == 149
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == headers["ETag"]
    assert head.headers["Content-Length"] == str(len(body))
    assert get(url, headers={"If-None-Match": headers["ETag"]}).status_code == 304
    part = get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body[100:200]


def test_a_second_request_does_not_make_the_file_again(live: Live) -> None:
    url = f"{live.url}/collections/public_libraries_2013/download/gpkg"
    first = get(url)
    made = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files(live, "public_libraries_2013")}
    assert len(made) == 2  # the file and its record
    for _ in range(4):  # either worker
        again = get(url)
        assert again.headers["ETag"] == first.headers["ETag"] and again.content == first.content
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files(live, "public_libraries_2013")} == made


def test_a_reload_gives_a_new_file_and_removes_the_old(live: Live) -> None:
    url = f"{live.url}/collections/{RELOADED}/download/gpkg"
    first = get(url)
    old_load = int(first.headers["X-Load-Id"])
    old_files = files(live, RELOADED)
    assert old_files and all(p.parent.name == str(old_load) for p in old_files)
    load(read_definition(LAYERS / f"{RELOADED}.yml"), live.settings)
    deadline = time.monotonic() + 10
    while int((answer := get(url)).headers["X-Load-Id"]) == old_load and time.monotonic() < deadline:
        time.sleep(0.2)
    new_load = int(answer.headers["X-Load-Id"])
    assert answer.status_code == 200 and new_load > old_load
    assert answer.headers["ETag"] != first.headers["ETag"]
    assert not any(p.exists() for p in old_files) and not (old_files[0].parent).exists()
    assert {p.parent.name for p in files(live, RELOADED)} == {str(new_load)}
    assert len(pyogrio.read_dataframe(io.BytesIO(answer.content), layer=RELOADED)) == 19


@pytest.mark.parametrize(("path", "message"), [
    ("/collections/no_such_layer/download/gpkg", "no collection 'no_such_layer'"),
    (f"/collections/{LAYER}/download/xlsx", "no download format 'xlsx'; use one of gpkg, shp, csv, geojson, parquet"),
    ("/collections/catalogue/download/gpkg", "no collection 'catalogue'"),
])
def test_unknown_layers_and_formats_are_404(live: Live, path: str, message: str) -> None:
    answer = get(f"{live.url}{path}")
    assert answer.status_code == 404 and answer.json()["description"] == message


def test_unknown_parameters_are_400(live: Live) -> None:
    answer = get(f"{live.url}/collections/{LAYER}/download/csv?limt=5")
    assert answer.status_code == 400 and "limt" in answer.json()["description"]


# --- the links --------------------------------------------------------------------------------------------------


def test_every_collection_links_one_download_per_format(live: Live) -> None:
    for doc in get(f"{live.url}/collections?f=json").json()["collections"]:
        if doc["id"] == "catalogue":
            assert not enclosures(doc)
            continue
        links = enclosures(doc)
        assert list(links) == list(FORMATS)
        for fmt, link in links.items():
            assert link["href"] == f"{live.url}/collections/{doc['id']}/download/{fmt}"
            assert link["type"] == FORMATS[fmt].media_type and link["title"]


def test_the_html_page_lists_the_downloads_with_their_size(live: Live) -> None:
    size = len(get(f"{live.url}/collections/districts_18/download/gpkg").content)
    page = get(f"{live.url}/collections/districts_18?f=html").text
    section = page[page.index('id="downloads"'):]
    for fmt in FORMATS:
        assert f'href="{live.url}/collections/districts_18/download/{fmt}"' in section
    assert f"{size / 1048576:.1f} MB" in section or f"{size / 1024:.0f} kB" in section
    assert "made on first request" in section  # the formats nobody asked for yet


def _resolves(url: str, media_type: str, expected_etag: str | None = None) -> None:
    answer = get(url)
    assert answer.status_code == 200, (url, answer.status_code)
    assert answer.headers["Content-Type"].split(";")[0] == media_type.split(";")[0]
    assert answer.headers["ETag"] == f'"{hashlib.sha256(answer.content).hexdigest()}"'
    if expected_etag:
        assert answer.headers["ETag"] == expected_etag


def test_the_catalogue_record_links_the_downloads(live: Live) -> None:
    record = get(f"{live.url}/collections/catalogue/items/{LAYER}?f=json").json()
    links = enclosures(record)
    assert list(links) == list(FORMATS)
    for fmt, link in links.items():
        assert link["href"] == f"{live.url}/collections/{LAYER}/download/{fmt}"
        _resolves(link["href"], link["type"])
    media = {f["mediaType"] for f in record["properties"]["formats"]}
    assert {f.media_type for f in FORMATS.values()} <= media


def test_dcat_distributions_have_download_urls_and_media_types(live: Live) -> None:
    doc = get(f"{live.url}/metadata/{LAYER}.jsonld").json()
    downloads = {d["downloadURL"]: d for d in doc["distribution"] if "downloadURL" in d}
    assert set(downloads) == {f"{live.url}/collections/{LAYER}/download/{fmt}" for fmt in FORMATS}
    assert doc["@context"]["downloadURL"] == {"@id": "dcat:downloadURL", "@type": "@id"}
    assert doc["@context"]["type"] == "dcat:mediaType"
    for url, distribution in downloads.items():
        fmt = FORMATS[url.rsplit("/", 1)[1]]
        assert distribution["type"] == fmt.media_type and distribution["format"] == fmt.name
        assert distribution["url"] == url and distribution["@type"] == "dcat:Distribution"
        _resolves(url, fmt.media_type)


def test_iso19139_online_resources_are_the_downloads(live: Live) -> None:
    ns = {"gmd": "http://www.isotc211.org/2005/gmd", "gco": "http://www.isotc211.org/2005/gco"}
    root = ET.fromstring(get(f"{live.url}/metadata/{LAYER}.xml").content)
    resources = {}
    for resource in root.iter(f"{{{ns['gmd']}}}CI_OnlineResource"):
        url = resource.findtext("gmd:linkage/gmd:URL", namespaces=ns)
        protocol = resource.findtext("gmd:protocol/gco:CharacterString", namespaces=ns)
        resources[url] = protocol
    for fmt in FORMATS:
        url = f"{live.url}/collections/{LAYER}/download/{fmt}"
        assert resources.get(url) == "WWW:DOWNLOAD-1.0-http--download", (url, resources)


# --- f=csv ------------------------------------------------------------------------------------------------------


def _csv(answer: requests.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert answer.content.startswith(b"\xef\xbb\xbf")
    csv.field_size_limit(2**31 - 1)  # a district's WKT is longer than the csv module's default limit
    return list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize("crs", [None, GRID, "http://www.opengis.net/def/crs/EPSG/0/4326"])
def test_csv_items_carry_the_geojson_geometry_as_wkt(live: Live, crs: str | None) -> None:
    params = {"limit": "50", "offset": "20", **({"crs": crs} if crs else {})}
    url = f"{live.url}/collections/public_libraries_2013/items"
    rows = _csv(get(url, params={**params, "f": "csv"}))
    features = get(url, params={**params, "f": "json"}).json()["features"]
    assert len(rows) == len(features) == 50
    for row, feature in zip(rows, features, strict=True):
        assert row["fid"] == str(feature["id"])
        assert row["name_zh"] == feature["properties"]["name_zh"] and row["name_zh"]
        assert shapely.from_wkt(row["wkt"]).equals_exact(shape(feature["geometry"]), 1e-9)
    if crs == GRID:  # northing first, as GeoJSON in EPSG:2326
        northing, easting = shapely.get_coordinates(shapely.from_wkt(rows[0]["wkt"]))[0]
        assert 800_000 < easting < 870_000 and northing > 800_000


def test_csv_pages_follow_the_link_header(live: Live) -> None:
    url, rows, pages = f"{live.url}/collections/public_libraries_2013/items?f=csv&limit=100", [], 0
    while url:
        answer = get(url)
        rows += _csv(answer)
        pages += 1
        url = answer.links.get("next", {}).get("url")
    assert pages == 3 and len(rows) == 260 and len({r["fid"] for r in rows}) == 260
    assert answer.links["self"]["url"].endswith("f=csv") and "alternate" in answer.links


def test_csv_is_negotiated_and_streamed_for_large_pages(live: Live) -> None:
    url = f"{live.url}/collections/districts_18/items"
    by_accept = get(url, params={"limit": "3"}, headers={"Accept": "text/csv"})
    assert len(_csv(by_accept)) == 3
    streamed = get(url, params={"limit": "5000", "f": "csv", "properties": "name_zh,name_en"})
    rows = _csv(streamed)
    assert len(rows) == 18 and list(rows[0]) == ["name_zh", "name_en", "wkt"]
    assert "深水埗區" in {r["name_zh"] for r in rows}
    assert "Transfer-Encoding" in streamed.headers or "Content-Length" not in streamed.headers
    assert get(url, params={"f": "csv", "resulttype": "hits"}).status_code == 400
    assert get(f"{url}/1", params={"f": "csv"}).status_code == 400
