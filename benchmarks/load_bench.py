"""Load benchmark: `sdi load` against `ogr2ogr -f PostgreSQL` (COPY), paired and repeated, with CPU and peak memory.

For each size (default 1,000,000 and 5,000,000) it writes N synthetic polygons (random octagons, 0.1% of
them self-intersecting bow-ties; labelled synthetic) to a GeoPackage in EPSG:4326 inside Hong Kong, in
slices so that generating it stays in bounded memory, then loads that file into one scratch database
with each tool, reprojecting to EPSG:2326 and building a GiST index, in paired runs A B A B ...
(``--pairs``, default 2):

* ``sdi load`` (the CLI, streamed in chunks of ``SDI_LOAD_CHUNK_ROWS``: read, drop/repair, reproject with
  EPSG:1825, type, COPY, primary key, index, ANALYZE, change comparison, atomic swap, load history);
  each run loads a new layer id, so every run is a first load;
* ``ogr2ogr -f PostgreSQL -t_srs EPSG:2326`` with ``PG_USE_COPY=YES`` and ``-gt 65536`` (GiST index, a
  ``fid`` key), overwriting its table.

Each run is a child process measured with GNU time (``/usr/bin/time``): wall seconds, CPU seconds (user +
system) and peak resident memory of that process (PostgreSQL's own work is in the wall time, not in CPU or memory). The
median of each tool's runs is printed side by side with the ratios, and the rows of every run are
checked (sdi repairs the bow-ties; both keep every feature). ``--ten-million`` adds one ``sdi load`` of
10,000,000 polygons (time and peak memory). Exit status 1 when a target of issue 15 is missed
(``sdi load`` wall time above 0.8× ogr2ogr's, or its peak memory above 400 MB).

The package's bytecode is compiled first, as an installed package's is (so that a shell with
``PYTHONDONTWRITEBYTECODE`` set does not charge ``sdi load`` for compiling its own modules on each start).

``--shape footprint`` writes concave L-shaped outlines instead of octagons: ``sdi load`` proves convex
polygons valid from their coordinates and sends every other polygon through GEOS, so footprints show what
real building outlines cost.

Run: ``make bench`` or ``.venv/bin/python benchmarks/load_bench.py --sizes 1000000 --pairs 2`` (1M only,
about 2 minutes once the GeoPackage exists); ``--sizes 200000 --pairs 1`` for a quick check.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import pyogrio
import shapely
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
SLICE = 500_000  #: polygons generated and written at a time
TARGET_RATIO = 0.8
TARGET_PEAK_MB = 400


def _l_shapes(x: np.ndarray, y: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Concave, footprint-like polygons: an axis-aligned rectangle of about ``2r`` with one corner cut out (an L)."""
    w, h = r * rng.uniform(1.0, 2.0, len(r)), r * rng.uniform(1.0, 2.0, len(r))
    cut = rng.uniform(0.3, 0.7, len(r))
    xs = np.stack([x - w, x + w, x + w, x + w * (1 - 2 * cut), x + w * (1 - 2 * cut), x - w, x - w], axis=1)
    ys = np.stack([y - h, y - h, y + h * (1 - 2 * cut), y + h * (1 - 2 * cut), y + h, y + h, y - h], axis=1)
    return shapely.polygons(np.stack([xs, ys], axis=2))


