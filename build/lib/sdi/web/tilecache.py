"""A per-worker cache of vector tiles, bounded in bytes, whose keys carry the layer's load id.

A reload gives the layer a new load id, so its old tiles are never served again; :meth:`TileCache.forget`
drops them (the registry calls it when a layer's load id changes or the layer goes). Encoded variants
(gzip, brotli) are kept beside each tile, so a cached tile costs no compression either.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

Key = tuple[str, int, str, int, int, int]  #: (layer, load id, tile matrix set, z, row, col)


@dataclass
class Entry:
    """One tile: its MVT bytes (``b""`` for an empty tile) and encoded copies by content coding."""

    data: bytes
    encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data) + sum(len(v) for v in self.encoded.values()) + 200


class TileCache:
    """Least-recently-used tiles up to ``max_bytes`` (0: nothing is kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Key) -> Entry | None:
        """The cached tile, marked as recently used; ``None`` when absent."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Key, data: bytes) -> Entry:
        """Keep ``data`` (when the cache is on and the tile fits); returns its entry either way."""
        entry = Entry(data)
        if self.max_bytes <= 0 or entry.size > self.max_bytes // 4:
            return entry
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._items[key] = entry
            self._bytes += entry.size
            self._evict()
        return entry

    def add_encoding(self, key: Key, entry: Entry, coding: str, data: bytes) -> None:
        """Keep an encoded copy of a cached tile."""
        with self._lock:
            if self._items.get(key) is not entry:
                return
            self._bytes -= entry.size
            entry.encoded[coding] = data
            self._bytes += entry.size
            self._evict()

    def forget(self, layer_id: str, keep_load_id: int | None = None) -> None:
        """Drop the tiles of ``layer_id`` (all, or all but those of load ``keep_load_id``)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == layer_id and k[1] != keep_load_id]:
                self._bytes -= self._items.pop(key).size

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._items:
            _, entry = self._items.popitem(last=False)
            self._bytes -= entry.size

    @property
    def size_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes
