"""Join benchmark: ``sdi.planning`` joins of N synthetic lots with the 18 districts, ``postgis`` and ``geopandas``.

For each size (default 200,000 and 1,000,000 lots) it generates SYNTHETIC lots with the sample generator
(``make_lots`` of ``data/sample/synthetic/planning.py``: convex lots filling the synthetic development
zones inside Hong Kong's real outline, smaller as N grows) and loads them, with the real districts
(``layers/districts_18.yml``: 18 polygons of up to 22,511 vertices), through the normal loader into a
scratch database that it creates (default ``sdi_bench_joins``) and drops at the end (``--keep`` keeps it).
Layer YAMLs and GeoPackages go to ``benchmarks/out/joins_<N>/``; loading is reported, not timed.

Each join below runs ``--repeat`` times per engine, the two engines alternating, and the median counts.
Both engines are called with layer ids, so the ``geopandas`` time includes reading the layers from the
database, as ``benchmarks/planning_bench.py`` times its in-memory engines. ``nearest`` runs on a sample
(every ``--nearest-every``-th lot, loaded as a layer of its own): the ``geopandas`` engine measures the
distance to whole district polygons, minutes for 200,000 lots. The results of the two engines are compared
(same rows in the same order, values within 1e-6, geometries equal or within 1e-6 m); a disagreement or a
failure is shown in the table and makes the exit status 1.

The last table puts every size side by side (join, size, postgis s, geopandas s, ratio): wall-clock medians
of the paired runs, with the client process's CPU time beside them (the server's is not counted); all runs
are written to ``--json`` (default ``benchmarks/out/join_bench.json``).

Run: ``make bench-joins`` (200,000 and 1,000,000 lots, 3 paired runs), or
``.venv/bin/python benchmarks/join_bench.py --sizes 20000 --repeat 1``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich import box
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))

from loaders.pipeline import load  # noqa: E402
from sdi import planning  # noqa: E402
from sdi.db import init_db  # noqa: E402
from sdi.layerdef import read_definition  # noqa: E402
from sdi.settings import Settings  # noqa: E402

GENERATOR = ROOT / "data" / "sample" / "synthetic" / "planning.py"
DISTRICTS = ROOT / "layers" / "districts_18.yml"
ENGINES = ("postgis", "geopandas")
TOLERANCE = 1e-6
console = Console(width=160)


def import_path(name: str, path: Path) -> ModuleType:
    """Import a module from a file that is not on a package path."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- data and database ------------------------------------------------------------------------------------


def admin_url(server: str) -> str:
    """The URL of the server's ``postgres`` database (to create and drop the benchmark database)."""
    return make_conninfo(**{**conninfo_to_dict(server), "dbname": "postgres"})  # type: ignore[arg-type]


def create_database(server: str, dbname: str) -> str:
    """Drop and create ``dbname`` on the server, initialise it (``sdi db init``), return its URL."""
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    url = make_conninfo(**{**conninfo_to_dict(server), "dbname": dbname})  # type: ignore[arg-type]
    init_db(Settings(database_url=url))
    return url


