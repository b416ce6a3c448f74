"""The pages as HK SDI's, in English and Traditional Chinese (Hong Kong), and the base map in one setting.

- Without a server: every message of the templates sdi renders has a zh-HK translation with the same
  placeholders; the message catalogue merges every .po file of its folder and ships as package data; server
  metadata with placeholders (zeros for a postal code, example.org addresses, pygeoapi's sample values or
  logo) is refused naming the file and the field, by `sdi publish` and `sdi serve --config` too; ``server.map``
  resolves presets and blocks.
- On a live `sdi serve`: the landing page carries HK SDI's logo and name, no pygeoapi logo, no placeholder
  contact; its interface words are Chinese with ``?lang=zh-HK`` and with ``Accept-Language: zh-HK``; with
  ``map: landsd`` in a copy of base.yml every map of the pages asks the Lands Department's tiles, in the page's
  language.
- In headless Chromium (tests/browser.py): the Chinese landing page draws Chinese glyphs, not empty boxes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lxml.html
import pytest
import requests
import yaml
from babel.messages.pofile import read_po
from jinja2 import Environment

from sdi.errors import ConfigError
from sdi.publishing.basemap import resolve_base_map
from sdi.publishing.config import read_base
from sdi.publishing.metadata_check import check_server_metadata
from sdi.web.assets import TEMPLATES_DIR, default_base
from sdi.web.pages import LOCALE_DIR, message_catalogue
from tests.browser import DevTools, assert_cjk_renders, cjk_verdict, find_chromium, text_of
from tests.conftest import ROOT, loaded_database
from tests.live_server import sdi_server

CATALOGUE_DIR = Path(str(LOCALE_DIR)) / "zh_HK" / "LC_MESSAGES"
#: pygeoapi templates sdi never renders: its admin UI, STAC and EDR pages (no such endpoints are served).
UNSERVED = ("admin/", "stac/", "collections/edr/")
#: Interface words of the landing page and their Traditional Chinese.
LANDING_WORDS = {"Collections": "集合", "Catalogue": "目錄", "Processes": "處理程序", "Conformance": "符合性",
                 "Provider": "提供者", "Contact point": "聯絡資料", "Terms of service": "服務條款"}
PLACEHOLDER_SIGNS = ("000000", "example.org", "example.com", "pygeoapi.png")


def rendered_templates() -> dict[str, Path]:
    """The templates sdi renders, by name: sdi's own, then pygeoapi's that sdi does not replace."""
    from pygeoapi.util import TEMPLATES

    found: dict[str, Path] = {}
    for root in (Path(TEMPLATES), TEMPLATES_DIR):  # sdi's last: its copy replaces pygeoapi's
        for path in root.rglob("*.html"):
            name = path.relative_to(root).as_posix()
            if not name.startswith(UNSERVED):
                found[name] = path
    return found


def template_messages() -> dict[str, set[str]]:
    """Every ``{% trans %}`` / ``_()`` message of :func:`rendered_templates` → the templates using it."""
    env = Environment(extensions=["jinja2.ext.i18n"])
    messages: dict[str, set[str]] = {}
    for name, path in sorted(rendered_templates().items()):
        source = path.read_text(encoding="utf-8")
        for _line, _function, message in env.extract_translations(source):  # type: ignore[attr-defined]  # i18n
            for msgid in ([message] if isinstance(message, str) else [m for m in message if m]):
                messages.setdefault(msgid, set()).add(name)
    return messages


def translations() -> dict[str, str]:
    """msgid → msgstr of every .po file of the zh-HK folder (untranslated and fuzzy entries left out)."""
    found: dict[str, str] = {}
    for path in sorted(CATALOGUE_DIR.glob("*.po")):
        with path.open("rb") as fh:
            for message in read_po(fh):
                if message.id and message.string and not message.fuzzy:
                    key = message.id if isinstance(message.id, str) else message.id[0]
                    found[key] = message.string if isinstance(message.string, str) else message.string[0]
    return found


# --- the message catalogue -----------------------------------------------------------------------------------


def test_every_template_message_has_a_zh_hk_translation() -> None:
    messages, zh = template_messages(), translations()
    assert len(messages) > 80  # the extraction found the templates' words
    missing = sorted(m for m in messages if m not in zh)
    assert not missing, (f"add to a .po file of {CATALOGUE_DIR}: " +
                         "; ".join(f"{m!r} ({', '.join(sorted(messages[m]))})" for m in missing))
    placeholder = re.compile(r"%\(\w+\)s|%s|\{\w*\}")
    for msgid in messages:
        assert sorted(placeholder.findall(msgid)) == sorted(placeholder.findall(zh[msgid])), (msgid, zh[msgid])


def test_each_message_is_in_one_po_file_only() -> None:
    where: dict[str, list[str]] = {}
    for path in sorted(CATALOGUE_DIR.glob("*.po")):
        with path.open("rb") as fh:
            for message in read_po(fh):
                if message.id:
                    key = message.id if isinstance(message.id, str) else message.id[0]
                    where.setdefault(key, []).append(path.name)
    assert len(where) > 80
    twice = {msgid: files for msgid, files in where.items() if len(files) > 1}
    assert not twice, f"keep each msgid in one .po file of {CATALOGUE_DIR}: {twice}"


def test_the_catalogue_is_traditional_chinese_for_the_interface_words() -> None:
    catalogue = message_catalogue("zh")
    assert catalogue.gettext("Items in this collection") == "此集合的要素"
    assert catalogue.gettext("Browse") == "瀏覽"
    assert catalogue.gettext("Collections") == "集合"
    assert message_catalogue("en").gettext("Collections") == "Collections"
    simplified = set("这个数据图层项录览详条设务择么为")  # common simplified-only characters
    for msgid, msgstr in translations().items():
        assert not simplified & set(msgstr), (msgid, msgstr)


def test_the_catalogue_merges_every_po_file_of_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "zh_HK" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
    (folder / "a.po").write_text(header + 'msgid "Map"\nmsgstr "地圖"\n\nmsgid "Next"\nmsgstr "甲"\n',
                                 encoding="utf-8")
    (folder / "b.po").write_text(header + 'msgid "Next"\nmsgstr "下一頁"\n\n#, fuzzy\nmsgid "Prev"\nmsgstr "?"\n',
                                 encoding="utf-8")
    catalogue = message_catalogue("zh", tmp_path)
    assert catalogue.gettext("Map") == "地圖"  # from a.po
    assert catalogue.gettext("Next") == "下一頁"  # b.po, later by name, wins
    assert catalogue.gettext("Prev") == "Prev"  # fuzzy: not used
    assert message_catalogue("zh", tmp_path / "none").gettext("Map") == "Map"


def test_the_po_files_are_package_data_and_no_mo_file_is_kept() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["sdi"]
    package = ROOT / "sdi"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    po_files = sorted(CATALOGUE_DIR.glob("*.po"))
    assert po_files and set(po_files) <= shipped, set(po_files) - shipped
    assert not list(Path(str(LOCALE_DIR)).rglob("*.mo"))
    assert any(d.startswith("babel") for d in config["project"]["dependencies"])


# --- server metadata -----------------------------------------------------------------------------------------


def test_the_packaged_base_has_real_metadata() -> None:
    base = read_base(default_base())
    check_server_metadata(base, "base.yml")
    text = default_base().read_text(encoding="utf-8")
    contact = base["metadata"]["contact"]
    assert "email" not in contact and "postalcode" not in contact and "address" not in contact
    assert contact["url"].startswith("https://")
    assert not any(sign in text for sign in PLACEHOLDER_SIGNS)


@pytest.mark.parametrize(("path", "value"), [
    (("metadata", "contact", "postalcode"), "000000"),
    (("metadata", "contact", "postalcode"), 0),
    (("metadata", "contact", "email"), "sdi@example.org"),
    (("metadata", "contact", "url"), "https://www.example.com/contact"),
    (("metadata", "contact", "name"), "Lastname, Firstname"),
    (("metadata", "contact", "phone"), "+xx-xxx-xxx-xxxx"),
    (("metadata", "provider", "name"), "Your Organisation"),
    (("metadata", "identification", "title"), {"en": "pygeoapi default instance", "zh": "香港"}),
    (("server", "logo"), "https://pygeoapi.io/img/pygeoapi.png"),
])
def test_placeholders_are_refused_naming_the_file_and_the_field(path: tuple[str, ...], value: Any) -> None:
    config = read_base(default_base())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as caught:
        check_server_metadata(config, "my-base.yml")
    message = str(caught.value)
    assert message.startswith("my-base.yml: ") and "\n" not in message
    assert ".".join(path) in message


@pytest.mark.parametrize("value", ["Hong Kong", "https://github.com/hk-sdi/hk-sdi", "852 2231 3000",
                                   "09:00-18:00 HKT", "香港特別行政區政府", "https://www.landsd.gov.hk/"])
def test_real_values_pass(value: str) -> None:
    check_server_metadata({"metadata": {"contact": {"x": value}}}, "base.yml")


@pytest.mark.parametrize("keywords", [["city", "country"], ["n/a"], ["City", "Your city", "0"]])
def test_sample_values_are_placeholders_only_in_their_own_field(keywords: list[str]) -> None:
    config = read_base(default_base())
    config["metadata"]["identification"]["keywords"] = {"en": keywords, "zh": ["城市"]}
    config["metadata"]["identification"]["description"] = {"en": "Your guide to Hong Kong's geodata: city, country"}
    check_server_metadata(config, "base.yml")


@pytest.mark.parametrize(("field", "value"), [("city", "City"), ("postalcode", "000000"), ("country", "Country"),
                                              ("email", "sdi@example.org"), ("fax", "n/a")])
def test_contact_placeholders_are_refused_per_field(field: str, value: str) -> None:
    config = read_base(default_base())
    config["metadata"]["contact"][field] = value
    with pytest.raises(ConfigError, match=rf"^base\.yml: metadata\.contact\.{field} is a placeholder"):
        check_server_metadata(config, "base.yml")


def _bad_copy(tmp_path: Path) -> Path:
    doc = yaml.safe_load(default_base().read_text(encoding="utf-8"))
    doc["metadata"]["contact"]["postalcode"] = "000000"
    path = tmp_path / "base.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_read_base_refuses_a_copy_with_placeholders(tmp_path: Path) -> None:
    path = _bad_copy(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: metadata.contact.postalcode is a placeholder")):
        read_base(path)


@pytest.mark.parametrize("command", [["serve", "--config"], ["publish", "--base"]])
def test_the_cli_refuses_placeholders_in_one_line(tmp_path: Path, command: list[str]) -> None:
    path = _bad_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SDI_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
           "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "sdi.cli", *command, str(path)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "metadata.contact.postalcode" in lines[0] and str(path) in lines[0], run.stderr
    assert "Traceback" not in run.stderr


# --- the base map --------------------------------------------------------------------------------------------


def test_base_map_presets_and_blocks() -> None:
    none = resolve_base_map({"map": "none"}, "b.yml")
    assert none["map"]["url"] == "" and none["map_hk80"]["url"] == ""
    assert resolve_base_map({}, "b.yml")["map"] == {"url": "", "attribution": "", "labels": ""}
    landsd = resolve_base_map({"map": "landsd"}, "b.yml")
    assert landsd["map"]["url"] == "https://mapapi.geodata.gov.hk/gs/api/v1.0.0/xyz/basemap/WGS84/{z}/{x}/{y}.png"
    assert landsd["map"]["labels"]["en"].endswith("/xyz/label/hk/en/WGS84/{z}/{x}/{y}.png")
    assert landsd["map"]["labels"]["zh"].endswith("/xyz/label/hk/tc/WGS84/{z}/{x}/{y}.png")
    assert landsd["map_hk80"]["url"].endswith("/xyz/basemap/HK80/{z}/{x}/{y}.png")
    assert "Lands Department" in landsd["map"]["attribution"]
    own = resolve_base_map({"map": {"url": "https://t.hk/{z}/{x}/{y}.png", "attribution": "T"},
                            "map_hk80": {"url": "https://t.hk/hk80/{z}/{x}/{y}.png", "attribution": "T"}}, "b.yml")
    assert own["map"]["url"] == "https://t.hk/{z}/{x}/{y}.png"
    assert own["map_hk80"]["url"].endswith("hk80/{z}/{x}/{y}.png")
    with pytest.raises(ConfigError, match=r"b\.yml: server\.map 'osm' is no base map preset"):
        resolve_base_map({"map": "osm"}, "b.yml")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_base_map({"map": {"url": "x", "tiles": "y"}}, "b.yml")


def test_sdi_basemap_overrides_the_file_s_map(tmp_path: Path) -> None:
    """``SDI_BASEMAP`` (a preset) wins over ``server.map`` of the file, for serve and publish alike."""
    packaged = read_base(default_base())
    assert packaged["server"]["map"]["url"] == ""  # offline by default
    chosen = read_base(default_base(), "landsd")
    assert chosen["server"]["map"]["url"].endswith("/xyz/basemap/WGS84/{z}/{x}/{y}.png")
    assert chosen["server"]["map_hk80"]["url"].endswith("/xyz/basemap/HK80/{z}/{x}/{y}.png")
    assert read_base(default_base(), "none")["server"]["map"]["url"] == ""
    with pytest.raises(ConfigError, match=r"^SDI_BASEMAP: 'osm' is no base map preset"):
        read_base(default_base(), "osm")


def test_a_bad_sdi_basemap_is_one_line_before_serving(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SDI_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
           "HOME": str(tmp_path), "SDI_BASEMAP": "osm"}
    run = subprocess.run([sys.executable, "-m", "sdi.cli", "serve", "--port", "1"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode != 0 and len(lines) == 1 and "SDI_BASEMAP: 'osm'" in lines[0], run.stderr
    assert "serving" not in run.stderr and "Traceback" not in run.stderr


# --- on a live server ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two `sdi serve` over the same database (the 18 districts): the packaged base.yml, and a copy with
    ``map: landsd``."""
    folder = tmp_path_factory.mktemp("brand")
    for name in ("plain", "landsd"):
        (folder / name).mkdir()
    doc = yaml.safe_load(default_base().read_text(encoding="utf-8"))
    doc["server"]["map"] = "landsd"
    landsd = folder / "landsd.yml"
    landsd.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with loaded_database(("districts_18",), data_dir=folder / "store") as settings, \
            sdi_server(settings, folder / "plain", workers=1) as plain, \
            sdi_server(settings, folder / "landsd", workers=1, extra_env={"SDI_SERVER_CONFIG": str(landsd)}) as mapped:
        yield {"plain": plain, "landsd": mapped}


