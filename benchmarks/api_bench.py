"""API benchmark: sdi's feature/MVT providers against pygeoapi's stock PostgreSQL providers and TiPg.

Generates N synthetic polygons (default 200,000; octagons, 5% of them packed around Central so a 1 km
box holds a full page) in EPSG:2326 inside Hong Kong, loads them with ``loaders.load`` (a layer YAML with
``synthetic: true`` in a temporary folder) into a scratch database on the local server, and serves the
same table three ways, each under uvicorn with the same number of workers, on 127.0.0.1:

* sdi: ``sdi publish`` + ``sdi serve`` (sdi.publishing.features / sdi.publishing.mvt);
* stock: pygeoapi's Starlette app with its ``PostgreSQL`` feature provider and ``MVT-postgresql`` tile
  provider (``storage_crs`` EPSG:2326), in its own venv (``benchmarks/out/.venv-stock``: pygeoapi, as
  pinned by the project, plus psycopg2-binary, which the project venv does not have);
* TiPg: ``uvicorn tipg.main:app`` (``benchmarks/out/.venv-tipg``) exposing schema ``layers``.

All three connect as the read-only role (``sdi_reader``) over TCP. Before loading them it CHECKS that
the three return the same bbox page (same ids, coordinates within 1e-6 degree) and the same single item;
a mismatch is printed in the table as a correctness failure, not an error. Then, one server and one
endpoint at a time, a separate process (``wrk``, else a bounded Python generator) requests:

* ``items?limit=100&bbox=<1 km box around Central, CRS84>`` (GeoJSON, CRS84);
* ``items/{id}`` (one feature of that page);
* one MVT tile, z=14 over Central (WebMercatorQuad).

It prints requests/s, p50 and p99 latency, non-2xx counts, and the ratios sdi/TiPg and sdi/stock.
Servers are stopped and the scratch database dropped at the end, also on errors (``--keep`` keeps the
database and the temporary folder). The data is synthetic.

Setup (once; the extra venvs are under the git-ignored ``benchmarks/out/``)::

    python3 -m venv benchmarks/out/.venv-tipg && benchmarks/out/.venv-tipg/bin/pip install tipg uvicorn
    python3 -m venv benchmarks/out/.venv-stock && benchmarks/out/.venv-stock/bin/pip install \\
        pygeoapi==0.21.0 psycopg2-binary GeoAlchemy2 SQLAlchemy starlette uvicorn
    apt-get install -y wrk   # optional; without it a Python load generator is used

Run: ``.venv/bin/python benchmarks/api_bench.py --n 200000 --duration 10 --concurrency 16``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import requests
import shapely
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pyproj import Transformer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))

LAYER = "bench_polygons"
CENTRAL = (114.1588, 22.2820)  #: lon, lat of Central (Hong Kong Island)
HALF_KM_LON, HALF_KM_LAT = 0.00485, 0.00452  #: ~500 m at 22.28° N
ZOOM = 14
TOLERANCE_DEG = 1e-6
START_TIMEOUT_S = 120
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG2326 = "http://www.opengis.net/def/crs/EPSG/0/2326"
SERVERS = ("sdi", "tipg", "stock")


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


def load_layer(n: int, folder: Path, url: str) -> None:
    """Generate the polygons and load them with ``loaders.load`` from a synthetic layer YAML."""
    from loaders import load
    from sdi.layerdef import read_definition
    from sdi.settings import Settings

    src = make_polygons(n, folder / "bench_polygons.gpkg")
    yml = folder / f"{LAYER}.yml"
    yml.write_text(
        f"id: {LAYER}\ntitle: {{en: Synthetic API benchmark polygons (synthetic)}}\n"
        "abstract: {en: Synthetic octagons generated by benchmarks/api_bench.py}\ncustodian: HK SDI benchmarks\n"
        f"licence: synthetic\nsynthetic: true\nsource: {{path: {src.name}}}\n", encoding="utf-8")
    settings = Settings(database_url=url, layers_dir=folder, data_dir=folder / "store")
    load(read_definition(yml), settings)


# --- servers ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM (uvicorn stops its workers), then SIGKILL the process group this script started."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, port: int, ready: str,
          started: list[Server], log_dir: Path | None = None) -> Server:
    log = (log_dir or cwd) / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log)
    started.append(server)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.base + ready, timeout=5).status_code == 200:
                return server
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer within {START_TIMEOUT_S} s: {log.read_text()[-3000:]}")
        time.sleep(0.3)


def venv_bin(name: str, tool: str) -> Path:
    path = OUT / f".venv-{name}" / "bin" / tool
    if not path.exists():
        raise SystemExit(f"{path} not found; see the setup in this script's docstring")
    return path


def stock_config(folder: Path, base_url: str, reader: dict[str, str]) -> tuple[Path, Path]:
    """pygeoapi config (the project's base.yml) with the table under the stock PostgreSQL providers."""
    base = yaml.safe_load((ROOT / "pygeoapi_config" / "base.yml").read_text(encoding="utf-8"))
    base["server"]["url"] = base_url
    base["server"].pop("templates", None)  # sdi's HTML templates; the stock server uses pygeoapi's own
    data = {"host": reader["host"], "port": int(reader.get("port") or 5432), "dbname": reader["dbname"],
            "user": reader["user"], "password": reader["password"], "search_path": ["layers", "public"]}
    common = {"data": data, "table": LAYER, "id_field": "fid", "geom_field": "geom", "storage_crs": EPSG2326}
    base["resources"] = {LAYER: {
        "type": "collection", "title": "Synthetic API benchmark polygons (synthetic)",
        "description": "synthetic", "keywords": ["synthetic"], "links": [],
        "extents": {"spatial": {"bbox": [113.8, 22.1, 114.5, 22.6], "crs": CRS84}},
        "providers": [
            {"type": "feature", "name": "PostgreSQL", **common, "crs": [CRS84, EPSG2326]},
            {"type": "tile", "name": "MVT-postgresql", **common,
             "options": {"zoom": {"min": 0, "max": 20}},
             "format": {"name": "pbf", "mimetype": "application/vnd.mapbox-vector-tile"}},
        ]}}
    cfg, openapi = folder / "stock-config.yml", folder / "stock-openapi.yml"
    cfg.write_text(yaml.safe_dump(base, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run([str(venv_bin("stock", "pygeoapi")), "openapi", "generate", str(cfg), "--output-file",
                    str(openapi)], check=True, cwd=str(folder), env={**os.environ, "PYGEOAPI_CONFIG": str(cfg)},
                   stdout=subprocess.DEVNULL)
    return cfg, openapi


# --- the URLs and the correctness check ---------------------------------------------------------------------

def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    rad = math.radians(lat)
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(rad)) / math.pi) / 2 * n)


