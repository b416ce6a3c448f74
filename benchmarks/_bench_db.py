"""Shared by the planning and join benchmarks: the synthetic generator's import and the scratch database."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sdi.db import init_db
from sdi.settings import Settings


def import_path(name: str, path: Path) -> ModuleType:
    """Import a module from a file that is not on a package path."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def admin_url(server: str) -> str:
    """The URL of the server's ``postgres`` database (to create and drop a benchmark database)."""
    return make_conninfo(**{**conninfo_to_dict(server), "dbname": "postgres"})  # type: ignore[arg-type]


def recreate_database(server: str, dbname: str) -> str:
    """Drop and create ``dbname`` on the server, initialise it (``sdi db init``), return its URL."""
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    url = make_conninfo(**{**conninfo_to_dict(server), "dbname": dbname})  # type: ignore[arg-type]
    init_db(Settings(database_url=url))
    return url
