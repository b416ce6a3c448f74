"""API benchmark: sdi's OGC API (``sdi serve``) against TiPg 1.6, side by side, on the same synthetic table.

What it does, in one run:

1. Generates N synthetic polygons (default 200,000; octagons in EPSG:2326 inside Hong Kong, 5% of them
   packed within 2 km of Central) with :func:`make_polygons`, and loads them with the project's loader
   (``sdi load`` of a layer YAML with ``synthetic: true``) into a scratch database ``sdi_apibench_*`` on
   the local server, then ``VACUUM ANALYZE``.
2. Counts the ground truth in PostGIS in lon/lat for each bbox::

       select count(*) from layers.bench_polygons
       where st_intersects(st_transform(geom, 4326), st_makeenvelope(x0, y0, x1, y1, 4326))

   with the first 100 ids of each box (by id), one item, and the ids of the features in the tile.
3. Starts the servers, each with ``--workers`` uvicorn workers, on 127.0.0.1, reading the same database
   as the read-only role ``sdi_reader`` over TCP: sdi with ``SDI_TILE_CACHE_MB=0`` (no tile cache; it
   switches to the read-only role itself, and reads as the public ``sdi_anon``) and TiPg (``uvicorn
   tipg.main:app``, logged in as ``sdi_reader`` reading as ``sdi_anon``, ``TIPG_DB_SCHEMAS=["layers"]``,
   ``TIPG_CATALOG_TTL=0`` so no catalogue refresh runs during the measurement). ``--with-stock`` adds
   pygeoapi with its stock PostgreSQL providers.
4. Checks, before any load, each server's answers against the truth and sdi's against TiPg's: for each
   bbox page (``limit=100``; both order by id, TiPg's default being its primary key, so no ``sortby``)
   the ids, their order, ``numberMatched`` and coordinates (within 1e-6°); the single item (geometry and
   properties); the tile decoded with ``mapbox_vector_tile`` (every feature intersecting the tile present,
   none outside it; sdi's and TiPg's features inside the tile the same, geometries within 2 tile units).
   TiPg is asked for ``f=geojson`` (its ``f=json`` is not GeoJSON). A mismatch is a correctness failure
   in the table, and an sdi endpoint that fails its check cannot PASS.
5. Load: ``wrk`` with ``--connections`` (8) connections, a 2 s warm-up of every server and endpoint, then
   ``--rounds`` (3) interleaved rounds of ``--duration`` (6) s (round 1: each endpoint on sdi then TiPg;
   round 2: the same; ...). Reported: the median req/s over the rounds, the median p50/p99 latency, non-2xx
   responses and socket errors summed over the rounds, and sdi ÷ TiPg with PASS/FAIL against the targets:
   items pages ≥ 3×, ``items/{id}`` ≥ 1.5×, cold MVT tile ≥ 1.5×. Before every wrk run the script waits
   until no query runs in the database (a server may still be working on requests wrk abandoned).
6. Starts sdi again with its default tile cache and times the same tile from the cache: 300 sequential
   requests on one keep-alive connection after 20 warm-up requests; p50 and p99 (target: p50 < 2 ms).
7. Prints the date, machine, PostgreSQL/PostGIS versions, the exact commands, and the result as a Markdown
   table for the README. Servers are stopped and the scratch database dropped at the end, also on errors,
   SIGTERM and Ctrl-C (``--keep`` keeps them). The data is synthetic.

sdi is started by :func:`_api_bench_servers.start_sdi`: ``python -m sdi.cli serve --host 127.0.0.1 --port P
--workers W`` with ``SDI_DATABASE_URL`` (the scratch database's owner URL) and ``SDI_DATA_DIR``; with
``--legacy-publish``, the interface before the server rewrite (``sdi publish --output-dir D --public-url
URL``, then ``sdi serve --config D/pygeoapi-config.yml``). ``--sdi-root`` serves another checkout.

Setup: ``make bench-api`` runs ``scripts/bench_tools.sh`` first, which does (once; the venvs are under the
git-ignored ``benchmarks/out/``)::

    python3 -m venv benchmarks/out/.venv-tipg && benchmarks/out/.venv-tipg/bin/pip install 'tipg>=1.6,<1.7' uvicorn
    apt-get install -y wrk    # as root
    # only for --with-stock, by hand:
    python3 -m venv benchmarks/out/.venv-stock && benchmarks/out/.venv-stock/bin/pip install \\
        pygeoapi==0.21.0 psycopg2-binary GeoAlchemy2 SQLAlchemy starlette uvicorn

Run: ``.venv/bin/python benchmarks/api_bench.py`` (about 6 minutes with the defaults); quick check:
``.venv/bin/python benchmarks/api_bench.py --n 20000 --duration 2 --rounds 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import geopandas as gpd
import numpy as np
import psycopg
import shapely
from pyproj import Transformer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _api_bench_check import Checked, Verdict, check, compare_tiles, decode_tile, ground_truth
from _api_bench_load import Run, Summary, require_wrk, run_wrk, sequential, wait_quiet
from _api_bench_report import Endpoint, Report, print_report
from _api_bench_servers import (
    CONNECT_TIMEOUT_S,
    LAYER,
    ROOT,
    Server,
    SetupError,
    environment,
    free_port,
    reader_url,
    run_sdi,
    scratch_database,
    sdi_env,
    start_sdi,
    start_stock,
    start_tipg,
    venv_tool,
)

CENTRAL = (114.1588, 22.2820)  #: lon, lat of Central (Hong Kong Island)
HALF_KM_LON, HALF_KM_LAT = 0.00485, 0.00452  #: ~500 m at 22.28° N
ZOOM = 14
WARMUP_S = 2.0
CACHED_WARMUP, CACHED_REQUESTS = 20, 300
DRAIN_TIMEOUT_S = 180.0
BOXES: dict[str, tuple[float, float, float, float]] = {
    "items_01": (114.1, 22.3, 114.2, 22.4),
    "items_1km": (round(CENTRAL[0] - HALF_KM_LON, 5), round(CENTRAL[1] - HALF_KM_LAT, 5),
                  round(CENTRAL[0] + HALF_KM_LON, 5), round(CENTRAL[1] + HALF_KM_LAT, 5)),
}


def bbox_text(box: tuple[float, ...]) -> str:
    """``114.1,22.3,114.2,22.4``: the box as sent, at most 5 decimals, no trailing zeros."""
    return ",".join(f"{v:.5f}".rstrip("0").rstrip(".") for v in box)


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    """Column and row of the WebMercatorQuad tile at zoom ``z`` holding (lon, lat)."""
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


TILE = (ZOOM, *tile_xy(*CENTRAL, ZOOM))  #: z, x (column), y (row)
ENDPOINTS = (
    Endpoint("items_01", f"items, 0.1° box `bbox={bbox_text(BOXES['items_01'])}`, `limit=100`", 3.0),
    Endpoint("items_1km", f"items, 1 km box over Central `bbox={bbox_text(BOXES['items_1km'])}`, `limit=100`", 3.0),
    Endpoint("item", "`items/{id}`", 1.5),
    Endpoint("tile", f"MVT tile WebMercatorQuad {TILE[0]}/{TILE[2]}/{TILE[1]} (z/row/col) over Central, cold "
                     "(`SDI_TILE_CACHE_MB=0`)", 1.5),
)
CACHED_TARGET_MS = 2.0


# --- data -------------------------------------------------------------------------------------------------


def make_polygons(n: int, path: Path) -> Path:
    """Write n synthetic octagons (EPSG:2326) to a GeoPackage: 95% across Hong Kong, 5% around Central."""
    rng = np.random.default_rng(2326)
    east, north = Transformer.from_crs(4326, 2326, always_xy=True).transform(*CENTRAL)
    dense = n // 20
    x = np.concatenate([rng.uniform(810_000, 860_000, n - dense), rng.uniform(east - 2000, east + 2000, dense)])
    y = np.concatenate([rng.uniform(806_000, 845_000, n - dense), rng.uniform(north - 2000, north + 2000, dense)])
    r = np.concatenate([rng.uniform(5, 40, n - dense), rng.uniform(4, 12, dense)])
    order = rng.permutation(n)  # so fid order is not the cluster order
    polys = shapely.buffer(shapely.points(x[order], y[order]), r[order], quad_segs=2)
    frame = gpd.GeoDataFrame({
        "parcel_no": np.array([f"SYN {i}" for i in range(n)], dtype=object),
        "area_class": rng.integers(1, 6, n),
        "value": np.round(rng.uniform(0, 1e6, n), 2),
    }, geometry=polys, crs=2326)
    frame.to_file(path, driver="GPKG", layer="polygons", engine="pyogrio", use_arrow=True)
    return path


def load_layer(n: int, folder: Path, root: Path, env: dict[str, str], owner_url: str) -> None:
    """Generate the polygons and load them with ``sdi load`` from a synthetic layer YAML, then VACUUM ANALYZE."""
    src = make_polygons(n, folder / "bench_polygons.gpkg")
    yml = folder / f"{LAYER}.yml"
    yml.write_text(
        f"id: {LAYER}\ntitle: {{en: Synthetic API benchmark polygons (synthetic)}}\n"
        "abstract: {en: Synthetic octagons generated by benchmarks/api_bench.py}\ncustodian: HK SDI benchmarks\n"
        f"licence: synthetic\nsynthetic: true\nsource: {{path: {src.name}}}\n", encoding="utf-8")
    run_sdi(root, {**env, "SDI_LAYERS_DIR": str(folder)}, "load", str(yml))
    with psycopg.connect(owner_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(f"vacuum analyze layers.{LAYER}")


def candidate_urls(kind: str, base: str, fid: str) -> dict[str, list[str]]:
    """Per endpoint, the URLs to try in order (the first answering 200 is measured)."""
    z, x, y = TILE
    if kind == "tipg":
        coll = f"{base}/collections/layers.{LAYER}"
        out = {key: [f"{coll}/items?limit=100&bbox={bbox_text(box)}&f=geojson"] for key, box in BOXES.items()}
        out["item"] = [f"{coll}/items/{fid}?f=geojson"]
        out["tile"] = [f"{coll}/tiles/WebMercatorQuad/{z}/{x}/{y}"]  # TiPg's route is {z}/{x}/{y}
        return out
    coll = f"{base}/collections/{LAYER}"
    out = {key: [f"{coll}/items?limit=100&bbox={bbox_text(box)}&f=json",
                 f"{coll}/items?limit=100&bbox={bbox_text(box)}"] for key, box in BOXES.items()}
    out["item"] = [f"{coll}/items/{fid}?f=json", f"{coll}/items/{fid}"]
    out["tile"] = [f"{coll}/tiles/WebMercatorQuad/{z}/{y}/{x}?f=mvt", f"{coll}/tiles/WebMercatorQuad/{z}/{y}/{x}"]
    return out


# --- measuring --------------------------------------------------------------------------------------------


def _drain(owner_url: str) -> str:
    """Wait for the servers to finish what wrk left behind; a note when that took a while."""
    waited = wait_quiet(owner_url, timeout=DRAIN_TIMEOUT_S)
    if waited > DRAIN_TIMEOUT_S:
        return f"  (still busy after {DRAIN_TIMEOUT_S:.0f} s: measured anyway)"
    return f"  (then {waited:.1f} s until the database was idle)" if waited >= 0.5 else ""


def measure(urls: dict[str, dict[str, str]], names: list[str], args: argparse.Namespace,
            owner_url: str) -> dict[tuple[str, str], Summary]:
    """Warm-up, then interleaved rounds: for each endpoint, each server in turn, ``--duration`` s of wrk.

    Before every run the database must be idle (:func:`_api_bench_load.wait_quiet`), so work a server
    still does for the previous run's abandoned requests is not charged to the next one.
    """
    plan = [(e.key, name) for e in ENDPOINTS for name in names if e.key in urls[name]]
    print(f"warm-up: {min(WARMUP_S, args.duration):g} s of wrk per server and endpoint", flush=True)
    for endpoint, name in plan:
        _drain(owner_url)
        run_wrk(urls[name][endpoint], min(WARMUP_S, args.duration), args.connections)
    results = {key: Summary([]) for key in plan}
    for round_no in range(1, args.rounds + 1):
        for endpoint, name in plan:
            _drain(owner_url)
            run = run_wrk(urls[name][endpoint], args.duration, args.connections)
            results[(endpoint, name)].runs.append(run)
            print(f"  round {round_no}  {endpoint:<9} {name:<5} {run.rps:9.1f} req/s  p50 {run.p50_ms:8.2f} ms  "
                  f"p99 {run.p99_ms:8.2f} ms  {run.requests:>7} requests  non-2xx {run.non2xx}  "
                  f"errors {run.errors}{_drain(owner_url)}", flush=True)
    return results


def measure_cached(args: argparse.Namespace, root: Path, owner_url: str, folder: Path, started: list[Server],
                   checked: Checked) -> tuple[Run, Verdict, Server] | None:
    """sdi with its default tile cache: the tile again, sequentially on one connection; same tile as cold?"""
    cold_url = checked.urls.get("sdi", {}).get("tile")
    if cold_url is None:
        return None
    server = start_sdi("sdi-cached", root=root, owner_url=owner_url, data_dir=folder / "store", port=free_port(),
                       workers=args.workers, tile_cache_mb=None, legacy=args.legacy_publish, log_dir=folder,
                       started=started)
    parts = urlsplit(cold_url)
    url = server.base + parts.path + (f"?{parts.query}" if parts.query else "")
    _drain(owner_url)
    run, body = sequential(url, CACHED_WARMUP, CACHED_REQUESTS)
    cold = checked.tiles.get("sdi", b"")
    if body == cold:
        verdict = Verdict(True, "same bytes as the cold tile")
    else:
        same = compare_tiles(decode_tile(cold), decode_tile(body))
        verdict = Verdict(same.ok, f"not the same bytes as the cold tile; {same.text}")
    if not args.keep:
        server.stop()
    return run, verdict, server


# --- main -------------------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: run the clean-up (stop servers, drop the database)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="number of polygons (default 200,000)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of wrk per round, server, endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3); the median counts")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server (default 2)")
    parser.add_argument("--legacy-publish", action="store_true",
                        help="start sdi the old way: sdi publish, then sdi serve --config")
    parser.add_argument("--with-stock", action="store_true",
                        help="also pygeoapi's stock PostgreSQL providers (benchmarks/out/.venv-stock)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the servers running, the scratch database and the temporary folder")
    parser.add_argument("--only", choices=("sdi", "tipg"), help="start and measure only this server (debugging)")
    parser.add_argument("--sdi-root", type=Path, default=ROOT, help="sdi checkout to serve (default: this one)")
    parser.add_argument("--server", default="postgresql:///sdi",
                        help="libpq URL of the PostgreSQL server (as a superuser); a scratch database is created "
                             "on it and dropped (default postgresql:///sdi)")
    args = parser.parse_args(argv)
    if args.n < 1000 or args.duration <= 0 or args.rounds < 1 or args.connections < 1 or args.workers < 1:
        parser.error("--n ≥ 1000, --duration > 0, --rounds ≥ 1, --connections ≥ 1 and --workers ≥ 1")
    return args


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; clean-up (servers, database, folder) in reverse order on any exit."""
    names = [n for n in ("sdi", "tipg") if args.only in (None, n)] + (["stock"] if args.with_stock else [])
    require_wrk()
    for name in names:
        if name != "sdi":
            venv_tool(name, "uvicorn")
    root = args.sdi_root.resolve()
    if not (root / "sdi").is_dir():
        raise SetupError(f"--sdi-root {root} has no sdi package")
    started: list[Server] = []
    with contextlib.ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="sdi_api_bench_"))
        stack.callback(lambda: print(f"kept {folder}") if args.keep else shutil.rmtree(folder, ignore_errors=True))
        owner = stack.enter_context(scratch_database(args.server, args.keep))
        stack.callback(_stop_all, started, args.keep)
        stack.callback(signal.signal, signal.SIGINT, signal.SIG_IGN)  # runs first: a 2nd Ctrl-C cannot stop clean-up
        env = sdi_env(root, owner, folder / "store")
        run_sdi(root, env, "db", "init")
        t0 = time.perf_counter()
        load_layer(args.n, folder, root, env, owner)
        load_s = time.perf_counter() - t0
        print(f"{args.n:,} synthetic polygons generated and loaded with sdi load in {load_s:.1f} s "
              f"({owner.rsplit('/', 1)[-1]})", flush=True)
        info = environment(owner, root, "tipg" in names, "stock" in names)
        reader, password = reader_url(owner)
        truth = ground_truth(owner, BOXES, TILE, item_box="items_1km")
        print("PostGIS truth: " + ", ".join(f"{k} {v:,} polygons" for k, v in truth.count.items())
              + f"; item {truth.item[0]}; {len(truth.tile_ids):,} features intersect tile {TILE}", flush=True)
        servers: dict[str, Server] = {}
        for name in names:
            if name == "sdi":
                servers[name] = start_sdi("sdi", root=root, owner_url=owner, data_dir=folder / "store",
                                          port=free_port(), workers=args.workers, tile_cache_mb=0,
                                          legacy=args.legacy_publish, log_dir=folder, started=started)
            else:
                start = start_tipg if name == "tipg" else start_stock
                servers[name] = start(port=free_port(), workers=args.workers, reader=reader, password=password,
                                      log_dir=folder, started=started)
        print(f"servers up: {', '.join(f'{n} {s.base}' for n, s in servers.items())}", flush=True)
        checked = check({n: candidate_urls(n, s.base, truth.item[0]) for n, s in servers.items()}, truth,
                        list(BOXES))
        for endpoint, verdicts in checked.verdicts.items():
            for name, verdict in verdicts.items():
                print(f"  check {endpoint:<9} {name:<5} {verdict.shown(name)}", flush=True)
            if endpoint in checked.same:
                print(f"  check {endpoint:<9} TiPg's vs sdi's: {checked.same[endpoint]}", flush=True)
        results = measure(checked.urls, names, args, owner)
        cached = measure_cached(args, root, owner, folder, started, checked) if "sdi" in names else None
        print_report(Report(
            argv=shlex.join([sys.executable, *sys.argv]), args=vars(args), info=info, names=names,
            endpoints=list(ENDPOINTS), boxes={k: bbox_text(b) for k, b in BOXES.items()}, truth=truth,
            checked=checked, results=results, servers={**servers, **({"sdi-cached": cached[2]} if cached else {})},
            cached=(cached[0], cached[1]) if cached else None, cached_target_ms=CACHED_TARGET_MS,
            cached_requests=(CACHED_WARMUP, CACHED_REQUESTS), load_seconds=load_s,
            warmup_s=min(WARMUP_S, args.duration), tile=TILE))
    return 0


def _stop_all(started: list[Server], keep: bool) -> None:
    for server in started:
        if keep and server.proc.poll() is None:
            print(f"kept {server.name} at {server.base} (stop it with: kill -- -{server.proc.pid}); log {server.log}")
        else:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when it ran (whatever the targets), 1 on an error, 2 on missing set-up."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (background)
    try:
        return run(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: servers stopped, scratch database dropped" + (" (kept: --keep)" if args.keep else ""),
              file=sys.stderr)
        return 130
    except (RuntimeError, OSError, psycopg.Error, subprocess.SubprocessError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
