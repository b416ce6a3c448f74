"""`sdi publish`: the pygeoapi configuration and OpenAPI document generated from the catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sdi.catalogue import Catalogue
from sdi.publishing.config import CRS84, CRS_LIST, STORAGE_CRS, publish
from sdi.settings import Settings
from tests.conftest import loaded_database

VECTORS = ("districts_18", "landslide_incidents", "weather_stations")
RASTER = "synthetic_mudflat_elevation"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A module database with three vector layers and the synthetic raster loaded."""
    data_dir = tmp_path_factory.mktemp("store")
    with loaded_database((*VECTORS, RASTER), data_dir=data_dir, public_url="http://sdi.example.org:8080/") as settings:
        yield settings


@pytest.fixture(scope="module")
def published(store: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("pygeoapi")
    result = publish(store, output_dir=out)
    return out, yaml.safe_load(result.config.read_text(encoding="utf-8"))


def test_every_layer_is_a_collection_with_crs84_first(published: tuple[Path, dict[str, Any]], store: Settings) -> None:
    _, config = published
    resources = config["resources"]
    for layer in VECTORS:
        res = resources[layer]
        assert res["type"] == "collection"
        assert res["crs"][0] == CRS84 and res["crs"] == CRS_LIST
        assert res["storage_crs"] == STORAGE_CRS
        feature = next(p for p in res["providers"] if p["type"] == "feature")
        assert feature["name"] == "sdi.publishing.features.SdiFeatureProvider"
        assert feature["data"] == "env" and feature["table"] == layer and feature["geom_field"] == "geom"
        assert feature["storage_crs"] == STORAGE_CRS and feature["crs"] == CRS_LIST
        assert feature["id_field"]
        assert any(p["type"] == "tile" for p in res["providers"])
        record = Catalogue(store).get(layer)
        assert record.bbox_crs84 is not None
        assert res["title"] == {"en": record.title_en, "zh": record.title_zh}
        assert set(res["description"]) == {"en", "zh"}
        assert res["extents"]["spatial"]["bbox"] == pytest.approx(list(record.bbox_crs84))
        assert res["extents"]["spatial"]["crs"] == CRS84
        assert any(link["rel"] == "license" for link in res["links"])
    collections = [r for r, v in resources.items() if v["type"] == "collection"]
    assert sorted(collections) == sorted(["catalogue", *VECTORS, RASTER])
    assert resources["data-centre-site-selection"]["type"] == "process"


def test_raster_and_synthetic_layers(published: tuple[Path, dict[str, Any]]) -> None:
    _, config = published
    raster = config["resources"][RASTER]
    assert [p["type"] for p in raster["providers"]] == ["coverage"]
    assert "synthetic" in raster["title"]["en"].lower()
    assert "synthetic" in raster["description"]["en"].lower() and "合成" in raster["description"]["zh"]


def test_catalogue_collection_and_server(published: tuple[Path, dict[str, Any]]) -> None:
    _, config = published
    cat = config["resources"]["catalogue"]
    assert cat["itemType"] == "record"
    provider = cat["providers"][0]
    assert provider["name"] == "sdi.catalogue.records_provider.CatalogueRecordsProvider"
    assert provider["data"] == "env" and provider["languages"] == ["en-US", "zh-HK"]
    assert config["server"]["url"] == "http://sdi.example.org:8080"
    assert config["server"]["languages"] == ["en-US", "zh-HK"]
    assert config["metadata"]["identification"]["title"]["zh"]


def test_config_is_valid_for_pygeoapi(published: tuple[Path, dict[str, Any]]) -> None:
    from pygeoapi.config import validate_config
    from pygeoapi.util import yaml_load

    out, _ = published
    with (out / "pygeoapi-config.yml").open(encoding="utf-8") as fh:
        assert validate_config(yaml_load(fh))


def test_openapi_document_has_items_paths(published: tuple[Path, dict[str, Any]]) -> None:
    out, _ = published
    doc = yaml.safe_load((out / "pygeoapi-openapi.yml").read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.0")
    for layer in (*VECTORS, "catalogue"):
        assert f"/collections/{layer}/items" in doc["paths"]
    assert f"/collections/{RASTER}/coverage" in doc["paths"]


def test_output_is_deterministic(store: Settings, published: tuple[Path, dict[str, Any]],
                                 tmp_path: Path) -> None:
    out, _ = published
    again = publish(store, output_dir=tmp_path)
    for name in ("pygeoapi-config.yml", "pygeoapi-openapi.yml"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert again.collections[0] == "catalogue" and again.collections[1:] == sorted(again.collections[1:])


def test_publish_command(store: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from sdi.cli.publish import publish_cmd

    monkeypatch.setenv("SDI_DATABASE_URL", store.database_url)
    monkeypatch.setenv("SDI_DATA_DIR", str(store.data_dir))
    cli = typer.Typer()
    cli.command()(publish_cmd)
    result = CliRunner().invoke(cli, ["--output-dir", str(tmp_path), "--public-url", "https://sdi.example.hk"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "pygeoapi-config.yml").read_text(encoding="utf-8"))
    assert config["server"]["url"] == "https://sdi.example.hk"
    assert (tmp_path / "pygeoapi-openapi.yml").is_file()
