"""Brotli or gzip for JSON, GeoJSON, HTML and vector tiles, whichever the client prefers (``Accept-Encoding``).

A pure ASGI middleware: it compresses whole and streamed bodies alike, leaves small bodies (< 1 kB), already
encoded ones (cached tiles carry their own ``Content-Encoding``), file downloads (``Content-Disposition:
attachment``: their length, ranges and digest describe the file as stored) and other media types alone, and adds
``Vary: Accept-Encoding``.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdi.web.http import add_vary

MIN_SIZE = 1024
COMPRESSIBLE = ("application/json", "application/geo+json", "application/vnd.mapbox-vector-tile", "text/html",
                "application/schema+json", "application/vnd.oai.openapi+json", "text/css", "text/javascript",
                "application/javascript", "application/ld+json", "application/vnd.iso.19139+xml",
                "application/xml", "text/plain", "application/x-protobuf")
BROTLI_QUALITY = 4  #: fast, still ~20 % smaller than gzip on GeoJSON
GZIP_LEVEL = 5


def choose_coding(accept_encoding: str) -> str | None:
    """``"br"``, ``"gzip"`` or ``None`` from an ``Accept-Encoding`` header (q=0 excludes a coding)."""
    best, best_q = None, 0.0
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        name = name.strip()
        if name in ("br", "gzip") and q > 0 and (q > best_q or (q == best_q and name == "br")):
            best, best_q = name, q
    return best


def encode(data: bytes, coding: str) -> bytes:
    """``data`` compressed with ``coding`` (``br`` or ``gzip``)."""
    if coding == "br":
        return bytes(brotli.compress(data, quality=BROTLI_QUALITY))
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


class _Stream:
    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.br = brotli.Compressor(quality=BROTLI_QUALITY) if coding == "br" else None
        self.gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if coding == "gzip" else None

    def push(self, data: bytes, final: bool) -> bytes:
        if self.br is not None:
            out = self.br.process(data) if data else b""
            return out + (self.br.finish() if final else self.br.flush())
        assert self.gz is not None
        out = self.gz.compress(data)
        return out + (self.gz.flush() if final else self.gz.flush(zlib.Z_SYNC_FLUSH))


class CompressionMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coding = choose_coding(Headers(scope=scope).get("accept-encoding", ""))
        if coding is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        stream: _Stream | None = None
        passthrough = False

        async def wrapped(message: Message) -> None:
            nonlocal stream, passthrough
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body, more = message.get("body", b""), message.get("more_body", False)
            if start:  # first body message: decide
                headers = MutableHeaders(raw=start["headers"])
                media = headers.get("content-type", "").split(";")[0].strip().lower()
                attachment = headers.get("content-disposition", "").lower().startswith("attachment")
                skip = ("content-encoding" in headers or attachment or media not in COMPRESSIBLE
                        or start["status"] in (204, 206, 304) or (not more and len(body) < MIN_SIZE))
                if skip:
                    passthrough = True
                    if media in COMPRESSIBLE:
                        add_vary(headers, "Accept-Encoding")
                    await send(start)
                else:
                    stream = _Stream(coding)
                    headers["Content-Encoding"] = coding
                    add_vary(headers, "Accept-Encoding")
                    del headers["content-length"]
                    if not more:
                        data = stream.push(body, True)
                        headers["Content-Length"] = str(len(data))
                        await send(start)
                        await send({"type": "http.response.body", "body": data, "more_body": False})
                        start.clear()
                        return
                    await send(start)
                start.clear()
            if passthrough or stream is None:
                await send(message)
                return
            await send({"type": "http.response.body", "body": stream.push(body, not more), "more_body": more})

        await self.app(scope, receive, wrapped)
