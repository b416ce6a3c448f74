"""Restricted layers through a live ``sdi serve``: to an identity outside their groups they do not exist.

For anonymous callers and a key of another group, every route that names a restricted layer answers exactly as
for a layer that does not exist (the made-up twin of :mod:`tests.access.restricted_site`); nothing reachable
from the landing page (JSON and HTML links, crawled breadth-first), no path of the served OpenAPI document, no
catalogue search, tile or process execution shows a restricted id, title word (English or Chinese), keyword or
feature value. A key of the layers' group reads every one of those routes, and conditional requests never hand
its answers to anyone else.
"""

from __future__ import annotations

import html
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import mapbox_vector_tile
import pytest
import requests

from loaders import load
from sdi.distribution.formats import FORMATS
from sdi.layerdef import read_definition
from sdi.publishing.process import PROCESS_ID
from sdi.query.tms import grids
from tests.access.restricted_site import (
    CODENAME,
    LANDS_LAYER,
    LANDS_SECRETS,
    MADE_UP,
    PLANNING_IDS,
    PLANNING_SECRETS,
    REFRESH_S,
    RESTRICTED_IDS,
    SECRET_LAYER,
    SECRET_RASTER,
    SECRETS,
    TITLE_WORDS,
    Site,
    bearer,
    criteria_naming,
    execute,
    leaks,
    like_a_missing_layer,
    named,
    restricted_site,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.db
MAX_FETCHES = 800  #: most links the crawl follows (it must finish within them)
PER_SHAPE = 4  #: links of one route shape (a path, any feature of a layer) the crawl follows
ZOOMS = range(10, 15)
#: The secrets of the layers an identity may not read, by who asks.
HIDDEN = {"anonymous": SECRETS, "lands": PLANNING_SECRETS, "planning": LANDS_SECRETS}
Get = Callable[[str], requests.Response]


@dataclass(frozen=True)
class Secret:
    """The secret layer as a key of group ``planning`` reads it."""

    features: list[dict[str, Any]]

    @property
    def fid(self) -> str:
        return str(self.features[0]["id"])

    def tiles(self, layer: str) -> list[str]:
        """Tile paths of ``layer`` over the first three features, zoom 10 to 14, in both grids (no repeats)."""
        paths: dict[str, None] = {}
        for feature in self.features[:3]:
            lon, lat = feature["geometry"]["coordinates"]
            for g in grids().values():
                for z in ZOOMS:
                    t = g.tms.tile(lon, lat, z)
                    paths[f"/collections/{layer}/tiles/{g.id}/{z}/{t.y}/{t.x}?f=mvt"] = None
        return list(paths)


# --- helpers ----------------------------------------------------------------------------------------------------


def credential(site: Site, who: str) -> str | None:
    """The key of ``who`` (``anonymous``, ``lands`` or ``planning``)."""
    return {"anonymous": None, "lands": site.lands_key, "planning": site.planning_key}[who]


def getter(site: Site, key: str | None, **headers: str) -> Get:
    """``GET`` of a path (with ``headers``) as the holder of ``key``."""
    session = requests.Session()
    session.headers.update({**bearer(key), **headers})
    return lambda path: session.get(site.url + path, timeout=120)


def vector_paths(layer: str, secret: Secret) -> list[tuple[str, int]]:
    """Every route of a vector layer, with the status a reader of the layer gets."""
    c = f"/collections/{layer}"
    return [(c, 200), (f"{c}?f=html", 200), (f"{c}?f=json&lang=zh", 200), (f"{c}/items", 200),
            (f"{c}/items?f=html", 200), (f"{c}/items?f=csv", 200), (f"{c}/items?resulttype=hits", 200),
            (f"{c}/items?limit=5&bbox=113.8,22.1,114.5,22.6", 200), (f"{c}/items/{secret.fid}", 200),
            (f"{c}/items/{secret.fid}?f=html", 200), (f"{c}/queryables", 200), (f"{c}/queryables?f=html", 200),
            (f"{c}/schema", 200), (f"{c}/tiles", 200), (f"{c}/tiles?f=html", 200),
            (f"{c}/tiles/WebMercatorQuad", 200), (f"{c}/tiles/HK80Grid/metadata", 200),
            (f"{c}/tiles/WebMercatorQuad?f=tilejson", 200), *[(p, 200) for p in secret.tiles(layer)],
            *[(f"{c}/download/{name}", 200) for name in FORMATS], (f"{c}/history", 200),
            (f"{c}/history?f=html", 200), (f"{c}/changes", 200), (f"{c}/coverage", 404),
            *[(f"/metadata/{layer}{suffix}", 200) for suffix in (".xml", ".jsonld", ".yml")],
            (f"/collections/catalogue/items/{layer}", 200), (f"/collections/catalogue/items/{layer}?f=html", 200)]


def raster_paths(layer: str) -> list[tuple[str, int]]:
    """Every route of a raster layer, with the status a reader of the layer gets."""
    c = f"/collections/{layer}"
    return [(c, 200), (f"{c}?f=html", 200), (f"{c}/coverage", 200), (f"{c}/coverage?f=json", 200),
            (f"{c}/history", 200), (f"{c}/changes", 200), (f"{c}/items", 404), (f"{c}/tiles", 404),
            *[(f"/metadata/{layer}{suffix}", 200) for suffix in (".xml", ".jsonld", ".yml")],
            (f"/collections/catalogue/items/{layer}", 200)]


def found_links(response: requests.Response) -> list[str]:
    """The ``href``s of a JSON document (anywhere in it) or of an HTML page (``href`` and ``src``)."""
    media = response.headers.get("content-type", "")
    if "html" in media:
        return [html.unescape(h) for h in re.findall(r'(?:href|src)="([^"]*)"', response.text)]
    if "json" not in media:
        return []
    try:
        doc = response.json()
    except ValueError:
        return []
    found: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.extend(v for k, v in node.items() if k == "href" and isinstance(v, str))
            stack.extend(v for k, v in node.items() if k != "href")
        elif isinstance(node, list):
            stack.extend(node)
    return found


def route_shape(path: str) -> str:
    """``path`` with a feature id or a job id replaced by ``*``: links of one shape are followed a few times only."""
    return re.sub(r"/(items|jobs)/[^/]+", r"/\1/*", path)


def assert_shows_nothing(response: requests.Response, secrets: tuple[str, ...], where: str,
                         allowed: tuple[str, ...] = ()) -> None:
    """No 5xx, and none of ``secrets`` in the answer (but for the words of ``allowed``, which the request named)."""
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    found = leaks(response, secrets, allowed)
    assert not found, f"{where}: shows {found}"


def fill(path: str, secret: Secret) -> str:
    """An OpenAPI path with its parameters given values."""
    lon, lat = secret.features[0]["geometry"]["coordinates"]
    t = grids()["WebMercatorQuad"].tms.tile(lon, lat, 12)
    values = {"featureId": secret.fid, "tileMatrixSetId": "WebMercatorQuad", "tileMatrix": str(t.z),
              "tileRow": str(t.y), "tileCol": str(t.x), "jobId": str(uuid.uuid4()), "format": "csv",
              "processId": PROCESS_ID, "name": f"{SECRET_LAYER}.xml"}
    filled = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    return filled + ("?f=mvt" if "{tileCol}" in path else "")


def search(get: Get, query: str) -> dict[str, Any]:
    """A catalogue search (``query``: its query string) for up to 100 records."""
    response = get(f"/collections/catalogue/items?f=json&limit=100&{query}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with restricted_site(tmp_path_factory.mktemp("restricted_store"),
                         tmp_path_factory.mktemp("restricted_serve")) as served:
        yield served


@pytest.fixture(scope="module")
def secret(site: Site) -> Secret:
    response = getter(site, site.planning_key)(f"/collections/{SECRET_LAYER}/items?limit=100")
    assert response.status_code == 200, response.text
    features = response.json()["features"]
    assert len(features) == 49 and all(f["properties"]["codename"].startswith(CODENAME) for f in features)
    return Secret(features)


# --- a hidden layer is a missing layer --------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "hidden"), [("anonymous", RESTRICTED_IDS), ("lands", PLANNING_IDS),
                                             ("planning", (LANDS_LAYER,))])