def page(url: str, headers: dict[str, str] | None = None, **params: str) -> tuple[str, lxml.html.HtmlElement]:
    response = requests.get(url, params={"f": "html", **params}, headers=headers, timeout=60)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:300]}"
    return response.text, lxml.html.fromstring(response.text)


@pytest.mark.db
def test_the_landing_page_is_hk_sdi_s(servers: dict[str, str]) -> None:
    text, doc = page(servers["plain"] + "/")
    assert doc.xpath("//img[@id='sdi-logo']/@src")[0].endswith("/static/img/hk-sdi-logo.svg")
    assert requests.get(doc.xpath("//img[@id='sdi-logo']/@src")[0], timeout=30).headers["content-type"].startswith(
        "image/svg+xml")
    assert "HK SDI" in text_of(doc, "//h1")
    assert not doc.xpath("//img[contains(@src, 'pygeoapi')]") and not doc.xpath("//*[@title='pygeoapi logo']")
    assert not any(sign in text for sign in PLACEHOLDER_SIGNS), [s for s in PLACEHOLDER_SIGNS if s in text]
    contact = text_of(doc, "//div[@id='contact']")
    assert "Hong Kong" not in contact and "mailto:" not in lxml.html.tostring(doc.xpath("//div[@id='contact']")[0],
                                                                               encoding="unicode")
    assert "https://github.com/hk-sdi/hk-sdi/issues" in contact
    assert doc.xpath("//html/@lang") == ["en"]
    assert requests.get(servers["plain"] + "/static/img/pygeoapi.png", timeout=30).status_code == 404
    from pygeoapi.util import TEMPLATES  # the og:image and the icon are HK SDI's too, not pygeoapi's files

    pygeoapi_images = Path(TEMPLATES).parent / "static" / "img"

    for name in ("logo.png", "favicon.ico"):
        served = requests.get(f"{servers['plain']}/static/img/{name}", timeout=30)
        assert served.status_code == 200 and served.content != (pygeoapi_images / name).read_bytes(), name


@pytest.mark.db
@pytest.mark.parametrize("how", ["query", "header"])
def test_the_landing_page_interface_is_chinese(servers: dict[str, str], how: str) -> None:
    if how == "query":
        _, doc = page(servers["plain"] + "/", lang="zh-HK")
    else:
        _, doc = page(servers["plain"] + "/", headers={"Accept-Language": "zh-HK,zh;q=0.9,en;q=0.5"})
    assert doc.xpath("//html/@lang") == ["zh-HK"]
    headings = text_of(doc, "//main//h2 | //main//div[@class='card-header'] | //header//a")
    body = text_of(doc, "//main")
    for english, chinese in LANDING_WORDS.items():
        assert chinese in body + headings, (english, chinese)
        assert english not in headings, english
    assert "香港空間數據基礎設施" in text_of(doc, "//h1")
    assert "瀏覽" in body and "主頁" in text_of(doc, "//div[@class='crumbs']")
    nav = doc.xpath("//header//a[contains(@class, 'nav-link')]/@href")
    if how == "query":  # the navigation keeps the language asked in the URL (without JavaScript too)
        assert nav and all("lang=zh-HK" in href for href in nav if "/collections" in href), nav


@pytest.mark.db
def test_the_collection_pages_follow_the_language(servers: dict[str, str]) -> None:
    _, doc = page(servers["plain"] + "/collections/districts_18", lang="zh-HK")
    body = text_of(doc, "//main")
    assert "瀏覽" in body and "Browse" not in body.replace("Browse through", "")
    _, doc = page(servers["plain"] + "/collections", headers={"Accept-Language": "zh-HK"})
    assert "集合" in text_of(doc, "//div[@class='crumbs']") + text_of(doc, "//header")
    _, english = page(servers["plain"] + "/collections/districts_18")
    assert "Browse" in text_of(english, "//main")


@pytest.mark.db
def test_every_page_is_branded_and_follows_the_language(servers: dict[str, str]) -> None:
    base = servers["plain"]
    item = requests.get(f"{base}/collections/districts_18/items", params={"f": "json", "limit": "1"},
                        timeout=60).json()["features"][0]["id"]
    paths = ["/collections", "/collections/districts_18", "/collections/districts_18/items",
             f"/collections/districts_18/items/{item}", "/collections/districts_18/queryables",
             "/collections/districts_18/schema", "/collections/districts_18/tiles", "/conformance", "/processes",
             "/processes/data-centre-site-selection", "/jobs", "/TileMatrixSets", "/TileMatrixSets/HK80Grid",
             "/collections/catalogue/items"]
    for path in paths:
        for lang, home, tag in (("en", "Home", "en"), ("zh-HK", "主頁", "zh-HK")):
            text, doc = page(base + path, lang=lang)
            assert doc.xpath("//html/@lang") == [tag], (path, lang)
            assert doc.xpath("//img[@id='sdi-logo']"), path
            assert home in text_of(doc, "//div[@class='crumbs']"), (path, lang)
            assert "pygeoapi.png" not in text and "text_direction" not in text, path
            if lang == "zh-HK":
                assert "集合" in text_of(doc, "//header"), path


