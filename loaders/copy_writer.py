"""Sending COPY data from a background thread, so that encoding the next rows overlaps the server's work.

psycopg's default COPY writer sends each block on the calling thread and waits for the socket to drain
before it returns: while PostgreSQL parses and stores one chunk the loader does nothing, and while the
loader reads and encodes the next one the server waits. :class:`BackgroundWriter` hands each block to
one sending thread through a queue of at most ``depth`` blocks (bounded memory, and back-pressure when
the server is the slower side); errors from the server are raised in the caller at its next write or
at the end of the COPY.
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

from psycopg import Cursor
from psycopg.abc import Buffer
from psycopg.copy import LibpqWriter


class BackgroundWriter(LibpqWriter):
    """A :class:`psycopg.copy.LibpqWriter` whose writes are sent by a thread of its own.

    Parameters
    ----------
    cursor
        The cursor running the ``COPY … FROM STDIN``.
    depth
        Blocks that may wait to be sent; :meth:`write` blocks while the queue is full.
    """

    def __init__(self, cursor: Cursor[Any], *, depth: int = 2) -> None:
        super().__init__(cursor)
        self._queue: Queue[Buffer | None] = Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _send(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    super().write(memoryview(data))
                except BaseException as exc:  # raised in the caller (write or finish)
                    self._error = exc

    def write(self, data: Buffer) -> None:
        """Queue a block of COPY data (raise the error of an earlier block, if the server refused it)."""
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name="sdi-copy-send", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self, exc: BaseException | None = None) -> None:
        """Send what is queued, then end the COPY (cancelled with ``exc``'s message when ``exc`` is given)."""
        self._drain()
        if self._error is not None and exc is None:
            error, self._error = self._error, None
            super().finish(error)
            raise error
        super().finish(exc)
