"""Overload benchmark: does ``sdi serve`` stay responsive under 64 concurrent whole-territory requests?

It measures the targets of the hardening issue ("Under 64 concurrent whole-territory requests (items and
low-zoom tiles), ``items/{id}`` keeps a p99 under 500 ms and ``/conformance`` under 100 ms, the database is
idle within 5 s of the clients stopping, worker memory returns to within 50 MB of its start, no request runs
past the statement timeout plus one second, and every heavy request ends in 200 or 503 — never 500"):

1. Generates ``--n`` synthetic polygons (default 200,000; the API benchmark's octagons across Hong Kong,
   ``api_bench.make_polygons``) and loads them with ``sdi load`` into a scratch database ``sdi_apibench_*``
   on the local server (``_api_bench_servers.scratch_database``), then ``VACUUM ANALYZE``. ``--database URL``
   uses a database that already holds ``layers.bench_polygons`` instead (not dropped).
2. Starts ``sdi serve`` (``--workers`` 2) on a free port as ``python -m sdi.cli serve``, with the scratch
   database's owner URL (sdi switches to its read-only role), ``SDI_TILE_CACHE_MB=0`` (``--tile-cache-mb``:
   cold tiles, and no cache growth mistaken for a leak), and every other ``SDI_*`` server setting of this
   process's environment or ``--server-env KEY=VALUE`` (e.g. ``SDI_STATEMENT_TIMEOUT_MS``, default 20,000).
   ``--sdi-root DIR`` serves (and loads with) another checkout, e.g. an older commit for a before/after.
3. Warms each worker up with small requests, records each uvicorn worker's RSS (``/proc``), and runs the
   probe alone for ``--baseline`` s (the quiet latencies).
4. Load, ``--duration`` (30) s: ``--connections`` (64) clients in ``--processes`` forked processes, each
   on one keep-alive connection sending requests back to back and reading every body: ``--items-share`` of
   them ``items?limit=10000&bbox=113.8,22.1,114.5,22.6``, the others cycling through the low-zoom tiles
   (WebMercatorQuad 8/111/209 and every HK80Grid tile of zooms 0–4 over that box). Meanwhile a probe
   process sends ``items/{id}`` (20 ids in turn) and ``/conformance`` every ``--probe-interval`` (0.1) s
   each, on new connections, open loop (it does not wait for an answer before the next), until 1 s before
   the end; and a thread samples ``pg_stat_activity`` of the database every 0.1 s.
5. At the end the clients abort whatever is still open (as a client that gives up does) and stop. Then:
   the time until ``pg_stat_activity`` shows no running query in the database for 0.5 s (up to
   ``--drain-timeout``), each worker's RSS ``--settle`` (10) s after the stop, the longest request (a
   request still open at the stop counts with its time so far), the heavy requests' outcomes (status, cut-off
   bodies, no answer; 204, an empty tile, counts as a success), the probe's p50/p99 (every probe sent; one
   unanswered at the stop counts with its time so far, and the target also needs every probe answered 200),
   and the tracebacks in the server log.
6. Prints the figures, PASS/FAIL against each target, and the result as Markdown for the README. The server
   is stopped and the scratch database dropped at the end, also on errors, SIGTERM and Ctrl-C (``--keep``
   keeps them). The data is synthetic.

Run (about 3 minutes with the defaults, plus the database's drain time; from the repository root)::

    .venv/bin/python benchmarks/overload_bench.py
    .venv/bin/python benchmarks/overload_bench.py --n 20000 --duration 10 --connections 16   # quick check
    SDI_STATEMENT_TIMEOUT_MS=5000 .venv/bin/python benchmarks/overload_bench.py   # server settings pass through

Exit status: 0 when it ran (whatever the targets; ``--strict``: only when every target is met), 1 on an
error, 2 on missing set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _api_bench_servers import (
    CONNECT_TIMEOUT_S,
    LAYER,
    ROOT,
    Server,
    SetupError,
    environment,
    free_port,
    run_sdi,
    scratch_database,
    sdi_env,
    start_process,
)
from _overload_clients import PROBE_TAIL_S, Processes, Record, Target, heavy_process, probe_process
from _overload_report import Figures, Probe, print_report
from _overload_watch import DbWatch, RssWatch, machine_cpu, process_cpu

sys.path.insert(0, str(ROOT))

from sdi.db import redact as db_redact

BBOX = (113.8, 22.1, 114.5, 22.6)  #: the whole territory, lon/lat
CENTRAL = (114.1588, 22.2820)  #: lon, lat of Central (the warm-up's small tiles)
WMQ_TILE = (8, 111, 209)  #: WebMercatorQuad z, row, col over Hong Kong
HK80_ZOOMS = range(5)
DEFAULT_STATEMENT_TIMEOUT_MS = 20_000
PROBE_IDS = 20
#: SDI_* variables of this process that are the benchmark's own business, not server settings to pass on.
NOT_PASSED = {"SDI_DATABASE_URL", "SDI_DATA_DIR", "SDI_LAYERS_DIR", "SDI_PUBLIC_URL", "SDI_SERVER_CONFIG",
              "SDI_PYGEOAPI_CONFIG", "SDI_TEST_SERVER_URL"}


def bbox_text(box: tuple[float, ...]) -> str:
    """``113.8,22.1,114.5,22.6``."""
    return ",".join(f"{v:g}" for v in box)


def hk80_tiles(box: tuple[float, float, float, float], zooms: range) -> list[tuple[int, int, int]]:
    """(z, row, col) of every HK80Grid tile of ``zooms`` meeting the lon/lat box (its edges densified)."""
    from pyproj import Transformer

    from sdi.query.tms import HK80_CELL_SIZE, HK80_ORIGIN

    to_hk80 = Transformer.from_crs(4326, 2326, always_xy=True)
    x0, y0, x1, y1 = box
    steps = [i / 20 for i in range(21)]
    lons = [x0 + (x1 - x0) * s for s in steps] * 2 + [x0] * 21 + [x1] * 21
    lats = [y0] * 21 + [y1] * 21 + [y0 + (y1 - y0) * s for s in steps] * 2
    east, north = to_hk80.transform(lons, lats)
    tiles = []
    for z in zooms:
        size = HK80_CELL_SIZE / 2 ** z * 256
        cols = range(int((min(east) - HK80_ORIGIN[0]) // size), int((max(east) - HK80_ORIGIN[0]) // size) + 1)
        rows = range(int((HK80_ORIGIN[1] - max(north)) // size), int((HK80_ORIGIN[1] - min(north)) // size) + 1)
        tiles += [(z, row, col) for row in rows for col in cols]
    return tiles


def territory(args: argparse.Namespace) -> tuple[float, float, float, float]:
    """``--bbox`` as a tuple."""
    west, south, east, north = (float(v) for v in args.bbox)
    return west, south, east, north


def heavy_urls(bbox: tuple[float, float, float, float]) -> tuple[str, list[str]]:
    """The items URL and the tile URLs the heavy clients request."""
    coll = f"/collections/{LAYER}"
    items = f"{coll}/items?limit=10000&bbox={bbox_text(bbox)}"
    z, row, col = WMQ_TILE
    tiles = [f"{coll}/tiles/WebMercatorQuad/{z}/{row}/{col}?f=mvt"]
    tiles += [f"{coll}/tiles/HK80Grid/{z}/{r}/{c}?f=mvt" for z, r, c in hk80_tiles(bbox, HK80_ZOOMS)]
    return items, tiles


def plans(connections: int, items_share: float, items: str, tiles: list[str]) -> list[list[tuple[str, str]]]:
    """Per client, the (kind, url) pairs it sends in turn: the first ``items_share`` of the clients the items
    URL, the others every tile, each starting at another one."""
    n_items = round(connections * items_share)
    out: list[list[tuple[str, str]]] = [[("items", items)] for _ in range(n_items)]
    for i in range(connections - n_items):
        out.append([("tile", tiles[(i + k) % len(tiles)]) for k in range(len(tiles))])
    return out


# --- the server ---------------------------------------------------------------------------------------------


def server_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``SDI_*`` server settings passed on: this process's (less :data:`NOT_PASSED`), the tile cache,
    then ``--server-env``."""
    env = {k: v for k, v in os.environ.items() if k.startswith("SDI_") and k not in NOT_PASSED
           and not k.startswith("SDI_READER")}
    env["SDI_TILE_CACHE_MB"] = str(args.tile_cache_mb)
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SDI_"):
            raise SetupError(f"--server-env {item!r}: use SDI_NAME=value")
        env[key] = value
    return env


