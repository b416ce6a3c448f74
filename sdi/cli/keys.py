"""``sdi keys``: API keys for restricted layers (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from sdi.cli._common import clean_errors, consoles, settings_from_env

keys_app = typer.Typer(help="API keys: identities of groups that may read restricted layers.", no_args_is_help=True)


@keys_app.command("create")
@clean_errors
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who holds the key, e.g. \"PlanD GIS team\".")],
    groups: Annotated[list[str] | None, typer.Option("--group", help="A group of the key (repeatable).")] = None,
    rate_limit: Annotated[int | None, typer.Option("--rate-limit", help="Requests per minute (default: "
                                                   "SDI_KEY_RATE_LIMIT).")] = None,
) -> None:
    """Make an API key and print it once, as the last line: it is stored hashed and cannot be shown again."""
    from sdi.access.keys import create
    from sdi.db import connect

    with connect(settings_from_env()) as conn, conn.transaction():
        key, text = create(conn, name, groups or [], rate_limit)
    consoles.err.print(f"key {key.id} ({key.name}), groups: {', '.join(key.groups) or '(none: public data only)'}; "
                       "keep it secret: it is shown only now. Clients send it as `Authorization: Bearer <key>`.",
                       markup=False)
    print(text, flush=True)


@keys_app.command("list")
@clean_errors
def keys_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the API keys (ids, names, groups; never secrets)."""
    from sdi.access.keys import list_keys
    from sdi.db import connect

    with connect(settings_from_env()) as conn:
        keys = list_keys(conn, revoked=revoked)
    if as_json:
        consoles.out.print_json(data=[k.to_dict() for k in keys])
        return
    table = Table(title=f"{len(keys)} API key(s)")
    for col in ("id", "name", "groups", "rate limit", "created", "revoked"):
        table.add_column(col)
    for k in keys:
        table.add_row(k.id, Text(k.name), ", ".join(k.groups), "" if k.rate_limit is None else f"{k.rate_limit}/min",
                      k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    consoles.out.print(table)


@keys_app.command("revoke")
@clean_errors
def keys_revoke(key_ids: Annotated[list[str], typer.Argument(help="Key ids (as `sdi keys list` shows them).")]
                ) -> None:
    """Revoke keys: the API answers 401 to them from its next key check (SDI_KEY_CACHE_S)."""
    from sdi.access.keys import revoke
    from sdi.db import connect

    with connect(settings_from_env()) as conn, conn.transaction():
        done = [revoke(conn, key_id) for key_id in key_ids]
    for key in done:
        consoles.out.print(f"revoked {key.id} ({key.name})", markup=False)
