"""Planning benchmark: the data-centre site screening on N synthetic lots, naive GeoPandas against sdi's engines.

Builds a synthetic territory of N lots (default 1,000,000) with its constraint layers
(``make_planning_layers(N)`` of ``data/sample/synthetic/planning.py``: zones, lots, substations, MTR
stations, flood-prone areas, country-park areas, all synthetic) plus the real sample layers the criteria
use (districts, special waivers, landslides, oil depots: ``layers/<id>.yml``) and the synthetic DEM. It loads
them into a dedicated database (default ``sdi_bench_planning``, created and initialised here) through
the normal loader (layer YAMLs + GeoPackages written to ``benchmarks/out/planning_<N>/``, then
``loaders.pipeline.load``), and reports the load time apart.

It then times the full screening of ``sdi/planning/criteria/data_centre.yml`` ``--repeat`` times each
(median reported):

* ``naive``: ``benchmarks/naive_sites.py``, plain GeoPandas (sjoin / overlay / sjoin_nearest per
  criterion, no sdi.planning code), on in-memory GeoDataFrames (reading them is not timed);
* ``postgis``, ``geopandas``: ``sdi.planning.site_selection(engine=...)`` on the loaded layers (the
  in-memory engines read what they need from the database inside the timed call);
* ``dask1``, ``dask2``: ``engine="dask"`` on a cluster of 1 and 2 worker processes (one thread each) started
  before timing with the distributed command-line tools (``dask scheduler`` and ``dask worker``, loopback only,
  ``scheduler="tcp://127.0.0.1:<port>"``); the workers read their partitions from the database themselves.

Every engine's result is checked against the naive one (same sites in the same rank order, scores within
1e-6); a mismatch or a failure is shown in the table (and the exit status is 1), not raised.

Run: ``make bench-planning``, or ``.venv/bin/python benchmarks/planning_bench.py --lots 50000 --repeat 1``.
``--skip-load`` reuses the database of a previous run with the same ``--lots``. ``--min-area M2`` lowers
the ``min_area`` constraint for every engine alike: the generator fills the same land with smaller lots as
N grows (median ~120 m² at 1,000,000), so with the shipped 1000 m² only a few dozen sites reach scoring.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import geopandas as gpd
import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich import box
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import naive_sites  # noqa: E402  (benchmarks/ is not a package)

from loaders.pipeline import load  # noqa: E402
from loaders.raster import cog_path  # noqa: E402
from sdi.db import init_db  # noqa: E402
from sdi.layerdef import read_definition  # noqa: E402
from sdi.planning.cli_cluster import cli_cluster  # noqa: E402
from sdi.settings import Settings  # noqa: E402

CRITERIA = ROOT / "sdi" / "planning" / "criteria" / "data_centre.yml"
GENERATOR = ROOT / "data" / "sample" / "synthetic" / "planning.py"
DEM_LAYER = "synthetic_dem"
ENGINES = ("naive", "postgis", "geopandas", "dask1", "dask2")
console = Console(width=160)  # wide enough that the table never wraps in a log


def import_path(name: str, path: Path) -> ModuleType:
    """Import a module from a file that is not on a package path."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- database and loading ---------------------------------------------------------------------------------


def recreate_database(server: str, dbname: str) -> str:
    """Drop and create ``dbname`` on the server, initialise it (``sdi db init``), return its URL."""
    params = conninfo_to_dict(server)
    admin = make_conninfo(**{**params, "dbname": "postgres"})  # type: ignore[arg-type]
    url = make_conninfo(**{**params, "dbname": dbname})  # type: ignore[arg-type]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    init_db(Settings(database_url=url))
    return url


