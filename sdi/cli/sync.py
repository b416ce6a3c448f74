"""``sdi sync``: harvest layers whose source is a URL, loading what changed."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.errors import ConfigError, SdiError


@clean_errors
def sync_cmd(
    refs: Annotated[list[str] | None, typer.Argument(help="Layer ids or YAML files (default: every layer in "
                                                          "layers/ whose source is a URL).")] = None,
    due: Annotated[bool, typer.Option("--due", help="Only layers whose update_frequency says they are due.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Fetch without a conditional GET and load even when the "
                                                        "source is unchanged.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Fetch URL sources (files, OGC API, WFS, ArcGIS REST) and load those that changed.

    Prints one line per layer: loaded, unchanged, or failed with the reason (also recorded in the load history;
    the previous version keeps serving). Exits 1 when any layer failed.
    """
    from loaders.sync import is_due, last_checked, sync_layer
    from sdi.layerdef import LayerDefinition, definition_files, read_definition, resolve

    settings = settings_from_env()
    failures = 0
    definitions: list[LayerDefinition] = []
    if refs:
        definitions = [resolve(r, settings.layers_dir) for r in refs]
        files = [d for d in definitions if not d.is_remote]
        if files:
            raise ConfigError(f"{files[0].label}: source is a file (source.path), not a URL; load it with "
                              f"`sdi load {files[0].id}`")
    else:
        for path in definition_files(settings.layers_dir):
            try:
                definition = read_definition(path)
            except SdiError as exc:  # say so, sync the others
                failures += 1
                consoles.err.print(f"error: {exc}", markup=False)
                continue
            if definition.is_remote:
                definitions.append(definition)
    if not definitions and not refs and not due:
        consoles.err.print(f"no layer in {settings.layers_dir} has a source.url: nothing to sync", markup=False)
    if due and definitions:
        now = dt.datetime.now(dt.UTC)
        checked = last_checked(settings, [d.id for d in definitions])
        definitions = [d for d in definitions if is_due(d, checked.get(d.id), now)]
    results = []
    for definition in definitions:
        result = sync_layer(definition, settings, force=force)
        results.append(result)
        if result.status == "failed":
            failures += 1
        if not as_json:
            line = f"{definition.id}: {'failed: ' if result.status == 'failed' else ''}{result.message}"
            (consoles.err if result.status == "failed" else consoles.out).print(line, markup=False)
    if as_json:
        consoles.out.print_json(data=[r.to_dict() for r in results], default=str)
    if failures:
        raise typer.Exit(1)