def test_every_route_of_a_hidden_layer_answers_as_for_a_missing_one(site: Site, secret: Secret, who: str,
                                                                    hidden: tuple[str, ...]) -> None:
    get = getter(site, credential(site, who))
    paths = [p for layer in hidden
             for p, _ in (raster_paths(layer) if layer == SECRET_RASTER else vector_paths(layer, secret))]
    statuses = Counter(like_a_missing_layer(get, path).status_code for path in paths)
    assert set(statuses) == {404}, statuses


def test_a_key_of_the_group_reads_every_route(site: Site, secret: Secret) -> None:
    get = getter(site, site.planning_key)
    for path, expected in [*vector_paths(SECRET_LAYER, secret), *raster_paths(SECRET_RASTER)]:
        response = get(path)
        assert response.status_code == expected, f"{path}: {response.status_code} {response.text[:300]}"
        assert "Authorization" in response.headers.get("Vary", ""), path
        if expected == 200:
            assert response.headers.get("Cache-Control", "private").startswith("private"), path
            assert "public" not in response.headers.get("Cache-Control", ""), path
    mine = getter(site, site.lands_key)(f"/collections/{LANDS_LAYER}/items/{secret.fid}")
    assert mine.status_code == 200 and mine.json()["properties"]["facility_name"]


