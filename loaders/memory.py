"""Keeping a streamed load's memory flat: freed heap memory given back to the system, but not after every chunk.

glibc keeps freed heap memory for reuse, and with allocations from several threads (GDAL's reader, the
workers, Arrow) the heap grows in steps with the file; ``malloc_trim`` gives it back. Trimming after
every chunk, though, returns pages the next chunk faults in again (about 0.6 s of system time a
million polygons), so :class:`Trimmer` trims only when the process has grown by :data:`TRIM_SLACK`
since the last trim: the peak stays within that slack of the trimmed size, flat in the file size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

#: Growth of the resident set since the last trim (bytes) after which a finished chunk trims again.
TRIM_SLACK = 8 * 2**20


@functools.cache
def _libc() -> Any:
    """glibc, when this process runs on it (for ``malloc_trim``), else ``None``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_memory() -> None:
    """Give the heap memory this process has freed back to the system (glibc's ``malloc_trim``; else nothing)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def resident() -> int | None:
    """This process's resident set size in bytes (from ``/proc``), or ``None`` where that is not known."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Trimmer:
    """Calls :func:`release_memory` after a chunk when the process has grown by :data:`TRIM_SLACK` since the
    last call (or always, where the resident size is not known)."""

    def __init__(self) -> None:
        self.base: int | None = None

    def chunk_done(self) -> None:
        """A chunk is finished: trim if the process has grown enough since the last trim."""
        now = resident()
        if now is not None and self.base is not None and now < self.base + TRIM_SLACK:
            return
        release_memory()
        self.base = resident()
