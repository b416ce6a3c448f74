"""``sdi catalogue``: search the catalogue, show records and export their metadata."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sdi.cli._common import clean_errors, consoles, settings_from_env

catalogue_app = typer.Typer(help="Search the catalogue of loaded layers (English and Chinese).", no_args_is_help=True)


@catalogue_app.command("search")
@clean_errors
def search_cmd(
    query: Annotated[str | None, typer.Argument(help="Free text, English and/or Chinese.")] = None,
    bbox: Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy in longitude/latitude.")] = None,
    custodian: Annotated[str | None, typer.Option(help="Custodian department (exact).")] = None,
    theme: Annotated[str | None, typer.Option(help="ISO 19115 topic category.")] = None,
    lang: Annotated[str, typer.Option(help="Language of titles shown: en or zh-HK.")] = "en",
    limit: Annotated[int, typer.Option(help="Records to show (1-1000).")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find layers: ranked full text (stemmed English, Chinese n-grams, typo tolerant), bbox and facets."""
    from sdi.catalogue import Catalogue

    result = Catalogue(settings_from_env()).search(query, bbox=bbox, custodian=custodian, theme=theme, lang=lang,
                                                   limit=limit)
    if as_json:
        consoles.out.print_json(result.model_dump_json())
        return
    heading = (f"{result.matched} matching layer(s)" if not result.weaker
               else f"no exact match: {result.matched} closest layer(s)")
    table = Table(title=heading)
    for col in ("score", "id", "title", "custodian", "theme", "features"):
        table.add_column(col, justify="right" if col in ("score", "features") else "left")
    for r in result.records:
        title = r.title(lang) + (" [synthetic]" if r.synthetic else "")
        table.add_row(f"{r.score or 0:.2f}", r.id, title, r.custodian, r.theme or "", f"{r.feature_count:,}")
    consoles.out.print(table)
    if note := result.notice(lang):
        consoles.out.print(note, markup=False)
    for facet, counts in result.facets.items():
        consoles.out.print(f"{facet}: " + ", ".join(f"{k} ({v})" for k, v in counts.items()), markup=False)


@catalogue_app.command("show")
@clean_errors
def show_cmd(record_id: Annotated[str, typer.Argument(help="Layer id.")],
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show one catalogue record."""
    from sdi.catalogue import Catalogue

    record = Catalogue(settings_from_env()).get(record_id)
    if as_json:
        consoles.out.print_json(record.model_dump_json())
        return
    for key, value in record.model_dump(exclude={"fields", "lineage", "links", "score"}).items():
        consoles.out.print(f"{key}: {value}", markup=False)


@catalogue_app.command("export")
@clean_errors
def export_cmd(
    record_id: Annotated[str, typer.Argument(help="Layer id.")],
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="iso19139 (XML), dcat (JSON-LD) or mcf (YAML).")] = "iso19139",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export one record's metadata as ISO 19139 XML, DCAT JSON-LD or pygeometa MCF (YAML)."""
    from sdi.catalogue import Catalogue
    from sdi.catalogue.export import FORMATS, export
    from sdi.errors import ConfigError

    if fmt.strip().lower() not in FORMATS:  # before touching the database
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    text = export(Catalogue(settings_from_env()).get(record_id), fmt)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--output: cannot write {output}: {exc.strerror or exc}") from exc
    consoles.err.print(f"wrote {fmt} metadata for {record_id} to {output}", markup=False)