@pytest.mark.db
def test_the_openapi_document_takes_the_metadata_as_text(servers: dict[str, str]) -> None:
    info = requests.get(servers["plain"] + "/openapi", params={"f": "json"}, timeout=120).json()["info"]
    assert isinstance(info["title"], str) and isinstance(info["termsOfService"], str)
    assert isinstance(info["license"]["name"], str) and isinstance(info["contact"]["name"], str)
    assert info["contact"]["x-ogc-serviceContact"]["links"][0]["href"] == "https://github.com/hk-sdi/hk-sdi/issues"
    assert "emails" not in info["contact"]["x-ogc-serviceContact"]


@pytest.mark.db
def test_one_setting_puts_the_landsd_base_map_on_every_page(servers: dict[str, str]) -> None:
    base = servers["landsd"]
    for lang, labels in (("en", "/label/hk/en/WGS84/"), ("zh-HK", "/label/hk/tc/WGS84/")):
        for path in ("/", "/collections/districts_18", "/collections/districts_18/items",
                     "/collections/districts_18/tiles"):
            _, doc = page(base + path, lang=lang)
            body = doc.xpath("//body")[0]
            assert body.get("data-sdi-map-url", "").startswith("https://mapapi.geodata.gov.hk/"), path
            assert labels in body.get("data-sdi-map-labels", ""), (path, lang)
            assert "/basemap/HK80/" in body.get("data-sdi-hk80-map-url", ""), path
            assert "Lands Department" in body.get("data-sdi-map-attribution", ""), path
    _, plain = page(servers["plain"] + "/collections/districts_18/items")
    assert plain.xpath("//body/@data-sdi-map-url") == [""]


# --- in headless Chromium ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium("the browser tests of the Chinese pages")


