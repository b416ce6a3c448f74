"""A reload never takes a layer offline: while a long read holds the live table, short reads stay fast.

The swap of a reload needs an ACCESS EXCLUSIVE lock on ``layers.<id>``. A lock request that waits
blocks every later reader, so the loader must only ever wait briefly (``SDI_SWAP_LOCK_TIMEOUT_MS``)
and retry, up to ``SDI_SWAP_DEADLINE_S``; past the deadline the load fails and the old version stays.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from loaders import load
from loaders.write import drop_layer
from sdi.errors import SdiError
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.conftest import LAYERS, db_snapshot, loaded_database

pytestmark = pytest.mark.db

LAYER = "oil_storage_installations"
LOCK_TIMEOUT_MS = 250
MAX_READ_S = 1.0  # a short read may wait for one lock attempt of the loader, plus margin


class Prober(threading.Thread):
    """Short reads of the layer from their own connection every ~50 ms; records ``(started, seconds)``."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("set statement_timeout = '10s'")
                while not self.halt.is_set():
                    start = time.monotonic()
                    conn.execute(f"select count(*) from layers.{LAYER}").fetchone()
                    self.samples.append((start, time.monotonic() - start))
                    self.halt.wait(0.05)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def finish(self) -> list[tuple[float, float]]:
        self.halt.set()
        self.join(timeout=30)
        assert not self.is_alive(), "a short read never returned"
        assert not self.errors, f"a short read failed: {self.errors[0]}"
        return self.samples


class Reload(threading.Thread):
    """``load`` of the layer in a thread; keeps its report or error and when it ended."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.result: dict[str, Any] = {}

    def run(self) -> None:
        try:
            self.result["report"] = load(read_definition(LAYERS / f"{LAYER}.yml"), self.settings)
        except BaseException as exc:
            self.result["error"] = exc
        self.result["ended"] = time.monotonic()


def _wait_for_lock_request(monitor: psycopg.Connection, oid: int, reload: Reload, limit: float = 60) -> float:
    """Return when the loader was first seen asking for a lock on the live table (the swap)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and reload.is_alive():
        waiting = monitor.execute("select count(*) from pg_locks where relation = %s and not granted",
                                  (oid,)).fetchone()
        if waiting and waiting[0]:
            return time.monotonic()
        time.sleep(0.005)
    pytest.fail(f"the reload never asked for the live table's lock while a reader held it: {reload.result}")


def _slowest(samples: list[tuple[float, float]], start: float, end: float) -> tuple[int, float]:
    """How many short reads started in ``[start, end]`` and the longest of all reads."""
    during = [s for s in samples if start <= s[0] <= end]
    return len(during), max(seconds for _, seconds in samples)


def _long_read(url: str) -> tuple[psycopg.Connection, int]:
    """A connection in an open transaction that has read the layer (it holds ACCESS SHARE until commit)."""
    holder = psycopg.connect(url)
    holder.execute(f"select count(*) from layers.{LAYER}").fetchone()
    row = holder.execute("select %s::regclass::oid", (f"layers.{LAYER}",)).fetchone()
    assert row is not None
    return holder, int(row[0])


def test_reload_waits_for_long_read_without_blocking_short_reads() -> None:
    hold = 3.0
    with loaded_database([LAYER], swap_lock_timeout_ms=LOCK_TIMEOUT_MS, swap_deadline_s=60) as settings, \
            psycopg.connect(settings.database_url, autocommit=True) as monitor:
        before = monitor.execute("select load_id from sdi.layer where id = %s", (LAYER,)).fetchone()
        holder, oid = _long_read(settings.database_url)
        prober, reload = Prober(settings.database_url), Reload(settings)
        try:
            prober.start()
            reload.start()
            asked = _wait_for_lock_request(monitor, oid, reload)
            time.sleep(hold)
            assert reload.is_alive(), f"the reload swapped while a reader held the table: {reload.result}"
            released = time.monotonic()
            holder.commit()
        finally:
            holder.close()
            reload.join(timeout=120)
        samples = prober.finish()
        assert not reload.is_alive(), "the reload never finished after the long read ended"
        assert "error" not in reload.result, f"the reload failed: {reload.result['error']}"
        assert reload.result["ended"] - released < 5.0, "the reload did not swap soon after the long read ended"
        after = monitor.execute("select load_id, feature_count from sdi.layer where id = %s", (LAYER,)).fetchone()
        assert before is not None and after is not None and after[0] > before[0]
        assert monitor.execute(f"select count(*) from layers.{LAYER}").fetchone() == (after[1],)
        during, slowest = _slowest(samples, asked, released)
        print(f"short reads while the long read held the table: {during}; slowest read {slowest * 1000:.0f} ms")
        assert slowest < MAX_READ_S, f"a short read waited {slowest:.2f} s behind the reload's lock request"
        assert during >= 10, "too few short reads ran while the long read held the table"
        assert any("swap waited" in note for note in reload.result["report"].notes)