def drop_database(server: str, dbname: str) -> None:
    """Drop the benchmark database."""
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def write_layer(folder: Path, layer_id: str, frame: gpd.GeoDataFrame, what: str) -> Path:
    """Write ``frame`` as ``<folder>/<id>.gpkg`` and its layer YAML (``synthetic: true``, title "(synthetic)")."""
    folder.mkdir(parents=True, exist_ok=True)
    gpkg = folder / f"{layer_id}.gpkg"
    gpkg.unlink(missing_ok=True)
    frame.to_file(gpkg, driver="GPKG", layer=layer_id, engine="pyogrio", use_arrow=True)
    doc = {"id": layer_id, "title": {"en": f"{what} (synthetic)"},
           "abstract": {"en": "SYNTHETIC benchmark layer generated by data/sample/synthetic/planning.py for "
                              "benchmarks/join_bench.py; nothing in it is measured."},
           "custodian": "HK SDI benchmarks", "licence": "Synthetic data generated by HK SDI (Apache-2.0)",
           "synthetic": True, "source": {"path": gpkg.name}}
    path = folder / f"{layer_id}.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def make_lots(generator: ModuleType, n_lots: int, every: int, folder: Path) -> tuple[Path, Path]:
    """Generate N synthetic lots and the ``nearest`` sample; return their layer YAMLs."""
    start = time.perf_counter()
    zones = generator.ozp_zones(generator.country_park_areas())
    lots = generator.make_lots(zones, n_lots)
    console.print(f"  generated {len(lots):,} synthetic lots in {time.perf_counter() - start:.1f} s")
    sample = lots.iloc[::every].reset_index(drop=True)
    return (write_layer(folder, f"bench_lots_{n_lots}", lots, f"Benchmark lots, {n_lots:,}"),
            write_layer(folder, f"bench_lots_{n_lots}_sample", sample,
                        f"Benchmark lots, every {every}th of {n_lots:,}"))


def load_layer(path: Path, settings: Settings) -> str:
    """Load one layer YAML with the normal loader; return its id."""
    definition = read_definition(path)
    start = time.perf_counter()
    report = load(definition, settings)
    console.print(f"  loaded {definition.id:<28} {report.features_written:>10,} features "
                  f"{time.perf_counter() - start:7.1f} s")
    return definition.id


# --- the joins and their checks ---------------------------------------------------------------------------


def joins(lots: str, sample: str, districts: str) -> dict[str, Callable[..., gpd.GeoDataFrame]]:
    """The timed joins, each a call taking ``engine`` and ``settings``."""
    return {
        "sjoin intersects": lambda **kw: planning.sjoin(lots, districts, "intersects", **kw),
        "sjoin within": lambda **kw: planning.sjoin(lots, districts, "within", **kw),
        "within_distance 100 m": lambda **kw: planning.within_distance(lots, districts, 100, **kw),
        "overlay": lambda **kw: planning.overlay(lots, districts, **kw),
        "clip": lambda **kw: planning.clip(lots, districts, **kw),
        "summarise_by": lambda **kw: planning.summarise_by(lots, districts, agg={"area_m2": "sum"}, **kw),
        "summarise_by name_en": lambda **kw: planning.summarise_by(lots, districts, by="name_en", **kw),
        "nearest (sample)": lambda **kw: planning.nearest(sample, districts, **kw),
    }


