"""``sdi audit``: who read restricted layers, what and when (``sdi.access_log``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.errors import ConfigError


def _since(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        found = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since: expected an ISO date or time such as 2026-12-01 or 2026-12-01T09:00, "
                          f"got {text[:40]!r}") from None
    return found if found.tzinfo else found.replace(tzinfo=dt.UTC)


@clean_errors
def audit_cmd(
    layer: Annotated[str | None, typer.Option("--layer", help="Only reads of this layer.")] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="Only this identity (key:<id> or "
                                                 "oidc:<issuer>#<subject>).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only from this time (ISO; UTC if no zone).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the audit log: each read of a restricted layer, newest first."""
    from sdi.access.manage import audit_rows
    from sdi.db import connect

    with connect(settings_from_env()) as conn:
        rows = audit_rows(conn, layer_id=layer, identity=identity, since=_since(since), limit=limit)
    if as_json:
        consoles.out.print_json(data=rows, default=str)
        return
    table = Table(title=f"{len(rows)} read(s) of restricted layers, newest first")
    for col in ("at (UTC)", "identity", "name", "layer", "action", "features", "status", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["at"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"), r["identity"], Text(r["name"]),
                      r["layer_id"], r["action"], "" if r["features"] is None else f"{r['features']:,}",
                      str(r["status"]), Text(r["path"]))
    consoles.out.print(table)
