"""The read-only role the API connects with: its URL, its password, and making sure it can log in.

On a stock Debian cluster local-socket connections use ``peer`` authentication (the OS user must equal the
role), so the reader connects to ``127.0.0.1`` with a password (``scram-sha-256``). The password is
``SDI_READER_PASSWORD`` when set; otherwise one is generated once and kept in ``SDI_READER_PASSWORD_FILE``
(mode 0600, default ``~/.config/hk-sdi/reader-password``). When the reader cannot log in with it,
:func:`prepare_reader` sets it with ``ALTER ROLE`` through the serving user's own connection (a superuser or
``CREATEROLE`` role, as ``scripts/setup.sh`` creates), then checks the login again.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sdi.db import connect, redact
from sdi.errors import ConfigError, DatabaseUnavailableError
from sdi.settings import Settings
from sdi.web.settings import WebSettings

APPLICATION_NAME = "hk-sdi-api"  #: ``application_name`` of the API's database connections


def is_reader_url(url: str, role: str) -> bool:
    """Whether ``url`` already logs in as ``role`` (so a worker need not prepare it again)."""
    return str(conninfo_to_dict(url).get("user") or "") == role


def reader_url(database_url: str, role: str, password: str | None, host: str | None = None) -> str:
    """``database_url`` rewritten to log in as ``role`` over TCP (a socket path becomes ``127.0.0.1``)."""
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    for key in ("user", "password", "passfile"):
        params.pop(key, None)
    target = host or params.pop("host", "") or ""
    params.pop("host", None)
    if not target or target.startswith("/"):
        target = "127.0.0.1"
    port, dbname = params.pop("port", ""), params.pop("dbname", "")
    params.setdefault("application_name", APPLICATION_NAME)
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = f"{auth}@{target}" + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{urlencode(sorted(params.items()))}"
                                                                 if params else "")


def _stored_password(path: Path) -> str:
    """The password kept in ``path``; created (mode 0600, atomically) with a random one when missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ConfigError(f"{path}: the read-only role password file is empty; delete it") from None
        return text
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the read-only role password file: {exc}") from exc
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


def _can_log_in(url: str, timeout: int) -> str | None:
    """``None`` when ``url`` accepts a connection, else the server's one-line reason."""
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            conn.execute("select 1 from sdi.layer limit 1")
        return None
    except psycopg.Error as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return lines[-1] if lines else type(exc).__name__


def prepare_reader(settings: Settings, web: WebSettings) -> str:
    """Make sure the read-only role can log in to the SDI database; return the URL it uses.

    Raises
    ------
    DatabaseUnavailableError
        When the role still cannot log in (pg_hba.conf, a missing grant, or no right to set its password).
    """
    password = settings.reader_password or _stored_password(web.reader_password_file)
    url = reader_url(settings.database_url, settings.reader_role, password, web.reader_host)
    if _can_log_in(url, settings.connect_timeout) is None:
        return url
    try:
        with connect(settings, autocommit=True) as conn:
            conn.execute(sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(settings.reader_role), sql.Literal(password)))
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot set the password of role {settings.reader_role!r} ({str(exc).strip().splitlines()[0]});"
            f" as a superuser run: alter role {settings.reader_role} password '...', and set SDI_READER_PASSWORD"
        ) from exc
    reason = _can_log_in(url, settings.connect_timeout)
    if reason is not None:
        raise DatabaseUnavailableError(f"role {settings.reader_role!r} cannot connect to {redact(url)}: {reason}")
    return url
