"""What the overload benchmark watches besides the clients: the database's queries and the workers' memory.

* :class:`DbWatch` samples ``pg_stat_activity`` of the benchmark's database every 0.1 s from its own
  connection: how many client backends are running a query and how long the oldest has run.
* :func:`worker_pids` and :func:`rss_mb` read the uvicorn worker processes of ``sdi serve`` and their
  resident memory from ``/proc``; :class:`RssWatch` samples them every 0.5 s.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ACTIVE_SQL = """
select count(*), coalesce(max(extract(epoch from clock_timestamp() - query_start)), 0)
from pg_stat_activity
where datname = current_database() and pid <> pg_backend_pid() and state = 'active'
  and backend_type = 'client backend'
"""


@dataclass
class DbWatch:
    """A thread sampling the queries running in the database of ``url`` (see the module docstring)."""

    url: str
    interval: float = 0.1
    samples: list[tuple[float, int, float]] = field(default_factory=list)  #: (monotonic, active, oldest s)
    halt: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                 application_name="sdi-overload-bench-watch") as conn:
                while not self.halt.is_set():
                    row = conn.execute(ACTIVE_SQL).fetchone()
                    if row is not None:
                        self.samples.append((time.monotonic(), int(row[0]), float(row[1])))
                    self.halt.wait(self.interval)
        except psycopg.Error as exc:
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    def start(self) -> DbWatch:
        """Start sampling."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self.halt.set()
        self.thread.join(timeout=15)

    def idle_after(self, since: float, settle: float = 0.5) -> float | None:
        """Seconds from ``since`` until no query ran for ``settle`` s (the start of that quiet stretch);
        ``None`` when that has not happened (yet)."""
        quiet: float | None = None
        for t, active, _ in self.samples:
            if t < since:
                continue
            if active == 0:
                quiet = t if quiet is None else quiet
                if t - quiet >= settle:
                    return max(0.0, quiet - since)
            else:
                quiet = None
        return None

    def wait_idle(self, since: float, timeout: float, settle: float = 0.5) -> float | None:
        """:meth:`idle_after`, waiting up to ``timeout`` s after ``since`` for it."""
        while time.monotonic() - since < timeout + settle:
            found = self.idle_after(since, settle)
            if found is not None or not self.thread.is_alive():
                return found
            time.sleep(0.1)
        return None

    def active_at(self, when: float) -> int:
        """Queries running at the sample nearest after ``when`` (0 without samples)."""
        return next((active for t, active, _ in self.samples if t >= when), 0)

    def oldest(self, start: float = 0.0, end: float = float("inf")) -> float:
        """The longest any query had run at any sample between ``start`` and ``end``."""
        return max((age for t, _, age in self.samples if start <= t <= end), default=0.0)

    def most_active(self, start: float = 0.0, end: float = float("inf")) -> int:
        """The most queries running at once between ``start`` and ``end``."""
        return max((active for t, active, _ in self.samples if start <= t <= end), default=0)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot (``/proc/stat``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / ticks, sum(values[:8]) / ticks


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15 of stat


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2:].split()[1]) == parent:
                found.append(int(entry.name))
    return sorted(found)


def worker_pids(server_pid: int) -> list[int]:
    """The uvicorn worker processes of ``sdi serve`` (pid ``server_pid``): its Python children, less
    multiprocessing's resource tracker."""
    workers = []
    for pid in _children(server_pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "python" in cmdline and "resource_tracker" not in cmdline:
                workers.append(pid)
    return workers


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (``VmRSS``), ``None`` when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class RssWatch:
    """A thread sampling the workers' resident memory every ``interval`` s (peaks, and pids seen)."""

    server_pid: int
    interval: float = 0.5
    peak: dict[int, float] = field(default_factory=dict)
    halt: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> dict[int, float]:
        """pid → RSS MB of each worker now."""
        out = {}
        for pid in worker_pids(self.server_pid):
            value = rss_mb(pid)
            if value is not None:
                out[pid] = value
        return out

    def _run(self) -> None:
        while not self.halt.is_set():
            for pid, value in self.snapshot().items():
                self.peak[pid] = max(value, self.peak.get(pid, 0.0))
            self.halt.wait(self.interval)

    def start(self) -> RssWatch:
        """Start sampling."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self.halt.set()
        self.thread.join(timeout=10)
