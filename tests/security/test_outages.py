"""Database outages under load: every request answers quickly (200, or 503 with ``Retry-After``), never 500,
never hangs, leaks no connection detail, and the server recovers on its own when the database is back.

The database is a throwaway cluster (:mod:`tests.pgcluster`), never the shared one: the tests stop it
(``pg_ctl stop -m fast``) and freeze it (SIGSTOP of every PostgreSQL process, as a hung host would be), each
for :data:`OUTAGE_S` (:data:`FREEZE_S`) seconds, while client threads request a mix of endpoints. ``sdi serve``
runs with short timeouts (:data:`TIMEOUTS`) so a failure shows within seconds, and without its tile cache
so that tiles need the database too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from sdi.settings import Settings
from tests.conftest import DATA
from tests.pgcluster import Cluster, Timeouts, sdi_database, sdi_on_cluster, server_processes, throwaway_cluster

pytestmark = pytest.mark.db

#: The pool timeout is longer than the connect timeout, so that the stopped-database test shows that the connect
#: timeout, not the pool timeout, bounds a request waiting for a connection.
TIMEOUTS = Timeouts(connect_s=2, pool_s=3.0, statement_ms=3000, refresh_s=0.5)
CLIENTS = 4  #: client threads requesting every path of PATHS in turn during an outage
OUTAGE_S = 6.0  #: how long the database is stopped
BASELINE_S = 1.0  #: traffic before the outage (every answer must be 200)
AFTER_S = 1.5  #: traffic after the recovery
RECOVERY_S = 2.0  #: requests must succeed again within this long after the database is back
HANG_S = 40.0  #: a client gives up on a response after this long (a hang longer than the whole test)
PAUSE_S = 0.05  #: between two requests of one client
SLACK_S = 0.5  #: scheduling and HTTP time on top of a timeout
#: Longest answer while the database is stopped: the connect timeout (the README's promise), although the pool
#: timeout is longer: a request stops waiting for a connection once the pool's attempts to connect fail.
STOPPED_BOUND_S = TIMEOUTS.connect_s + SLACK_S
#: Longest answer while the database is frozen: a request may wait for a connection (pool timeout), then get
#: one whose statement never returns (the client's own limit: the statement timeout), plus 1 s, plus 0.5 s for
#: the answer itself (a server whose deadline is exactly the timeouts + 1 s answers just after it).
FROZEN_BOUND_S = TIMEOUTS.pool_s + TIMEOUTS.statement_ms / 1000 + 1.0 + 0.5
FREEZE_S = FROZEN_BOUND_S + 3.0  #: how long the database is frozen: longer than the bound, so a hang shows
LAYER = "districts_18"
#: What the clients request, in turn: data (needs the database) and service documents (may come from memory).
PATHS = (
    f"/collections/{LAYER}/items?limit=5",
    f"/collections/{LAYER}/items/1",
    f"/collections/{LAYER}/tiles/WebMercatorQuad/8/111/209?f=mvt",
    "/collections",
    "/conformance",
    "/collections/catalogue/items",
)
#: What one more client requests, in turn: only what needs no database (it must stay fast whatever happens).
LIGHT_PATHS = ("/conformance", "/collections", f"/collections/{LAYER}")
#: The requests that need the database (recovery is when all of them answer 200 again).
DATA_PATHS = (PATHS[0], PATHS[1], PATHS[2], PATHS[5], f"/collections/{LAYER}/items?limit=2&name_en=EASTERN")


@dataclass(frozen=True)
class Served:
    """The throwaway cluster, its SDI database and the ``sdi serve`` in front of it."""

    cluster: Cluster
    settings: Settings
    base: str
    log: Path


@dataclass(frozen=True)
class Sample:
    """One request of a client thread: when, how long, and what came back."""

    path: str
    started: float  #: time.monotonic()
    seconds: float
    status: int | None  #: None: no HTTP response (connection error or client timeout)
    retry_after: str | None = None
    body: str = ""  #: the body of a non-200 response (first 4,000 characters)
    error: str = ""  #: the client's exception, when there was no response

    @property
    def ended(self) -> float:
        """time.monotonic() when the answer (or the error) came."""
        return self.started + self.seconds

    def shown(self, t0: float) -> str:
        """One line for a failure message (times relative to ``t0``)."""
        what = f"{self.status}" if self.status is not None else f"no response ({self.error[:120]})"
        return (f"{self.path} at +{self.started - t0:.2f} s took {self.seconds:.2f} s: {what}"
                + (f" {self.body[:200]!r}" if self.body else ""))


@dataclass
class Traffic:
    """:data:`CLIENTS` threads requesting :data:`PATHS` in turn (each starting elsewhere), and one requesting
    :data:`LIGHT_PATHS`, until stopped."""

    base: str
    samples: list[Sample] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, paths: tuple[str, ...], offset: int) -> None:
        with requests.Session() as session:
            i = offset
            while not self.halt.is_set():
                path = paths[i % len(paths)]
                i += 1
                started = time.monotonic()
                try:
                    response = session.get(self.base + path, timeout=(5, HANG_S))
                    sample = Sample(path, started, time.monotonic() - started, response.status_code,
                                    response.headers.get("Retry-After"),
                                    "" if response.status_code == 200 else response.text[:4000])
                except requests.RequestException as exc:
                    sample = Sample(path, started, time.monotonic() - started, None, error=repr(exc))
                    session.close()
                with self.lock:
                    self.samples.append(sample)
                self.halt.wait(PAUSE_S)

    def __enter__(self) -> Traffic:
        work = [(PATHS, n) for n in range(CLIENTS)] + [(LIGHT_PATHS, 0)]
        self.threads = [threading.Thread(target=self._client, args=args, daemon=True) for args in work]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=HANG_S + 10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The districts and the reference points in a throwaway cluster, served by `sdi serve` (2 workers)."""
    folder = tmp_path_factory.mktemp("outage_serve")
    with throwaway_cluster() as cluster, \
            sdi_database(cluster, layer_ids=(LAYER,), definitions=[DATA / "publishing" / "landsd_reference.yml"],
                         data_dir=tmp_path_factory.mktemp("outage_store")) as settings, \
            sdi_on_cluster(settings, folder, timeouts=TIMEOUTS, extra_env={"SDI_TILE_CACHE_MB": "0"}) as base:
        yield Served(cluster, settings, base, folder / "server.log")