def _distinct(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a[i], b[i]) with repeated pairs of the same objects left out (a district on 200,000 rows)."""
    ids = pd.Series([id(x) for x in a], dtype="int64").astype(str) + "/" + pd.Series([id(x) for x in b],
                                                                                     dtype="int64").astype(str)
    keep = ~ids.duplicated().to_numpy()
    return a[keep], b[keep]


def disagreement(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> str | None:
    """Why two join results differ (columns, rows, values beyond 1e-6, geometries beyond 1e-6 m), or None."""
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return f"{len(a):,} vs {len(b):,} rows"
    try:
        pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")),
                                      pd.DataFrame(b.drop(columns="geometry")),
                                      check_dtype=False, check_exact=False, atol=TOLERANCE, rtol=0)
    except AssertionError as exc:
        return " ".join(str(exc).split())[:200]
    ga, gb = _distinct(np.asarray(a.geometry.values, dtype=object), np.asarray(b.geometry.values, dtype=object))
    missing = pd.isna(ga) != pd.isna(gb)
    if missing.any():
        return f"{int(missing.sum())} geometries missing on one side only"
    ga, gb = ga[~pd.isna(ga)], gb[~pd.isna(gb)]
    same = shapely.equals_exact(shapely.normalize(ga), shapely.normalize(gb), tolerance=TOLERANCE)
    rest = np.flatnonzero(~same)
    if len(rest):
        apart = shapely.area(shapely.symmetric_difference(ga[rest], gb[rest])) >= TOLERANCE
        apart |= shapely.hausdorff_distance(ga[rest], gb[rest]) >= TOLERANCE
        apart |= shapely.get_type_id(ga[rest]) != shapely.get_type_id(gb[rest])
        if apart.any():
            return f"{int(apart.sum())} geometries differ beyond {TOLERANCE} m"
    return None


def timed(name: str, call: Callable[..., gpd.GeoDataFrame], settings: Settings,
          repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Run ``call`` on each engine ``repeat`` times, the engines alternating (A B, B A, ...).

    Returns the wall-clock seconds, the client process's CPU seconds and the last result, per engine.
    """
    seconds: dict[str, list[float]] = {e: [] for e in ENGINES}
    cpu: dict[str, list[float]] = {e: [] for e in ENGINES}
    results: dict[str, Any] = {}
    for i in range(repeat):
        for engine in ENGINES if i % 2 == 0 else ENGINES[::-1]:
            if isinstance(results.get(engine), Exception):
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                results[engine] = call(engine=engine, settings=settings)
            except Exception as exc:  # reported in the table; the other runs go on
                results[engine] = exc
                console.print(f"    {name:<24} {engine:<10} [red]{type(exc).__name__}: {exc}[/red]")
                continue
            seconds[engine].append(time.perf_counter() - start)
            cpu[engine].append(time.process_time() - start_cpu)
            console.print(f"    {name:<24} {engine:<10} run {i + 1}: {seconds[engine][-1]:8.2f} s "
                          f"(client CPU {cpu[engine][-1]:.2f} s, {len(results[engine]):,} rows)")
    return seconds, cpu, results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_size(n_lots: int, args: argparse.Namespace, url: str, generator: ModuleType,
               loaded: set[str]) -> tuple[Table, list[dict[str, Any]]]:
    """Generate, load and time every join for ``n_lots`` lots; return the table and one record per join."""
    folder = OUT / f"joins_{n_lots}"
    settings = Settings(database_url=url, layers_dir=folder, data_dir=folder / "store")
    lots, sample = f"bench_lots_{n_lots}", f"bench_lots_{n_lots}_sample"
    if not (args.skip_load and lots in loaded):
        for path in make_lots(generator, n_lots, args.nearest_every, folder):
            loaded.add(load_layer(path, settings))
    n_sample = len(range(0, n_lots, args.nearest_every))
    table = Table(title=f"Joins of {n_lots:,} synthetic lots with the 18 districts ({date.today()}, "
                        f"{os.cpu_count()} CPUs, median of {args.repeat})", box=box.MARKDOWN)
    for column in ("join", "result rows", "postgis s", "geopandas s", "postgis ÷ geopandas", "engines agree"):
        table.add_column(column, justify="left" if column in ("join", "engines agree") else "right")
    records: list[dict[str, Any]] = []
    for name, call in joins(lots, sample, "districts_18").items():
        if args.joins and not any(j in name for j in args.joins):
            continue
        seconds, cpu, results = timed(name, call, settings, args.repeat)
        broken = [e for e in ENGINES if isinstance(results.get(e), Exception) or not seconds[e]]
        why = f"failed: {', '.join(broken)}" if broken else disagreement(results["postgis"], results["geopandas"])
        medians = {e: _median(seconds[e]) for e in ENGINES}
        label = f"nearest ({n_sample:,}-lot sample)" if name.startswith("nearest") else name
        records.append({"join": label, "lots": n_lots, "rows": None if broken else len(results["postgis"]),
                        "seconds": seconds, "client_cpu_seconds": cpu, "median_seconds": medians,
                        "median_client_cpu_seconds": {e: _median(cpu[e]) for e in ENGINES},
                        "ratio": medians["postgis"] / medians["geopandas"], "agree": why is None, "why": why})
        rows = "" if broken else f"{len(results['postgis']):,}"
        table.add_row(label, rows, f"{medians['postgis']:.2f}", f"{medians['geopandas']:.2f}",
                      f"{medians['postgis'] / medians['geopandas']:.2f}×", "yes" if why is None else f"NO: {why}")
    return table, records