def test_tiles_over_the_layer_hold_its_features_for_its_group_only(site: Site, secret: Secret) -> None:
    planning, anonymous = getter(site, site.planning_key), getter(site, None)
    for path in secret.tiles(SECRET_LAYER):
        tile = planning(path)
        assert tile.status_code == 200, path
        layer = mapbox_vector_tile.decode(tile.content)[SECRET_LAYER]
        assert any(str(f["properties"].get("codename", "")).startswith(CODENAME) for f in layer["features"]), path
        assert anonymous(path).status_code == 404, path  # after the tile was made and cached by the worker


def test_the_lists_show_a_hidden_layer_to_its_group_only(site: Site) -> None:
    for who, visible in (("anonymous", set()), ("lands", {LANDS_LAYER}), ("planning", set(PLANNING_IDS))):
        get = getter(site, credential(site, who))
        listed = {c["id"] for c in get("/collections?f=json").json()["collections"]}
        assert listed & set(RESTRICTED_IDS) == visible, who
        paths = get("/openapi?f=json").json()["paths"]
        assert {i for i in RESTRICTED_IDS if any(f"/collections/{i}" in p for p in paths)} == visible, who
        for page in ("/collections?f=json", "/collections?f=html", "/openapi?f=json", "/?f=html"):
            assert_shows_nothing(get(page), HIDDEN[who], f"{who} {page}")


@pytest.mark.parametrize("language", ["zh", "zh-TW", "zh-CN", "zh-Hant-HK", "zh-HK", "en", "fr"])
def test_pygeoapi_pages_in_any_language_show_nothing_hidden(site: Site, language: str) -> None:
    title = "香港十八區" if language.startswith("zh") else "Hong Kong 18 districts"
    for path in ("/", "/collections/catalogue/items?q=districts", "/collections/catalogue/items/districts_18",
                 "/collections/synthetic_dem"):
        for how in ({"lang": language}, {"Accept-Language": f"{language},en;q=0.5"}):
            query = f"&lang={language}" if "lang" in how else ""
            headers = {k: v for k, v in how.items() if k != "lang"}
            for f in ("json", "html"):
                url = f"{path}{'&' if '?' in path else '?'}f={f}{query}"
                response = getter(site, None, **headers)(url)
                assert response.status_code == 200, f"{url} {how}: {response.status_code}"
                assert_shows_nothing(response, SECRETS, f"{url} {how}")
                if "districts_18" in path or "q=" in path:
                    assert title.lower() in text_of(response), f"{url} {how}"


# --- nothing reachable shows it ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "lands"])
def test_crawling_every_link_from_the_landing_page_shows_nothing_hidden(site: Site, who: str) -> None:
    get = getter(site, credential(site, who))
    here = urlsplit(site.url)
    queue = deque(["/?f=json", "/?f=html", "/?f=html&lang=zh", "/collections?f=html&lang=zh",
                   "/collections/catalogue/items?f=html&lang=zh"])
    seen, per_shape, fetched = set(queue), Counter[str](), 0
    while queue and fetched < MAX_FETCHES:
        path = queue.popleft()
        response = get(path)
        fetched += 1
        assert_shows_nothing(response, HIDDEN[who], f"{who} {path}")
        for href in found_links(response):
            url = urlsplit(urljoin(site.url + path, href))
            if (url.scheme, url.netloc) != (here.scheme, here.netloc) or "{" in url.path or "%7B" in url.path \
                    or "/download/" in url.path or url.path.startswith("/static/"):
                continue
            target, shape = url.path + (f"?{url.query}" if url.query else ""), route_shape(url.path)
            if target not in seen and per_shape[shape] < PER_SHAPE:
                seen.add(target)
                per_shape[shape] += 1
                queue.append(target)
    assert not queue, f"the crawl stopped after {MAX_FETCHES} pages with {len(queue)} links left"
    assert fetched >= 200 and any(s.startswith("/metadata/") for s in per_shape), f"the crawl reached {fetched} pages"


