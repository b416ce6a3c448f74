"""``sdi layers`` and ``sdi load``: layer definitions, loading, and what is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.errors import ConfigError, SdiError

layers_app = typer.Typer(help="Layer definitions (layers/*.yml) and loaded layers.", no_args_is_help=True)


@layers_app.command("validate")
@clean_errors
def layers_validate(
    files: Annotated[list[Path] | None, typer.Argument(help="YAML files (default: every file in layers/).")] = None,
) -> None:
    """Validate layer definitions; print every error with its file and key."""
    from sdi.layerdef import definition_files, validate_files

    paths = files or definition_files(settings_from_env().layers_dir)
    good, problems = validate_files(paths)
    for line in problems:
        consoles.err.print(f"error: {line}", markup=False)
    consoles.out.print(f"{len(good)} valid, {len(paths) - len(good)} invalid layer definition(s)")
    if problems:
        raise typer.Exit(1)


@layers_app.command("list")
@clean_errors
def layers_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the loaded layers: id, title, geometry type, feature count, last load."""
    from sdi.db import connect

    with connect(settings_from_env()) as conn:
        rows = conn.execute(
            "select id, title_en, title_zh, coalesce(geometry_type, kind), feature_count, loaded_at, synthetic,"
            " access_groups from sdi.layer order by id").fetchall()
    if as_json:
        consoles.out.print_json(data=[dict(zip(("id", "title_en", "title_zh", "geometry_type", "feature_count",
                                          "loaded_at", "synthetic", "access_groups"), r, strict=True)) for r in rows],
                       default=str)
        return
    table = Table(title=f"{len(rows)} loaded layer(s)")
    for col in ("id", "title", "type", "features", "loaded at", "access"):
        table.add_column(col, justify="right" if col == "features" else "left")
    for r in rows:
        title = f"{r[1]} / {r[2]}" if r[2] else r[1]
        table.add_row(r[0], Text(title + (" [synthetic]" if r[6] else "")), r[3], f"{r[4]:,}",
                      r[5].strftime("%Y-%m-%d %H:%M"), "public" if r[7] is None else "groups: " + ", ".join(r[7]))
    consoles.out.print(table)


@layers_app.command("history")
@clean_errors
def layers_history(
    layer_id: Annotated[str, typer.Argument(help="A layer id (loaded now or before).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many loads, newest first.")] = 20,
) -> None:
    """List a layer's loads, newest first: load id, status, time, features written, changes, reason."""
    from loaders.report import changes_summary
    from sdi.db import connect
    from sdi.errors import LayerNotFoundError

    with connect(settings_from_env()) as conn:
        rows = conn.execute(
            "select load_id, status, started_at, finished_at, features_written, changes, reason"
            " from sdi.load_history where layer_id = %s order by load_id desc limit %s", (layer_id, limit)).fetchall()
    if not rows:
        raise LayerNotFoundError(f"no load history for layer {layer_id!r}")
    names = ("load_id", "status", "started_at", "finished_at", "features_written", "changes", "reason")
    if as_json:
        consoles.out.print_json(data=[dict(zip(names, r, strict=True)) for r in rows], default=str)
        return
    table = Table(title=f"{layer_id}: {len(rows)} load(s), newest first")
    for col in ("load", "status", "finished at", "features", "changes", "reason"):
        table.add_column(col, justify="right" if col in ("load", "features") else "left", overflow="fold")
    for load_id, status, _, finished, written, changes, reason in rows:
        text = changes_summary(changes, short=True) if changes is not None else \
            ("not compared (first load or raster)" if status == "loaded" else "")
        table.add_row(str(load_id), status, finished.strftime("%Y-%m-%d %H:%M:%S"), f"{written:,}", text,
                      Text(reason or ""))  # a reason is shown as written, never as markup
    consoles.out.print(table)


@layers_app.command("set-access")
@clean_errors
def layers_set_access(
    layer_id: Annotated[str, typer.Argument(help="A loaded layer.")],
    groups: Annotated[list[str] | None, typer.Option("--group", help="A group that may read it (repeatable).")] = None,
    public: Annotated[bool, typer.Option("--public", help="Make it readable by everyone.")] = False,
) -> None:
    """Change who may read a loaded layer now (the API follows without a restart); its YAML `access` decides
    again at its next load."""
    from sdi.access.manage import set_access
    from sdi.db import connect

    if public == bool(groups):
        raise ConfigError("give either --public or at least one --group")
    settings = settings_from_env()
    with connect(settings) as conn:
        now = set_access(conn, settings, layer_id, None if public else groups)
    consoles.out.print(f"{layer_id}: " + ("public" if now is None else "readable by groups " + ", ".join(now)),
                       markup=False)


