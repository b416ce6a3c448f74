"""What the collection, items, item, catalogue and coverage pages say, in English and Traditional Chinese.

- Without a server: ``title_field`` in a layer YAML (one field or one per language, renamed columns refused),
  the title field detected from column names, catalogue values as readable text, the coverage preview's colours
  and transparency.
- On a live `sdi serve` (districts, libraries, the synthetic DEM and a layer declaring its title field): item
  pages headed by the feature's name, in both languages, and the GeoJSON's link titles naming it; the declared
  field wins over detection; the catalogue's table and records hold no Python text; a record's breadcrumb is
  Home / Catalogue / record; the items and collection pages say "Showing N of M"; the search box asks the
  catalogue search; coverage pages show a preview.
- In headless Chromium (tests/browser.py): the same pages in English and Chinese, the preview image loaded, the
  items table scrolling inside its box, and Chinese glyphs drawn (not empty boxes).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lxml.html
import numpy as np
import psycopg
import pytest
import requests
import yaml
from jinja2 import Environment, FileSystemLoader
from PIL import Image

from loaders import load
from sdi.errors import LayerDefinitionError, LayerNotFoundError
from sdi.layerdef import parse_definition, read_definition
from sdi.settings import Settings
from sdi.web.assets import TEMPLATES_DIR, default_base
from sdi.web.pages import Pages
from sdi.web.preview import Preview, colourise, drawn_once, render_preview
from sdi.web.titles import declared_fields, detect_title_field, feature_title
from tests.browser import DevTools, assert_cjk_renders, find_chromium, text_of
from tests.conftest import LAYERS, fresh_database
from tests.live_server import sdi_server

DISTRICTS, LIBRARIES, DEM, DECLARED = "districts_18", "public_libraries_2013", "synthetic_dem", "libraries_by_address"
PYTHON_TEXT = re.compile(r"\{'|\['|': |\bNone\b")  #: what str() of a dict or list leaves in a page


def _minimal(**extra: Any) -> dict[str, Any]:
    return {"id": "x", "title": {"en": "X"}, "abstract": {"en": "X"}, "custodian": "C", "licence": "L",
            "source": {"path": "x.shp"}, **extra}


# --- without a server ------------------------------------------------------------------------------------


def test_title_field_is_optional_one_name_or_one_per_language() -> None:
    def declared(**extra: Any) -> dict[str, str]:  # as the pages read it from the stored definition
        return declared_fields(parse_definition(_minimal(**extra), where="t").model_dump(mode="json"))

    assert declared() == {}
    assert "title_field" not in parse_definition(_minimal(), where="t").model_dump_json()  # stored as before
    assert declared(title_field="name_en") == {"en": "name_en", "zh": "name_en"}
    assert declared(title_field={"en": "name_en", "zh": "name_zh"}) == {"en": "name_en", "zh": "name_zh"}
    assert declared(title_field={"en": "name_en"}) == {"en": "name_en", "zh": "name_en"}
    assert declared_fields({"title_field": "site"}) == {"en": "site", "zh": "site"}
    assert declared_fields({}) == {} and declared_fields(None) == {}


@pytest.mark.parametrize("value", ["Name En", "", {"zh": "name_zh"}, {"en": "name_en", "fr": "nom"}, 3])
def test_a_bad_title_field_is_refused(value: Any) -> None:
    with pytest.raises(LayerDefinitionError, match="title_field"):
        parse_definition(_minimal(title_field=value), where="t.yml")


def test_a_title_field_names_the_published_field_not_the_renamed_column() -> None:
    with pytest.raises(LayerDefinitionError, match="title_field: 'dc_eng' is renamed to 'name_en'"):
        parse_definition(_minimal(title_field="dc_eng", fields={"dc_eng": {"name": "name_en"}}), where="t")
    parse_definition(_minimal(title_field="name_en", fields={"dc_eng": {"name": "name_en"}}), where="t")


@pytest.mark.parametrize(("columns", "lang", "expected"), [
    (["fid", "name_zh", "name_en", "shape_are"], "en", "name_en"),
    (["fid", "name_zh", "name_en", "shape_are"], "zh", "name_zh"),
    (["fid", "english_name", "name_zh", "district"], "en", "english_name"),
    (["fid", "english_name", "name_zh", "district"], "zh", "name_zh"),
    (["objectid", "ename", "cname"], "zh", "cname"),
    (["objectid", "ename", "cname"], "en", "ename"),
    (["objectid", "ENAME"], "zh", "ENAME"),
    (["id", "name"], "zh", "name"),
    (["lot_no", "area"], "en", "lot_no"),
    (["nameen", "namezh", "locationen"], "zh", "namezh"),
    (["lotnumberen", "lotnumberzh", "locationen"], "en", "lotnumberen"),
    (["zone_id", "zone_code", "zone_name"], "zh", "zone_name"),
    (["fid", "address", "name"], "en", "name"),
    (["fid", "area"], "en", None),
])
def test_the_title_field_is_detected_by_name(columns: list[str], lang: str, expected: str | None) -> None:
    assert detect_title_field(columns, lang) == expected


def test_a_feature_without_a_name_is_named_by_its_id() -> None:
    assert feature_title("SHA TIN", 7) == "SHA TIN"
    assert feature_title(" ", 7) == "7"
    assert feature_title(None, 7) == "7"
    assert feature_title(None, "a") == "a"


def _readable_html(value: Any) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), extensions=["jinja2.ext.i18n"], autoescape=True)
    env.install_null_translations()  # type: ignore[attr-defined]  # added by jinja2.ext.i18n
    template = env.from_string('{% from "_readable.html" import readable %}{{ readable(v, 20) }}')
    return " ".join(template.render(v=value).split())


def _readable(value: Any) -> str:
    html = _readable_html(value)
    return " ".join(lxml.html.fragment_fromstring(html, create_parent="div").text_content().split()) if html else ""


@pytest.mark.parametrize(("value", "expected"), [
    ({"code": "en"}, "English"),
    ([{"code": "en"}, {"code": "zh-HK"}], "English, Traditional Chinese (Hong Kong)"),
    (["buildings", "car parks"], "buildings, car parks"),
    ([{"organization": "Lands Department", "roles": ["custodian"]}], "Lands Department (custodian)"),
    ([{"concepts": [{"id": "structure"}], "scheme": "https://example.invalid/codes"}], "structure"),
    ([{"name": "GeoJSON", "mediaType": "application/geo+json"}, {"name": "CSV", "mediaType": "text/csv"}],
     "GeoJSON, CSV"),
    ({"bbox": [810968.79546, 814127.2698, 846030.58, 840367.05], "crs": "http://www.opengis.net/def/crs/EPSG/0/2326"},
     "810968.7955, 814127.2698, 846030.58, 840367.05 (EPSG:2326)"),
    ({"interval": ["2020-01-01", None]}, "2020-01-01 – .."),
    (True, "yes"),
    (None, ""),
    (12.5, "12.5"),
    ("a long description that goes on", "a long..."),
    ({"a": [1, 2], "b": {"c": "d"}}, "a: 1, 2; b: c: d"),
])
def test_catalogue_values_read_as_text(value: Any, expected: str) -> None:
    text = _readable(value)
    assert text == expected
    assert not PYTHON_TEXT.search(text) or ": " in expected


def test_readable_links_are_links_and_text_is_escaped() -> None:
    text = _readable_html({"href": "https://example.invalid/a", "title": "<b>A</b>"})
    assert text == '<a href="https://example.invalid/a">&lt;b&gt;A&lt;/b&gt;</a>'
    assert _readable_html(["<script>"]) == "&lt;script&gt;"
    mail = _readable_html({"href": "mailto:a@example.invalid", "title": "A"})
    assert mail == '<a href="mailto:a@example.invalid">A</a>'
    for href in ("javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,<b>x</b>"):  # text, not a link
        html = _readable_html({"href": href, "title": "click"})
        assert "<a" not in html and html == "click", html
    assert _readable_html({"href": "javascript:alert(1)"}) == "javascript:alert(1)"
    assert _readable_html("a long <script> that goes on") == (
        '<span title="a long &lt;script&gt; that goes on">a long &lt;script&gt;...</span>')


def _render(template: str, data: dict[str, Any], lang: str = "en") -> lxml.html.HtmlElement:
    """``template`` rendered as the server does (sdi.web.pages.Pages), with the packaged metadata."""
    config = yaml.safe_load(default_base().read_text(encoding="utf-8"))
    config["server"].update(map={}, map_hk80={}, url="http://sdi.invalid")
    return lxml.html.fromstring(Pages().render(config, template, data, lang))


def test_links_to_items_quote_the_id_as_one_path_segment() -> None:
    items = "http://sdi.invalid/collections/l/items"
    paths = {"collections_path": "http://sdi.invalid/collections", "dataset_path": "http://sdi.invalid/collections/l",
             "items_path": items, "title_field": "name", "id_field": "fid"}
    feature = {"type": "Feature", "id": "a/b?c#d e", "geometry": None, "properties": {"name": "X"}}
    doc = _render("collections/items/index.html", {"type": "FeatureCollection", "features": [feature],
                                                   "numberMatched": 1, "numberReturned": 1, "links": [], **paths})
    assert doc.xpath("//table[@id='items-table']//tbody//a/@href") == [f"{items}/a%2Fb%3Fc%23d%20e"]
    page_zh = _render("collections/items/item.html", {**feature, "links": [], "title": "X", **paths}, "zh")
    crumbs = page_zh.xpath("//div[contains(@class, 'crumbs')]//a/@href")
    assert "./a%2Fb%3Fc%23d%20e?lang=zh-HK" in crumbs, crumbs


def test_show_all_keeps_the_page_s_filters() -> None:
    items = "http://sdi.invalid/collections/l/items"
    every = f"{items}?bbox=114.1%2C22.3%2C114.2%2C22.4&q=park&f=html&limit=30"
    data = {"type": "FeatureCollection", "numberMatched": 30, "numberReturned": 1, "links": [],
            "features": [{"type": "Feature", "id": 1, "geometry": None, "properties": {"name": "X"}}],
            "collections_path": "http://sdi.invalid/collections", "dataset_path": "http://sdi.invalid/collections/l",
            "items_path": items, "title_field": "name", "id_field": "fid", "items_all_path": every}
    assert _render("collections/items/index.html", data).xpath("//a[@id='items-all']/@href") == [every]
    assert _render("collections/items/index.html", data, "zh").xpath("//a[@id='items-all']/@href") == [
        every + "&lang=zh-HK"]


def test_a_raster_without_a_crs_is_refused_with_one_line(tmp_path: Path) -> None:
    import rasterio
    from affine import Affine

    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       transform=Affine(1, 0, 0, 0, -1, 4)) as dst:
        dst.write(np.ones((4, 4), dtype="float32"), 1)
    with pytest.raises(LayerNotFoundError, match="no CRS"):
        render_preview(str(path))


def test_a_preview_is_drawn_once_and_a_failure_remembered() -> None:
    import asyncio
    import time

    calls: list[str] = []
    preview = Preview(png=b"", bounds=(0, 0, 1, 1), width=1, height=1, bands=1, crs="EPSG:2326",
                      resolution=(1.0, 1.0), minimum=None, maximum=None)

    def slow() -> Preview:
        calls.append("slow")
        time.sleep(0.2)
        return preview

    def broken() -> Preview:
        calls.append("broken")
        raise ValueError("cannot reproject")

    async def run() -> None:
        state: dict[str, Any] = {}
        got = await asyncio.gather(*(drawn_once(state, ("dem", "1"), slow, "dem") for _ in range(4)))
        assert all(g is preview for g in got) and calls == ["slow"]  # simultaneous first requests: one drawing
        for _ in range(3):
            with pytest.raises(LayerNotFoundError, match="cannot be drawn"):
                await drawn_once(state, ("bad", "1"), broken, "bad")
        assert calls == ["slow", "broken"]  # the failure is not drawn again
        await drawn_once(state, ("dem", "2"), slow, "dem")  # a new load draws again
        assert calls == ["slow", "broken", "slow"]

    asyncio.run(run())


def test_colour_ramp_and_transparency() -> None:
    values = np.array([[0.0, 50.0, 100.0, np.nan]], dtype="float32")
    rgba = colourise(values, ~np.isnan(values), 0.0, 100.0)
    assert rgba.shape == (1, 4, 4)
    assert tuple(rgba[0, 0, :3]) == (26, 150, 65) and tuple(rgba[0, 2, :3]) == (245, 245, 245)
    assert tuple(rgba[0, 1, :3]) == (255, 255, 191)
    assert list(rgba[0, :, 3]) == [255, 255, 255, 0]


def test_a_preview_lies_where_the_raster_does(tmp_path: Path) -> None:
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    path = tmp_path / "grid.tif"
    data = np.arange(200 * 300, dtype="float32").reshape(200, 300)
    data[:, :30] = np.nan  # the western tenth is sea
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=1, dtype="float32", crs="EPSG:2326",
                       transform=Affine(50, 0, 830000, 0, -50, 830000), nodata=np.nan) as dst:
        dst.write(data, 1)
    preview = render_preview(str(path), max_size=128)
    image = Image.open(io.BytesIO(preview.png))
    assert image.mode == "RGBA" and max(image.size) == 128
    alpha = np.asarray(image)[..., 3]
    assert alpha[:, :5].max() == 0 and alpha[:, -20:].min() == 255  # the sea transparent, the land drawn
    expected = transform_bounds("EPSG:2326", "EPSG:4326", 830000, 820000, 845000, 830000)
    assert np.allclose(preview.bounds, expected, atol=2e-4), (preview.bounds, expected)  # within ~20 m
    assert (preview.width, preview.height, preview.crs, preview.resolution) == (300, 200, "EPSG:2326", (50.0, 50.0))
    assert preview.minimum is not None and preview.maximum is not None and preview.minimum < preview.maximum
    assert preview.data_url.startswith("data:image/png;base64,")


# --- on a live server --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` over the districts, the libraries, the synthetic DEM and the libraries again, declaring their
    address as title field."""
    folder = tmp_path_factory.mktemp("pages_content")
    with fresh_database() as url:
        settings = Settings(database_url=url, layers_dir=LAYERS, data_dir=folder / "store")
        for path in (LAYERS / f"{DISTRICTS}.yml", LAYERS / f"{LIBRARIES}.yml", LAYERS / f"{DEM}.yml"):
            assert load(read_definition(path), settings).load_id is not None
        with psycopg.connect(url) as conn:
            row = conn.execute("select fields from sdi.layer where id = %s", (LIBRARIES,)).fetchone()
        assert row is not None
        en, zh = address_fields([str(f["name"]) for f in row[0]])
        doc = yaml.safe_load((LAYERS / f"{LIBRARIES}.yml").read_text(encoding="utf-8"))
        doc.update(id=DECLARED, title={"en": "Libraries by address", "zh": "圖書館（按地址）"},
                   title_field={"en": en, "zh": zh})
        doc["source"]["path"] = str((LAYERS / doc["source"]["path"]).resolve())
        declared = folder / f"{DECLARED}.yml"
        declared.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        assert load(read_definition(declared), settings).load_id is not None
        with sdi_server(settings, folder, workers=1) as base:
            yield base