def test_every_path_of_the_openapi_document_as_anonymous(site: Site, secret: Secret) -> None:
    get = getter(site, None)
    doc = get("/openapi?f=json").json()
    targets: list[str] = []
    for path, operations in doc["paths"].items():
        if "get" not in operations:
            continue
        targets.append(fill(path, secret))
        if path == "/metadata/{name}":
            targets += [f"/metadata/{layer}{suffix}" for layer in (SECRET_LAYER, SECRET_RASTER, LANDS_LAYER)
                        for suffix in (".xml", ".jsonld", ".yml")]
        match = re.fullmatch(r"/collections/([^/{]+)(/.*)?", path)
        if match and match.group(1) != "catalogue":
            rest = match.group(2) or ""
            for layer in (SECRET_LAYER, SECRET_RASTER, LANDS_LAYER):
                targets.append(fill(f"/collections/{layer}{rest}", secret))
    assert any(named(t) for t in targets) and len(targets) > 100
    for target in dict.fromkeys(targets):
        if named(target):
            assert like_a_missing_layer(get, target).status_code == 404, target
        else:
            assert_shows_nothing(get(target), SECRETS, target)


@pytest.mark.parametrize("word", sorted({w for words in TITLE_WORDS.values() for w in words} | {"quokka", "袋鼠"}))
def test_catalogue_search_finds_a_hidden_layer_for_its_group_only(site: Site, word: str) -> None:
    found = [f["id"] for f in search(getter(site, site.planning_key), f"q={word}")["features"]]
    expected = {layer for layer, words in TITLE_WORDS.items() if word in words} or set(PLANNING_IDS)
    assert expected <= set(found), found
    for who in ("anonymous", "lands"):
        assert not {f["id"] for f in search(getter(site, credential(site, who)), f"q={word}")["features"]} & expected


@pytest.mark.parametrize("query", [
    *[f"q={w}" for words in TITLE_WORDS.values() for w in words], "q=quokka", "q=袋鼠", "q=Zanzibat", "q=quoka",
    "q=stations", "q=氣象站", "kind=raster", "theme=elevation", "custodian=Hong Kong Observatory",
    "feature_count=49", "geometry_type=Point", f"id={SECRET_LAYER}", "title=Zanzibar sensor sites", "synthetic=true",
    "sortby=-feature_count", "bbox=114.0,22.3,114.2,22.5", "q=sensor&bbox=113.8,22.1,114.5,22.6&sortby=title",
    "lang=zh&q=桑給巴爾"])
def test_catalogue_searches_match_a_catalogue_without_the_hidden_layers(site: Site, query: str) -> None:
    planning = search(getter(site, site.planning_key), query)
    found = [f["id"] for f in planning["features"]]
    assert planning["numberMatched"] == len(found) < 100
    for who in ("anonymous", "lands"):
        get = getter(site, credential(site, who))
        doc = search(get, query)
        ids = [f["id"] for f in doc["features"]]
        assert not set(ids) & set(PLANNING_IDS), (who, ids)
        assert [i for i in ids if i != LANDS_LAYER] == [i for i in found if i not in PLANNING_IDS], who
        assert doc["numberMatched"] == len(ids), who
        words = tuple(w for pair in query.split("&") for v in pair.split("=")[1:] for w in v.split())
        assert_shows_nothing(get(f"/collections/catalogue/items?f=html&{query}"), HIDDEN[who], f"{who} {query}",
                             allowed=words)