def test_the_tofu_verdict_tells_boxes_from_glyphs() -> None:
    box = {"ink": 120, "hash": 7, "width": 32.0}
    assert cjk_verdict({"font": "f", "missing": box, "glyphs": [{"c": "集", **box}]}) is not None
    alike = [{"c": c, "ink": 100, "hash": 9, "width": 32.0} for c in "集合"]
    assert "alike" in str(cjk_verdict({"font": "f", "missing": box, "glyphs": alike}))
    assert "no Chinese" in str(cjk_verdict({"font": "f", "missing": box, "glyphs": []}))
    real = [{"c": "集", "ink": 300, "hash": 1, "width": 32.0}, {"c": "合", "ink": 280, "hash": 2, "width": 32.0}]
    assert cjk_verdict({"font": "f", "missing": box, "glyphs": real}) is None


@pytest.mark.parametrize("fonts", ["system", "latin only"])
def test_the_glyph_check_sees_tofu_without_a_cjk_font(chromium: str, tmp_path: Path, fonts: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if fonts == "latin only":  # the browser's fontconfig knows DejaVu only: Chinese becomes empty boxes
        conf = tmp_path / "fonts.conf"
        conf.write_text(f'<?xml version="1.0"?><fontconfig><dir>/usr/share/fonts/truetype/dejavu</dir>'
                        f'<cachedir>{tmp_path / "cache"}</cachedir></fontconfig>', encoding="utf-8")
        monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    browser = DevTools(chromium, tmp_path)
    try:
        session = browser.open("data:text/html;charset=utf-8,<html lang=zh-HK><h1>香港空間數據 集合</h1></html>")
        browser.wait_for(session, "document.readyState === 'complete'")
        if fonts == "system":
            assert_cjk_renders(browser, session, "h1")
        else:
            with pytest.raises(pytest.fail.Exception, match="tofu"):
                assert_cjk_renders(browser, session, "h1")
    finally:
        browser.close()


@pytest.mark.db
@pytest.mark.parametrize("how", ["query", "header"])
def test_the_chinese_landing_page_draws_chinese_glyphs(servers: dict[str, str], chromium: str, tmp_path: Path,
                                                       how: str) -> None:
    browser = DevTools(chromium, tmp_path)
    try:
        if how == "query":
            session = browser.open(servers["plain"] + "/?lang=zh-HK")
        else:
            session = browser.open(servers["plain"] + "/", headers={"Accept-Language": "zh-HK"})
        browser.wait_for(session, "document.readyState === 'complete' && !!document.querySelector('h1')")
        assert browser.evaluate(session, "document.documentElement.lang") == "zh-HK"
        assert browser.evaluate(session, "document.querySelector('#sdi-logo').naturalWidth") > 0  # the SVG loaded
        assert "集合" in browser.evaluate(session, "document.querySelector('main').innerText")
        for selector in ("h1", "#collections", "header", "#contact"):
            assert_cjk_renders(browser, session, selector)
        if how == "query":  # the chosen language follows the reader's links
            href = browser.evaluate(session, "document.querySelector('#collections a').getAttribute('href')")
            assert "lang=zh-HK" in href
    finally:
        browser.close()
    assert not browser.exceptions, browser.exceptions


@pytest.mark.db
def test_the_maps_ask_the_landsd_tiles_with_one_setting(servers: dict[str, str], chromium: str,
                                                        tmp_path: Path) -> None:
    base = servers["landsd"]
    browser = DevTools(chromium, tmp_path)
    try:
        for path in ("/collections/districts_18/items?lang=zh-HK", "/collections/districts_18?f=html",
                     "/collections/districts_18/items?f=html"):
            session = browser.open(base + path)
            browser.wait_for(session, "!!document.querySelector('[data-sdi-rendered]')")
            assert browser.evaluate(session, "document.querySelector('[data-sdi-base-map]') !== null"), path
        for tms in ("WebMercatorQuad", "HK80Grid"):
            session = browser.open(f"{base}/collections/districts_18/tiles?f=html&tms={tms}")
            browser.wait_for(session, "document.querySelector('#tiles-map[data-sdi-rendered]') !== null")
    finally:
        requested = browser.close()
    landsd = [url for url in requested if url.startswith("https://mapapi.geodata.gov.hk/gs/api/v1.0.0/xyz/")]
    for part in ("/basemap/WGS84/", "/label/hk/tc/WGS84/", "/label/hk/en/WGS84/", "/basemap/HK80/",
                 "/label/hk/en/HK80/"):
        assert any(part in url for url in landsd), (part, landsd[:5])