def _all_data_ok(base: str) -> bool:
    """One pass over :data:`DATA_PATHS`: whether every one answered 200."""
    for path in DATA_PATHS:
        try:
            if requests.get(base + path, timeout=(5, HANG_S)).status_code != 200:
                return False
        except requests.RequestException:
            return False
    return True


def _recovery_seconds(base: str, since: float, limit: float = 30.0) -> float:
    """Seconds from ``since`` until the start of a pass over :data:`DATA_PATHS` that all answers 200 (``inf`` after
    ``limit``): from then on requests succeed. (The end of the pass would add the time of the requests themselves:
    a tile made under load can take a second.)"""
    while time.monotonic() - since < limit:
        started = time.monotonic()
        if _all_data_ok(base):
            return started - since
        time.sleep(0.1)
    return float("inf")


@pytest.fixture
def healthy(served: Served) -> Served:
    """The cluster running and thawed, and the server answering every data request (a test may have failed)."""
    served.cluster.thaw()
    if not served.cluster.running:
        served.cluster.start()
    assert _recovery_seconds(served.base, time.monotonic(), limit=60.0) < 60.0, "the server does not answer 200"
    return served


def _problems(samples: list[Sample], *, t0: float, outage: tuple[float, float], bound_s: float,
              secrets: list[str]) -> list[str]:
    """Every sample that breaks a rule, as lines: before the outage all 200; otherwise 200 or a proper 503
    (``Retry-After``, OGC JSON ``ServiceUnavailable``, no secret in it), and never longer than ``bound_s``."""
    problems: list[str] = []
    for s in samples:
        if s.ended < outage[0] and s.status != 200:
            problems.append(f"before the outage: {s.shown(t0)}")
        elif s.status is None:
            problems.append(f"no answer: {s.shown(t0)}")
        elif s.status not in (200, 503):
            problems.append(f"status {s.status} (only 200 or 503 are allowed): {s.shown(t0)}")
        elif s.status == 503:
            if not s.retry_after:
                problems.append(f"503 without Retry-After: {s.shown(t0)}")
            if '"code":"ServiceUnavailable"' not in s.body.replace(" ", ""):
                problems.append(f"503 without an OGC exception (code ServiceUnavailable): {s.shown(t0)}")
            leaked = [secret for secret in secrets if secret and secret in s.body]
            if leaked:
                problems.append(f"503 body shows connection details {leaked}: {s.shown(t0)}")
        if s.seconds > bound_s:
            problems.append(f"slower than {bound_s:g} s: {s.shown(t0)}")
    return problems