def start_server(args: argparse.Namespace, owner: str, folder: Path, settings: dict[str, str],
                 started: list[Server]) -> Server:
    """``python -m sdi.cli serve`` on a free port (its log: ``folder/sdi.log``); waits until the layer is served."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**sdi_env(args.sdi_root, owner, folder / "store"), **settings, "SDI_PUBLIC_URL": base}
    cmd = [sys.executable, "-m", "sdi.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--log-level", "warning"]
    shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(settings.items()))
    shown = f"SDI_DATABASE_URL={shlex.quote(db_redact(owner))} {shown_env} {shlex.join(cmd)}"
    return start_process("sdi", cmd, env, args.sdi_root, port, f"/collections/{LAYER}", folder, started, shown)


def get(server: Server, path: str, timeout: float = 120.0) -> tuple[int, bytes]:
    """One GET on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.base.rsplit(":", 1)[1]), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/geo+json, application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def probe_ids(server: Server) -> list[str]:
    """Ids of :data:`PROBE_IDS` features, for ``items/{id}``."""
    status, body = get(server, f"/collections/{LAYER}/items?limit={PROBE_IDS}")
    if status != 200:
        raise RuntimeError(f"items?limit={PROBE_IDS} answered {status}: {body[:300]!r}")
    ids = [str(f["id"]) for f in json.loads(body)["features"]]
    if not ids:
        raise RuntimeError(f"layers.{LAYER} is empty")
    return ids


