"""Local HTTP servers for the harvesting tests: a fixture server whose routes a test sets (static files with
conditional GET, slow, failing or cut-short answers, and services written from their documented formats), and
MapServer's ``mapserv`` run per request as a CGI program behind it (a real WFS 2.0)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest


@dataclass
class Reply:
    """What a route answers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  #: sleep this long before answering
    cut_after: int | None = None  #: announce the whole body's length, send only this many bytes, close


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


Route = Callable[[Seen], Reply]


class FixtureServer:
    """A threaded HTTP server on a free loopback port; ``routes`` maps a path to a function of the request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                            {k.lower(): v for k, v in self.headers.items()})
                server.seen.append(seen)
                route = server.routes.get(parts.path)
                reply = route(seen) if route else Reply(404, b"not found", {"Content-Type": "text/plain"})
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    if reply.cut_after is not None:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(reply.body if reply.cut_after is None else reply.body[: reply.cut_after])
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return self.base + path

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for ``path``."""
        return [s for s in self.seen if s.path == path]

    def static(self, path: str, body: bytes, *, content_type: str = "application/octet-stream",
               validators: bool = True, headers: dict[str, str] | None = None) -> None:
        """Serve ``body`` at ``path``; with ``validators``, an ``ETag`` and ``Last-Modified``, and ``304`` to a
        matching ``If-None-Match``."""
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'

        def route(seen: Seen) -> Reply:
            extra = {"Content-Type": content_type, **(headers or {})}
            if validators:
                extra |= {"ETag": etag, "Last-Modified": "Mon, 07 Dec 2026 01:00:00 GMT"}
                if seen.headers.get("if-none-match") == etag:
                    return Reply(304, b"", {"ETag": etag})
            return Reply(200, body, extra)

        self.routes[path] = route


@contextlib.contextmanager
def fixture_server() -> Iterator[FixtureServer]:
    """A :class:`FixtureServer`, shut down afterwards."""
    server = FixtureServer()
    thread = threading.Thread(target=server.httpd.serve_forever, name="fixture-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=10)


# --- MapServer --------------------------------------------------------------------------------------------------

def find_mapserv() -> str:
    """The ``mapserv`` CGI program; else skip the test (fail it when ``CI=true``)."""
    found = shutil.which("mapserv") or ("/usr/lib/cgi-bin/mapserv" if Path("/usr/lib/cgi-bin/mapserv").exists()
                                        else None)
    if found:
        return found
    reason = ("MapServer is not installed (as root: apt-get install -y cgi-mapserver mapserver-bin; scripts/setup.sh "
              "does it): the WFS harvesting tests against a real server need it")
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def mapserver_route(mapserv: str, mapfile: Path, folder: Path) -> Route:
    """A route that runs ``mapserv`` as a CGI program for each request, on ``mapfile``.

    MapServer 8 reads its configuration file (``MAPSERVER_CONFIG_FILE``), which here allows only this map file.
    """
    config = folder / "mapserver.conf"
    config.write_text(f'CONFIG\n  ENV\n    MS_MAP_PATTERN "^{folder}/"\n  END\nEND\n', encoding="utf-8")

    def route(seen: Seen) -> Reply:
        from urllib.parse import urlencode

        query = urlencode({**seen.query, "map": str(mapfile)})
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MAPSERVER_CONFIG_FILE": str(config),
               "REQUEST_METHOD": "GET", "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "SCRIPT_NAME": seen.path, "GATEWAY_INTERFACE": "CGI/1.1"}
        done = subprocess.run([mapserv], env=env, capture_output=True, timeout=60, check=False)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, body = done.stdout.partition(b"\n\n")
        headers, status = {}, 200
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        return Reply(status, body, headers)

    return route
