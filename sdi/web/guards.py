"""ASGI middleware that bounds the work of a request: malformed requests refused, abandoned ones cancelled.

* :class:`RejectMalformed` answers 400 to a path or query string holding a NUL character (``%00``), before any
  route, database or file system sees it.
* :class:`CancelOnDisconnect` cancels a ``GET`` whose client has gone away: the route's task is cancelled, which
  makes psycopg cancel the running statement on the server, so an abandoned request stops costing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdi.web.http import exception_response


class RejectMalformed:
    """400 for a NUL character anywhere in the path or query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = bytes(scope.get("query_string") or b"")
            if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query.lower():
                await exception_response(400, "the request holds a NUL character")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CancelOnDisconnect:
    """Run a ``GET``/``HEAD`` request's app while watching for the client's disconnection; cancel it then."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        first = await receive()  # a GET's (empty) body
        if first["type"] == "http.disconnect":
            return
        gone = asyncio.Event()
        handed = False

        async def app_receive() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return first
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        app = asyncio.ensure_future(self.app(scope, app_receive, send))
        watcher = asyncio.ensure_future(watch())
        try:
            done: Any
            done, _ = await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if app not in done:  # the client left first
                app.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await app
                return
            app.result()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if not app.done():
                app.cancel()