def small_tiles() -> list[str]:
    """A zoom-14 WebMercatorQuad tile and a zoom-12 HK80Grid tile over Central (small: for the warm-up)."""
    lon, lat = CENTRAL
    n = 2 ** 14
    col, row = int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    z, hk_row, hk_col = hk80_tiles((lon, lat, lon, lat), range(12, 13))[0]
    coll = f"/collections/{LAYER}"
    return [f"{coll}/tiles/WebMercatorQuad/14/{row}/{col}?f=mvt", f"{coll}/tiles/HK80Grid/{z}/{hk_row}/{hk_col}?f=mvt"]


def warm_up(server: Server, ids: list[str], bbox: tuple[float, float, float, float]) -> None:
    """Small requests of every kind, on new connections (so both workers load their code and caches)."""
    coll = f"/collections/{LAYER}"
    small = [f"{coll}/items?limit=10&bbox={bbox_text(bbox)}", f"{coll}/items/{ids[0]}", "/conformance",
             *small_tiles()]
    for _ in range(4):
        for path in small:
            status, body = get(server, path)
            if status not in (200, 204):
                raise RuntimeError(f"warm-up {path} answered {status}: {body[:300]!r}")


def wait_db_quiet(owner: str, timeout: float = 300.0) -> None:
    """Wait until nothing runs in the database for 0.5 s (bounded), so each phase starts quiet."""
    watch = DbWatch(owner).start()
    try:
        watch.wait_idle(time.monotonic(), timeout)
    finally:
        watch.stop()


def read_log(log: Path, since: int) -> tuple[int, int, list[str]]:
    """(tracebacks, lines, the first 5 lines) of ``log`` after byte ``since``."""
    try:
        text = log.read_bytes()[since:].decode("utf-8", "replace")
    except OSError:
        return 0, 0, []
    head = [line for line in text.splitlines() if line.strip()][:5]
    return text.count("Traceback (most recent call last)"), text.count("\n"), head