def summary_table(records: list[dict[str, Any]], repeat: int) -> Table:
    """Every size side by side: join, size, postgis s, geopandas s, ratio (wall medians), client CPU medians."""
    table = Table(title=f"Join benchmark, {date.today()}, {os.cpu_count()} CPUs, median of {repeat} paired runs "
                        "(wall seconds; client CPU in brackets)", box=box.MARKDOWN)
    for column in ("join", "size", "postgis s", "geopandas s", "ratio", "target met"):
        table.add_column(column, justify="left" if column == "join" else "right")
    for r in records:
        wall, cpu = r["median_seconds"], r["median_client_cpu_seconds"]
        met = r["agree"] and r["ratio"] <= 1.0
        table.add_row(r["join"], f"{r['lots']:,}", f"{wall['postgis']:.2f} ({cpu['postgis']:.2f})",
                      f"{wall['geopandas']:.2f} ({cpu['geopandas']:.2f})", f"{r['ratio']:.2f}×",
                      "yes" if met else ("NO" if r["agree"] else "NO (results differ)"))
    return table


def write_json(path: Path, records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write every run and median to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"date": date.today().isoformat(), "cpus": os.cpu_count(), "machine": platform.platform(),
           "processor": platform.processor() or platform.machine(), "repeat": args.repeat,
           "nearest_every": args.nearest_every, "engines": list(ENGINES), "results": records}
    path.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    console.print(f"results written to {path}")


def main() -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", "--lots", dest="sizes", default="200000,1000000",
                        help="comma-separated numbers of synthetic lots (default 200000,1000000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine and join; the median counts")
    parser.add_argument("--joins", default="", help="comma-separated parts of join names to run (default: all)")
    parser.add_argument("--nearest-every", type=int, default=50, help="nearest runs on every n-th lot (default 50)")
    parser.add_argument("--server", default=os.environ.get("SDI_DATABASE_URL", "postgresql:///sdi"),
                        help="libpq URL of the server the benchmark database is created on")
    parser.add_argument("--dbname", default="sdi_bench_joins", help="name of the scratch database")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--skip-load", action="store_true", help="reuse the database a --keep run left")
    parser.add_argument("--json", type=Path, default=OUT / "join_bench.json", help="where to write the results")
    args = parser.parse_args()
    sizes = [int(n.replace("_", "")) for n in args.sizes.split(",") if n.strip()]
    args.joins = [j.strip() for j in args.joins.split(",") if j.strip()]
    if not sizes or min(sizes) < 1 or args.repeat < 1 or args.nearest_every < 1:
        parser.error("--sizes, --repeat and --nearest-every must be ≥ 1")
    console.print(f"[bold]Join benchmark[/bold]: {', '.join(f'{n:,}' for n in sizes)} synthetic lots, "
                  f"database {args.dbname}, {os.cpu_count()} CPUs, {args.repeat} run(s) per engine")
    url = make_conninfo(**{**conninfo_to_dict(args.server), "dbname": args.dbname})
    loaded: set[str] = set()
    if args.skip_load:
        with psycopg.connect(url) as conn:
            loaded = {r[0] for r in conn.execute("select id from sdi.layer")}
    else:
        create_database(args.server, args.dbname)
        loaded.add(load_layer(DISTRICTS, Settings(database_url=url)))
    generator = import_path("synthetic_planning", GENERATOR)
    records: list[dict[str, Any]] = []
    try:
        for n_lots in sizes:
            table, done = bench_size(n_lots, args, url, generator, loaded)
            records += done
            console.print(table)
            write_json(args.json, records, args)
    finally:
        if not args.keep:
            drop_database(args.server, args.dbname)
    console.print(summary_table(records, args.repeat))
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s")
    return 0 if all(r["agree"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