def address_fields(names: list[str]) -> tuple[str, str]:
    """The libraries' English and Chinese address columns (whatever the loader names them): title fields that
    detection would not choose."""
    addresses = [n for n in names if "address" in n and "email" not in n]
    zh = next(n for n in addresses if "zh" in n or "chi" in n)
    return next(n for n in addresses if n != zh), zh


def page(url: str, **params: str) -> lxml.html.HtmlElement:
    response = requests.get(url, params={"f": "html", **params}, timeout=60)
    assert response.status_code == 200, f"{response.url}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("text/html")
    return lxml.html.fromstring(response.content.decode("utf-8"))


def get_json(url: str, **params: str) -> Any:
    response = requests.get(url, params={"f": "json", **params}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    return response.json()


def district(server: str, name_en: str) -> dict[str, Any]:
    features = get_json(f"{server}/collections/{DISTRICTS}/items", limit="50")["features"]
    return next(f for f in features if f["properties"]["name_en"] == name_en)


@pytest.mark.parametrize(("lang", "field"), [("en", "name_en"), ("zh", "name_zh")])
def test_an_item_page_is_headed_by_the_feature_s_name(server: str, lang: str, field: str) -> None:
    feature = district(server, "SHA TIN")
    name = feature["properties"][field]
    doc = page(f"{server}/collections/{DISTRICTS}/items/{feature['id']}", **({"lang": "zh-HK"} if lang == "zh" else {}))
    assert text_of(doc, "//h1") == name
    assert text_of(doc, "//title") == name
    assert text_of(doc, "//div[contains(@class, 'crumbs')]").split(" / ")[-1].startswith(name)
    assert name != str(feature["id"])


def test_the_geojson_links_name_the_feature(server: str) -> None:
    feature = district(server, "WONG TAI SIN")
    item = get_json(f"{server}/collections/{DISTRICTS}/items/{feature['id']}")
    titles = {link["rel"]: link["title"] for link in item["links"]}
    assert titles["self"] == "WONG TAI SIN as GeoJSON" and titles["alternate"] == "WONG TAI SIN as HTML"
    # the name is read from the table, not from the feature's GeoJSON: also when the name is not among its properties
    bare = get_json(f"{server}/collections/{DISTRICTS}/items/{feature['id']}", properties="name_zh")
    assert "name_en" not in bare["properties"]
    assert {link["rel"]: link["title"] for link in bare["links"]}["self"] == "WONG TAI SIN as GeoJSON"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_declared_title_field_wins_over_the_detected_one(server: str, lang: str) -> None:
    params = {"lang": "zh-HK"} if lang == "zh" else {}
    feature = get_json(f"{server}/collections/{DECLARED}/items", limit="1")["features"][0]
    properties = feature["properties"]
    declared = address_fields(list(properties))[1 if lang == "zh" else 0]
    detected = detect_title_field(list(properties), lang)
    assert detected and detected != declared and properties[declared] != properties[detected]
    doc = page(f"{server}/collections/{DECLARED}/items/{feature['id']}", **params)
    assert text_of(doc, "//h1") == properties[declared]
    items = page(f"{server}/collections/{DECLARED}/items", limit="1", **params)
    assert items.xpath("//table[@id='items-table']//tbody//td[1]//a/@title") == [properties[declared]]
    same = page(f"{server}/collections/{LIBRARIES}/items/{feature['id']}", **params)
    assert text_of(same, "//h1") == properties[detected]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_catalogue_shows_readable_values(server: str, lang: str) -> None:
    params = {"lang": "zh-HK"} if lang == "zh" else {}
    table = page(f"{server}/collections/catalogue/items", **params)
    text = text_of(table, "//table[@id='items-table']")
    assert text and not PYTHON_TEXT.search(text), text
    assert "boundaries, districts" in text if lang == "en" else "地區" in text
    record = page(f"{server}/collections/catalogue/items/{LIBRARIES}", **params)
    values = text_of(record, "//table[@id='item-table']")
    assert not re.search(r"\{'|\['", values), values
    if lang == "en":
        assert "English, Traditional Chinese (Hong Kong)" in values
        assert "Leisure and Cultural Services Department (custodian)" in values
        assert "(EPSG:2326)" in values and "GeoJSON, GeoPackage" in values
    else:
        assert "英文, 繁體中文（香港）" in values and "(保管者)" in values


@pytest.mark.parametrize(("lang", "words"), [("en", ("Home", "Catalogue")), ("zh", ("主頁", "目錄"))])
def test_a_record_s_breadcrumb_is_home_catalogue_record(server: str, lang: str, words: tuple[str, str]) -> None:
    record = get_json(f"{server}/collections/catalogue/items/{LIBRARIES}", **({"lang": "zh-HK"} if lang == "zh"
                                                                               else {}))
    doc = page(f"{server}/collections/catalogue/items/{LIBRARIES}", **({"lang": "zh-HK"} if lang == "zh" else {}))
    crumbs = [" ".join(a.text_content().split()) for a in doc.xpath("//div[contains(@class, 'crumbs')]//a")]
    assert crumbs[:3] == [words[0], words[1], record["properties"]["title"]], crumbs
    hrefs = [a.get("href") for a in doc.xpath("//div[contains(@class, 'crumbs')]//a")][:3]
    assert hrefs[1].startswith(f"{server}/collections/catalogue/items")
    assert all(f"/collections/{LIBRARIES}" not in h for h in hrefs), hrefs


@pytest.mark.parametrize(("lang", "note"), [("en", "Showing 5 of 18 features"), ("zh", "顯示 18 個要素中的 5 個")])
def test_the_items_page_says_how_many_it_shows(server: str, lang: str, note: str) -> None:
    doc = page(f"{server}/collections/{DISTRICTS}/items", limit="5", **({"lang": "zh-HK"} if lang == "zh" else {}))
    assert note in text_of(doc, "//p[@id='items-count']")
    assert doc.xpath("//p[@id='items-count']//a[@rel='next']"), "no link to the next page"
    everything = doc.xpath("//a[@id='items-all']/@href")
    assert everything and "limit=18" in everything[0]
    boxed = page(f"{server}/collections/{DISTRICTS}/items", limit="5", bbox="113.8,22.1,114.5,22.6")
    everything = boxed.xpath("//a[@id='items-all']/@href")  # the filter kept, the offset dropped
    assert everything and "limit=18" in everything[0] and "bbox=113.8%2C22.1%2C114.5%2C22.6" in everything[0]
    assert len(doc.xpath("//table[@id='items-table']/tbody/tr")) == 5
    assert doc.xpath("//div[@id='items-table-box']//table[@id='items-table']")


@pytest.mark.parametrize(("lang", "note"), [("en", "Showing 18 of 18 features"), ("zh", "顯示 18 個要素中的 18 個")])
def test_the_collection_page_says_how_many_its_map_shows(server: str, lang: str, note: str) -> None:
    doc = page(f"{server}/collections/{DISTRICTS}", **({"lang": "zh-HK"} if lang == "zh" else {}))
    assert note in text_of(doc, "//p[@id='collection-count']")
    assert doc.xpath("//p[@id='collection-count']/a[contains(@href, '/items')]")


def test_the_search_box_asks_the_catalogue(server: str) -> None:
    for url in (f"{server}/collections/catalogue", f"{server}/collections/catalogue/items"):
        form = page(url).xpath("//form[contains(@class, 'sdi-search')]")
        assert form, url
        assert form[0].get("action") == f"{server}/collections/catalogue/items"
        assert form[0].xpath(".//input[@name='q']")
    zh_form = page(f"{server}/collections/catalogue", lang="zh-HK").xpath("//form[contains(@class, 'sdi-search')]")
    assert zh_form[0].xpath(".//input[@name='lang']/@value") == ["zh-HK"]
    found = page(f"{server}/collections/catalogue/items", q="district boundaries")
    rows = text_of(found, "//table[@id='items-table']/tbody")
    assert "Hong Kong 18 districts" in rows
    assert "Showing" in text_of(found, "//p[@id='items-count']")


@pytest.mark.parametrize(("lang", "words"), [("en", ("Closest matches", "Did you mean")),
                                             ("zh", ("最接近的結果", "你是否要找"))])
def test_closest_matches_are_shown_apart(server: str, lang: str, words: tuple[str, str]) -> None:
    params = {"lang": "zh-HK"} if lang == "zh" else {}
    found = get_json(f"{server}/collections/catalogue/items", q="distrcts", **params)
    reading = found["search"]
    assert reading["weaker"] and reading["suggestions"] == {"distrcts": "districts"} and reading["notice"]
    doc = page(f"{server}/collections/catalogue/items", q="distrcts", **params)
    notice = text_of(doc, "//div[@id='search-notice']")
    assert all(w in notice for w in words) and "distrcts → districts" in notice, notice
    assert "Hong Kong 18 districts" in text_of(doc, "//table[@id='items-table']/tbody") or lang == "zh"
    exact = page(f"{server}/collections/catalogue/items", q="districts", **params)
    assert not exact.xpath("//div[@id='search-notice']")
    assert "search" not in get_json(f"{server}/collections/catalogue/items", q="districts")


def test_a_search_that_finds_nothing_says_so_and_keeps_the_box(server: str) -> None:
    for params, words in (({}, "No records match"), ({"lang": "zh-HK"}, "沒有相符的記錄")):
        doc = page(f"{server}/collections/catalogue/items", q="qqxxzzyy", **params)
        assert words in text_of(doc, "//p[@id='items-count']")
        assert doc.xpath("//form[contains(@class, 'sdi-search')]//input[@name='q']")


@pytest.mark.parametrize(("lang", "words"), [("en", ("Status", "live", "newest first")),
                                             ("zh", ("狀態", "現行", "最新的在前"))])
def test_the_history_page_speaks_the_page_s_language(server: str, lang: str, words: tuple[str, ...]) -> None:
    text = text_of(page(f"{server}/collections/{DISTRICTS}/history", **({"lang": "zh-HK"} if lang == "zh" else {})),
                   "//main")
    assert all(w in text for w in words), text


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_coverage_pages_show_a_preview(server: str, lang: str) -> None:
    params = {"lang": "zh-HK"} if lang == "zh" else {}
    for path in (f"/collections/{DEM}", f"/collections/{DEM}/coverage"):
        doc = page(f"{server}{path}", **params)
        src = doc.xpath("//img[@id='coverage-preview']/@src")
        assert src and src[0].startswith("data:image/png;base64,"), path
        assert "Invalid format" not in doc.text_content()
        assert ("Preview of the coverage" if lang == "en" else "覆蓋預覽") in doc.xpath(
            "//img[@id='coverage-preview']/@alt")[0]
    grid = text_of(page(f"{server}/collections/{DEM}/coverage", **params), "//table[@id='coverage-grid']")
    assert "EPSG:2326" in grid and ("cells" if lang == "en" else "格") in grid
    coverage = requests.get(f"{server}/collections/{DEM}/coverage", params={"f": "json"}, timeout=60)
    assert coverage.status_code == 200 and coverage.json()["type"] == "Coverage"
    # without f the page follows Accept and the language: caches must keep the forms apart and may revalidate
    asked = {"Accept": "text/html", **({"Accept-Language": "zh-HK"} if lang == "zh" else {})}
    html = requests.get(f"{server}/collections/{DEM}/coverage", headers=asked, timeout=60)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    vary = {v.strip().lower() for v in html.headers["Vary"].split(",")}
    assert {"accept", "accept-language"} <= vary and html.headers.get("ETag")
    again = requests.get(f"{server}/collections/{DEM}/coverage", timeout=60,
                         headers={**asked, "If-None-Match": html.headers["ETag"]})
    assert again.status_code == 304
    other = requests.get(f"{server}/collections/{DEM}/coverage", timeout=60,
                         headers={"Accept": "text/html", "Accept-Language": "en" if lang == "zh" else "zh-HK"})
    assert other.headers["ETag"] != html.headers["ETag"]


# --- in a headless browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    tools = DevTools(find_chromium("the browser tests of the page contents"), tmp_path_factory.mktemp("chromium"))
    try:
        yield tools
    finally:
        tools.close()


def _open(browser: DevTools, url: str) -> str:
    session = browser.open(url)
    browser.wait_for(session, "document.readyState === 'complete'")
    return session


def _body_text(browser: DevTools, session: str) -> str:
    return " ".join(str(browser.evaluate(session, "document.querySelector('main').innerText")).split())


LANGS = [("en", ""), ("zh", "&lang=zh-HK")]
#: [whether the map's view holds every feature, the features' share of the view's width, of its height]
FIT = ("(function () { var f = null; map.eachLayer(function (l) {"
       " if (l.getLayers && l.getBounds) { f = l.getBounds(); } }); var v = map.getBounds();"
       " return [v.contains(f), (f.getEast() - f.getWest()) / (v.getEast() - v.getWest()),"
       " (f.getNorth() - f.getSouth()) / (v.getNorth() - v.getSouth())]; })()")


def assert_fitted(browser: DevTools, session: str) -> None:
    """The page's Leaflet map shows all its features, and they fill much of it (the view fits them)."""
    inside, width, height = browser.evaluate(session, FIT)
    assert inside and max(width, height) > 0.4, (inside, width, height)


@pytest.mark.parametrize(("lang", "query"), LANGS)
def test_item_and_items_pages_in_a_browser(server: str, browser: DevTools, lang: str, query: str) -> None:
    feature = district(server, "SHA TIN")
    name = feature["properties"]["name_zh" if lang == "zh" else "name_en"]
    session = _open(browser, f"{server}/collections/{DISTRICTS}/items/{feature['id']}?f=html{query}")
    browser.wait_for(session, "document.getElementById('items-map').getAttribute('data-sdi-rendered') === '1'")
    assert browser.evaluate(session, "document.querySelector('h1').innerText.trim()") == name
    assert browser.evaluate(session, "document.title.trim()") == name
    words = ("屬性", "數值") if lang == "zh" else ("Property", "Value")
    assert all(w in _body_text(browser, session) for w in words)
    if lang == "zh":
        assert_cjk_renders(browser, session, "h1")
    session = _open(browser, f"{server}/collections/{LIBRARIES}/items?f=html&limit=20{query}")
    browser.wait_for(session, "document.getElementById('items-map').getAttribute('data-sdi-rendered') === '20'")
    text = _body_text(browser, session)
    assert ("顯示 260 個要素中的 20 個" if lang == "zh" else "Showing 20 of 260 features") in text
    # the wide table scrolls in its own box: the page itself does not overflow to the right
    box = browser.evaluate(session, "(function () { var b = document.getElementById('items-table-box');"
                                    " return [b.scrollWidth, b.clientWidth, document.documentElement.scrollWidth,"
                                    " document.documentElement.clientWidth,"
                                    " b.getBoundingClientRect().right]; })()")
    assert box[0] > box[1], f"the libraries' table should be wider than its box: {box}"
    assert box[2] <= box[3] and box[4] <= box[3], f"the page overflows to the right: {box}"
    assert_fitted(browser, session)
    first = browser.evaluate(session, "document.querySelector('#items-table tbody td a').innerText.trim()")
    assert first and not first.isdigit(), first
    if lang == "zh":
        assert_cjk_renders(browser, session, "#items-table tbody")


@pytest.mark.parametrize(("lang", "query"), LANGS)
def test_collection_and_catalogue_pages_in_a_browser(server: str, browser: DevTools, lang: str, query: str) -> None:
    session = _open(browser, f"{server}/collections/{DISTRICTS}?f=html{query}")
    browser.wait_for(session, "document.getElementById('collection-map').getAttribute('data-sdi-rendered') === '18'")
    text = _body_text(browser, session)
    assert ("顯示 18 個要素中的 18 個" if lang == "zh" else "Showing 18 of 18 features") in text
    assert ("瀏覽" if lang == "zh" else "Browse") in text
    assert_fitted(browser, session)
    names = {f["properties"]["name_zh" if lang == "zh" else "name_en"]
             for f in get_json(f"{server}/collections/{DISTRICTS}/items", limit="50")["features"]}
    browser.evaluate(session, "document.querySelector('#collection-map path.leaflet-interactive')"
                              ".dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: 1, clientY: 1}))")
    popup = browser.wait_for(session, "(document.querySelector('.leaflet-popup-content a') || {}).innerText")
    assert popup.strip() in names, popup
    session = _open(browser, f"{server}/collections/catalogue/items?f=html{query}")
    text = _body_text(browser, session)
    assert text and not re.search(r"\{'|\['", text), text
    assert ("搜尋" if lang == "zh" else "Search") in text
    assert browser.evaluate(session, "!!document.querySelector('form.sdi-search input[name=q]')")
    session = _open(browser, f"{server}/collections/catalogue/items/{DISTRICTS}?f=html{query}")
    text = _body_text(browser, session)
    assert not re.search(r"\{'|\['", text), text
    crumbs = browser.evaluate(session, "document.querySelector('.crumbs').innerText")
    assert ("目錄" if lang == "zh" else "Catalogue") in crumbs
    assert ("集合" if lang == "zh" else "Collections") not in crumbs
    if lang == "zh":
        assert_cjk_renders(browser, session, "h1")


@pytest.mark.parametrize(("lang", "query"), LANGS)
def test_coverage_previews_load_in_a_browser(server: str, browser: DevTools, lang: str, query: str) -> None:
    for path in (f"/collections/{DEM}?f=html{query}", f"/collections/{DEM}/coverage?f=html{query}"):
        session = _open(browser, f"{server}{path}")
        width = browser.wait_for(session, "document.getElementById('coverage-preview').complete &&"
                                          " document.getElementById('coverage-preview').naturalWidth")
        assert width > 100
        overlay = browser.wait_for(session, "(function () { var i = document.querySelector("
                                            "'#collection-map img.leaflet-image-layer');"
                                            " return i && i.complete && i.naturalWidth; })()")
        assert overlay == width
        assert "Invalid format" not in _body_text(browser, session)
        if lang == "zh":
            assert_cjk_renders(browser, session, "h1")
            assert "覆蓋" in _body_text(browser, session)
    assert not browser.exceptions, browser.exceptions