# --- the run ------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, server: Server, owner: str, statement_timeout_s: float) -> Figures:
    """Warm-up, baseline probe, the load with the probe and the watchers, then the drain (see the docstring)."""
    host, port = "127.0.0.1", int(server.base.rsplit(":", 1)[1])
    target = Target(host, port, args.accept_encoding)
    bbox = territory(args)
    ids = probe_ids(server)
    warm_up(server, ids, bbox)
    wait_db_quiet(owner)
    time.sleep(1.0)
    rss_start = RssWatch(server.proc.pid).snapshot()
    if not rss_start:
        raise RuntimeError(f"no uvicorn worker found under pid {server.proc.pid}")
    probes = [("item", [f"/collections/{LAYER}/items/{i}" for i in ids]), ("conformance", ["/conformance"])]
    request_timeout = args.duration + 600.0  # never hit: every request is aborted at the end of the run

    baseline: list[Record] = []
    if args.baseline > 0:
        start_at = time.monotonic() + 0.5
        end = start_at + args.baseline + PROBE_TAIL_S  # the probe sends nothing in a run's last PROBE_TAIL_S
        baseline = Processes([(probe_process, (target, probes, start_at, end, args.probe_interval,
                                               request_timeout))]).collect(args.baseline + 60)

    items, tiles = heavy_urls(bbox)
    client_plans = plans(args.connections, args.items_share, items, tiles)
    n_proc = max(1, min(args.processes, args.connections))
    start_at = time.monotonic() + 1.5
    end_at = start_at + args.duration
    log_start = server.log.stat().st_size
    jobs: list[tuple[Any, tuple[Any, ...]]] = [
        (heavy_process, (target, client_plans[k::n_proc], start_at, end_at, request_timeout)) for k in range(n_proc)]
    jobs.append((probe_process, (target, probes, start_at, end_at, args.probe_interval, request_timeout)))
    running = Processes(jobs)  # forked before this process starts any thread
    db = DbWatch(owner).start()
    rss = RssWatch(server.proc.pid).start()
    try:
        print(f"load: {args.connections} clients in {n_proc} processes for {args.duration:g} s ...", flush=True)
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu0, workers0 = machine_cpu(), {pid: process_cpu(pid) for pid in rss_start}
        records = running.collect(args.duration + 90)
        cpu1, workers1 = machine_cpu(), {pid: process_cpu(pid) for pid in rss_start}
        time.sleep(max(0.0, end_at + args.settle - time.monotonic()))
        rss_after = rss.snapshot()
        print(f"clients stopped; waiting (up to {args.drain_timeout:g} s) for the database to be idle ...",
              flush=True)
        idle = db.wait_idle(end_at, args.drain_timeout)
    finally:
        running.stop(1.0)
        rss.stop()
        db.stop()
    notes = [f"pg_stat_activity watch failed: {db.error}"] if db.error else []
    wall = max(cpu1[1] - cpu0[1], 1e-9)
    notes.append(f"CPU during the load: the machine {100 * (cpu1[0] - cpu0[0]) / wall:.0f}% busy "
                 f"({os.cpu_count()} CPUs); sdi workers {sum(workers1.values()) - sum(workers0.values()):.1f} CPU-s, "
                 f"the benchmark's clients and probe {running.cpu_s:.1f} CPU-s, in {args.duration:g} s")
    tracebacks, lines, head = read_log(server.log, log_start)
    heavy = [r for r in records if r.kind in ("items", "tile")]
    by_kind = {kind: Probe(kind, [r for r in records if r.kind == kind]) for kind, _ in probes}
    return Figures(
        duration_s=args.duration, statement_timeout_s=statement_timeout_s, heavy=heavy, probes=by_kind,
        baseline={kind: Probe(kind, [r for r in baseline if r.kind == kind]) for kind, _ in probes},
        active_at_stop=db.active_at(end_at), idle_after_s=idle, drain_timeout_s=args.drain_timeout,
        oldest_query_s=db.oldest(), most_active=db.most_active(), rss_start=rss_start, rss_peak=dict(rss.peak),
        rss_after=rss_after, settle_s=args.settle, tracebacks=tracebacks, log_lines=lines, log_head=head,
        notes=notes)


def load_data(args: argparse.Namespace, folder: Path, owner: str) -> str:
    """``sdi db init`` and the synthetic polygons (``api_bench``'s generator and loader); returns a summary."""
    from api_bench import load_layer

    env = sdi_env(args.sdi_root, owner, folder / "store")
    run_sdi(args.sdi_root, env, "db", "init")
    t0 = time.perf_counter()
    load_layer(args.n, folder, args.sdi_root, env, owner)
    return f"{args.n:,} synthetic polygons generated and loaded with sdi load in {time.perf_counter() - t0:.1f} s"


