"""What a load changed: counts against the previous version (by key, or by content without one), the ids in
``sdi.load_changes``, and the counts in ``sdi load``, ``sdi load --json`` and ``sdi layers history``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import psycopg
import pytest
import shapely
from psycopg import sql
from shapely import affinity
from typer.testing import CliRunner

from loaders import changes as changes_module
from loaders import load
from loaders.report import LoadReport, changes_summary
from sdi.cli import app
from sdi.errors import LoadInterruptedError
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, db_snapshot

pytestmark = pytest.mark.db
COUNTS = ("added", "removed", "changed", "changed_geometry", "changed_attributes", "unchanged")


def _source(folder: Path, name: str, features: list[dict[str, Any]]) -> Path:
    """A GeoPackage (EPSG:2326) of ``features`` (dicts with a ``geometry``)."""
    path = folder / f"{name}.gpkg"
    gpd.GeoDataFrame([{k: v for k, v in f.items() if k != "geometry"} for f in features],
                     geometry=[f["geometry"] for f in features], crs=2326).to_file(path, driver="GPKG")
    return path


def _features(n: int = 10) -> list[dict[str, Any]]:
    """``n`` squares 50 m wide in a row, with a code, a name and a number."""
    return [{"code": f"A{i:02d}", "name": f"name {i}", "value": i * 10,
             "geometry": shapely.box(835000 + 100 * i, 817000, 835050 + 100 * i, 817050)} for i in range(n)]


class Layer:
    """A test layer whose source the test rewrites between loads."""

    def __init__(self, layer_id: str, folder: Path, layer_yaml: Callable[..., Path], settings: Settings,
                 **extra: Any) -> None:
        self.id, self.folder, self.layer_yaml, self.settings, self.extra = layer_id, folder, layer_yaml, settings, extra
        self.version = 0

    def load(self, features: list[dict[str, Any]], **extra: Any) -> LoadReport:
        """Write ``features`` as the next version of the source and load it."""
        self.version += 1
        path = _source(self.folder, f"{self.id}_v{self.version}", features)
        return load(read_definition(self.layer_yaml(self.id, path, **{**self.extra, **extra})), self.settings)


@pytest.fixture
def layer(tmp_path: Path, layer_yaml: Callable[..., Path], settings: Settings) -> Callable[..., Layer]:
    """Make a test layer with a new id (``ch_<random>``) and the given YAML keys."""
    def make(**extra: Any) -> Layer:
        return Layer(f"ch_{uuid.uuid4().hex[:12]}", tmp_path, layer_yaml, settings, **extra)

    return make


def counts(report: LoadReport) -> dict[str, Any]:
    assert report.changes is not None
    return {k: report.changes[k] for k in COUNTS}


def ids(db: psycopg.Connection, load_id: int | None) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"added": set(), "removed": set(), "changed": set()}
    for change, feature_id in db.execute("select change, feature_id from sdi.load_changes where load_id = %s",
                                         (load_id,)):
        found[change].add(feature_id)
    return found


def stored(db: psycopg.Connection, load_id: int | None) -> Any:
    row = db.execute("select changes from sdi.load_history where load_id = %s", (load_id,)).fetchone()
    assert row is not None
    return row[0]


def _drop_two_edit_one(edit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    features = [f for f in _features() if f["code"] not in ("A03", "A07")]
    edit(next(f for f in features if f["code"] == "A05"))
    return features


def _move(feature: dict[str, Any]) -> None:
    feature["geometry"] = affinity.translate(feature["geometry"], 5, 0)


def _rename(feature: dict[str, Any]) -> None:
    feature["name"] = "renamed"


# --- keyed layers ------------------------------------------------------------------------------------------------


def test_first_load_records_no_changes(layer: Callable[..., Layer], db: psycopg.Connection) -> None:
    report = layer(primary_key="code").load(_features())
    assert report.changes is None
    assert stored(db, report.load_id) is None
    assert changes_summary(report.changes) == "none: first load of this layer"


def test_two_dropped_and_one_moved_are_counted_by_key(layer: Callable[..., Layer], db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    first = keyed.load(_features())
    report = keyed.load(_drop_two_edit_one(_move))
    assert counts(report) == {"added": 0, "removed": 2, "changed": 1, "changed_geometry": 1,
                              "changed_attributes": 0, "unchanged": 7}
    assert report.changes is not None
    assert report.changes["compared_by"] == "key" and report.changes["key"] == "code"
    assert report.changes["previous_load_id"] == first.load_id and report.changes["ids"] == "recorded"
    assert ids(db, report.load_id) == {"added": set(), "removed": {"A03", "A07"}, "changed": {"A05"}}
    assert stored(db, report.load_id) == report.changes  # the history row and the report agree
    history_report = db.execute("select report -> 'changes' from sdi.load_history where load_id = %s",
                                (report.load_id,)).fetchone()
    assert history_report == (report.changes,)
    assert changes_summary(report.changes) == \
        f"added 0, removed 2, changed 1 (geometry 1, attributes 0), unchanged 7 (since load {first.load_id})"
    assert changes_summary(report.changes, short=True) == \
        "added 0, removed 2, changed 1 (geometry 1, attributes 0), unchanged 7"


def test_an_attribute_edit_and_an_addition_are_counted_by_key(layer: Callable[..., Layer],
                                                               db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    keyed.load(_features())
    features = [*_drop_two_edit_one(_rename),
                {"code": "A10", "name": "new", "value": 5, "geometry": shapely.box(836500, 817000, 836550, 817050)}]
    report = keyed.load(features)
    assert counts(report) == {"added": 1, "removed": 2, "changed": 1, "changed_geometry": 0,
                              "changed_attributes": 1, "unchanged": 7}
    assert ids(db, report.load_id) == {"added": {"A10"}, "removed": {"A03", "A07"}, "changed": {"A05"}}


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
def test_an_unchanged_reload_is_all_unchanged(layer: Callable[..., Layer], db: psycopg.Connection,
                                              keyed: bool) -> None:
    probe = layer(**({"primary_key": "code"} if keyed else {}))
    probe.load(_features())
    report = probe.load(_features())
    assert counts(report) == {"added": 0, "removed": 0, "changed": 0 if keyed else None,
                              "changed_geometry": 0 if keyed else None,
                              "changed_attributes": 0 if keyed else None, "unchanged": 10}
    assert ids(db, report.load_id) == {"added": set(), "removed": set(), "changed": set()}


def test_a_type_promotion_alone_is_not_a_change(layer: Callable[..., Layer]) -> None:
    keyed = layer(primary_key="code")
    assert keyed.load(_features()).geometry_type == "Polygon"
    features = _features()
    features[2]["geometry"] = shapely.MultiPolygon([features[2]["geometry"], shapely.box(835200, 817100,
                                                                                         835210, 817110)])
    report = keyed.load(features)  # every feature is now a (one-part) MultiPolygon
    assert report.geometry_type == "MultiPolygon"
    assert counts(report) == {"added": 0, "removed": 0, "changed": 1, "changed_geometry": 1,
                              "changed_attributes": 0, "unchanged": 9}


# --- columns added, removed or retyped ---------------------------------------------------------------------------


def test_a_column_added_changes_the_features_that_have_a_value(layer: Callable[..., Layer],
                                                                db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    keyed.load(_features())
    features = _features()
    for f in features:
        f["note"] = "checked" if f["code"] in ("A01", "A02") else None
    report = keyed.load(features)
    assert counts(report) == {"added": 0, "removed": 0, "changed": 2, "changed_geometry": 0,
                              "changed_attributes": 2, "unchanged": 8}
    assert report.changes is not None and report.changes["columns_added"] == ["note"]
    assert ids(db, report.load_id)["changed"] == {"A01", "A02"}
    assert changes_summary(report.changes).endswith("; columns added note")


def test_a_column_removed_changes_every_feature_that_had_a_value(layer: Callable[..., Layer]) -> None:
    keyed = layer(primary_key="code")
    features = _features()
    features[4]["value"] = None
    keyed.load(features)
    report = keyed.load([{k: v for k, v in f.items() if k != "value"} for f in _features()])
    assert counts(report) == {"added": 0, "removed": 0, "changed": 9, "changed_geometry": 0,
                              "changed_attributes": 9, "unchanged": 1}
    assert report.changes is not None and report.changes["columns_removed"] == ["value"]


def test_a_retyped_column_is_compared_by_its_text(layer: Callable[..., Layer], db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    keyed.load(_features())  # value: bigint
    features = _features()
    for f in features:
        f["value"] = str(f["value"])
    features[6]["value"] = "60a"  # the column is now text; "20" is still 20
    report = keyed.load(features)
    assert counts(report) == {"added": 0, "removed": 0, "changed": 1, "changed_geometry": 0,
                              "changed_attributes": 1, "unchanged": 9}
    assert report.changes is not None and report.changes["columns_retyped"] == ["value"]
    assert ids(db, report.load_id)["changed"] == {"A06"}


# --- layers without a key ----------------------------------------------------------------------------------------


def test_an_unkeyed_layer_is_compared_by_content(layer: Callable[..., Layer], db: psycopg.Connection) -> None:
    unkeyed = layer()
    unkeyed.load(_features())
    report = unkeyed.load(list(reversed(_drop_two_edit_one(_move))))  # new order: every fid moves
    assert counts(report) == {"added": 1, "removed": 3, "changed": None, "changed_geometry": None,
                              "changed_attributes": None, "unchanged": 7}
    assert report.changes is not None
    assert report.changes["compared_by"] == "content" and report.changes["ids"] == "unkeyed"
    assert ids(db, report.load_id) == {"added": set(), "removed": set(), "changed": set()}
    assert "(since load " in changes_summary(report.changes) and "; by content: " in changes_summary(report.changes)
    assert changes_summary(report.changes, short=True).endswith("unchanged 7 (by content)")


def test_content_comparison_counts_identical_features_as_a_multiset(layer: Callable[..., Layer]) -> None:
    unkeyed = layer()
    features = _features(3)
    unkeyed.load([*features, dict(features[0]), dict(features[0])])  # A00 three times
    report = unkeyed.load([*features, dict(features[1])])  # A00 once, A01 twice
    assert counts(report) == {"added": 1, "removed": 2, "changed": None, "changed_geometry": None,
                              "changed_attributes": None, "unchanged": 3}


def test_a_layer_whose_key_changed_is_compared_by_content(layer: Callable[..., Layer]) -> None:
    probe = layer(primary_key="code")
    probe.load(_features())
    report = probe.load(_drop_two_edit_one(_rename), primary_key="name")
    assert counts(report)["removed"] == 3 and counts(report)["added"] == 1 and counts(report)["unchanged"] == 7
    assert report.changes is not None and report.changes["compared_by"] == "content"


# --- limits, retention, atomicity, rasters -----------------------------------------------------------------------


def test_ids_over_the_limit_are_not_recorded(layer: Callable[..., Layer], db: psycopg.Connection,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "MAX_CHANGE_IDS", 2)
    keyed = layer(primary_key="code")
    keyed.load(_features())
    report = keyed.load(_drop_two_edit_one(_move))
    assert report.changes is not None and report.changes["ids"] == "over_limit"
    assert counts(report)["removed"] == 2 and counts(report)["changed"] == 1
    assert ids(db, report.load_id) == {"added": set(), "removed": set(), "changed": set()}


def test_ids_of_older_loads_are_pruned(layer: Callable[..., Layer], db: psycopg.Connection,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "KEEP_IDS_LOADS", 2)
    keyed = layer(primary_key="code")
    keyed.load(_features())
    second = keyed.load(_features(9))  # removes A09
    third = keyed.load(_features(8))  # removes A08
    assert ids(db, second.load_id)["removed"] == {"A09"} and ids(db, third.load_id)["removed"] == {"A08"}
    fourth = keyed.load(_features(7))  # keeps the ids of the latest two loads
    assert ids(db, second.load_id)["removed"] == set() and stored(db, second.load_id)["ids"] == "pruned"
    assert stored(db, second.load_id)["removed"] == 1  # counts stay
    assert ids(db, third.load_id)["removed"] == {"A08"} and ids(db, fourth.load_id)["removed"] == {"A07"}


def test_a_reload_that_is_not_swapped_in_leaves_no_changes(layer: Callable[..., Layer], settings: Settings,
                                                           db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    keyed.load(_features())
    keyed.settings = settings.model_copy(update={"swap_lock_timeout_ms": 50, "swap_deadline_s": 0.5})
    before = db_snapshot(db), db.execute("select count(*) from sdi.load_changes").fetchone()
    with psycopg.connect(settings.database_url) as reader:
        reader.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("layers", keyed.id))).fetchone()
        with pytest.raises(LoadInterruptedError):
            keyed.load(_drop_two_edit_one(_move))
    assert (db_snapshot(db), db.execute("select count(*) from sdi.load_changes").fetchone()) == before


def test_ids_are_recorded_once_when_the_swap_is_retried(layer: Callable[..., Layer], settings: Settings,
                                                        db: psycopg.Connection) -> None:
    keyed = layer(primary_key="code")
    keyed.load(_features())
    keyed.settings = settings.model_copy(update={"swap_lock_timeout_ms": 50, "swap_deadline_s": 30})
    reader = psycopg.connect(settings.database_url)
    reader.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("layers", keyed.id))).fetchone()
    release = threading.Timer(0.6, reader.rollback)
    release.start()
    try:
        started = time.monotonic()
        report = keyed.load(_drop_two_edit_one(_move))
        assert time.monotonic() - started >= 0.5
    finally:
        release.join()
        reader.close()
    assert any("the swap waited" in n for n in report.notes)
    assert ids(db, report.load_id) == {"added": set(), "removed": {"A03", "A07"}, "changed": {"A05"}}


def test_a_raster_load_records_no_changes(settings: Settings, db: psycopg.Connection) -> None:
    definition = read_definition(LAYERS / "synthetic_dem.yml")
    load(definition, settings)
    report = load(definition, settings)
    assert report.changes is None and stored(db, report.load_id) is None


# --- the command line --------------------------------------------------------------------------------------------


def _invoke(settings: Settings, *args: str) -> Any:
    env = {"SDI_DATABASE_URL": settings.database_url, "SDI_LAYERS_DIR": str(LAYERS)}
    return CliRunner().invoke(app, list(args), env=env)


def test_sdi_load_and_sdi_layers_history_show_the_counts(tmp_path: Path, layer_yaml: Callable[..., Path],
                                                         settings: Settings) -> None:
    layer_id = "ch_cli"
    first = _invoke(settings, "load", str(layer_yaml(layer_id, _source(tmp_path, "v1", _features()),
                                                     primary_key="code")))
    assert first.exit_code == 0, first.output
    assert "none: first load of this layer" in first.stdout
    path = layer_yaml(layer_id, _source(tmp_path, "v2", _drop_two_edit_one(_move)), primary_key="code")
    second = _invoke(settings, "load", "--json", str(path))
    assert second.exit_code == 0, second.output
    (report,) = json.loads(second.stdout)
    assert {k: report["changes"][k] for k in ("added", "removed", "changed", "unchanged")} == {
        "added": 0, "removed": 2, "changed": 1, "unchanged": 7}
    third = _invoke(settings, "load", str(path))
    assert "changes" in third.stdout and "added 0, removed 0, changed 0 (geometry 0, attributes 0), unchanged 8" \
        in third.stdout
    history = _invoke(settings, "layers", "history", layer_id)
    assert history.exit_code == 0, history.output
    assert "3 load(s), newest first" in history.stdout
    assert "added 0, removed 2, changed 1 (geometry 1, attributes 0), unchanged 7" in history.stdout
    as_json = _invoke(settings, "layers", "history", layer_id, "--json", "--limit", "2")
    loads = json.loads(as_json.stdout)
    assert [r["status"] for r in loads] == ["loaded", "loaded"] and len(loads) == 2
    assert loads[0]["load_id"] > loads[1]["load_id"]
    assert loads[1]["changes"]["removed"] == 2 and loads[1]["features_written"] == 8
    missing = _invoke(settings, "layers", "history", "ch_never_loaded")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: no load history for layer 'ch_never_loaded'"

