"""``sdi sync``: fetch a layer's ``source.url`` and load it when it changed, recording every attempt.

For one layer, :func:`sync_layer`:

1. takes a per-layer advisory lock (a second sync of the same layer at the same time answers *busy*);
2. fetches the source into a scratch folder (:func:`loaders.fetch.fetch`), by conditional GET when the live version
   came from this same URL (its ``ETag``/``Last-Modified`` are in ``sdi.sync_state``);
3. when the server answers ``304``, or the fetched file's SHA-256 is the live load's and the layer definition is
   unchanged, loads nothing and records a ``skipped`` row in ``sdi.load_history``;
4. otherwise loads the file through the normal :func:`loaders.load` (read → normalise → write, atomic) and
   records the URL and the fetch in that load's history row;
5. when fetching or loading fails, records a ``failed`` row with the reason: the previous version keeps serving
   (``sdi.layer`` and ``layers.<id>`` are untouched).

:func:`is_due` says whether a layer's ``update_frequency`` makes it due, from its last check (a load or a skip).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from loaders.fetch import Fetched, Validators, fetch, shown_url
from loaders.pipeline import load
from sdi import __version__
from sdi.db import connect
from sdi.errors import SdiError
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

Status = Literal["loaded", "unchanged", "failed", "busy"]
#: How long each ISO 19115 maintenance frequency lasts, as (days, months); the others (asNeeded, irregular,
#: notPlanned, unknown) are never due by the clock: sync them by id.
PERIODS: dict[str, tuple[int, int]] = {
    "continual": (0, 0), "daily": (1, 0), "weekly": (7, 0), "fortnightly": (14, 0), "monthly": (0, 1),
    "quarterly": (0, 3), "biannually": (0, 6), "annually": (0, 12),
}
#: A layer is due this long before its period is up, so that an hourly timer does not drift an hour a period.
DUE_SLACK = dt.timedelta(minutes=10)


@dataclass
class SyncResult:
    """What one layer's sync did."""

    layer_id: str
    status: Status
    message: str  #: one line: "loaded 1,234 features into layers.x (load 17)", "unchanged (HTTP 304)", the reason
    load_id: int | None = None  #: the new load, or the history row that recorded a skip or a failure
    features: int | None = None  #: features written by a new load
    recorded: bool = True  #: whether the attempt is in sdi.load_history
    fetch: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


def source_key(definition: LayerDefinition) -> str:
    """SHA-256 of the source's URL and service parameters: a different key means a different source."""
    params = definition.source.model_dump(mode="json", exclude={"crs", "encoding", "coordinates", "layer"})
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def is_due(definition: LayerDefinition, last_checked: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether the layer's ``update_frequency`` says its source should be checked at ``now``.

    Never-checked layers are due; ``continual`` ones always; ``asNeeded``, ``irregular``, ``notPlanned`` and
    ``unknown`` ones never (by the clock). Otherwise due once the period since ``last_checked`` (the last load or
    skip; failures do not count, so a failed source is tried again on the next run) is up, less ten minutes.
    """
    period = PERIODS.get(definition.update_frequency)
    if period is None:
        return False
    return last_checked is None or now >= _after(last_checked, *period) - DUE_SLACK


def _after(when: dt.datetime, days: int, months: int) -> dt.datetime:
    """``when`` plus ``days`` days and ``months`` calendar months (the day clamped to the month's length)."""
    if months:
        index = when.month - 1 + months
        year, month = when.year + index // 12, index % 12 + 1
        last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
        when = when.replace(year=year, month=month, day=min(when.day, last_day))
    return when + dt.timedelta(days=days)


def last_checked(settings: Settings, layer_ids: list[str]) -> dict[str, dt.datetime]:
    """When each layer was last loaded or found unchanged (layers never checked are left out)."""
    with connect(settings) as conn:
        rows = conn.execute("select layer_id, max(finished_at) from sdi.load_history where layer_id = any(%s)"
                            " and status in ('loaded', 'skipped') group by layer_id", (layer_ids,)).fetchall()
    return {str(r[0]): r[1] for r in rows}


@dataclass(frozen=True)
class _Live:
    load_id: int
    sha256: str
    definition: Any


@dataclass(frozen=True)
class _State:
    source_key: str
    etag: str | None
    last_modified: str | None
    load_id: int


def _live(conn: psycopg.Connection, layer_id: str) -> _Live | None:
    row = conn.execute("select l.load_id, h.source_sha256, l.definition from sdi.layer l join sdi.load_history h"
                       " on h.load_id = l.load_id where l.id = %s", (layer_id,)).fetchone()
    return _Live(int(row[0]), str(row[1]), row[2]) if row else None


def _state(conn: psycopg.Connection, layer_id: str) -> _State | None:
    row = conn.execute("select source_key, etag, last_modified, load_id from sdi.sync_state where layer_id = %s",
                       (layer_id,)).fetchone()
    return _State(row[0], row[1], row[2], int(row[3])) if row else None


def _as_owner(conn: psycopg.Connection, settings: Settings) -> None:
    """Write as the owner role inside the current transaction, as loads do."""
    if conn.execute("select 1 from pg_roles where rolname = %s", (settings.owner_role,)).fetchone():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(settings.owner_role)))


