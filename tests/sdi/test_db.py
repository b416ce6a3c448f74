"""Database set-up: extensions, schemas, roles, versioned migrations, unreachable servers."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors

from sdi.db import init_db, migrations, schema_version, upgrade
from sdi.errors import DatabaseUnavailableError
from sdi.settings import Settings


def test_init_creates_extensions_schemas_and_tables(db: psycopg.Connection) -> None:
    exts = {r[0] for r in db.execute("select extname from pg_extension")}
    assert {"postgis", "pg_trgm"} <= exts
    schemas = {r[0] for r in db.execute("select nspname from pg_namespace")}
    assert {"sdi", "layers"} <= schemas
    assert db.execute("select to_regclass('sdi.load_history'), to_regclass('sdi.layer')").fetchone() == (
        "sdi.load_history", "sdi.layer")


def test_migrations_are_recorded_and_init_is_idempotent(settings: Settings, db: psycopg.Connection) -> None:
    assert schema_version(db) == migrations()[-1].version
    rows = db.execute("select version, name from sdi.schema_migrations order by version").fetchall()
    assert [(m.version, m.name) for m in migrations()] == rows
    assert init_db(settings) == []
    assert upgrade(settings) == []
    assert db.execute("select count(*) from sdi.schema_migrations").fetchone() == (len(rows),)


def test_schemas_owned_by_owner_role(settings: Settings, db: psycopg.Connection) -> None:
    owners = dict(db.execute(
        "select nspname, pg_get_userbyid(nspowner) from pg_namespace where nspname in ('sdi', 'layers')"))
    assert owners == {"sdi": settings.owner_role, "layers": settings.owner_role}


def test_reader_role_reads_the_catalogue_but_no_table_nobody_granted(settings: Settings) -> None:
    """The API's login role reads the catalogue; a layer table is read only by the roles its access grants
    (sdi.access.roles), so a table made without grants is readable by neither the reader nor the public."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f"set role {settings.owner_role}")  # as the loader does
        conn.execute("create table layers.reader_probe (id int)")
        conn.execute("insert into layers.reader_probe values (1)")
        conn.execute(f"set role {settings.reader_role}")
        assert conn.execute("select count(*) from sdi.load_history").fetchone() is not None
        for role in (settings.reader_role, "sdi_anon"):
            conn.execute(f"set role {role}")
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute("select count(*) from layers.reader_probe")
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute("insert into layers.reader_probe values (2)")


def test_reader_role_cannot_create_tables(settings: Settings) -> None:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(f"set role {settings.reader_role}")
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("create table layers.evil (id int)")
        conn.rollback()


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/sdi", "postgresql://nouser:secret@127.0.0.1:1/x"])
def test_unreachable_database_is_one_clear_line(url: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as info:
        init_db(Settings(database_url=url, connect_timeout=2))
    message = str(info.value)
    assert "unreachable" in message and "\n" not in message
    assert "secret" not in message
