"""The live list of layers: what ``sdi.layer`` says now, re-read when a load, reload or drop changes it.

Each worker checks a fingerprint of the catalogue (every id with its load id) every ``refresh_s`` seconds and
re-reads the records only when it changed; a request for an id it does not know forces a check (at most a
few per second), so a layer loaded a moment ago is served at once and a dropped one answers 404.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from sdi.catalogue.models import CatalogueRecord
from sdi.errors import LayerNotFoundError
from sdi.query.layer import LAYER_COLUMNS, LayerMeta

if TYPE_CHECKING:
    from sdi.web.runtime import Runtime

FINGERPRINT = "select coalesce(md5(string_agg(id || ':' || load_id, ',' order by id)), '') from sdi.layer"
MIN_FORCED_CHECK_S = 0.05  #: an unknown id triggers a check at most this often (a 404 flood costs 20 checks a second)


@dataclass(frozen=True)
class Snapshot:
    """The layers at one moment: vector layers (queryable) and every record (rasters too), by id."""

    version: str = ""
    layers: Mapping[str, LayerMeta] = field(default_factory=dict)
    records: Mapping[str, CatalogueRecord] = field(default_factory=dict)


class Registry:
    """The layers a worker serves; see the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.snapshot = Snapshot()
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
            for r in rows:
                item = LayerMeta.from_row(r)
                if isinstance(item, LayerMeta):
                    layers[item.id] = item
                    records[item.id] = item.record
                else:
                    records[item.id] = item
            old, self.snapshot = self.snapshot, Snapshot(version, layers, records)
        for listener in self.listeners:
            listener(old, self.snapshot)
        return True

    async def _read(self) -> list[dict[str, Any]] | None:
        """``None`` when the fingerprint is unchanged, else ``[{"version": ...}, *layer rows]``."""
        async with self.runtime.connection() as conn:
            row = await (await conn.execute(FINGERPRINT)).fetchone()
            version = str(row[0]) if row else ""
            self.checked_at = time.monotonic()
            if version == self.snapshot.version and self.snapshot.version:
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
        """The vector layer ``layer_id``; 404 (:class:`LayerNotFoundError`) when there is none."""
        found = self.snapshot.layers.get(layer_id)
        if found is None:
            await self.refresh()
            found = self.snapshot.layers.get(layer_id)
        if found is None:
            raise LayerNotFoundError(f"no collection {layer_id[:80]!r}")
        return found

    async def record(self, layer_id: str) -> CatalogueRecord:
        """The catalogue record ``layer_id`` (vector or raster); 404 when there is none."""
        found = self.snapshot.records.get(layer_id)
        if found is None:
            await self.refresh()
            found = self.snapshot.records.get(layer_id)
        if found is None:
            raise LayerNotFoundError(f"no collection {layer_id[:80]!r}")
        return found

    def describe(self) -> dict[str, Any]:
        """Counts for logs and health checks."""
        return {"version": self.snapshot.version, "layers": len(self.snapshot.layers),
                "records": len(self.snapshot.records)}
