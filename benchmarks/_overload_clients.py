"""Load generation of the overload benchmark (``benchmarks/overload_bench.py``): heavy clients and the probe.

Both run in processes of their own (forked), so that the benchmark's own Python threads do not slow the
probe's clock. Every request is recorded as a :class:`Record`; at the end of the run (``end_at``, a
``time.monotonic()`` instant, the same clock in every process on Linux) every request still open is
aborted (its socket shut down), as a client that gives up would, and recorded as ``aborted`` with the time
it had been open (a lower bound of its duration).

* :func:`heavy_process`: ``threads`` clients, each on one keep-alive connection, each sending its URL (or
  cycling through its URLs) back to back, reading every body to the end.
* :func:`probe_process`: open loop: every ``interval`` s, one request to each probe URL on a new connection
  (so the probes reach every uvicorn worker), whether or not the previous ones have answered; at most
  :data:`PROBE_CAP` unanswered per URL (a tick beyond that is recorded as ``skipped``); none in the last
  :data:`PROBE_TAIL_S` of the run, so a probe open at the stop has had at least that long to answer.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing as mp
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

CONNECT_TIMEOUT_S = 10.0  #: a connection the server does not accept within this long is an error
PROBE_CAP = 32  #: most unanswered probes per URL
PROBE_TAIL_S = 1.0  #: the probe sends nothing in the last second of a run (each probe has ≥ 1 s to answer)
READ_CHUNK = 1 << 16
OUTCOMES = ("complete", "incomplete", "error", "aborted", "skipped")


@dataclass(frozen=True)
class Record:
    """One request.

    ``outcome``: ``complete`` (a status and the whole body), ``incomplete`` (a status, then the body broke
    off), ``error`` (no response: refused, reset, timeout), ``aborted`` (still open at the end of the run),
    ``skipped`` (a probe tick not sent: too many probes unanswered).
    """

    kind: str  #: ``items``, ``tile``, ``item`` (items/{id}) or ``conformance``
    url: str  #: path and query
    started: float  #: time.monotonic()
    seconds: float  #: until the last byte (``aborted``: until the abort, a lower bound)
    status: int | None
    outcome: str
    nbytes: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Target:
    """Where the server listens and the headers every request sends."""

    host: str
    port: int
    accept_encoding: str

    def headers(self, keep_alive: bool) -> dict[str, str]:
        """Request headers."""
        return {"Accept": "application/geo+json, application/json;q=0.9, */*;q=0.8",
                "Accept-Encoding": self.accept_encoding, "Connection": "keep-alive" if keep_alive else "close",
                "User-Agent": "sdi-overload-bench"}


class Connection(http.client.HTTPConnection):
    """An HTTP connection whose connect is bounded by :data:`CONNECT_TIMEOUT_S` (reads by ``timeout``)."""

    def connect(self) -> None:
        """Connect (bounded), then switch the socket to the read timeout."""
        sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
        self.sock = sock


class _Open:
    """The connections a process has open, so that the end of the run can shut them down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: set[http.client.HTTPConnection] = set()
        self.halt = threading.Event()

    def add(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            self.conns.add(conn)

    def discard(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            self.conns.discard(conn)

    def abort_all(self) -> None:
        """Shut down every open socket (a blocked read returns at once)."""
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _request(conn: http.client.HTTPConnection, target: Target, kind: str, url: str, keep_alive: bool,
             halt: threading.Event) -> Record:
    """Send one GET on ``conn`` and read the whole body; never raises."""
    started = time.monotonic()
    status: int | None = None
    nbytes = 0
    try:
        conn.request("GET", url, headers=target.headers(keep_alive))
        response = conn.getresponse()
        status = response.status
        while True:
            chunk = response.read(READ_CHUNK)
            if not chunk:
                break
            nbytes += len(chunk)
        if response.will_close or not keep_alive:
            conn.close()
        return Record(kind, url, started, time.monotonic() - started, status, "complete", nbytes)
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        seconds = time.monotonic() - started
        if halt.is_set():
            return Record(kind, url, started, seconds, status, "aborted", nbytes)
        outcome = "incomplete" if status is not None else "error"
        return Record(kind, url, started, seconds, status, outcome, nbytes, f"{type(exc).__name__}: {exc}"[:200])


def _ender(opened: _Open, end_at: float, threads: list[threading.Thread]) -> None:
    """At ``end_at``: halt, then shut down open sockets until every client thread has returned (max 30 s)."""
    time.sleep(max(0.0, end_at - time.monotonic()))
    opened.halt.set()
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        opened.abort_all()
        time.sleep(0.05)


def _reset_signals() -> None:
    """A forked child: default SIGTERM, ignore SIGINT (the parent's clean-up ends it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def heavy_process(target: Target, plans: list[list[tuple[str, str]]], start_at: float, end_at: float,
                  request_timeout: float, out: mp.Queue[Any]) -> None:
    """One process of heavy clients: a thread per plan, each sending its (kind, url) pairs in turn, back to
    back on one keep-alive connection, from ``start_at`` until ``end_at``; puts its records on ``out``."""
    _reset_signals()
    opened = _Open()
    records: list[Record] = []
    lock = threading.Lock()

    def client(plan: list[tuple[str, str]]) -> None:
        conn = Connection(target.host, target.port, timeout=request_timeout)
        opened.add(conn)
        mine: list[Record] = []
        i = 0
        time.sleep(max(0.0, start_at - time.monotonic()))
        try:
            while not opened.halt.is_set() and time.monotonic() < end_at:
                kind, url = plan[i % len(plan)]
                i += 1
                mine.append(_request(conn, target, kind, url, True, opened.halt))
                if mine[-1].outcome == "error":
                    opened.halt.wait(0.05)  # refused: do not spin
        finally:
            opened.discard(conn)
            conn.close()
            with lock:
                records.extend(mine)

    threads = [threading.Thread(target=client, args=(plan,), daemon=True) for plan in plans]
    for thread in threads:
        thread.start()
    _ender(opened, end_at, threads)
    for thread in threads:
        thread.join(timeout=5)
    out.put((records, time.process_time()))


def probe_process(target: Target, probes: list[tuple[str, list[str]]], start_at: float, end_at: float,
                  interval: float, request_timeout: float, out: mp.Queue[Any]) -> None:
    """The probe: every ``interval`` s from ``start_at`` until :data:`PROBE_TAIL_S` before ``end_at``, one
    request per (kind, urls) on a new connection (cycling through ``urls``), staggered across the interval;
    probes still unanswered at ``end_at`` are aborted. Puts its records on ``out``."""
    _reset_signals()
    opened = _Open()
    records: list[Record] = []
    lock = threading.Lock()
    outstanding = {kind: 0 for kind, _ in probes}
    threads: list[threading.Thread] = []

    def one(kind: str, url: str) -> None:
        conn = Connection(target.host, target.port, timeout=request_timeout)
        opened.add(conn)
        try:
            record = _request(conn, target, kind, url, False, opened.halt)
        finally:
            opened.discard(conn)
            conn.close()
        with lock:
            records.append(record)
            outstanding[kind] -= 1

    ender = threading.Thread(target=_ender, args=(opened, end_at, threads), daemon=True)
    tick = 0
    time.sleep(max(0.0, start_at - time.monotonic()))
    ender.start()
    while True:
        for n, (kind, urls) in enumerate(probes):
            at = start_at + tick * interval + n * interval / len(probes)
            time.sleep(max(0.0, at - time.monotonic()))
            if opened.halt.is_set() or time.monotonic() >= end_at - PROBE_TAIL_S:
                break
            url = urls[tick % len(urls)]
            with lock:
                full = outstanding[kind] >= PROBE_CAP
                if not full:
                    outstanding[kind] += 1
            if full:
                with lock:
                    records.append(Record(kind, url, time.monotonic(), 0.0, None, "skipped"))
                continue
            thread = threading.Thread(target=one, args=(kind, url), daemon=True)
            threads.append(thread)
            thread.start()
        else:
            tick += 1
            continue
        break
    ender.join(timeout=40)
    for thread in threads:
        thread.join(timeout=5)
    with lock:
        out.put((list(records), time.process_time()))


class Processes:
    """Forked client processes (each got a queue as its last argument) and the records they send back."""

    def __init__(self, jobs: list[tuple[Any, tuple[Any, ...]]]) -> None:
        """Fork one process per (function, args) now: before the caller starts any thread of its own."""
        ctx = mp.get_context("fork")
        self.queue: mp.Queue[Any] = ctx.Queue()
        self.procs = [ctx.Process(target=fn, args=(*args, self.queue), daemon=True) for fn, args in jobs]
        self.cpu_s = 0.0  #: CPU seconds the processes used (known after :meth:`collect`)
        for proc in self.procs:
            proc.start()

    def collect(self, timeout: float) -> list[Record]:
        """Wait for every process's records (and CPU time); processes alive after ``timeout`` s are terminated."""
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        try:
            for _ in self.procs:
                mine, cpu = self.queue.get(timeout=max(1.0, deadline - time.monotonic()))
                records.extend(mine)
                self.cpu_s += cpu
        finally:
            self.stop(max(1.0, deadline - time.monotonic()))
        return records

    def stop(self, wait: float = 5.0) -> None:
        """Join the processes; terminate those that do not end within ``wait`` s."""
        for proc in self.procs:
            proc.join(timeout=wait)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
