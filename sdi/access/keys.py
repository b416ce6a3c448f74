"""API keys: ``sdi_<id>_<secret>``, stored as the SHA-256 of the secret (``sdi.api_key``).

The id (10 characters) is public: it names the key in lists, the audit log and ``sdi keys revoke``. The secret is
256 random bits, shown once by ``sdi keys create``; a fast hash is enough for a secret of that strength (as for
GitHub's or Stripe's tokens) and is compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sdi.access.groups import normalise_groups
from sdi.access.identity import Identity
from sdi.errors import ConfigError

PREFIX = "sdi_"
_KEY = re.compile(r"^sdi_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
#: The row the API looks a key up by (as the login role: it may read ``sdi.api_key``).
LOOKUP_SQL = "select id, name, groups, secret_sha256, rate_limit, revoked_at from sdi.api_key where id = %(id)s"


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (never its secret)."""

    id: str
    name: str
    groups: tuple[str, ...]
    rate_limit: int | None
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for ``--json``."""
        return {"id": self.id, "name": self.name, "groups": list(self.groups), "rate_limit": self.rate_limit,
                "created_at": self.created_at.isoformat(), "created_by": self.created_by,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def looks_like_key(text: str) -> bool:
    """Whether ``text`` has the form of an API key (rather than a JWT)."""
    return text.startswith(PREFIX)


def parse(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def identity_of(row: Mapping[str, Any] | None, secret: str) -> Identity | None:
    """The identity of a key's ``sdi.api_key`` row when ``secret`` is its secret and it is not revoked."""
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(bytes(row["secret_sha256"]), _digest(secret)):
        return None
    return Identity("key", f"key:{row['id']}", str(row["name"]), frozenset(row["groups"] or ()),
                    row["rate_limit"])


def create(conn: psycopg.Connection[Any], name: str, groups: Iterable[str], rate_limit: int | None = None
           ) -> tuple[ApiKey, str]:
    """Make a key; returns it and its full text (``sdi_<id>_<secret>``), which is not kept anywhere.

    Raises
    ------
    ConfigError
        For an empty or over-long name, a bad group name or a rate limit below 1.
    """
    name = " ".join(str(name).split())
    if not 1 <= len(name) <= 200:
        raise ConfigError("--name: give the key a name of 1 to 200 characters (who holds it)")
    checked = normalise_groups(groups, "--group")
    if rate_limit is not None and rate_limit < 1:
        raise ConfigError(f"--rate-limit: expected requests per minute >= 1, got {rate_limit}")
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
    secret = secrets.token_urlsafe(32)
    row = conn.cursor(row_factory=dict_row).execute(
        "insert into sdi.api_key (id, name, groups, secret_sha256, rate_limit) values (%s, %s, %s, %s, %s)"
        " returning id, name, groups, rate_limit, created_at, created_by, revoked_at",
        (key_id, name, list(checked), _digest(secret), rate_limit)).fetchone()
    assert row is not None
    return _key(row), f"{PREFIX}{key_id}_{secret}"


def _key(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(row["id"], row["name"], tuple(row["groups"] or ()), row["rate_limit"], row["created_at"],
                  row["created_by"], row["revoked_at"])


def list_keys(conn: psycopg.Connection[Any], *, revoked: bool = False) -> list[ApiKey]:
    """The keys, oldest first (``revoked``: revoked ones too)."""
    rows = conn.cursor(row_factory=dict_row).execute(
        "select id, name, groups, rate_limit, created_at, created_by, revoked_at from sdi.api_key"
        " where %s or revoked_at is null order by created_at, id", (revoked,)).fetchall()
    return [_key(r) for r in rows]


def revoke(conn: psycopg.Connection[Any], key: str) -> ApiKey:
    """Revoke the key with id ``key`` (or given whole); the API refuses it from its next key check.

    Raises
    ------
    ConfigError
        When there is no such key (the message names the id, never a secret).
    """
    parsed = parse(key)
    key_id = parsed[0] if parsed else key
    row = conn.cursor(row_factory=dict_row).execute(
        "update sdi.api_key set revoked_at = coalesce(revoked_at, now()) where id = %s"
        " returning id, name, groups, rate_limit, created_at, created_by, revoked_at", (key_id,)).fetchone()
    if row is None:
        shown = key_id if re.fullmatch(r"[a-z0-9]{1,20}", key_id) else "(not a key id)"
        raise ConfigError(f"no API key {shown!r}; `sdi keys list` shows the ids")
    return _key(row)
