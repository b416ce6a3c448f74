"""Database connections, roles and versioned migrations of schema ``sdi``.

Migrations are numbered SQL files in ``sdi/migrations`` (``0001_initial.sql``, ...). Each is applied
once, in order, in its own transaction, and recorded in ``sdi.schema_migrations``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote

import psycopg
from psycopg import sql

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
    owner, reader = sql.Identifier(settings.owner_role), sql.Identifier(settings.reader_role)
    for role, login in ((settings.owner_role, False), (settings.reader_role, True)):
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is None:
            conn.execute(
                sql.SQL("create role {} {}").format(
                    sql.Identifier(role), sql.SQL("login" if login else "nologin")
                )
            )
    if settings.reader_password:
        conn.execute(
            sql.SQL("alter role {} password {}").format(reader, sql.Literal(settings.reader_password))
        )
    is_super = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    if not (is_super and is_super[0]):
        conn.execute(sql.SQL("grant {} to current_user").format(owner))


def _grant(conn: psycopg.Connection, settings: Settings) -> None:
    owner, reader = sql.Identifier(settings.owner_role), sql.Identifier(settings.reader_role)
    dbname = conn.info.dbname
    conn.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(dbname), reader))
    for schema in ("sdi", "layers"):
        s = sql.Identifier(schema)
        conn.execute(sql.SQL("alter schema {} owner to {}").format(s, owner))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(s, reader))
        conn.execute(sql.SQL("revoke create on schema {} from public").format(s))
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(s, reader))
        conn.execute(
            sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
                owner, s, reader
            )
        )
    for name in WRITABLE_BY_READER:  # the API's process manager keeps its jobs here
        conn.execute(sql.SQL("grant insert, update, delete on {} to {}").format(
            sql.Identifier(*name.split(".")), reader))
    for table in conn.execute(
        "select schemaname, tablename from pg_tables where schemaname in ('sdi', 'layers')"
    ).fetchall():
        conn.execute(sql.SQL("alter table {}.{} owner to {}").format(*map(sql.Identifier, table), owner))
    for seq in conn.execute(
        "select schemaname, sequencename from pg_sequences where schemaname = 'sdi'"
    ).fetchall():
        conn.execute(sql.SQL("alter sequence {}.{} owner to {}").format(*map(sql.Identifier, seq), owner))


def upgrade(settings: Settings) -> list[Migration]:
    """Apply pending migrations of schema ``sdi``; return the ones applied (empty when up to date)."""
    applied: list[Migration] = []
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
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_roles(conn, settings)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return upgrade(settings)
