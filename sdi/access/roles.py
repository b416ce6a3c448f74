"""The database roles that enforce layer access, and the grants on layer tables (see ``0007_access.sql``).

* ``sdi_anon``: the public. SELECT on the public layer tables; row-level security hides the catalogue rows,
  history and changes of restricted layers from it.
* ``sdi_g_<group>``: a member of ``sdi_anon``, with SELECT on the tables of its group's layers.
* ``sdi_c_<md5>``: an identity of several groups, a member of each of their roles.

The API's login role (``SDI_READER_ROLE``) is ``NOINHERIT``: as itself it reads only the catalogue (to know
every layer) and the key table; each request's queries run after ``SET ROLE`` to the identity's role
(:func:`role_for`). Roles are made only by ``sdi.access_role()``, a ``SECURITY DEFINER`` function owned by
``sdi_rolemaker``, so neither the API nor the loaders need ``CREATEROLE``. Role names are cluster-wide and
shared by every sdi database of the cluster; grants are per database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

ANON = "sdi_anon"
ROLEMAKER = "sdi_rolemaker"
GROUP_PREFIX = "sdi_g_"
COMBINED_PREFIX = "sdi_c_"


def group_role(group: str) -> str:
    """The role of ``group``."""
    return GROUP_PREFIX + group


def role_for(groups: Iterable[str]) -> str:
    """The role an identity of ``groups`` reads as (the name ``sdi.access_role()`` gives it).

    Only the groups that some layer names matter: pass the identity's groups intersected with those.
    """
    wanted = sorted(set(groups))
    if not wanted:
        return ANON
    if len(wanted) == 1:
        return group_role(wanted[0])
    return COMBINED_PREFIX + hashlib.md5(",".join(wanted).encode("utf-8"), usedforsecurity=False).hexdigest()


def ensure_role(conn: psycopg.Connection[Any], groups: Sequence[str]) -> str:
    """Make (if missing) and return the role of ``groups`` (``sdi.access_role()``)."""
    row = conn.execute("select sdi.access_role(%s::text[])", (list(groups),)).fetchone()
    assert row is not None
    return str(row[0])


def as_public(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` set to the public's role (for pygeoapi's stock serving of a ``sdi publish`` snapshot, which knows no
    identities): it reads public layers only, whatever role it logged in as."""
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(ANON)))
    return conn


def grant_layer(conn: psycopg.Connection[Any], schema: str, table: str, groups: Sequence[str] | None,
                reader_role: str) -> None:
    """Let exactly the roles of ``groups`` (``None``: ``sdi_anon``, the public) read ``schema.table``.

    Every SELECT grant to ``sdi_anon``, a group role or ``reader_role`` is revoked first, so a layer made
    restricted stops being public in the same transaction. Run as the table's owner.
    """
    ident = sql.Identifier(schema, table)
    held = conn.execute(
        "select distinct r.rolname from pg_class c cross join lateral aclexplode(c.relacl) a"
        " join pg_roles r on r.oid = a.grantee where c.oid = %s::regclass"
        " and (r.rolname = %s or r.rolname = %s or r.rolname like 'sdi\\_g\\_%%' or r.rolname like 'sdi\\_c\\_%%')",
        (f"{sql.Identifier(schema).as_string(conn)}.{sql.Identifier(table).as_string(conn)}", ANON,
         reader_role)).fetchall()
    conn.execute(sql.SQL("revoke all on {} from public").format(ident))
    for (role,) in held:
        conn.execute(sql.SQL("revoke all on {} from {}").format(ident, sql.Identifier(role)))
    targets = [ANON] if groups is None else [ensure_role(conn, [g]) for g in groups]
    for role in targets:
        conn.execute(sql.SQL("grant select on {} to {}").format(ident, sql.Identifier(role)))