def urls(name: str, base: str, fid: str | None) -> dict[str, str]:
    lon, lat = CENTRAL
    bbox = f"{lon - HALF_KM_LON:.5f},{lat - HALF_KM_LAT:.5f},{lon + HALF_KM_LON:.5f},{lat + HALF_KM_LAT:.5f}"
    x, y = tile_xy(lon, lat, ZOOM)
    if name == "tipg":
        coll = f"{base}/collections/layers.{LAYER}"
        out = {"items": f"{coll}/items?limit=100&bbox={bbox}&f=geojson",
               "item": f"{coll}/items/{fid}?f=geojson",
               "tile": f"{coll}/tiles/WebMercatorQuad/{ZOOM}/{x}/{y}"}
    else:
        coll = f"{base}/collections/{LAYER}"
        out = {"items": f"{coll}/items?limit=100&bbox={bbox}&f=json",
               "item": f"{coll}/items/{fid}?f=json",
               "tile": f"{coll}/tiles/WebMercatorQuad/{ZOOM}/{y}/{x}?f=mvt"}
    return out


def flat(coords: Any) -> list[float]:
    if isinstance(coords, (int, float)):
        return [float(coords)]
    return [v for c in coords for v in flat(c)]


def features(body: dict[str, Any]) -> dict[str, list[float]]:
    found = body.get("features", [body]) if body.get("type") == "FeatureCollection" else [body]
    return {str(f.get("id")): flat((f.get("geometry") or {}).get("coordinates") or []) for f in found}


