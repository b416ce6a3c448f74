"""Load generation of the API benchmark: ``wrk`` runs, sequential keep-alive latency, medians over rounds."""

from __future__ import annotations

import http.client
import math
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from _api_bench_servers import SETUP, SetupError

WRK_THREADS = 1  #: one wrk thread (enough for these rates) leaves the most CPU to the servers
WRK_TIMEOUT = "10s"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class Run:
    """One measurement: throughput, latency percentiles and failures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int  #: responses that were not 2xx or 3xx
    errors: int  #: socket errors (connect, read, write, timeout)


@dataclass
class Summary:
    """The rounds of one server and endpoint: median req/s and latencies, summed failures."""

    runs: list[Run]

    @property
    def rps(self) -> float:
        """Median requests/s over the rounds."""
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        """Median over the rounds of each round's p50 latency (rounds without a completed request left out)."""
        return _median([r.p50_ms for r in self.runs])

    @property
    def p99_ms(self) -> float:
        """Median over the rounds of each round's p99 latency (rounds without a completed request left out)."""
        return _median([r.p99_ms for r in self.runs])

    @property
    def non2xx(self) -> int:
        """Non-2xx/3xx responses, all rounds."""
        return sum(r.non2xx for r in self.runs)

    @property
    def errors(self) -> int:
        """Socket errors, all rounds."""
        return sum(r.errors for r in self.runs)


def _median(values: list[float]) -> float:
    found = [v for v in values if not math.isnan(v)]
    return statistics.median(found) if found else float("nan")


def wait_quiet(owner_url: str, timeout: float = 180.0, settle: float = 0.5) -> float:
    """Wait until no other session of the database has run a query for ``settle`` s; return the seconds waited.

    When wrk stops, a server may still be working on requests that wrk gave up on (the queries go on
    after the client has gone); this keeps that work out of the next measurement. Gives up after
    ``timeout`` s (the return value then exceeds it).
    """
    started = time.monotonic()
    quiet_since: float | None = None
    with psycopg.connect(owner_url, autocommit=True, connect_timeout=10) as conn:
        while True:  # autocommit: each statement is a transaction, with a fresh pg_stat_activity snapshot
            row = conn.execute("select count(*) from pg_stat_activity where datname = current_database() "
                               "and pid <> pg_backend_pid() and state = 'active' "
                               "and backend_type = 'client backend'").fetchone()
            now = time.monotonic()
            if row is not None and row[0] == 0:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= settle:
                    return quiet_since - started
            else:
                quiet_since = None
            if now - started > timeout:
                return now - started
            time.sleep(0.05)


def require_wrk() -> str:
    """Path of ``wrk``, or a :class:`SetupError` with the install command."""
    path = shutil.which("wrk")
    if path is None:
        raise SetupError(f"wrk is not installed; install it (as root) with:\n  {SETUP['wrk']}")
    return path


def wrk_command(url: str, duration: float, connections: int) -> list[str]:
    """The ``wrk`` command line for one measurement."""
    return ["wrk", "-t", str(min(WRK_THREADS, connections)), "-c", str(connections), "-d", f"{duration:g}s",
            "--timeout", WRK_TIMEOUT, "--latency", url]


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(out: str) -> Run:
    """A :class:`Run` from wrk's ``--latency`` report (latencies NaN when no request completed)."""
    dist = dict(re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", out, re.M))
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if total is None or rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out[-2000:]}")
    non2xx = sum(int(v) for v in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(v) for v in found.groups()) if found else 0
    nan = float("nan")
    p50 = _ms(dist["50"]) if "50" in dist and int(total.group(1)) else nan
    p99 = _ms(dist["99"]) if "99" in dist and int(total.group(1)) else nan
    return Run(float(rps.group(1)) if int(total.group(1)) else 0.0, p50, p99, int(total.group(1)), non2xx, errors)


def run_wrk(url: str, duration: float, connections: int) -> Run:
    """Run wrk against ``url`` (bounded: it is killed 60 s after its duration)."""
    proc = subprocess.run(wrk_command(url, duration, connections), capture_output=True, text=True,
                          timeout=duration + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_wrk(proc.stdout)


def sequential(url: str, warmup: int, count: int, timeout: float = 30.0) -> tuple[Run, bytes]:
    """``warmup`` + ``count`` GETs one after another on ONE keep-alive connection; latency of the last ``count``.

    One connection stays on one uvicorn worker, so a per-worker cache warmed by the warm-up requests
    serves the timed ones. Returns the run and the last response body.
    """
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    latencies: list[float] = []
    non2xx = errors = 0
    body = b""
    started = time.perf_counter()
    try:
        for i in range(warmup + count):
            if i == warmup:
                started = time.perf_counter()
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
                continue
            if i >= warmup:
                latencies.append((time.perf_counter() - t0) * 1e3)
                non2xx += not 200 <= response.status < 400
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if len(latencies) < 2:
        return Run(0.0, float("nan"), float("nan"), len(latencies), non2xx, errors), body
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return Run(len(latencies) / elapsed, q[49], q[98], len(latencies), non2xx, errors), body