def write_definition(folder: Path, layer_id: str, source: Path, n_lots: int) -> Path:
    """Write ``<folder>/<id>.yml`` for a generated source file (``synthetic: true``, title ending "(synthetic)")."""
    doc = {"id": layer_id,
           "title": {"en": f"{layer_id.removeprefix('synthetic_').replace('_', ' ').capitalize()}, "
                           f"{n_lots:,}-lot benchmark territory (synthetic)"},
           "abstract": {"en": "SYNTHETIC benchmark layer generated by data/sample/synthetic/planning.py for "
                              "benchmarks/planning_bench.py; nothing in it is measured."},
           "custodian": "HK SDI benchmarks", "licence": "Synthetic data generated by HK SDI (Apache-2.0)",
           "synthetic": True, "source": {"path": source.name}}
    path = folder / f"{layer_id}.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_synthetic(generator: ModuleType, n_lots: int, rasters: set[str], folder: Path) -> list[Path]:
    """Generate the synthetic layers (N lots) and the DEM into ``folder`` as GeoPackages / GeoTIFF + layer YAMLs."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    frames = generator.make_planning_layers(n_lots)
    console.print(f"  generated {len(frames)} synthetic vector layers in {time.perf_counter() - start:.1f} s")
    paths = []
    for layer_id, frame in frames.items():
        gpkg = folder / f"{layer_id}.gpkg"
        gpkg.unlink(missing_ok=True)
        frame.to_file(gpkg, driver="GPKG", layer=layer_id, engine="pyogrio", use_arrow=True)
        paths.append(write_definition(folder, layer_id, gpkg, n_lots))
    if DEM_LAYER in rasters:
        paths.append(write_definition(folder, DEM_LAYER, generator.make_dem(folder / f"{DEM_LAYER}.tif"), n_lots))
    return paths


def load_all(paths: list[Path], settings: Settings) -> dict[str, float]:
    """Load each layer YAML with the normal loader; return seconds per layer id."""
    seconds = {}
    for path in paths:
        definition = read_definition(path)
        start = time.perf_counter()
        report = load(definition, settings)
        seconds[definition.id] = time.perf_counter() - start
        console.print(f"  loaded {definition.id:<32} {report.features_written:>10,} features "
                      f"{seconds[definition.id]:8.1f} s")
    return seconds


# --- timing and checking ----------------------------------------------------------------------------------


def timed_runs(name: str, run: Callable[[], gpd.GeoDataFrame], repeat: int) -> tuple[list[float], Any]:
    """Run ``repeat`` times; return the seconds of each run and the last result (or the exception)."""
    times: list[float] = []
    result: Any = None
    for i in range(repeat):
        start = time.perf_counter()
        try:
            result = run()
        except Exception as exc:  # reported in the table; the other engines still run
            console.print(f"  {name:<10} run {i + 1}: [red]{type(exc).__name__}: {exc}[/red]")
            return times, exc
        times.append(time.perf_counter() - start)
        console.print(f"  {name:<10} run {i + 1}: {times[-1]:8.2f} s  ({len(result):,} sites)")
    return times, result


def with_min_area(criteria: dict[str, Any], min_m2: float) -> dict[str, Any]:
    """The criteria with every ``min_area`` constraint's ``min_m2`` set to ``min_m2`` (a copy)."""
    if not any(c.get("type") == "min_area" for c in criteria["constraints"]):
        raise SystemExit("--min-area: the criteria have no min_area constraint")
    constraints = [{**c, "min_m2": min_m2} if c.get("type") == "min_area" else c for c in criteria["constraints"]]
    return {**criteria, "constraints": constraints}


