"""Changing who may read a loaded layer (``sdi layers set-access``) and reading the audit log (``sdi audit``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sdi.access.groups import normalise_groups
from sdi.access.roles import grant_layer
from sdi.errors import ConfigError, LayerNotFoundError
from sdi.settings import Settings

AUDIT_LIMIT = 10_000  #: most audit rows one ``sdi audit`` prints


def set_access(conn: psycopg.Connection[Any], settings: Settings, layer_id: str, groups: Sequence[str] | None
               ) -> tuple[str, ...] | None:
    """Make a loaded layer public (``groups=None``) or readable only by ``groups``, in one transaction.

    The catalogue row and the table's grants change together; the API follows within its refresh interval
    (``SDI_REFRESH_S``), without a restart. The layer's YAML still decides at its next load.

    Returns
    -------
    tuple or None
        The groups now in force (``None``: public).

    Raises
    ------
    LayerNotFoundError
        When ``layer_id`` is not loaded.
    ConfigError
        For a bad group name or an empty list.
    """
    checked = None if groups is None else normalise_groups(groups, "--group")
    if checked is not None and not checked:
        raise ConfigError("--group: name at least one group, or use --public")
    with conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(settings.owner_role)))
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"sdi.load.{layer_id}",))
        row = conn.execute("select kind from sdi.layer where id = %s for update", (layer_id,)).fetchone()
        if row is None:
            raise LayerNotFoundError(f"no loaded layer {layer_id!r}")
        conn.execute("update sdi.layer set access_groups = %s where id = %s",
                     (None if checked is None else list(checked), layer_id))
        if row[0] == "vector":
            grant_layer(conn, "layers", layer_id, checked, settings.reader_role)
    return checked


def audit_rows(conn: psycopg.Connection[Any], *, layer_id: str | None = None, identity: str | None = None,
               since: dt.datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``sdi.access_log`` (reads of restricted layers), newest first."""
    if not 1 <= limit <= AUDIT_LIMIT:
        raise ConfigError(f"--limit: expected 1 to {AUDIT_LIMIT:,}, got {limit}")
    return list(conn.cursor(row_factory=dict_row).execute(
        "select at, identity, name, groups, layer_id, action, path, features, status from sdi.access_log"
        " where (%(layer)s::text is null or layer_id = %(layer)s) and (%(who)s::text is null or identity = %(who)s)"
        " and (%(since)s::timestamptz is null or at >= %(since)s) order by at desc, id desc limit %(limit)s",
        {"layer": layer_id, "who": identity, "since": since, "limit": limit}).fetchall())
