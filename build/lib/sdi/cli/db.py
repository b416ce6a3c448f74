"""``sdi db``: create and upgrade the SDI database."""

from __future__ import annotations

from typing import Annotated

import typer

from sdi.cli._common import clean_errors, consoles, settings_from_env

db_app = typer.Typer(help="Create and upgrade the SDI database.", no_args_is_help=True)


@db_app.command("init")
@clean_errors
def db_init(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when up to date.")] = False,
            ) -> None:
    """Create extensions, roles, schemas `sdi` and `layers`, and apply migrations."""
    from sdi.db import init_db, redact

    settings = settings_from_env()
    applied = init_db(settings)
    if applied or not quiet:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        consoles.out.print(f"database {redact(settings.database_url)}: migrations applied: {names}")


@db_app.command("upgrade")
@clean_errors
def db_upgrade() -> None:
    """Apply pending migrations of schema `sdi`."""
    from sdi.db import redact, upgrade

    settings = settings_from_env()
    applied = upgrade(settings)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
    consoles.out.print(f"database {redact(settings.database_url)}: migrations applied: {names}")