def engine_runner(engine: str, criteria: dict[str, Any],
                  settings: Settings) -> tuple[Callable[[], Any], Callable[[], object]]:
    """A zero-argument call of ``site_selection`` for a bench engine name, and what to close afterwards."""
    from sdi.planning import site_selection

    if engine in ("postgis", "geopandas"):
        return (lambda: site_selection(criteria, engine=engine, settings=settings)), (lambda: None)
    stack = ExitStack()
    cluster = stack.enter_context(cli_cluster(OUT / "dask-cli" / engine, workers=int(engine.removeprefix("dask"))))
    return (lambda: site_selection(criteria, engine="dask", settings=settings, scheduler=cluster.address)), stack.close


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=1_000_000, help="number of synthetic lots (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine; the median is reported")
    parser.add_argument("--skip-load", action="store_true", help="reuse the benchmark database as loaded before")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated subset of {','.join(ENGINES)} (naive always runs: it is the reference)")
    parser.add_argument("--server", default=os.environ.get("SDI_DATABASE_URL", "postgresql:///sdi"),
                        help="libpq URL of the server the benchmark database is created on")
    parser.add_argument("--min-area", type=float, default=None, metavar="M2",
                        help="override min_m2 of the min_area constraints (the 1M-lot territory's lots are small: "
                             "median ~120 m², so the shipped 1000 m² keeps few sites)")
    parser.add_argument("--dbname", default="sdi_bench_planning", help="name of the benchmark database")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or args.repeat < 1 or args.lots < 1:
        parser.error(f"--engines: unknown {unknown}" if unknown else "--repeat and --lots must be ≥ 1")
    criteria = yaml.safe_load(CRITERIA.read_text(encoding="utf-8"))
    if args.min_area is not None:
        criteria = with_min_area(criteria, args.min_area)
    vectors, rasters = naive_sites.layer_ids(criteria)
    folder = OUT / f"planning_{args.lots}"
    url = make_conninfo(**{**conninfo_to_dict(args.server), "dbname": args.dbname})
    settings = Settings(database_url=url, layers_dir=folder, data_dir=folder / "store")
    console.print(f"[bold]Data-centre screening benchmark[/bold]: {args.lots:,} synthetic lots, database "
                  f"{args.dbname}, {os.cpu_count()} CPUs, {args.repeat} run(s) per engine")

    if not args.skip_load:
        generator = import_path("synthetic_planning", GENERATOR)
        paths = write_synthetic(generator, args.lots, rasters, folder)
        recreate_database(args.server, args.dbname)
        real = [ROOT / "layers" / f"{layer_id}.yml" for layer_id in sorted(vectors - {p.stem for p in paths})]
        missing = [p for p in real if not p.exists()]
        if missing:
            console.print(f"[red]missing layer definitions: {', '.join(map(str, missing))}[/red]")
            return 1
        load_s = load_all(paths + real, settings)
        console.print(f"  load: {sum(load_s.values()):.1f} s in all (lots: {load_s.get('synthetic_lots', 0):.1f} s)")

    try:
        inputs = naive_sites.read_inputs(settings.database_url, vectors)
    except Exception as exc:  # sqlalchemy wraps psycopg's errors
        console.print(f"[red]cannot read the layers from {args.dbname} ({type(exc).__name__}); "
                      f"run once without --skip-load[/red]")
        return 1
    dem = cog_path(DEM_LAYER, settings) if DEM_LAYER in rasters else None
    if dem is not None and not dem.exists():
        console.print(f"[yellow]{dem} missing: the slope score is skipped[/yellow]")
        dem = None
    console.print(f"  inputs: {', '.join(f'{k} {len(v):,}' for k, v in inputs.items())}")

    results: dict[str, tuple[list[float], Any]] = {}
    results["naive"] = timed_runs("naive", lambda: naive_sites.screen(criteria, inputs, dem=dem), args.repeat)
    reference = results["naive"][1]
    if isinstance(reference, Exception):
        return 1
    for engine in engines:
        if engine == "naive":
            continue
        try:
            run, close = engine_runner(engine, criteria, settings)
        except Exception as exc:  # e.g. the engine is not written yet: reported, the others run
            console.print(f"  {engine:<10} [red]unavailable: {type(exc).__name__}: {exc}[/red]")
            results[engine] = ([], exc)
            continue
        try:
            results[engine] = timed_runs(engine, run, args.repeat)
        finally:
            close()

    base = statistics.median(results["naive"][0])
    area = "" if args.min_area is None else f", min_area {args.min_area:g} m²"
    table = Table(title=f"Data-centre screening, {args.lots:,} synthetic lots{area}, {os.cpu_count()} CPUs, "
                        f"median of {args.repeat}", box=box.MARKDOWN)
    for column in ("engine", "median s", "runs s", "sites found", "speed-up vs naive", "same as naive"):
        table.add_column(column, justify="left" if column in ("engine", "same as naive") else "right")
    failures = 0
    for name, (times, result) in results.items():
        if isinstance(result, Exception) or not times:
            failures += 1
            table.add_row(name, "n/a", "", "", "", f"failed: {type(result).__name__}")
            continue
        median = statistics.median(times)
        why = None if name == "naive" else naive_sites.disagreement(reference, result)
        verdict = "reference" if name == "naive" else f"NO: {why}" if why else "yes"
        failures += why is not None
        table.add_row(name, f"{median:.2f}", " ".join(f"{t:.1f}" for t in times), f"{len(result):,}",
                      f"{base / median:.2f}×", verdict)
    console.print(table)
    postgis = results.get("postgis")
    if postgis and postgis[0]:
        speedup = base / statistics.median(postgis[0])
        console.print(f"goal (issue #6): postgis ≥ 5× naive: {'met' if speedup >= 5 else 'NOT met'} ({speedup:.2f}×)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