def _save_state(conn: psycopg.Connection, layer_id: str, key: str, fetched: Fetched, load_id: int) -> None:
    conn.execute(
        "insert into sdi.sync_state (layer_id, source_key, etag, last_modified, sha256, load_id)"
        " values (%s, %s, %s, %s, %s, %s) on conflict (layer_id) do update set source_key = excluded.source_key,"
        " etag = excluded.etag, last_modified = excluded.last_modified, sha256 = excluded.sha256,"
        " load_id = excluded.load_id, checked_at = clock_timestamp()",
        (layer_id, key, fetched.validators.etag, fetched.validators.last_modified, fetched.sha256, load_id))


def _attempt(conn: psycopg.Connection, settings: Settings, definition: LayerDefinition, started_at: dt.datetime,
             status: str, reason: str, sha256: str, fetched: Fetched | None) -> int:
    """Insert a ``skipped`` or ``failed`` history row (nothing was loaded); return its id."""
    url = shown_url(definition.source.url or "")
    report = {"layer_id": definition.id, "source_path": url, "status": status, "reason": reason,
              "fetch": fetched.to_dict() if fetched else None}
    with conn.transaction():
        _as_owner(conn, settings)
        row = conn.execute(
            "insert into sdi.load_history (layer_id, started_at, source_path, source_sha256, source_crs,"
            " loader_version, features_read, features_written, report, status, reason)"
            " values (%s, %s, %s, %s, '', %s, 0, 0, %s::jsonb, %s, %s) returning load_id",
            (definition.id, started_at, url, sha256, __version__, json.dumps(report, ensure_ascii=False), status,
             reason)).fetchone()
    assert row is not None
    return int(row[0])


def _after_load(conn: psycopg.Connection, settings: Settings, definition: LayerDefinition, load_id: int,
                fetched: Fetched) -> None:
    """Name the URL (not the scratch file) in the new load's history row, add the fetch, keep the validators."""
    url = shown_url(definition.source.url or "")
    with conn.transaction():
        _as_owner(conn, settings)
        conn.execute("update sdi.load_history set source_path = %s, report = report || jsonb_build_object("
                     "'source_path', %s::text, 'fetch', %s::jsonb) where load_id = %s",
                     (url, url, json.dumps(fetched.to_dict(), ensure_ascii=False), load_id))
        _save_state(conn, definition.id, source_key(definition), fetched, load_id)


def _clean(text: str, definition: LayerDefinition, scratch: Path, fetched: Fetched | None) -> str:
    """A reason fit to show and keep: the fetched file named by its URL, never by the scratch folder."""
    url = definition.source.url or ""
    shown = shown_url(url)
    if fetched is not None:
        text = text.replace(str(fetched.path), shown)
    for folder in {str(scratch), str(scratch.resolve())}:
        text = text.replace(folder, "(fetched)")
    return " ".join(text.replace(url, shown).split())