def _secrets(served: Served) -> list[str]:
    """Text no response may show: the database URL, its parts and the read-only role's password."""
    return ["postgresql://", "postgres://", served.settings.reader_password or "", str(served.cluster.folder),
            f":{served.cluster.port}", "password"]


def _log_problems(log: Path, served: Served) -> list[str]:
    text = log.read_text(encoding="utf-8", errors="replace")
    problems = []
    if "Traceback (most recent call last)" in text:
        at = text.index("Traceback (most recent call last)")
        problems.append(f"the server log has a traceback ({text.count('Traceback (most recent call last)')} in all):"
                        f"\n{text[at:at + 1500]}")
    if served.settings.reader_password and served.settings.reader_password in text:
        problems.append("the server log shows the read-only role's password")
    return problems


def _outage(served: Served, *, freeze: bool, outage_s: float, bound_s: float) -> None:
    """Traffic; the database stopped (or frozen) for ``outage_s``; back; every rule checked at the end."""
    cluster, log = served.cluster, served.log
    log_before = log.read_text(encoding="utf-8", errors="replace")
    processes = server_processes(served.base)
    assert len(processes) >= 2, f"cannot find the processes of the sdi serve at {served.base}"
    with Traffic(served.base) as traffic:
        t0 = time.monotonic()
        time.sleep(BASELINE_S)
        began = time.monotonic()
        try:
            if freeze:
                cluster.freeze()
            else:
                cluster.stop("fast")
            time.sleep(max(0.0, began + outage_s - time.monotonic()))
        finally:
            ended = time.monotonic()
            if freeze:
                cluster.thaw()
            else:
                cluster.start()
        restored = time.monotonic()
        recovery = _recovery_seconds(served.base, restored)
        time.sleep(AFTER_S)
    samples = sorted(traffic.samples, key=lambda s: s.started)
    problems = _problems(samples, t0=t0, outage=(began, ended), bound_s=bound_s, secrets=_secrets(served))
    during = [s for s in samples if s.started < ended and s.ended > began]
    if not any(s.status == 503 for s in during):
        problems.append("no request answered 503 during the outage (hung, or answered otherwise)")
    if recovery > RECOVERY_S:
        problems.append(f"requests failed for {recovery:.2f} s after the database was back (at most {RECOVERY_S:g} s"
                        " allowed)")
    if server_processes(served.base) != processes:
        problems.append(f"sdi serve's processes changed (a worker restarted): {processes} → "
                        f"{server_processes(served.base)}")
    log_after = log.read_text(encoding="utf-8", errors="replace")
    new_log = log.with_name(log.stem + ("-freeze" if freeze else "-stop") + ".log")
    new_log.write_text(log_after[len(log_before):], encoding="utf-8")
    problems += _log_problems(new_log, served)
    statuses: dict[str, int] = {}
    for s in during:
        key = str(s.status) if s.status is not None else "no response"
        statuses[key] = statuses.get(key, 0) + 1
    summary = (f"{len(samples)} requests, {len(during)} during the {ended - began:.1f} s outage ({statuses}); "
               f"slowest {max((s.seconds for s in samples), default=0):.2f} s (bound {bound_s:g} s); "
               f"recovered {recovery:.2f} s after the database was back ({restored - ended:.2f} s to bring it back)")
    shown = "\n  ".join(problems[:25]) + (f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else "")
    assert not problems, f"{summary}\n  {shown}"


def test_a_stopped_database_answers_503_quickly_and_recovers_without_a_restart(healthy: Served) -> None:
    """With PostgreSQL stopped, every request answers 200 or 503 (Retry-After, OGC JSON, no connection details)
    within the connect timeout (+ 0.5 s), shorter than the pool timeout; within 2 s of its start requests
    succeed; no traceback is logged."""
    _outage(healthy, freeze=False, outage_s=OUTAGE_S, bound_s=STOPPED_BOUND_S)


def test_a_frozen_database_answers_503_within_the_timeouts_and_recovers(healthy: Served) -> None:
    """With every PostgreSQL process frozen (SIGSTOP: connections open but nothing answers), requests end
    within the pool timeout + the statement timeout + 1 s instead of hanging; after SIGCONT they succeed within
    2 s."""
    _outage(healthy, freeze=True, outage_s=FREEZE_S, bound_s=FROZEN_BOUND_S)