def make_polygons(n: int, path: Path, shape: str = "octagon") -> Path:
    """Write n synthetic polygons (EPSG:4326) to a GeoPackage, in slices; 0.1% are self-intersecting bow-ties.

    ``shape`` is ``octagon`` (convex: random octagons) or ``footprint`` (concave L-shaped outlines, like
    building footprints)."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial.gpkg")
    partial.unlink(missing_ok=True)
    rng = np.random.default_rng(2326)
    for start in range(0, n, SLICE):
        m = min(SLICE, n - start)
        x = rng.uniform(810_000, 860_000, m)
        y = rng.uniform(806_000, 845_000, m)
        r = rng.uniform(5, 40, m)
        polys = (shapely.buffer(shapely.points(x, y), r, quad_segs=2) if shape == "octagon"
                 else _l_shapes(x, y, r, rng))
        bad = rng.random(m) < 0.001
        polys[bad] = [shapely.Polygon([(a - s, b - s), (a + s, b + s), (a + s, b - s), (a - s, b + s)])
                      for a, b, s in zip(x[bad], y[bad], r[bad], strict=True)]
        frame = gpd.GeoDataFrame({
            "parcel_no": np.array([f"SYN {i}" for i in range(start, start + m)], dtype=object),
            "area_class": rng.integers(1, 6, m),
            "value": np.round(rng.uniform(0, 1e6, m), 2),
        }, geometry=polys, crs=2326).to_crs(4326)
        pyogrio.write_dataframe(frame, partial, layer="polygons", driver="GPKG", append=start > 0)
    partial.rename(path)
    return path


@dataclass
class Run:
    """One measured child process."""

    wall_s: float
    cpu_s: float
    peak_mb: float


def measured(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd`` under GNU time and return its wall time, CPU time and peak resident memory.

    Linux carries a process's peak RSS across ``fork``/``exec`` from its parent, so a child of this
    (large) Python process would report at least this process's size; GNU time is a small parent whose
    child reports only its own peak.
    """
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "SDI-BENCH %e %U %S %M", *cmd], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    line = next((ln for ln in reversed(out.stderr.splitlines()) if ln.startswith("SDI-BENCH ")), None)
    if out.returncode or line is None:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    _, _, user, system, peak_kb = line.split()
    return Run(wall, float(user) + float(system), float(peak_kb) / 1024)


def _yml(layer_id: str, src: Path) -> Path:
    path = OUT / "load_bench_layers" / f"{layer_id}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"id: {layer_id}\ntitle: {{en: Synthetic benchmark polygons (synthetic)}}\n"
        "abstract: {en: Generated by benchmarks/load_bench.py}\ncustodian: HK SDI benchmarks\n"
        f"licence: synthetic\nsynthetic: true\nsource: {{path: {src}, layer: polygons}}\n", encoding="utf-8")
    return path


def _median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs),
               max(r.peak_mb for r in runs))