def sync_layer(definition: LayerDefinition, settings: Settings, *, force: bool = False) -> SyncResult:
    """Fetch one layer's ``source.url`` and load it if it changed; record the attempt (see the module docstring).

    Parameters
    ----------
    force
        Fetch without a conditional GET and load even when the source is unchanged.

    Returns
    -------
    SyncResult
        ``loaded``, ``unchanged``, ``failed`` (with the reason; recorded in the load history when the database
        could be reached) or ``busy`` (another sync of the layer is running).
    """
    clock = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    layer_id = definition.id

    def result(status: Status, message: str, **more: Any) -> SyncResult:
        return SyncResult(layer_id, status, message, seconds=round(time.perf_counter() - clock, 3), **more)

    if not definition.is_remote:
        return result("failed", f"{definition.label}: source is a file (source.path), not a URL; load it with "
                                f"`sdi load {layer_id}`", recorded=False)
    try:
        conn = connect(settings, autocommit=True)
    except SdiError as exc:
        return result("failed", str(exc), recorded=False)
    with conn:
        lock = f"sdi.sync.{layer_id}"
        locked = conn.execute("select pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()
        if not locked or not locked[0]:
            return result("busy", "busy: another sync of this layer is running", recorded=False)
        try:
            return _sync_locked(conn, definition, settings, force, started_at, result)
        finally:
            conn.execute("select pg_advisory_unlock(hashtext(%s))", (lock,))


def _sync_locked(conn: psycopg.Connection, definition: LayerDefinition, settings: Settings, force: bool,
                 started_at: dt.datetime, result: Any) -> SyncResult:
    live, state = _live(conn, definition.id), _state(conn, definition.id)
    key = source_key(definition)
    same_definition = live is not None and live.definition == json.loads(definition.model_dump_json())
    usable = not force and same_definition and live is not None and state is not None \
        and state.source_key == key and state.load_id == live.load_id
    previous = Validators(state.etag, state.last_modified) if usable and state is not None else None
    with tempfile.TemporaryDirectory(prefix="sdi-sync-") as folder:
        scratch = Path(folder)
        fetched: Fetched | None = None

        def failed(exc: BaseException) -> SyncResult:
            text = str(exc) if isinstance(exc, SdiError) else f"unexpected {type(exc).__name__}: {exc}"
            reason = _clean(text.strip().splitlines()[0] if text.strip() else type(exc).__name__, definition,
                            scratch, fetched)
            try:
                row = _attempt(conn, settings, definition, started_at, "failed", reason,
                               fetched.sha256 if fetched else "", fetched)
            except (SdiError, psycopg.Error) as db_exc:
                return result("failed", f"{reason} (not recorded: {type(db_exc).__name__})", recorded=False)
            return result("failed", reason, load_id=row, fetch=fetched.to_dict() if fetched else None)

        try:
            fetched = fetch(definition, settings, scratch, previous)
        except Exception as exc:  # any failure is recorded; the previous version keeps serving
            return failed(exc)
        if fetched is None:
            assert live is not None and state is not None
            row = _attempt(conn, settings, definition, started_at, "skipped", "not modified (HTTP 304)",
                           live.sha256, None)
            with conn.transaction():
                _as_owner(conn, settings)
                conn.execute("update sdi.sync_state set checked_at = clock_timestamp() where layer_id = %s",
                             (definition.id,))
            return result("unchanged", f"unchanged (HTTP 304 Not Modified; live load {live.load_id})", load_id=row)
        if not force and live is not None and live.sha256 == fetched.sha256 and same_definition:
            row = _attempt(conn, settings, definition, started_at, "skipped",
                           f"unchanged: same SHA-256 as load {live.load_id}", fetched.sha256, fetched)
            with conn.transaction():
                _as_owner(conn, settings)
                _save_state(conn, definition.id, key, fetched, live.load_id)
            return result("unchanged", f"unchanged (same SHA-256 as live load {live.load_id})", load_id=row,
                          fetch=fetched.to_dict())
        try:
            report = load(definition.fetched_into(fetched.path), settings)
        except Exception as exc:  # the load rolled back: the previous version keeps serving
            return failed(exc)
    assert report.load_id is not None
    note = ""
    try:
        _after_load(conn, settings, definition, report.load_id, fetched)
    except (SdiError, psycopg.Error) as exc:  # the load is live; only its URL and the validators are not kept
        note = f"; fetch state not saved: {type(exc).__name__}, the next sync fetches it again"
    report.source_path = shown_url(definition.source.url or "")
    what = (f"{report.features_written:,} pixels per band" if report.geometry_type == "Raster"
            else f"{report.features_written:,} features into layers.{definition.id}")
    changes = getattr(report, "changes", None)  # counts against the previous version (none for a first load)
    if isinstance(changes, dict) and changes.get("added") is not None:
        changed = "" if changes.get("changed") is None else f", changed {changes['changed']:,}"
        note = f"; added {changes['added']:,}, removed {changes.get('removed', 0):,}{changed}{note}"
    return result("loaded", f"loaded {what} (load {report.load_id}{note})", load_id=report.load_id,
                  features=report.features_written, fetch=fetched.to_dict(), report=report.to_dict())
