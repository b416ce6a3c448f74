"""The live list of layers: what ``sdi.layer`` says now, re-read when a load, reload or drop changes it.

Each worker checks a fingerprint of the catalogue (every id with its load id and access) every ``refresh_s`` seconds and
re-reads the records only when it changed; a request for an id it does not know forces a check (at most a
few per second), so a layer loaded a moment ago is served at once and a dropped one answers 404.

The registry reads every record (as the login role), but each request sees only what its identity may read:
:attr:`Registry.snapshot` is the current identity's view (:data:`sdi.access.identity.CURRENT`). A view's version
is a digest of the identity's role and of the layers in it (each id with its load id and access), so caches keyed
by it (ETags, pygeoapi configurations, OpenAPI documents) never hand one identity's answer to another, and a load,
reload or drop of a layer the identity may not read changes nothing it sees, not even an ETag. A layer the
identity may not read is, for it, a layer that does not exist. Reaching a restricted layer is noted for the audit
log (:mod:`sdi.access.audit`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from sdi.access.audit import note_layer
from sdi.access.identity import SYSTEM, acting_as, current
from sdi.catalogue.models import CatalogueRecord
from sdi.errors import LayerNotFoundError
from sdi.query.layer import LAYER_COLUMNS, LayerMeta

if TYPE_CHECKING:
    from sdi.web.runtime import Runtime

FINGERPRINT = ("select coalesce(md5(string_agg(id || ':' || load_id || ':' || coalesce(array_to_string(access_groups,"
               " ' '), ''), ',' order by id)), '') from sdi.layer")
MIN_FORCED_CHECK_S = 0.05  #: an unknown id triggers a check at most this often (a 404 flood costs 20 checks a second)
MAX_VIEWS = 64  #: identities' views kept per worker


@dataclass(frozen=True)
class Snapshot:
    """The layers at one moment: vector layers (queryable) and every record (rasters too), by id.

    ``stamps`` holds what the catalogue's fingerprint covers of each layer (load id and access), by id.
    """

    version: str = ""
    layers: Mapping[str, LayerMeta] = field(default_factory=dict)
    records: Mapping[str, CatalogueRecord] = field(default_factory=dict)
    stamps: Mapping[str, str] = field(default_factory=dict)


def _view(full: Snapshot, role: str, may_read: Callable[[tuple[str, ...] | None], bool]) -> Snapshot:
    """What ``role`` sees of ``full``; its version depends on nothing else (see the module docstring)."""
    records = {k: r for k, r in full.records.items() if may_read(r.access_groups)}
    digest = hashlib.blake2b(role.encode(), digest_size=16)
    for layer_id in sorted(records):
        digest.update(f"\n{layer_id}:{full.stamps.get(layer_id, '')}".encode())
    version = f"{digest.hexdigest()}|{role}"
    if len(records) == len(full.records):
        return Snapshot(version, full.layers, full.records, full.stamps)
    return Snapshot(version, {k: v for k, v in full.layers.items() if k in records}, records,
                    {k: v for k, v in full.stamps.items() if k in records})


class Registry:
    """The layers a worker serves; see the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.full = Snapshot()
        self.groups: frozenset[str] = frozenset()  #: the groups some layer is restricted to
        self._views: dict[str, tuple[str, Snapshot]] = {}  #: role -> (version of the full snapshot, view)
        self.checked_at = float("-inf")
        self.asked_at = float("-inf")  #: last check an unknown id asked for
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[Snapshot, Snapshot], None]] = []

    async def refresh(self, *, force: bool = False) -> bool:
        """Re-read the catalogue when it changed; returns whether it did. Database errors propagate.

        Without ``force`` (an unknown id asked for), at most one check per :data:`MIN_FORCED_CHECK_S`.
        """
        if not force:
            if time.monotonic() - self.asked_at < MIN_FORCED_CHECK_S:
                return False
            self.asked_at = time.monotonic()
        async with self._lock:
            rows = await self.runtime.bounded(self._read())
            if rows is None:
                return False
            version = str(rows.pop(0)["version"])
            layers: dict[str, LayerMeta] = {}
            records: dict[str, CatalogueRecord] = {}
            stamps: dict[str, str] = {}
            for r in rows:
                stamps[str(r["id"])] = f"{r['load_id']}:{' '.join(r.get('access_groups') or ())}"
                item = LayerMeta.from_row(r)
                if isinstance(item, LayerMeta):
                    layers[item.id] = item
                    records[item.id] = item.record
                else:
                    records[item.id] = item
            old, self.full = self.full, Snapshot(version, layers, records, stamps)
            self.groups = frozenset(g for r in records.values() for g in (r.access_groups or ()))
            self._views = {}
        for listener in self.listeners:
            listener(old, self.full)
        return True

    @property
    def snapshot(self) -> Snapshot:
        """The layers the current identity may read (every layer for the system)."""
        identity = current()
        if identity.kind == "system":
            return self.full
        role = self.runtime.role_of(identity) or ""
        full = self.full
        found = self._views.get(role)
        if found is None or found[0] != full.version:
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
            found = self._views[role] = (full.version, _view(full, role, identity.may_read))
        return found[1]

    async def _read(self) -> list[dict[str, Any]] | None:
        """``None`` when the fingerprint is unchanged, else ``[{"version": ...}, *layer rows]``."""
        with acting_as(SYSTEM):
            async with self.runtime.connection() as conn:
                row = await (await conn.execute(FINGERPRINT)).fetchone()
                version = str(row[0]) if row else ""
                self.checked_at = time.monotonic()
                if version == self.full.version and self.full.version:
                    return None
                cur = conn.cursor(row_factory=dict_row)
                rows = await (await cur.execute(f"select {LAYER_COLUMNS} from sdi.layer order by id")).fetchall()
        return [{"version": version}, *rows]

    async def run(self) -> None:
        """Check every ``refresh_s`` seconds until cancelled (errors are retried at the next tick)."""
        while True:
            try:
                await self.refresh(force=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be away; requests report that themselves
                pass
            await asyncio.sleep(self.runtime.web.refresh_s)

    async def layer(self, layer_id: str) -> LayerMeta:
        """The vector layer ``layer_id``; 404 (:class:`LayerNotFoundError`) when there is none, naming the coverage
        to read instead when ``layer_id`` is a raster."""
        found = self.snapshot.layers.get(layer_id)
        if found is None:
            await self.refresh()
            found = self.snapshot.layers.get(layer_id)
        if found is None:
            record = self.snapshot.records.get(layer_id)
            if record is not None and record.kind == "raster":
                raise LayerNotFoundError(f"collection {layer_id!r} is a raster (a coverage), not features: read it "
                                         f"at /collections/{layer_id}/coverage")
            raise LayerNotFoundError(f"no collection {layer_id[:80]!r}")
        if found.record.access_groups is not None:
            note_layer(found.id)
        return found

    async def record(self, layer_id: str) -> CatalogueRecord:
        """The catalogue record ``layer_id`` (vector or raster); 404 when there is none."""
        found = self.snapshot.records.get(layer_id)
        if found is None:
            await self.refresh()
            found = self.snapshot.records.get(layer_id)
        if found is None:
            raise LayerNotFoundError(f"no collection {layer_id[:80]!r}")
        if found.access_groups is not None:
            note_layer(found.id)
        return found

    def describe(self) -> dict[str, Any]:
        """Counts for logs and health checks."""
        return {"version": self.full.version, "layers": len(self.full.layers), "records": len(self.full.records)}