def test_reload_past_deadline_fails_busy_and_keeps_previous_version() -> None:
    deadline = 2.0
    with loaded_database([LAYER], swap_lock_timeout_ms=LOCK_TIMEOUT_MS, swap_deadline_s=deadline) as settings, \
            psycopg.connect(settings.database_url, autocommit=True) as monitor:
        snapshot = db_snapshot(monitor)
        holder, oid = _long_read(settings.database_url)
        prober, reload = Prober(settings.database_url), Reload(settings)
        try:
            prober.start()
            reload.start()
            asked = _wait_for_lock_request(monitor, oid, reload)
            reload.join(timeout=deadline + 8)  # the long read outlasts the deadline (and the old code's wait)
            released = time.monotonic()
            holder.commit()
        finally:
            holder.close()
            reload.join(timeout=120)
        samples = prober.finish()
        during, slowest = _slowest(samples, asked, released)
        print(f"short reads while the long read held the table: {during}; slowest read {slowest * 1000:.0f} ms")
        assert slowest < MAX_READ_S, f"a short read waited {slowest:.2f} s behind the reload's lock request"
        assert during >= 10, "too few short reads ran while the long read held the table"
        assert not reload.is_alive()
        error = reload.result.get("error")
        assert isinstance(error, SdiError), f"expected a busy error, got {error or 'a finished load'}"
        message = str(error)
        print(f"busy error: {message}")
        assert "busy" in message and "\n" not in message and LAYER in message
        assert reload.result["ended"] - asked < deadline + 2.0
        assert db_snapshot(monitor) == snapshot
        assert monitor.execute("select count(*) from pg_tables where schemaname = 'layers' "
                               "and tablename like '\\_load%'").fetchone() == (0,)


def test_drop_layer_waits_for_long_read_without_blocking_short_reads() -> None:
    deadline = 1.5
    with loaded_database([LAYER], swap_lock_timeout_ms=LOCK_TIMEOUT_MS, swap_deadline_s=deadline) as settings, \
            psycopg.connect(settings.database_url, autocommit=True) as monitor:
        snapshot = db_snapshot(monitor)
        holder, _ = _long_read(settings.database_url)
        prober = Prober(settings.database_url)
        try:
            prober.start()
            time.sleep(0.2)
            asked = time.monotonic()
            with psycopg.connect(settings.database_url, options="-c statement_timeout=10s") as conn, \
                    pytest.raises(SdiError, match="busy"):  # (a drop that queues fails on the timeout instead)
                drop_layer(conn, LAYER, settings)
            released = time.monotonic()
            holder.commit()
        finally:
            holder.close()
        samples = prober.finish()
        during, slowest = _slowest(samples, asked, released)
        assert slowest < MAX_READ_S, f"a short read waited {slowest:.2f} s behind the drop's lock request"
        assert during >= 10, "too few short reads ran while the long read held the table"
        assert db_snapshot(monitor) == snapshot
        with psycopg.connect(settings.database_url) as conn:  # nobody reads it now: the drop goes through
            drop_layer(conn, LAYER, settings)
        assert monitor.execute("select to_regclass(%s)", (f"layers.{LAYER}",)).fetchone() == (None,)