def count_features(owner: str) -> int:
    """Rows of ``layers.bench_polygons``."""
    with psycopg.connect(owner, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        row = conn.execute(f"select count(*) from layers.{LAYER}").fetchone()
    return int(row[0]) if row else 0


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; clean-up (server, database, folder) in reverse order on any exit."""
    started: list[Server] = []
    with contextlib.ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="sdi_overload_bench_"))
        stack.callback(lambda: print(f"kept {folder}") if args.keep else shutil.rmtree(folder, ignore_errors=True))
        if args.database:
            owner = args.database
            print(f"using {db_redact(owner)} (layers.{LAYER}: {count_features(owner):,} features)", flush=True)
        else:
            owner = stack.enter_context(scratch_database(args.server, args.keep))
        stack.callback(_stop_all, started, args.keep)
        stack.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)  # runs first: a 2nd Ctrl-C cannot stop clean-up
        if not args.database:
            print(load_data(args, folder, owner) + f" ({owner.rsplit('/', 1)[-1]})", flush=True)
        n = count_features(owner)
        settings = server_settings(args)
        statement_timeout_s = int(settings.get("SDI_STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS)) / 1000
        info = environment(owner, args.sdi_root, False, False)
        server = start_server(args, owner, folder, settings, started)
        print(f"sdi serve up at {server.base} ({args.workers} workers); statement timeout {statement_timeout_s:g} s",
              flush=True)
        figures = measure(args, server, owner, statement_timeout_s)
        items, tiles = heavy_urls(territory(args))
        header = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                  "data": f"{n:,} synthetic polygons in EPSG:2326", **info,
                  "command": shlex.join([sys.executable, *sys.argv]), "serve": server.command}
        passed = print_report(figures, header=header, args=vars(args) | {"bbox": bbox_text(territory(args))},
                              urls={"items": [items], "tiles": tiles}, server_env=settings)
        total = len(figures.targets())
    return 0 if not args.strict or passed == total else 3


def _stop_all(started: list[Server], keep: bool) -> None:
    for server in started:
        if keep and server.proc.poll() is None:
            print(f"kept {server.name} at {server.base} (stop it with: kill -- -{server.proc.pid}); log {server.log}")
        else:
            server.stop()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: run the clean-up (stop the server, drop the database)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="synthetic polygons (default 200,000)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent heavy clients (default 64)")
    parser.add_argument("--items-share", type=float, default=0.5,
                        help="share of the clients sending items requests, the others tiles (default 0.5)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--probe-interval", type=float, default=0.1, help="seconds between probes (default 0.1)")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of probe before the load (default 3)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds after the stop at which worker memory is read (default 10)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="most seconds to wait for the database to be idle after the stop (default 300)")
    parser.add_argument("--bbox", type=float, nargs=4, default=list(BBOX), metavar=("W", "S", "E", "N"),
                        help=f"items bbox and tile area, lon/lat (default {bbox_text(BBOX)})")
    parser.add_argument("--accept-encoding", default="gzip",
                        help="Accept-Encoding of the clients (default gzip; 'identity' for none)")
    parser.add_argument("--tile-cache-mb", type=int, default=0,
                        help="SDI_TILE_CACHE_MB of the server (default 0: every tile cold)")
    parser.add_argument("--server-env", action="append", default=[], metavar="SDI_NAME=VALUE",
                        help="a server setting (repeatable); SDI_* variables of this environment pass on too")
    parser.add_argument("--server", default="postgresql:///sdi",
                        help="libpq URL of the PostgreSQL server (a superuser); the scratch database is created "
                             "on it and dropped (default postgresql:///sdi)")
    parser.add_argument("--database", help="use this database (owner URL) holding layers.bench_polygons instead "
                                           "of a scratch one; it is not dropped")
    parser.add_argument("--sdi-root", type=Path, default=ROOT,
                        help="sdi checkout to serve (and to load with; default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the server, the scratch database and the folder")
    parser.add_argument("--strict", action="store_true", help="exit 3 unless every target is met")
    args = parser.parse_args(argv)
    if (args.n < 1000 or args.duration <= 0 or args.connections < 1 or args.workers < 1 or args.processes < 1
            or not 0 <= args.items_share <= 1 or args.probe_interval <= 0 or args.settle < 0
            or args.drain_timeout < 0 or math.isnan(sum(args.bbox))):
        parser.error("--n ≥ 1000, --duration > 0, --connections/--workers/--processes ≥ 1, 0 ≤ --items-share ≤ 1, "
                     "--probe-interval > 0, --settle/--drain-timeout ≥ 0")
    args.sdi_root = args.sdi_root.resolve()
    if not (args.sdi_root / "sdi").is_dir():
        parser.error(f"--sdi-root {args.sdi_root} has no sdi package")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (see ``--strict``), 1 on an error, 2 on missing set-up, 130 interrupted."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: server stopped, scratch database dropped" + (" (kept: --keep)" if args.keep else ""),
              file=sys.stderr)
        return 130
    except (RuntimeError, OSError, psycopg.Error, subprocess.SubprocessError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