@layers_app.command("drop")
@clean_errors
def layers_drop(layer_ids: Annotated[list[str], typer.Argument(help="Ids of loaded layers.")],
                yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Unpublish layers: drop each table (or COG) and its catalogue record; load history is kept."""
    from loaders.write import drop_layer
    from sdi.db import connect

    settings = settings_from_env()
    if not yes and not typer.confirm(f"drop {', '.join(layer_ids)}?"):
        raise typer.Exit(1)
    with connect(settings) as conn:
        for layer_id in layer_ids:
            consoles.out.print(f"dropped {drop_layer(conn, layer_id, settings)}", markup=False)


def _summary(report: object) -> Table:
    from loaders.report import LoadReport, changes_summary

    assert isinstance(report, LoadReport)
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_row("source", f"{report.source_path} ({report.driver})")
    table.add_row("source CRS", f"{report.source_crs} ({report.crs_origin})")
    table.add_row("transformation", report.transformation)
    if report.encoding:
        table.add_row("encoding", report.encoding)
    table.add_row("geometry", report.geometry_type)
    table.add_row("features", f"read {report.features_read:,}, written {report.features_written:,}, "
                              f"repaired {report.features_repaired:,}, dropped {report.features_dropped:,}")
    for reason, n in report.repaired.items():
        table.add_row("  repaired", f"{n:,} {reason}")
    for reason, n in report.dropped.items():
        table.add_row("  dropped", f"{n:,} {reason}")
    if report.load_id is not None and report.geometry_type != "Raster" and (
            report.changes is not None or not any(w.startswith("not compared") for w in report.warnings)):
        table.add_row("changes", changes_summary(report.changes))
    for note in report.notes:
        table.add_row("note", note)
    for warning in report.warnings:
        table.add_row("[yellow]warning[/]", warning)
    steps = ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items())
    table.add_row("seconds", f"{report.seconds:.2f} ({steps})")
    return table



@clean_errors
def load_cmd(
    refs: Annotated[list[str] | None, typer.Argument(help="Layer ids or YAML files.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Load every layer in layers/.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and normalise only; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the load reports as JSON.")] = False,
) -> None:
    """Load layers into PostGIS: read, normalise (CRS, geometry, attributes), write atomically."""
    from loaders import load
    from loaders.raster import cog_path
    from sdi.layerdef import LayerDefinition, definition_files, read_definition, resolve

    settings = settings_from_env()
    if all_ and refs:
        raise ConfigError("give layer ids or --all, not both")
    if not all_ and not refs:
        raise ConfigError("name at least one layer id or YAML file, or use --all")
    reports, failures = [], 0
    definitions: list[LayerDefinition] = []
    if all_:
        for path in definition_files(settings.layers_dir):
            try:
                definitions.append(read_definition(path))
            except SdiError as exc:  # report it, load the others
                failures += 1
                consoles.err.print(f"error: {exc}", markup=False)
    else:
        definitions = [resolve(r, settings.layers_dir) for r in refs or []]
    attempted = len(definitions) + failures
    for definition in definitions:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=consoles.err, transient=True,
                            disable=as_json or not consoles.err.is_terminal)
        failure: SdiError | None = None
        with progress:
            task = progress.add_task(f"{definition.id}: read", total=None)

            def on_stage(name: str, t: TaskID = task, d: str = definition.id, p: Progress = progress) -> None:
                p.update(t, description=f"{d}: {name}")

            def on_rows(done: int, total: int, t: TaskID = task, p: Progress = progress) -> None:
                p.update(t, completed=done, total=total)

            try:
                report = load(definition, settings, dry_run=dry_run, stage=on_stage, progress=on_rows)
            except SdiError as exc:
                failure = exc
        if failure is not None:
            failures += 1
            consoles.err.print(f"error: {failure}", markup=False)
            continue
        reports.append(report)
        if not as_json:
            if dry_run:
                consoles.out.print(f"[bold]{definition.id}[/]: checked (dry run), nothing written")
            else:
                if report.geometry_type == "Raster":
                    target = cog_path(definition.id, settings)
                    consoles.out.print(f"[bold]{definition.id}[/]: loaded {report.features_written:,} pixels per "
                                       f"band into {target} (load {report.load_id})")
                else:
                    consoles.out.print(f"[bold]{definition.id}[/]: loaded {report.features_written:,} features "
                                       f"into layers.{definition.id} (load {report.load_id})")
            consoles.out.print(_summary(report))
    if as_json:
        consoles.out.print_json(data=[r.to_dict() for r in reports], default=str)
    if failures and attempted > 1:
        consoles.err.print(f"{failures} of {attempted} layer(s) failed; the database is unchanged for those")
    if failures:
        raise typer.Exit(1)