def bench_size(n: int, url: str, pairs: int, env: dict[str, str], shape: str = "octagon") -> tuple[Run, Run]:
    """Paired runs of both tools on n polygons; return the (sdi, ogr2ogr) medians (peak: the largest)."""
    src = make_polygons(n, OUT / (f"synthetic_polygons_{n}.gpkg" if shape == "octagon"
                                  else f"synthetic_{shape}s_{n}.gpkg"), shape)
    print(f"\n{n:,} synthetic polygons, {src.stat().st_size / 1e6:.0f} MB GeoPackage (EPSG:4326) -> EPSG:2326",
          flush=True)
    sdi_runs: list[Run] = []
    ogr_runs: list[Run] = []
    for pair in range(pairs):
        layer_id = f"bench_polygons_{n}_{pair}"
        yml = _yml(layer_id, src)
        sdi_runs.append(measured([sys.executable, "-m", "sdi.cli", "load", str(yml)], env))
        ogr_runs.append(measured(["ogr2ogr", "--config", "PG_USE_COPY", "YES", "-f", "PostgreSQL", f"PG:{url}",
                                  str(src), "polygons", "-nln", "bench.ogr_polygons", "-overwrite", "-gt", "65536",
                                  "-t_srs", "EPSG:2326", "-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST",
                                  "-lco", "FID=fid"], env))
        for label, run in (("sdi load", sdi_runs[-1]), ("ogr2ogr", ogr_runs[-1])):
            print(f"  pair {pair + 1}: {label:<9} {run.wall_s:7.1f} s wall {run.cpu_s:7.1f} s CPU "
                  f"{run.peak_mb:7.0f} MB peak", flush=True)
        with psycopg.connect(url) as conn:
            rows = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("layers", layer_id))
                                ).fetchone()
            ogr_rows = conn.execute("select count(*) from bench.ogr_polygons").fetchone()
            invalid = conn.execute(sql.SQL("select count(*) from {} where not st_isvalid(geom)").format(
                sql.Identifier("layers", layer_id))).fetchone()
        if not rows or not ogr_rows or rows[0] != n or ogr_rows[0] != n or (invalid and invalid[0]):
            raise RuntimeError(f"rows: sdi {rows}, ogr2ogr {ogr_rows} (expected {n}); sdi invalid left: {invalid}")
        subprocess.run([sys.executable, "-m", "sdi.cli", "layers", "drop", "--yes", layer_id], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return _median(sdi_runs), _median(ogr_runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000", help="comma-separated polygon counts")
    parser.add_argument("--pairs", type=int, default=2, help="paired runs (A B) per size (default 2)")
    parser.add_argument("--ten-million", action="store_true", help="also one sdi load of 10,000,000 polygons")
    parser.add_argument("--shape", choices=("octagon", "footprint"), default="octagon",
                        help="octagon: convex (the issue's benchmark); footprint: concave L-shaped outlines, which "
                             "sdi validates with GEOS as it does real building footprints")
    parser.add_argument("--server", default=os.environ.get("SDI_DATABASE_URL", "postgresql:///sdi"),
                        help="libpq URL of the server; a scratch database is created on it and dropped")
    args = parser.parse_args()
    if not shutil.which("ogr2ogr") or not Path("/usr/bin/time").exists():
        print("ogr2ogr or /usr/bin/time not found: apt-get install gdal-bin time", file=sys.stderr)
        return 1
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for package in ("sdi", "loaders"):  # bytecode as an installed package has it (PYTHONDONTWRITEBYTECODE aside)
        compileall.compile_dir(ROOT / package, quiet=1)
    params = conninfo_to_dict(args.server)
    dbname = f"sdi_bench_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    url = make_conninfo(**{**params, "dbname": dbname})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    env = {**os.environ, "SDI_DATABASE_URL": url, "SDI_LAYERS_DIR": str(OUT / "load_bench_layers")}
    try:
        subprocess.run([sys.executable, "-m", "sdi.cli", "db", "init", "-q"], env=env, check=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create schema bench")
        results = {n: bench_size(n, url, args.pairs, env, args.shape) for n in sizes}
        ten = None
        if args.ten_million:
            src = make_polygons(10_000_000, OUT / "synthetic_polygons_10000000.gpkg")
            ten = measured([sys.executable, "-m", "sdi.cli", "load", str(_yml("bench_polygons_10m", src))], env)
        print(f"\nSide by side ({args.shape} polygons; median of {args.pairs} paired runs; peak = largest; machine: "
              f"{os.cpu_count()} CPUs)")
        print("\n| polygons | tool | wall s | CPU s | peak MB | sdi ÷ ogr2ogr (wall) |\n|---:|---|---:|---:|---:|---:|")
        missed = []
        for n, (mine, ogr) in results.items():
            ratio = mine.wall_s / ogr.wall_s
            print(f"| {n:,} | `sdi load` | {mine.wall_s:.1f} | {mine.cpu_s:.1f} | {mine.peak_mb:,.0f} | {ratio:.2f}× |")
            print(f"| {n:,} | `ogr2ogr` | {ogr.wall_s:.1f} | {ogr.cpu_s:.1f} | {ogr.peak_mb:,.0f} | |")
            if ratio > TARGET_RATIO:
                missed.append(f"{n:,}: sdi load takes {ratio:.2f}× ogr2ogr's time (target ≤ {TARGET_RATIO})")
            if mine.peak_mb > TARGET_PEAK_MB:
                missed.append(f"{n:,}: sdi load peaked at {mine.peak_mb:.0f} MB (target ≤ {TARGET_PEAK_MB})")
        if ten is not None:
            print(f"| 10,000,000 | `sdi load` | {ten.wall_s:.1f} | {ten.cpu_s:.1f} | {ten.peak_mb:,.0f} | |")
        for line in missed:
            print(f"target missed: {line}", file=sys.stderr)
        return 1 if missed else 0
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


if __name__ == "__main__":
    sys.exit(main())
