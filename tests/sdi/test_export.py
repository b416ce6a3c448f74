"""Metadata export: ISO 19139 XML, DCAT JSON-LD and pygeometa MCF from catalogue records, and the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pygeometa.core import validate_mcf
from typer.testing import CliRunner

from sdi.catalogue import Catalogue, CatalogueRecord
from sdi.catalogue.export import export, lineage_statement, to_dcat, to_mcf
from sdi.cli import app
from sdi.errors import ConfigError
from sdi.settings import Settings
from tests.conftest import loaded_database

NS = {"gmd": "http://www.isotc211.org/2005/gmd", "gco": "http://www.isotc211.org/2005/gco",
      "gml": "http://www.opengis.net/gml"}
DCT_TITLE = "http://purl.org/dc/terms/title"


@pytest.fixture(scope="module")
def catalogue_url(database_url: str) -> Iterator[str]:
    with loaded_database(("districts_18", "weather_stations")) as settings:
        yield settings.database_url


@pytest.fixture(scope="module")
def districts(catalogue_url: str) -> CatalogueRecord:
    return Catalogue(Settings(database_url=catalogue_url)).get("districts_18")


@pytest.fixture(scope="module")
def stations(catalogue_url: str) -> CatalogueRecord:
    return Catalogue(Settings(database_url=catalogue_url)).get("weather_stations")


def _texts(root: ET.Element, path: str) -> list[str]:
    return [(e.text or "").strip() for e in root.findall(path, NS)]


def test_iso19139_has_both_titles_bbox_topic_and_lineage(districts: CatalogueRecord) -> None:
    root = ET.fromstring(export(districts, "iso19139").encode("utf-8"))
    assert root.tag == f"{{{NS['gmd']}}}MD_Metadata"
    assert _texts(root, "gmd:fileIdentifier/gco:CharacterString") == ["districts_18"]
    title = root.find(".//gmd:identificationInfo//gmd:citation/gmd:CI_Citation/gmd:title", NS)
    assert title is not None
    assert title.findtext("gco:CharacterString", namespaces=NS) == districts.title_en
    assert title.findtext(".//gmd:LocalisedCharacterString", namespaces=NS) == districts.title_zh
    assert _texts(root, ".//gmd:topicCategory/gmd:MD_TopicCategoryCode") == ["boundaries"]
    box = root.find(".//gmd:EX_GeographicBoundingBox", NS)
    assert box is not None and districts.bbox_crs84 is not None
    west = float(box.findtext("gmd:westBoundLongitude/gco:Decimal", namespaces=NS) or "nan")
    north = float(box.findtext("gmd:northBoundLatitude/gco:Decimal", namespaces=NS) or "nan")
    assert west == pytest.approx(districts.bbox_crs84[0]) and north == pytest.approx(districts.bbox_crs84[3])
    assert 113.8 < west < 114.0 and 22.4 < north < 22.6
    hk80 = root.find(".//gml:posList", NS)
    assert hk80 is not None and hk80.get("srsName") == "2326"
    assert "urn:ogc:def:crs:EPSG:2326" in _texts(root, ".//gmd:referenceSystemIdentifier//gmd:code/gco:CharacterString")
    statement = root.findtext(".//gmd:LI_Lineage/gmd:statement/gco:CharacterString", namespaces=NS) or ""
    assert districts.lineage["source_sha256"] in statement and "Hong_Kong_18_Districts.shp" in statement
    assert "Repaired: 1 invalid geometry repaired" in statement
    urls = _texts(root, ".//gmd:transferOptions//gmd:linkage/gmd:URL")
    assert any(u.endswith("/collections/districts_18/items?f=json") for u in urls)


def test_iso19139_temporal_extent(stations: CatalogueRecord) -> None:
    root = ET.fromstring(export(stations, "iso19139").encode("utf-8"))
    assert _texts(root, ".//gml:TimePeriod/gml:beginPosition")[0].startswith("2021-01-19")
    assert _texts(root, ".//gml:TimePeriod/gml:endPosition")[0].startswith("2021-01-20")


def _expand_titles(doc: dict[str, object]) -> dict[str, str]:
    """Language → dct:title, resolving the JSON-LD context by hand (a language map or language-tagged terms)."""
    context = doc["@context"]
    assert isinstance(context, dict)
    out: dict[str, str] = {}
    for term, value in doc.items():
        definition = context.get(term)
        iri = definition.get("@id") if isinstance(definition, dict) else definition
        if iri not in ("dct:title", DCT_TITLE):
            continue
        if isinstance(definition, dict) and definition.get("@container") == "@language":
            assert isinstance(value, dict)
            out.update(value)
        elif isinstance(definition, dict) and definition.get("@language") and value:
            out[definition["@language"]] = str(value)
    return out


def test_dcat_jsonld_has_titles_in_both_languages_and_spatial(districts: CatalogueRecord) -> None:
    doc = json.loads(export(districts, "dcat"))
    assert doc["@type"] == "dcat:Dataset"
    assert _expand_titles(doc) == {"en": districts.title_en, "zh": districts.title_zh}
    assert doc["@context"]["spatial"] == "dct:spatial"
    bboxes = [s["bbox"] for s in doc["spatial"] if s["crs"] == 4326]
    assert bboxes and bboxes[0] == pytest.approx(list(districts.bbox_crs84 or ()), abs=1e-6)
    assert doc["keywords"]["zh"] == districts.keywords_zh and doc["keywords"]["en"] == districts.keywords_en
    assert {d["@type"] for d in doc["distribution"]} == {"dcat:Distribution"}
    assert any(d["url"].endswith("/collections/districts_18") for d in doc["distribution"])
    assert doc["@id"].endswith("/collections/districts_18")


def test_dcat_does_not_mutate_the_mcf(districts: CatalogueRecord) -> None:
    before = to_mcf(districts)
    to_dcat(districts)
    assert "@type" not in json.dumps(before) and to_mcf(districts) == before


def test_mcf_is_valid_and_round_trips_through_yaml(stations: CatalogueRecord) -> None:
    mcf = to_mcf(stations)
    assert validate_mcf(mcf)
    text = export(stations, "mcf")
    assert yaml.safe_load(text) == mcf
    assert mcf["identification"]["title"] == {"en": stations.title_en, "zh": stations.title_zh}
    assert mcf["metadata"]["language_alternate"] == "zh"
    assert mcf["identification"]["keywords"]["theme_zh"]["keywords"] == stations.keywords_zh
    assert mcf["identification"]["extents"]["temporal"][0]["begin"].startswith("2021-01-19")
    assert "天氣" in text  # written as UTF-8, not escaped


def test_lineage_statement_mentions_synthetic() -> None:
    record = CatalogueRecord(id="x", title_en="X", custodian="C", licence="L", feature_count=1,
                             loaded_at="2024-01-01T00:00:00Z", synthetic=True,
                             lineage={"source_file": "x.gpkg", "dropped": {"null geometry": 2}})
    statement = lineage_statement(record)
    assert "x.gpkg" in statement and "Dropped: 2 null geometry" in statement and "Synthetic" in statement
    root = ET.fromstring(export(record, "iso19139").encode("utf-8"))  # no extent, no Chinese: still valid XML
    assert root.find(".//gmd:PT_FreeText", NS) is None


def test_unknown_format_is_a_config_error(districts: CatalogueRecord) -> None:
    with pytest.raises(ConfigError, match=r"^format: expected one of iso19139, dcat, mcf, got 'shapefile'$"):
        export(districts, "shapefile")


def test_cli_export_writes_file(catalogue_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDI_DATABASE_URL", catalogue_url)
    out = tmp_path / "districts.xml"
    result = CliRunner().invoke(app, ["catalogue", "export", "districts_18", "--format", "iso19139",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert ET.fromstring(out.read_bytes()).tag == f"{{{NS['gmd']}}}MD_Metadata"
    result = CliRunner().invoke(app, ["catalogue", "export", "weather_stations", "--format", "dcat"])
    assert result.exit_code == 0 and json.loads(result.stdout)["title"]["zh"] == "香港氣象站網絡"


def test_cli_export_errors_are_one_line(catalogue_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDI_DATABASE_URL", catalogue_url)
    bad = CliRunner().invoke(app, ["catalogue", "export", "districts_18", "--format", "kml"])
    assert bad.exit_code == 1
    assert bad.stderr.strip() == "error: --format: expected one of iso19139, dcat, mcf, got 'kml'"
    missing = CliRunner().invoke(app, ["catalogue", "export", "no_such_layer", "--output", str(tmp_path / "x")])
    assert missing.exit_code == 1 and missing.stderr.strip().startswith("error: ") and "no_such_layer" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
