"""Database connections, roles and versioned migrations of schema ``sdi``.

Migrations are numbered SQL files in ``sdi/migrations`` (``0001_initial.sql``, ...). Each is applied
once, in order, in its own transaction, and recorded in ``sdi.schema_migrations``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote

import psycopg
from psycopg import sql

from sdi.access.roles import ANON, ROLEMAKER, grant_layer
from sdi.errors import ConfigError, DatabaseUnavailableError, SdiError
from sdi.settings import Settings

EXTENSIONS = ("postgis", "pg_trgm")
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5D1_2326  # advisory lock serialising migrations
#: Tables the read-only role may also write (besides ``select`` on everything): the API's process jobs.
WRITABLE_BY_READER = ("sdi.jobs",)


#: ``scheme://`` at the start of a URL-style connection string.
_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
#: ``user:password@`` after the scheme; the password runs to the last ``@`` of the unbroken text, so a
#: password holding ``@``, ``/`` or ``?`` is masked whole (the rest of the URL may be masked with it).
_USERINFO = re.compile(r"(?P<keep>^\s*[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>\S*)(?=@)")
#: ``password=`` or ``sslpassword=`` parameters in a URL's query string.
_QUERY = re.compile(r"(?P<keep>[?&](?:ssl)?password=)(?P<secret>[^&#\s]*)", re.IGNORECASE)
#: ``password=...`` (or ``sslpassword``) in a keyword/value string, quoted (``'a b\'c'``) or not; a malformed
#: ``password secret`` (no ``=``) is masked too.
_KEYWORD = re.compile(r"(?P<keep>(?:^|(?<=\s))(?:ssl)?password(?:\s*=\s*|\s+))"
                      r"(?P<secret>'(?:[^'\\]|\\.)*(?:'|$)|[^\s']\S*)", re.IGNORECASE)
_MASK = "***"


def _patterns(url: str) -> tuple[re.Pattern[str], ...]:
    return (_USERINFO, _QUERY) if _SCHEME.match(url) else (_KEYWORD,)


def redact(url: str) -> str:
    """Return a connection string with every password replaced by ``***``.

    Masks the password of a URL's user information (``postgresql://user:pw@host/db``), ``password=`` and
    ``sslpassword=`` query parameters (``...?password=pw``), and ``password=...`` in a keyword/value string
    (``host=h password=pw``, ``password='a b'``), whatever the case of the keyword.

    Parameters
    ----------
    url
        A libpq connection string, URL or keyword/value form, possibly malformed.

    Returns
    -------
    str
        ``url`` with each password replaced by ``***``; everything else is kept.
    """
    for pattern in _patterns(url):
        url = pattern.sub(lambda m: m.group("keep") + _MASK, url)
    return url


def _secrets(url: str) -> set[str]:
    """The passwords in a connection string, as written and decoded (quotes and %-escapes removed)."""
    found: set[str] = set()
    for pattern in _patterns(url):
        for match in pattern.finditer(url):
            raw = match.group("secret")
            found |= {raw, raw.strip("'").replace("\\'", "'").replace("\\\\", "\\"), unquote(raw)}
    return {s for s in found if s}


def scrub(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) with ``url``'s passwords masked wherever they appear.

    libpq quotes parts of a malformed connection string in its messages (``invalid percent-encoded
    token: "..."``); any password of ``url`` of four or more characters, or quoted, is replaced by ``***``.
    """
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(f'"{secret}"', f'"{_MASK}"')
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection to the SDI database.

    Parameters
    ----------
    settings
        Settings naming the database (``SDI_DATABASE_URL``).
    autocommit
        Open the connection in autocommit mode.

    Returns
    -------
    psycopg.Connection

    Raises
    ------
    DatabaseUnavailableError
        When the server is down, unreachable or refuses the connection.
    ConfigError
        When the connection string does not parse. Neither message shows a password.
    """
    url = settings.database_url
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=settings.connect_timeout)
    except psycopg.OperationalError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailableError(f"database {redact(url)} is unreachable: {scrub(detail, url)}") from None
    except psycopg.Error as exc:  # libpq could not parse the string (ProgrammingError)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"database URL {redact(url)} (SDI_DATABASE_URL) is not a valid connection string: "
                          f"{scrub(detail, url)}") from None


@contextmanager
def transaction(settings: Settings) -> Iterator[psycopg.Connection]:
    """Yield a connection inside one transaction: committed on success, rolled back on any error."""
    conn = connect(settings)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class Migration:
    """One numbered SQL migration file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Return the packaged migrations, in version order."""
    found = []
    for entry in resources.files("sdi.migrations").iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def schema_version(conn: psycopg.Connection) -> int:
    """Return the highest applied migration version, or 0 for a database without schema ``sdi``."""
    exists = conn.execute("select to_regclass('sdi.schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("select coalesce(max(version), 0) from sdi.schema_migrations").fetchone()
    return int(row[0]) if row else 0


def _ensure_roles(conn: psycopg.Connection, settings: Settings) -> None:
    """The owner, the API's login role (``NOINHERIT``: it reads layers only after ``SET ROLE``) and the access
    roles every database of the cluster shares (:mod:`sdi.access.roles`)."""
    for role, options in ((settings.owner_role, "nologin"), (settings.reader_role, "login noinherit"),
                          (ANON, "nologin"), (ROLEMAKER, "nologin createrole")):
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("create role {} {}").format(sql.Identifier(role), sql.SQL(options)))
    reader = sql.Identifier(settings.reader_role)
    conn.execute(sql.SQL("alter role {} noinherit").format(reader))
    if settings.reader_password:
        conn.execute(sql.SQL("alter role {} password {}").format(reader, sql.Literal(settings.reader_password)))
    conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(ANON), reader))
    is_super = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if not (is_super and is_super[0]):
        conn.execute(sql.SQL("grant {}, {} to current_user").format(sql.Identifier(settings.owner_role),
                                                                    sql.Identifier(ROLEMAKER)))


#: Tables with row-level security, and whether the API's login role itself may also write them.
RLS_TABLES = {"layer": False, "load_history": False, "load_changes": False, "jobs": True}
#: What the public role (and so every access role) may read: the catalogue rows it may see (RLS).
ANON_READS = ("layer", "load_history", "load_changes")


def _policy(conn: psycopg.Connection, table: str, name: str, command: str, role: str) -> None:
    if conn.execute("select 1 from pg_policies where schemaname = 'sdi' and tablename = %s and policyname = %s",
                    (table, name)).fetchone() is None:
        check = sql.SQL(" with check (true)") if command == "all" else sql.SQL("")
        conn.execute(sql.SQL("create policy {} on {} for {} to {} using (true){}").format(
            sql.Identifier(name), sql.Identifier("sdi", table), sql.SQL(command), sql.Identifier(role), check))


def _grant(conn: psycopg.Connection, settings: Settings) -> None:
    owner, reader = sql.Identifier(settings.owner_role), sql.Identifier(settings.reader_role)
    anon, rolemaker = sql.Identifier(ANON), sql.Identifier(ROLEMAKER)
    dbname = conn.info.dbname
    conn.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(dbname), reader))
    conn.execute("insert into sdi.access_config (reader_role) values (%s) on conflict (singleton)"
                 " do update set reader_role = excluded.reader_role", (settings.reader_role,))
    for table in conn.execute(
        "select schemaname, tablename from pg_tables where schemaname in ('sdi', 'layers')"
    ).fetchall():
        conn.execute(sql.SQL("alter table {}.{} owner to {}").format(*map(sql.Identifier, table), owner))
    for seq in conn.execute(
        "select schemaname, sequencename from pg_sequences where schemaname = 'sdi'"
    ).fetchall():
        conn.execute(sql.SQL("alter sequence {}.{} owner to {}").format(*map(sql.Identifier, seq), owner))
    for schema in ("sdi", "layers"):
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("alter schema {} owner to {}").format(s, owner))
        conn.execute(sql.SQL("grant usage on schema {} to {}, {}").format(s, reader, anon))
        conn.execute(sql.SQL("revoke create on schema {} from public").format(s))
    # the catalogue (the registry of every layer) and the keys: the login role itself
    conn.execute(sql.SQL("grant select on all tables in schema sdi to {}").format(reader))
    conn.execute(sql.SQL("alter default privileges for role {} in schema sdi grant select on tables to {}").format(
        owner, reader))
    # layer tables: only the roles of each layer's access (below), never the login role itself
    conn.execute(sql.SQL("revoke select on all tables in schema layers from {}").format(reader))
    conn.execute(sql.SQL("alter default privileges for role {} in schema layers revoke select on tables from {}")
                 .format(owner, reader))
    conn.execute(sql.SQL("grant usage on schema sdi to {}").format(rolemaker))
    conn.execute(sql.SQL("grant select on sdi.access_config to {}").format(rolemaker))
    conn.execute(sql.SQL("grant execute on function sdi.access_role(text[]) to {}, {}").format(owner, reader))
    for name in ANON_READS:
        conn.execute(sql.SQL("grant select on {} to {}").format(sql.Identifier("sdi", name), anon))
    for name in WRITABLE_BY_READER:  # the API's process manager keeps its jobs here
        conn.execute(sql.SQL("grant select, insert, update, delete on {} to {}, {}").format(
            sql.Identifier(*name.split(".")), reader, anon))
    conn.execute(sql.SQL("grant insert on sdi.access_log to {}").format(reader))
    conn.execute(sql.SQL("grant usage on sequence sdi.access_log_id_seq to {}").format(reader))
    for name, writes in RLS_TABLES.items():
        _policy(conn, name, f"{name}_owner", "all", settings.owner_role)
        _policy(conn, name, f"{name}_reader", "all" if writes else "select", settings.reader_role)
    for layer_id, groups in conn.execute(
        "select id, access_groups from sdi.layer where kind = 'vector' and to_regclass(table_name) is not null"
    ).fetchall():
        grant_layer(conn, "layers", layer_id, groups, settings.reader_role)


def upgrade(settings: Settings) -> list[Migration]:
    """Apply pending migrations of schema ``sdi``; return the ones applied (empty when up to date)."""
    applied: list[Migration] = []
    with connect(settings, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            for attempt in range(5):  # roles are shared by the cluster's databases, whose locks are their own
                try:
                    _ensure_roles(conn, settings)
                    break
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.InternalError):
                    if attempt == 4:
                        raise
                    time.sleep(0.1 * (attempt + 1))
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    with connect(settings) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("create schema if not exists sdi")
        conn.execute(
            "create table if not exists sdi.schema_migrations ("
            " version integer primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        current = schema_version(conn)
        for migration in migrations():
            if migration.version <= current:
                continue
            try:
                conn.execute(migration.sql.encode("utf-8"))
            except psycopg.Error as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SdiError(f"migration {migration.version:04d}_{migration.name} failed: {detail}") from exc
            conn.execute(
                "insert into sdi.schema_migrations (version, name) values (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration)
        _grant(conn, settings)
    return applied


def init_db(settings: Settings) -> list[Migration]:
    """Create extensions, roles, schemas ``sdi`` and ``layers``, and apply all migrations.

    Idempotent: on an initialised, up-to-date database it changes nothing and returns ``[]``.
    """
    with connect(settings, autocommit=True) as conn:
        for ext in EXTENSIONS:
            conn.execute(sql.SQL("create extension if not exists {}").format(sql.Identifier(ext)))
    return upgrade(settings)