def compare(ref: dict[str, list[float]], got: dict[str, list[float]]) -> str:
    """``ok`` or what differs between two {id: flat coordinates} maps."""
    if not got:
        return "FAIL: no features"
    if set(ref) != set(got):
        return f"FAIL: ids differ ({len(set(ref) & set(got))}/{len(ref)} shared, {len(got)} returned)"
    worst = 0.0
    for fid, coords in ref.items():
        other = got[fid]
        if len(other) != len(coords):
            return f"FAIL: feature {fid} has {len(other) // 2} vertices, not {len(coords) // 2}"
        worst = max(worst, max((abs(a - b) for a, b in zip(coords, other, strict=True)), default=0.0))
    if worst > TOLERANCE_DEG:
        return f"FAIL: coordinates off by up to {worst:.4g}° (~{worst * 111_000:,.0f} m)"
    return f"ok (max diff {worst:.1e}°)"


def fetch_json(url: str) -> tuple[int, dict[str, Any] | None]:
    response = requests.get(url, timeout=60)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def check(servers: dict[str, Server]) -> tuple[str, dict[str, dict[str, str]]]:
    """Reference id (middle of sdi's page) and per-server correctness of the items page, item and tile."""
    status, body = fetch_json(urls("sdi", servers["sdi"].base, None)["items"])
    if status != 200 or body is None or not body.get("features"):
        raise RuntimeError(f"sdi's bbox page failed ({status}): {str(body)[:500]}")
    ref_page = features(body)
    ids = list(ref_page)
    fid = ids[len(ids) // 2]
    _, item_body = fetch_json(urls("sdi", servers["sdi"].base, fid)["item"])
    ref_item = features(item_body or {})
    result: dict[str, dict[str, str]] = {}
    for name, server in servers.items():
        u = urls(name, server.base, fid)
        row: dict[str, str] = {}
        status, body = fetch_json(u["items"])
        row["items"] = (compare(ref_page, features(body)) if status == 200 and body else f"FAIL: HTTP {status}")
        if name != "sdi" and status == 200 and body:
            row["items"] += f"; {len(body.get('features', []))} features"
        status, body = fetch_json(u["item"])
        row["item"] = compare(ref_item, features(body)) if status == 200 and body else f"FAIL: HTTP {status}"
        tile = requests.get(u["tile"], timeout=60)
        row["tile"] = (f"ok ({len(tile.content):,} bytes)" if tile.status_code == 200 and tile.content
                       else f"n/a (HTTP {tile.status_code})")
        result[name] = row
    return fid, result


# --- load generation --------------------------------------------------------------------------------------

@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  #: non-2xx responses and socket errors
    notes: list[str] = field(default_factory=list)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(url: str, duration: float, concurrency: int) -> Run:
    proc = subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{duration:g}s", "--timeout", "30s",
                           "--latency", url], capture_output=True, text=True, check=True)
    out = proc.stdout
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(v) for v in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errs:
        bad += sum(int(v) for v in errs.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    nan = float("nan")  # no latency when no request completed within the duration
    if total == 0:
        return Run(0.0, nan, nan, 0, bad, ["no request completed"])
    return Run(rps, _ms(dist["50"]) if "50" in dist else nan, _ms(dist["99"]) if "99" in dist else nan, total, bad)


def run_python(url: str, total: int, concurrency: int) -> Run:
    """A bounded generator: ``total`` GETs over ``concurrency`` threads, one keep-alive session each."""
    latencies: list[float] = []
    bad = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal bad
        with requests.Session() as session:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    ok = session.get(url, timeout=30).status_code < 300
                except requests.RequestException:
                    ok = False
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    latencies.append(dt)
                    bad += not ok

    start_t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    elapsed = time.perf_counter() - start_t
    q = statistics.quantiles(latencies, n=100)
    return Run(len(latencies) / elapsed, q[49], q[98], len(latencies), bad)


def measure(url: str, args: argparse.Namespace) -> Run:
    if args.requests is None and shutil.which("wrk"):
        run_wrk(url, min(2.0, args.duration), args.concurrency)  # warm-up: pools, caches, workers
        return run_wrk(url, args.duration, args.concurrency)
    total = args.requests or 2000
    run_python(url, max(total // 10, args.concurrency), args.concurrency)
    return run_python(url, total, args.concurrency)


# --- main -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def scratch_database(server_url: str, keep: bool) -> Iterator[str]:
    params = conninfo_to_dict(server_url)
    dbname = f"sdi_apibench_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    try:
        yield make_conninfo(**{**params, "dbname": dbname})
    finally:
        if keep:
            print(f"kept database {dbname}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop servers, drop the database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="number of polygons (default 200,000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk load per server and endpoint")
    parser.add_argument("--requests", type=int, default=None,
                        help="use the bounded Python generator with this many requests instead of wrk")
    parser.add_argument("--concurrency", type=int, default=16, help="open connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and temporary folder")
    parser.add_argument("--server", default=os.environ.get("SDI_DATABASE_URL", "postgresql:///sdi"),
                        help="libpq URL of the server; a scratch database is created on it and dropped")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    tipg_uvicorn, stock_uvicorn = venv_bin("tipg", "uvicorn"), venv_bin("stock", "uvicorn")

    folder = Path(tempfile.mkdtemp(prefix="sdi_api_bench_"))
    started: list[Server] = []
    try:
        with scratch_database(args.server, args.keep) as url:
            env = {**os.environ, "SDI_DATABASE_URL": url, "SDI_DATA_DIR": str(folder / "store"),
                   "PYTHONPATH": str(ROOT)}
            for key in ("PYGEOAPI_CONFIG", "PYGEOAPI_OPENAPI", "SDI_PYGEOAPI_CONFIG", "SDI_PYGEOAPI_OPENAPI"):
                env.pop(key, None)
            subprocess.run([sys.executable, "-m", "sdi.cli", "db", "init", "-q"], env=env, check=True)
            t0 = time.perf_counter()
            load_layer(args.n, folder, url)
            print(f"{args.n:,} synthetic polygons (EPSG:2326) loaded with loaders.load in "
                  f"{time.perf_counter() - t0:.1f} s; database {url.split('dbname=')[-1]}", flush=True)

            from sdi.publishing.app import ServeSettings, prepare_reader
            from sdi.settings import Settings

            reader = {k: str(v) for k, v in conninfo_to_dict(prepare_reader(Settings(database_url=url),
                                                                              ServeSettings())).items()}
            ports = {name: free_port() for name in SERVERS}
            common = ["--host", "127.0.0.1", "--workers", str(args.workers), "--log-level", "warning"]

            sdi_dir = folder / "sdi"
            sdi_base = f"http://127.0.0.1:{ports['sdi']}"
            subprocess.run([sys.executable, "-m", "sdi.cli", "publish", "--output-dir", str(sdi_dir),
                            "--public-url", sdi_base], env=env, check=True, stdout=subprocess.DEVNULL)
            servers = {"sdi": start("sdi", [sys.executable, "-m", "sdi.cli", "serve", "--port", str(ports["sdi"]),
                                            "--config", str(sdi_dir / "pygeoapi-config.yml"), *common],
                                    {**env, "SDI_PUBLIC_URL": sdi_base}, ROOT / "pygeoapi_config",
                                    ports["sdi"], "/conformance?f=json", started, log_dir=folder)}

            tipg_url = (f"postgresql://{reader['user']}:{requests.utils.quote(reader['password'], safe='')}"
                        f"@{reader['host']}:{reader.get('port') or 5432}/{reader['dbname']}")
            tipg_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"),
                        "DATABASE_URL": tipg_url, "TIPG_DB_SCHEMAS": '["layers"]'}
            servers["tipg"] = start("tipg", [str(tipg_uvicorn), "tipg.main:app", "--port", str(ports["tipg"]),
                                             *common], tipg_env, folder, ports["tipg"], "/conformance", started)

            stock_base = f"http://127.0.0.1:{ports['stock']}"
            cfg, openapi = stock_config(folder, stock_base, reader)
            stock_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"),
                         "PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(openapi)}
            servers["stock"] = start("stock", [str(stock_uvicorn), "pygeoapi.starlette_app:APP", "--port",
                                               str(ports["stock"]), *common], stock_env, folder, ports["stock"],
                                     "/conformance?f=json", started)

            fid, correctness = check(servers)
            print(f"servers up ({args.workers} workers each); bbox page of sdi checked against the others; "
                  f"items/{{id}} uses id {fid}", flush=True)
            for name in SERVERS:
                print(f"  {name:<5} " + "  ".join(f"{k}: {v}" for k, v in correctness[name].items()))

            results: dict[tuple[str, str], Run | None] = {}
            load_desc = (f"wrk, {args.concurrency} connections, {args.duration:g} s after a warm-up"
                         if args.requests is None and shutil.which("wrk") else
                         f"Python generator, {args.requests or 2000} requests over {args.concurrency} threads")
            print(f"load: {load_desc}; one server and endpoint at a time", flush=True)
            for endpoint in ("items", "item", "tile"):
                for name in SERVERS:
                    if endpoint == "tile" and correctness[name]["tile"].startswith("n/a"):
                        results[(name, endpoint)] = None
                        continue
                    run = measure(urls(name, servers[name].base, fid)[endpoint], args)
                    results[(name, endpoint)] = run
                    print(f"  {endpoint:<5} {name:<5} {run.rps:8.1f} req/s  p50 {run.p50_ms:7.1f} ms  "
                          f"p99 {run.p99_ms:7.1f} ms  ({run.requests} requests, {run.bad} bad)", flush=True)

            labels = {"items": "items?limit=100&bbox (1 km, Central)", "item": "items/{id}",
                      "tile": f"MVT tile z={ZOOM} (Central)"}
            print(f"\n{args.n:,} synthetic polygons; {load_desc}; {args.workers} uvicorn workers each\n")
            print("| endpoint | server | req/s | p50 ms | p99 ms | non-2xx | same features as sdi |")
            print("|---|---|---:|---:|---:|---:|---|")
            for endpoint, label in labels.items():
                for name in SERVERS:
                    run = results[(name, endpoint)]
                    verdict = correctness[name][endpoint] if name != "sdi" else "(reference)"
                    if run is None:
                        print(f"| {label} | {name} | n/a | n/a | n/a | n/a | {verdict} |")
                    else:
                        print(f"| {label} | {name} | {run.rps:.1f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | "
                              f"{run.bad} | {verdict} |")
            print("\n| endpoint | sdi ÷ TiPg (req/s) | sdi ÷ stock (req/s) |\n|---|---:|---:|")
            for endpoint, label in labels.items():
                sdi_run = results[("sdi", endpoint)]
                ratios = []
                for other in ("tipg", "stock"):
                    run = results[(other, endpoint)]
                    ratios.append(f"{sdi_run.rps / run.rps:.2f}×" if sdi_run and run and run.rps else "n/a")
                print(f"| {label} | {ratios[0]} | {ratios[1]} |")
            items = [results[(s, "items")] for s in SERVERS]
            if all(items):
                sdi_r, tipg_r, stock_r = (r.rps for r in items)  # type: ignore[union-attr]
                print(f"\ngoal (issue): items page sdi ≥ 2× TiPg: {'met' if sdi_r >= 2 * tipg_r else 'NOT met'} "
                      f"({sdi_r / tipg_r:.2f}×); ≥ 10× stock: {'met' if sdi_r >= 10 * stock_r else 'NOT met'} "
                      f"({sdi_r / stock_r:.2f}×)")
            return 0
    finally:
        for server in started:
            server.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
