"""A file or zip over HTTP: conditional GET, an unchanged source makes no load, a changed one does, and every kind
of failure (timeout, 5xx, truncated zip, cut-short answer, over the size cap, 404) leaves the previous version
serving with a recorded failure. Served by a local fixture server started by the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from loaders.sync import sync_layer
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.harvest.conftest import geojson_bytes, history, live_state, points_frame, shapefile_zip
from tests.harvest.servers import FixtureServer, Reply

pytestmark = pytest.mark.db


def test_unchanged_source_makes_no_load_and_a_changed_one_does(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path], db: psycopg.Connection,
        tmp_path: Path) -> None:
    server.static("/data/points.zip", shapefile_zip(points_frame(), tmp_path / "v1"), content_type="application/zip")
    definition = read_definition(url_layer("http_points", {"url": server.url("/data/points.zip")},
                                           primary_key="code"))

    first = sync_layer(definition, harvest_settings)
    assert first.status == "loaded", first.message
    assert first.message == f"loaded 12 features into layers.http_points (load {first.load_id})"
    assert db.execute("select count(*) from layers.http_points").fetchone() == (12,)
    row = db.execute("select source_path, status, report->'fetch'->>'etag' is not null from sdi.load_history"
                     " where load_id = %s", (first.load_id,)).fetchone()
    assert row == (server.url("/data/points.zip"), "loaded", True)

    again = sync_layer(definition, harvest_settings)  # the server answers 304 to If-None-Match
    assert again.status == "unchanged" and "HTTP 304" in again.message
    assert server.requests_to("/data/points.zip")[-1].headers.get("if-none-match")
    assert db.execute("select load_id from sdi.layer where id = 'http_points'").fetchone() == (first.load_id,)

    # the same bytes without validators: unchanged by SHA-256
    server.static("/data/points.zip", shapefile_zip(points_frame(), tmp_path / "v1"), content_type="application/zip",
                  validators=False)
    same = sync_layer(definition, harvest_settings)
    assert same.status == "unchanged" and "same SHA-256" in same.message, same.message
    assert db.execute("select load_id from sdi.layer where id = 'http_points'").fetchone() == (first.load_id,)
    statuses = [(s, r) for _, s, r, _ in history(db, "http_points")]
    assert statuses == [("loaded", None), ("skipped", "not modified (HTTP 304)"),
                        ("skipped", f"unchanged: same SHA-256 as load {first.load_id}")]

    # the source drops two features and edits one: a new load
    server.static("/data/points.zip", shapefile_zip(points_frame(drop=2, edit=3), tmp_path / "v2"),
                  content_type="application/zip")
    changed = sync_layer(definition, harvest_settings)
    assert changed.status == "loaded", changed.message
    assert changed.load_id != first.load_id and changed.features == 10
    assert changed.message.startswith(f"loaded 10 features into layers.http_points (load {changed.load_id}")
    assert db.execute("select load_id, feature_count from sdi.layer where id = 'http_points'").fetchone() == (
        changed.load_id, 10)
    assert db.execute("select name from layers.http_points where code = 'P004'").fetchone() == ("Point 4 (renamed)",)
    changes = db.execute("select changes from sdi.load_history where load_id = %s", (changed.load_id,)).fetchone()[0]
    if changes is not None:  # change counts per load (loaders/changes.py), also on the sync's line
        assert (changes.get("removed"), changes.get("changed"), changes.get("added")) == (2, 1, 0), changes
        assert changed.message.endswith("; added 0, removed 2, changed 1)"), changed.message


def test_a_changed_definition_reloads_an_unchanged_source(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path],
        db: psycopg.Connection) -> None:
    server.static("/p.geojson", geojson_bytes(points_frame()), content_type="application/geo+json")
    path = url_layer("http_redefined", {"url": server.url("/p.geojson")}, primary_key="code")
    assert sync_layer(read_definition(path), harvest_settings).status == "loaded"
    path = url_layer("http_redefined", {"url": server.url("/p.geojson")}, primary_key="code",
                     fields={"name": {"name": "label"}})
    result = sync_layer(read_definition(path), harvest_settings)
    assert result.status == "loaded", result.message  # the same bytes, but the fields changed
    assert db.execute("select label from layers.http_redefined where code = 'P001'").fetchone() == ("Point 1",)
    forced = sync_layer(read_definition(path), harvest_settings, force=True)
    assert forced.status == "loaded" and not server.requests_to("/p.geojson")[-1].headers.get("if-none-match")


def _cut(body: bytes) -> Reply:
    return Reply(200, body, {"Content-Type": "application/zip"}, cut_after=len(body) // 2)


@pytest.mark.parametrize(("case", "reply", "settings_change", "reason"), [
    ("timeout", lambda body: Reply(200, body, delay_s=2.5), {}, "timed out after 1 s (SDI_FETCH_TIMEOUT_S) (2 tries)"),
    ("http_500", lambda body: Reply(500, b"boom", {"Content-Type": "text/plain"}), {},
     "HTTP 500 Internal Server Error (2 tries)"),
    ("http_404", lambda body: Reply(404, b"gone", {"Content-Type": "text/plain"}), {}, "HTTP 404 Not Found: gone"),
    ("truncated_zip", lambda body: Reply(200, body[: len(body) // 2], {"Content-Type": "application/zip"}), {},
     "not a readable zip file"),
    ("cut_short", _cut, {}, "the answer was cut short"),
    ("too_large", lambda body: Reply(200, body, {"Content-Type": "application/zip"}), {"fetch_max_bytes": 1000},
     "over SDI_FETCH_MAX_BYTES"),
])
def test_failures_leave_the_previous_version_serving(
        case: str, reply: Callable[[bytes], Reply], settings_change: dict[str, int], reason: str,
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path], db: psycopg.Connection,
        tmp_path: Path) -> None:
    layer_id = f"http_fail_{case}"
    url = server.url(f"/{case}/points.zip")
    server.static(f"/{case}/points.zip", shapefile_zip(points_frame(), tmp_path / "v1"), content_type="application/zip")
    definition = read_definition(url_layer(layer_id, {"url": url}))
    assert sync_layer(definition, harvest_settings).status == "loaded"
    before = live_state(db, layer_id)

    body = shapefile_zip(points_frame(drop=2), tmp_path / "v2")
    server.routes[f"/{case}/points.zip"] = lambda seen: reply(body)
    tries_before = len(server.requests_to(f"/{case}/points.zip"))
    result = sync_layer(definition, harvest_settings.model_copy(update=settings_change))

    assert result.status == "failed" and result.recorded, result.message
    assert reason in result.message, result.message
    assert url in result.message and "sdi-sync-" not in result.message  # the URL is named, never the scratch file
    assert live_state(db, layer_id) == before  # the previous version keeps serving
    last = history(db, layer_id)[-1]
    assert last[0] == result.load_id and last[1] == "failed" and reason in last[2] and last[3] == url
    tries = len(server.requests_to(f"/{case}/points.zip")) - tries_before
    assert tries == (2 if case in ("timeout", "http_500", "cut_short") else 1), tries


def test_the_first_sync_of_a_broken_source_records_the_failure(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path],
        db: psycopg.Connection) -> None:
    server.routes["/nothing.zip"] = lambda seen: Reply(503, b"", {"Retry-After": "0"})
    result = sync_layer(read_definition(url_layer("http_never", {"url": server.url("/nothing.zip")})),
                        harvest_settings)
    assert result.status == "failed" and "HTTP 503" in result.message
    assert db.execute("select to_regclass('layers.http_never'), (select count(*) from sdi.layer where"
                      " id = 'http_never')").fetchone() == (None, 0)
    assert [r[1] for r in history(db, "http_never")] == ["failed"]


def test_the_format_comes_from_the_content_type_when_the_url_has_no_suffix(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path],
        db: psycopg.Connection) -> None:
    server.static("/download", geojson_bytes(points_frame()), content_type="application/geo+json; charset=utf-8")
    server.static("/blob", geojson_bytes(points_frame()), content_type="application/octet-stream",
                  headers={"Content-Disposition": 'attachment; filename="points.geojson"'})
    server.static("/mystery", b"\x00\x01 not a known format", content_type="application/octet-stream")
    for layer_id, path in (("http_by_type", "/download"), ("http_by_disposition", "/blob")):
        result = sync_layer(read_definition(url_layer(layer_id, {"url": server.url(path)})), harvest_settings)
        assert result.status == "loaded" and result.features == 12, result.message
    result = sync_layer(read_definition(url_layer("http_mystery", {"url": server.url("/mystery")})), harvest_settings)
    assert result.status == "failed" and "cannot tell the format" in result.message
