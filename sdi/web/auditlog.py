"""The audit log's writer: rows of ``sdi.access_log`` gathered by the requests of a worker, written in batches.

A request that read restricted layers adds one row per layer (:class:`sdi.web.auth.AuthMiddleware`); the writer
inserts what has gathered every ``SDI_AUDIT_FLUSH_S`` seconds in one statement, as the login role, and at
shutdown. While the database is away rows wait (up to :data:`MAX_PENDING`; beyond that the oldest are dropped,
and the count of dropped rows is logged).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from typing import Any

from sdi.access.audit import Reads
from sdi.access.identity import SYSTEM, Identity, acting_as

LOGGER = logging.getLogger("sdi.web")
MAX_PENDING = 100_000
MAX_PATH = 1000
INSERT = """
insert into sdi.access_log (at, identity, name, groups, layer_id, action, path, features, status)
select at, identity, name, groups::text[], layer_id, action, path, features, status
from unnest(%(at)s::timestamptz[], %(identity)s::text[], %(name)s::text[], %(groups)s::text[], %(layer)s::text[],
            %(action)s::text[], %(path)s::text[], %(features)s::bigint[], %(status)s::smallint[])
     as u(at, identity, name, groups, layer_id, action, path, features, status)
"""


class AuditLog:
    """See the module docstring."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.pending: deque[tuple[Any, ...]] = deque()
        self.dropped = 0

    def add(self, at: float, identity: Identity, reads: Reads, action: str, path: str, status: int) -> None:
        """Queue one row per restricted layer ``reads`` reached."""
        when = dt.datetime.fromtimestamp(at, dt.UTC)
        groups = "{" + ",".join(sorted(identity.groups)) + "}"  # group names are [a-z0-9_]: no quoting needed
        for layer_id in reads.layers:
            if len(self.pending) >= MAX_PENDING:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append((when, identity.id, identity.name[:200], groups, layer_id, action, path[:MAX_PATH],
                                 reads.features if len(reads.layers) == 1 else None, status))

    async def flush(self) -> int:
        """Write what has gathered (one statement); returns the rows written. Errors propagate (rows stay)."""
        if not self.pending:
            return 0
        rows = list(self.pending)
        columns = list(zip(*rows, strict=True))
        names = ("at", "identity", "name", "groups", "layer", "action", "path", "features", "status")
        with acting_as(SYSTEM):
            await self.runtime.fetch_dicts(INSERT + " returning 1", {n: list(c) for n, c in zip(names, columns,
                                                                                               strict=True)})
        for _ in rows:
            self.pending.popleft()
        if self.dropped:
            LOGGER.error("audit log: %d rows were dropped while the database was away", self.dropped)
            self.dropped = 0
        return len(rows)

    async def run(self) -> None:
        """Flush every ``SDI_AUDIT_FLUSH_S`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.runtime.web.audit_flush_s)
                try:
                    await self.flush()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database may be away: the rows wait for the next tick
                    LOGGER.warning("audit log: %d rows wait: %s", len(self.pending), type(exc).__name__)
        finally:
            try:
                await asyncio.wait_for(self.flush(), 5)
            except Exception as exc:  # shutting down: say what was lost
                if self.pending:
                    LOGGER.error("audit log: %d rows not written at shutdown: %s", len(self.pending),
                                 type(exc).__name__)
