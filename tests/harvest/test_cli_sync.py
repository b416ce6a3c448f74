"""`sdi sync`: one line per layer, exit code 1 on a failure, `--due` by update_frequency, `--json`; `sdi load` of a
URL layer says to use `sdi sync`; the URL source forms in layer files and their one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from loaders.fetch.http import shown_url
from loaders.sync import is_due
from sdi.cli import app
from sdi.errors import LayerDefinitionError
from sdi.layerdef import parse_definition, read_definition, validate_files
from sdi.settings import Settings
from tests.conftest import DATA
from tests.harvest.conftest import geojson_bytes, points_frame
from tests.harvest.servers import FixtureServer, Reply


def _sync(settings: Settings, *args: str):
    env = {"SDI_DATABASE_URL": settings.database_url, "SDI_LAYERS_DIR": str(settings.layers_dir),
           "SDI_FETCH_TIMEOUT_S": "1", "SDI_FETCH_RETRIES": "0"}
    return CliRunner().invoke(app, ["sync", *args], env=env)


@pytest.mark.db
def test_sync_prints_a_line_per_layer_and_fails_on_a_failure(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path], db: psycopg.Connection,
        layer_yaml: Callable[..., Path]) -> None:
    server.static("/a.geojson", geojson_bytes(points_frame()), content_type="application/geo+json")
    url_layer("cli_a", {"url": server.url("/a.geojson")}, update_frequency="weekly")
    url_layer("cli_b", {"url": server.url("/b.geojson")}, update_frequency="daily")
    server.static("/b.geojson", geojson_bytes(points_frame(drop=4)), content_type="application/geo+json")
    layer_yaml("cli_file", DATA / "good" / "landsd_point.geojson")  # a file source: not synced

    first = _sync(harvest_settings)
    assert first.exit_code == 0, first.output
    a, b = (db.execute("select load_id from sdi.layer where id = %s", (i,)).fetchone()[0] for i in ("cli_a", "cli_b"))
    assert first.stdout.splitlines() == [f"cli_a: loaded 12 features into layers.cli_a (load {a})",
                                         f"cli_b: loaded 8 features into layers.cli_b (load {b})"]
    assert db.execute("select to_regclass('layers.cli_file')").fetchone() == (None,)

    due = _sync(harvest_settings, "--due")  # both were just checked: neither is due, nothing is printed
    assert due.exit_code == 0 and due.stdout == "", due.output

    server.routes["/b.geojson"] = lambda seen: Reply(500, b"")
    again = _sync(harvest_settings, "--json")
    assert again.exit_code == 1
    results = {r["layer_id"]: r for r in json.loads(again.stdout)}
    assert results["cli_a"]["status"] == "unchanged" and results["cli_b"]["status"] == "failed"
    assert "HTTP 500" in results["cli_b"]["message"]

    one = _sync(harvest_settings, "cli_b")
    assert one.exit_code == 1 and one.stdout == ""
    assert one.stderr.startswith("cli_b: failed: ") and "HTTP 500 Internal Server Error (1 try)" in one.stderr

    # a day later (the history moved back a day), the daily layer is due and the weekly one is not
    with db.transaction():
        db.execute("update sdi.load_history set finished_at = finished_at - interval '1 day' where layer_id = 'cli_b'")
    server.static("/b.geojson", geojson_bytes(points_frame(drop=4)), content_type="application/geo+json")
    due = _sync(harvest_settings, "--due")
    assert due.exit_code == 0 and due.stdout.startswith("cli_b: unchanged"), due.output

    refused = _sync(harvest_settings, "cli_file")
    assert refused.exit_code == 1 and "source is a file (source.path), not a URL" in refused.stderr


@pytest.mark.db
def test_sdi_load_of_a_url_layer_points_to_sync(harvest_settings: Settings, url_layer: Callable[..., Path]) -> None:
    path = url_layer("cli_remote", {"url": "http://127.0.0.1:9/x.zip"})
    result = CliRunner().invoke(app, ["load", str(path)], env={"SDI_DATABASE_URL": harvest_settings.database_url})
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {path}: source.url is harvested, not a file: fetch and load it with " \
                                    f"`sdi sync cli_remote`"


def _definition(source: dict[str, object], frequency: str = "weekly"):
    return parse_definition({"id": "x", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c",
                             "licence": "l", "source": source, "update_frequency": frequency}, where="x.yml")


def test_due_by_update_frequency() -> None:
    now = dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC)
    weekly, monthly = _definition({"url": "https://h/x.zip"}), _definition({"url": "https://h/x.zip"}, "monthly")
    assert is_due(weekly, None, now)
    assert not is_due(weekly, now - dt.timedelta(days=6), now)
    assert is_due(weekly, now - dt.timedelta(days=7), now)
    assert is_due(weekly, now - dt.timedelta(days=7) + dt.timedelta(minutes=5), now)  # an hourly timer's drift
    assert not is_due(monthly, dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.UTC), now)
    assert is_due(monthly, dt.datetime(2026, 2, 28, 12, 0, tzinfo=dt.UTC), now)
    assert is_due(_definition({"url": "https://h/x.zip"}, "continual"), now, now)
    assert not is_due(_definition({"url": "https://h/x.zip"}, "asNeeded"), None, now)


@pytest.mark.parametrize(("source", "error"), [
    ({}, "source.path: Field required (a file; or give source.url)"),
    ({"url": "https://h/x.zip", "path": "x.zip"}, "source.url: give source.path or source.url, not both"),
    ({"url": "file:///etc/passwd"}, "source.url: Value error, must be an http:// or https:// URL with a host"),
    ({"url": "https://h/wfs", "service": "wfs"}, "source.typename: Field required for service 'wfs'"),
    ({"url": "https://h/ogc", "service": "ogcapi"}, "source.collection: Field required for service 'ogcapi'"),
    ({"url": "https://h/x", "service": "arcgis", "typename": "a"}, "source.typename: not a parameter of service "
                                                                   "'arcgis' (only of 'wfs')"),
    ({"path": "x.shp", "service": "wfs", "typename": "a"}, "source.service: 'wfs' needs source.url"),
    ({"url": "https://h/wfs", "service": "wfs", "typename": "a", "output": "kml"}, "source.output: Input should be"),
    ({"url": "https://h/x", "service": "soap"}, "source.service: Input should be"),
])
def test_url_source_errors_name_the_key(source: dict[str, object], error: str) -> None:
    with pytest.raises(LayerDefinitionError) as info:
        _definition(source)
    assert f"x.yml: {error}" in str(info.value) and "\n" not in str(info.value)


def test_url_source_forms_are_valid_and_need_no_file(tmp_path: Path) -> None:
    forms = [{"url": "https://h/data/x.zip", "layer": "x.shp"},
             {"url": "https://h/ogc/collections/landslides", "service": "ogcapi", "page_size": 500},
             {"url": "https://h/ogc", "service": "ogcapi", "collection": "landslides"},
             {"url": "https://h/wfs", "service": "wfs", "typename": "ms:landslides", "output": "geojson"},
             {"url": "https://h/arcgis/rest/services/x/MapServer/0", "service": "arcgis", "crs": 2326}]
    paths = []
    for i, source in enumerate(forms):
        path = tmp_path / f"l{i}.yml"
        path.write_text(json.dumps({"id": f"l{i}", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c",
                                    "licence": "l", "source": source}), encoding="utf-8")
        paths.append(path)
    good, problems = validate_files(paths)
    assert problems == [] and len(good) == len(forms)
    assert read_definition(paths[0]).is_remote


def test_urls_in_messages_hide_secrets() -> None:
    assert shown_url("https://u:pw@h/x?token=abc&f=json") == "https://u:***@h/x?token=***&f=json"
    assert shown_url("https://h/q?where=1%3D1&apiKey=k") == "https://h/q?where=1=1&apiKey=***"
    assert shown_url("https://h/plain.zip") == "https://h/plain.zip"
