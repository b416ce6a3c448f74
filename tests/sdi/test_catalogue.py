"""The catalogue: bilingual ranked search, typo tolerance, bbox, facets, and records kept with each load."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from pyproj import Transformer
from typer.testing import CliRunner

from loaders import load
from sdi.catalogue import Catalogue
from sdi.cli import app
from sdi.errors import ConfigError, LayerNotFoundError
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import DATA, LAYERS, loaded_database

SAMPLES = ["district_council_2001", "districts_18", "landslide_incidents", "public_libraries_2013",
           "public_hospitals_2013", "weather_stations", "oil_storage_installations", "traffic_hotzone_streets",
           "industrial_special_waivers", "country_parks"]


@pytest.fixture(scope="module")
def catalogue(database_url: str) -> Iterator[Catalogue]:
    """A catalogue of the sample layers only, in a database of its own (other tests load other layers)."""
    with loaded_database(SAMPLES) as settings:
        yield Catalogue(settings)


@pytest.mark.parametrize(("query", "expected"), [
    ("landslide", "landslide_incidents"),
    ("hospitals", "public_hospitals_2013"),
    ("weather stations", "weather_stations"),
    ("traffic collision streets", "traffic_hotzone_streets"),
    ("oil storage", "oil_storage_installations"),
])
def test_english_query_ranks_expected_layer_first(catalogue: Catalogue, query: str, expected: str) -> None:
    assert catalogue.search(query).ids()[0] == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("選區", "district_council_2001"),
    ("圖書館", "public_libraries_2013"),
    ("山泥傾瀉", "landslide_incidents"),
    ("貯油", "oil_storage_installations"),
    ("氣象站", "weather_stations"),
])
def test_chinese_query_ranks_expected_layer_first(catalogue: Catalogue, query: str, expected: str) -> None:
    result = catalogue.search(query)
    assert result.ids()[0] == expected
    assert result.records[0].title("zh-HK") == read_definition(LAYERS / f"{expected}.yml").title.zh


@pytest.mark.parametrize(("typo", "expected"), [
    ("landslid", "landslide_incidents"), ("hospitls", "public_hospitals_2013"), ("libraries 2031", None),
])
def test_one_letter_typo_still_finds_the_layer(catalogue: Catalogue, typo: str, expected: str | None) -> None:
    ids = catalogue.search(typo).ids()
    assert ids[0] == (expected or "public_libraries_2013")


def test_stemming_zones_finds_zoning(settings: Settings, layer_yaml: Callable[..., Path]) -> None:
    path = layer_yaml("ozp_test", DATA / "good" / "landsd_point.geojson",
                      title={"en": "Outline zoning plan test layer", "zh": "分區計劃大綱圖"})
    load(read_definition(path), settings)
    ids = Catalogue(settings).search("zones", limit=100).ids()
    assert "ozp_test" in ids  # "zones" and "zoning" share the stem "zone"


def test_unmatched_query_returns_nothing(catalogue: Catalogue) -> None:
    result = catalogue.search("qwxzv kjhgf")
    assert result.matched == 0 and result.records == []


def _layer_bbox_crs84(db: psycopg.Connection, layer_id: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = db.execute(f'select st_xmin(e), st_ymin(e), st_xmax(e), st_ymax(e) from '
                                f'(select st_extent(geom) e from layers."{layer_id}") s').fetchone()  # type: ignore[misc]
    t = Transformer.from_crs(2326, 4326, always_xy=True)
    lons, lats = t.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
    return min(lons), min(lats), max(lons), max(lats)


@pytest.mark.parametrize("bbox", [(114.09, 22.33, 114.12, 22.36), (114.25, 22.15, 114.30, 22.20),
                                  (113.80, 22.40, 113.90, 22.50), (-0.2, 51.4, 0.1, 51.6)])
def test_bbox_matches_layers_whose_extent_intersects(catalogue: Catalogue, bbox: tuple[float, ...]) -> None:
    with psycopg.connect(catalogue.settings.database_url) as db:
        expected = set()
        for layer_id in SAMPLES:
            b = _layer_bbox_crs84(db, layer_id)
            if b[0] <= bbox[2] and bbox[0] <= b[2] and b[1] <= bbox[3] and bbox[1] <= b[3]:
                expected.add(layer_id)
    got = set(catalogue.search(bbox=",".join(map(str, bbox)), limit=100).ids()) & set(SAMPLES)
    assert got == expected


def test_facets_count_all_matches_not_just_the_page(catalogue: Catalogue) -> None:
    everything = catalogue.search(limit=100)
    page = catalogue.search(limit=2)
    assert len(page) == 2 and page.matched == everything.matched
    assert page.facets["custodian"] == dict(Counter(r.custodian for r in everything.records))
    assert page.facets["theme"] == dict(Counter(r.theme or "unspecified" for r in everything.records))


def test_custodian_and_theme_filters(catalogue: Catalogue) -> None:
    census = catalogue.search(custodian="census and statistics department", limit=100)
    assert census.ids() and all(r.custodian == "Census and Statistics Department" for r in census.records)
    boundaries = catalogue.search(theme="boundaries", limit=100)
    assert {"district_council_2001", "districts_18"} <= set(boundaries.ids())
    assert all(r.theme == "boundaries" for r in boundaries.records)


def test_bad_parameters_are_config_errors(catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match="bbox: expected four numbers"):
        catalogue.search(bbox="1,2,3")
    with pytest.raises(ConfigError, match="limit: must be between 1 and 1000"):
        catalogue.search(limit=0)
    with pytest.raises(LayerNotFoundError, match="no catalogue record 'nope'"):
        catalogue.get("nope")


def test_record_contents(catalogue: Catalogue) -> None:
    record = catalogue.get("district_council_2001")
    assert record.title_zh == "區議會選區（2001年人口普查）" and "區議會" in record.keywords_zh
    assert "census" in record.keywords_en and record.theme == "boundaries"
    assert record.feature_count == 390 and record.geometry_type == "Polygon"
    assert record.lineage["source_file"] == "dcca.shp" and len(record.lineage["source_sha256"]) == 64
    assert record.lineage["repaired"] == {"invalid geometry repaired (ring self-intersection)": 2}
    assert record.bbox_crs84 is not None and 113.8 < record.bbox_crs84[0] < record.bbox_crs84[2] < 114.6
    assert any(link["rel"] == "collection" and link["href"].endswith("/collections/district_council_2001")
               for link in record.links)
    html = catalogue.search("選區")._repr_html_()
    assert "District Council constituency areas" in html and "區議會選區" in html


def test_reload_updates_count_extent_and_lineage(settings: Settings, layer_yaml: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    cat = Catalogue(settings)
    v1 = tmp_path / "v1.geojson"
    v1.write_text((DATA / "good" / "landsd_point.geojson").read_text("utf-8"), encoding="utf-8")
    path = layer_yaml("reload_probe", v1)
    first = load(read_definition(path), settings)
    before = cat.get("reload_probe")
    doc = json.loads(v1.read_text("utf-8"))
    doc["features"].append({"type": "Feature", "properties": {"code": "C", "name": "Sha Tin", "name_zh": "沙田"},
                            "geometry": {"type": "Point", "coordinates": [114.19, 22.38]}})
    v2 = tmp_path / "v2.geojson"
    v2.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    second = load(read_definition(layer_yaml("reload_probe", v2)), settings)
    after = cat.get("reload_probe")
    assert (before.feature_count, after.feature_count) == (2, 3)
    assert before.bbox_crs84 is not None and after.bbox_crs84 is not None
    assert after.bbox_crs84[3] > before.bbox_crs84[3]  # Sha Tin is north of the first two points
    assert after.lineage["source_sha256"] != before.lineage["source_sha256"]
    assert (before.lineage["load_id"], after.lineage["load_id"]) == (first.load_id, second.load_id)


def test_failed_load_leaves_the_record_as_it_was(settings: Settings, layer_yaml: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    cat = Catalogue(settings)
    path = layer_yaml("failed_probe", DATA / "good" / "landsd_point.geojson")
    load(read_definition(path), settings)
    before = cat.get("failed_probe")

    def boom(done: int, total: int) -> None:
        raise RuntimeError("injected")

    other = layer_yaml("failed_probe", DATA / "good" / "all_types.geojson")
    with pytest.raises(RuntimeError):
        load(read_definition(other), settings, progress=boom)
    assert cat.get("failed_probe") == before


def test_cli_search_json_and_table(catalogue: Catalogue) -> None:
    env = {"SDI_DATABASE_URL": catalogue.settings.database_url}
    result = CliRunner().invoke(app, ["catalogue", "search", "選區", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["records"][0]["id"] == "district_council_2001" and data["matched"] >= 1
    table = CliRunner().invoke(app, ["catalogue", "search", "landslide", "--lang", "zh-HK"], env=env)
    assert table.exit_code == 0 and "山泥傾瀉事故" in table.stdout
    bad = CliRunner().invoke(app, ["catalogue", "search", "x", "--bbox", "a,b,c,d"], env=env)
    assert bad.exit_code == 1 and bad.stderr.startswith("error: bbox: expected four numbers")