def test_the_catalogue_counts_only_what_the_caller_may_read(site: Site) -> None:
    docs = {who: search(getter(site, credential(site, who)), "q=") for who in ("anonymous", "lands", "planning")}
    public = {f["id"] for f in docs["anonymous"]["features"]}
    assert {who: {f["id"] for f in doc["features"]} - public for who, doc in docs.items()} == {
        "anonymous": set(), "lands": {LANDS_LAYER}, "planning": set(PLANNING_IDS)}
    assert {who: doc["numberMatched"] for who, doc in docs.items()} == {
        "anonymous": len(public), "lands": len(public) + 1, "planning": len(public) + 2}
    box = "bbox=113.8,22.1,114.5,22.6"
    for who in ("anonymous", "lands"):
        response = getter(site, credential(site, who))(f"/collections/catalogue/items?f=json&limit=100&{box}")
        assert_shows_nothing(response, HIDDEN[who], f"{who} bbox search")


# --- processes --------------------------------------------------------------------------------------------------


def test_the_process_refuses_a_hidden_layer_as_it_refuses_a_missing_one(site: Site) -> None:
    for who, layer in (("anonymous", SECRET_LAYER), ("lands", SECRET_LAYER), ("planning", LANDS_LAYER)):
        inputs = {"criteria": criteria_naming(layer), "limit": 3}
        missing = {"criteria": criteria_naming(MADE_UP[layer]), "limit": 3}
        got, other = execute(site.url, inputs, credential(site, who)), execute(site.url, missing, credential(site, who))
        assert got.status_code == other.status_code == 400, got.text
        assert got.json() == {k: (v.replace(MADE_UP[layer], layer) if isinstance(v, str) else v)
                              for k, v in other.json().items()}
        assert not leaks(got, HIDDEN[who], allowed=(layer,))
    accepted = execute(site.url, {"criteria": criteria_naming(SECRET_LAYER), "limit": 3}, site.planning_key)
    assert accepted.status_code == 200, accepted.text
    sites = accepted.json()["features"]
    assert 0 < len(sites) <= 3
    assert any(CODENAME in str(v) for f in sites for v in f["properties"].values())  # measured to the secret layer


# --- caches -----------------------------------------------------------------------------------------------------


def test_a_validator_of_the_groups_answer_earns_others_no_304(site: Site, secret: Secret) -> None:
    planning = getter(site, site.planning_key)
    paths = [f"/collections/{SECRET_LAYER}", f"/collections/{SECRET_LAYER}/items?limit=5",
             f"/collections/{SECRET_LAYER}/items/{secret.fid}", f"/collections/{SECRET_LAYER}/queryables",
             secret.tiles(SECRET_LAYER)[0], f"/collections/{SECRET_LAYER}/download/geojson",
             "/collections"]
    for path in paths:
        first = planning(path)
        tag = first.headers.get("ETag")
        assert first.status_code == 200 and tag, path
        assert getter(site, site.planning_key, **{"If-None-Match": tag})(path).status_code == 304, path
        for who in ("anonymous", "lands"):
            other = getter(site, credential(site, who), **{"If-None-Match": tag})(path)
            assert other.status_code != 304 and other.headers.get("ETag") != tag, f"{who} {path}"
            assert_shows_nothing(other, HIDDEN[who], f"{who} {path}", allowed=named(path))
            if named(path):
                assert other.status_code == 404, f"{who} {path}"
                assert getter(site, credential(site, who), **{"If-None-Match": "*"})(path).status_code == 404, path


def test_reloading_a_hidden_layer_changes_nothing_others_see(site: Site) -> None:
    paths = ("/collections?f=json", "/collections?f=html", "/openapi?f=json", "/collections/districts_18")
    anonymous, lands = getter(site, None), getter(site, site.lands_key)
    before, lands_before = {p: anonymous(p) for p in paths}, lands("/collections?f=json")
    load(read_definition(site.folder / f"{LANDS_LAYER}.yml"), site.settings)  # the lands layer, reloaded
    assert wait_for(lambda: len(lands(f"/collections/{LANDS_LAYER}/history").json()["loads"]) == 2)
    time.sleep(3 * REFRESH_S)  # every worker has read the catalogue again
    assert lands("/collections?f=json").headers["ETag"] != lands_before.headers["ETag"]  # its group sees the load
    for path in paths:
        after = anonymous(path)
        assert after.status_code == 200 and after.content == before[path].content, path
        tag = before[path].headers.get("ETag")
        assert after.headers.get("ETag") == tag, path
        if tag:
            assert getter(site, None, **{"If-None-Match": tag})(path).status_code == 304, path
