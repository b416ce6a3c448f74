"""The HK SDI web API: sdi's own routes for the hot paths, pygeoapi (wrapped) for the rest.

:func:`create_app` builds the Starlette application; its lifespan builds one :class:`~sdi.web.runtime.Runtime`
per worker (settings read once, the read-only role's URL, one connection pool, the live layer registry, the
tile cache and the pygeoapi bridge). Routes:

========================================================  ===================================================
``/collections``, ``/collections/{id}``                     :mod:`sdi.web.collections` (live from the catalogue)
``/collections/{id}/items[/{fid}]``                        :mod:`sdi.web.features`
``/collections/{id}/queryables``, ``/schema``               :mod:`sdi.web.collections`
``/collections/{id}/tiles/...``, ``/TileMatrixSets/...``   :mod:`sdi.web.tiles`
``/collections/{id}/download/{format}``                    :mod:`sdi.web.downloads`
``/collections/{id}/history``, ``.../changes``              :mod:`sdi.web.history` (loads and what they changed)
``/openapi``, ``/conformance``, ``/metadata/{id}.xml``      :mod:`sdi.web.service`
``/``, coverages, the catalogue's records, processes, jobs  pygeoapi through :mod:`sdi.web.bridge`
``/static``                                                 the package's static files
========================================================  ===================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sdi.access.oidc import OidcSettings, OidcVerifier
from sdi.errors import DatabaseUnavailableError, SdiError
from sdi.settings import Settings
from sdi.web import collections, history, processes, service, tiles
from sdi.web.assets import STATIC_DIR
from sdi.web.auditlog import AuditLog
from sdi.web.auth import Authenticator, AuthMiddleware
from sdi.web.bridge import Bridge, hold, server_base
from sdi.web.compress import CompressionMiddleware
from sdi.web.downloads import download
from sdi.web.guards import CancelOnDisconnect, RejectMalformed
from sdi.web.http import exception_response, sdi_error
from sdi.web.jobs import JobStore
from sdi.web.pages import Pages
from sdi.web.reader import is_reader_url, prepare_reader, reader_url
from sdi.web.registry import Registry, Snapshot
from sdi.web.runtime import Runtime, open_pool
from sdi.web.settings import WebSettings
from sdi.web.tilecache import TileCache

LOGGER = logging.getLogger("sdi.web")


def _reader(settings: Settings, web: WebSettings) -> str:
    """The read-only role's URL: as given, or prepared (its password set) from the owner's URL."""
    if is_reader_url(settings.database_url, settings.reader_role):
        return settings.database_url
    try:
        return prepare_reader(settings, web)
    except DatabaseUnavailableError as exc:  # start anyway: requests answer 503 until the database is back
        LOGGER.warning("%s", exc)
        password = settings.reader_password
        if password is None and web.reader_password_file.is_file():
            password = web.reader_password_file.read_text(encoding="utf-8").strip()
        return reader_url(settings.database_url, settings.reader_role, password, web.reader_host)


_URL_SECRET = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")
_KEYWORD_SECRET = re.compile(r"((?:ssl)?password\s*=\s*)('[^']*'|[^\s&]+)", re.IGNORECASE)


#: Credentials a log line must never show: bearer values, API keys, JSON Web Tokens.
_CREDENTIALS = re.compile(r"(?i)(bearer\s+)\S+|sdi_[a-z0-9]{10}_[A-Za-z0-9_-]{20,}"
                          r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_.-]+")


def redact_text(text: str) -> str:
    """``text`` with the passwords of any connection strings in it (URL or keyword form), and any API key, bearer
    token or JSON Web Token, replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda m: (m.group(1) or "") + "***", text)
    return _KEYWORD_SECRET.sub(r"\1***", _URL_SECRET.sub(r"\1***\2", text))


class OneLineLogs(logging.Filter):
    """pygeoapi logs each error it answers with its traceback; sdi keeps one line, and only for a server error
    (:func:`sdi.web.bridge.hold`). Secrets are masked in every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hold(record):
            return False
        if record.name.startswith("pygeoapi") or record.exc_info:
            message = " ".join(record.getMessage().split())[:300]
            record.msg, record.args, record.exc_info, record.exc_text = redact_text(message), None, None, None
        else:
            message = record.getMessage()
            masked = redact_text(message)
            if masked != message:
                record.msg, record.args = masked, None
        return True


def quiet_logging() -> None:
    """One line per logged error, from every logger (installed once per worker, before pygeoapi configures)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING,
                            format="[%(asctime)s] %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")
    for handler in root.handlers:
        if not any(isinstance(f, OneLineLogs) for f in handler.filters):
            handler.addFilter(OneLineLogs())
    # pygeoapi's translation tries every key of every configuration mapping as a locale name and warns for each
    # that is not one ("unknown locale 'runtime'"): noise, not a problem; its real errors still show
    logging.getLogger("pygeoapi.l10n").setLevel(logging.ERROR)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Build the worker's runtime; close its pool and background task at shutdown."""
    quiet_logging()
    settings, web = Settings(), app.state.web
    from starlette.concurrency import run_in_threadpool

    url = await run_in_threadpool(_reader, settings, web)
    pool = await open_pool(url, settings, web)
    runtime = Runtime(settings.model_copy(update={"database_url": url}), web, pool, asyncio.get_running_loop())
    registry = Registry(runtime)
    cache = TileCache(web.tile_cache_mb * 2 ** 20)

    def forget_tiles(old: Snapshot, new: Snapshot) -> None:
        for layer_id, layer in old.layers.items():
            now = new.layers.get(layer_id)
            if now is None or now.load_id != layer.load_id:
                cache.forget(layer_id, now.load_id if now else None)

    registry.listeners.append(forget_tiles)
    runtime.state.update(registry=registry, tiles=cache, forwarded_allow=tuple(web.forwarded_allow_ips),
                         server_base=server_base(runtime),
                         heavy=asyncio.Semaphore(min(web.heavy_requests, max(1, web.pool_max - 1))))
    runtime.state["bridge"] = Bridge(runtime)
    runtime.state["pages"] = Pages()
    runtime.state["jobs"] = JobStore(runtime)
    runtime.state["oidc"] = OidcVerifier(OidcSettings())
    runtime.state["auth"] = Authenticator(runtime)
    audit_log = runtime.state["audit"] = AuditLog(runtime)
    with contextlib.suppress(Exception):  # the database may be away: the registry's loop retries
        await registry.refresh(force=True)
    tasks = [asyncio.create_task(registry.run()), asyncio.create_task(audit_log.run())]
    app.state.runtime = runtime
    try:
        yield
    finally:
        if "job_pool" in runtime.state:
            runtime.state["job_pool"][0].shutdown(wait=False, cancel_futures=True)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return exception_response(500, "internal error")
    return exception_response(exc.status_code, str(exc.detail), exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    LOGGER.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__,
                 str(exc).splitlines()[0][:300] if str(exc) else "")
    return exception_response(500, "internal error; see the server log")


def routes() -> list[Route | Mount]:
    """Every route of the API."""
    c = "/collections/{collection}"
    return [
        Route("/", service.landing_page),
        Route("/conformance", service.conformance),
        Route("/openapi", service.openapi),
        Route("/metadata/{name}", service.metadata),
        Route("/TileMatrixSets", tiles.tile_matrix_sets),
        Route("/TileMatrixSets/{tms}", tiles.tile_matrix_set),
        Route("/collections", collections.collections),
        Route(c, collections.collection),
        Route(f"{c}/queryables", collections.queryables),
        Route(f"{c}/schema", collections.queryables),
        Route(f"{c}/items", service.items, methods=["GET"]),
        Route(c + "/items/{fid:path}", service.item, methods=["GET"]),
        Route(f"{c}/tiles", tiles.tilesets),
        Route(c + "/tiles/{tms}", tiles.tileset),
        Route(c + "/tiles/{tms}/metadata", tiles.tileset),
        Route(c + "/tiles/{tms}/{z}/{row}/{col}", tiles.tile),
        Route(f"{c}/coverage", service.coverage),
        Route(c + "/download/{format}", download),
        Route(f"{c}/history", history.history),
        Route(f"{c}/changes", history.changes),
        Route("/processes", service.processes),
        Route("/processes/{process}", service.processes),
        Route("/processes/{process}/execution", processes.execute, methods=["POST"]),
        Route("/jobs", processes.jobs),
        Route("/jobs/{job}", processes.jobs, methods=["GET", "DELETE"]),
        Route("/jobs/{job}/results", processes.job_results),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(web: WebSettings | None = None) -> Starlette:
    """The API application (per worker); the database is reached in its lifespan.

    Parameters
    ----------
    web
        The web settings (default: read from ``SDI_*`` once, here).
    """
    web = web or WebSettings()
    middleware = [Middleware(RejectMalformed), Middleware(AuthMiddleware), Middleware(CancelOnDisconnect),
                  Middleware(CompressionMiddleware)]
    if web.cors_origins:  # outside authentication: a preflight carries no credentials
        middleware.insert(1, Middleware(CORSMiddleware, allow_origins=list(web.cors_origins),
                                        allow_methods=["GET", "HEAD", "OPTIONS"], allow_headers=["*"],
                                        expose_headers=["ETag", "Content-Crs", "Link", "WWW-Authenticate",
                                                        "Retry-After"], max_age=3600))
    app = Starlette(routes=routes(), middleware=middleware, lifespan=lifespan,
                    exception_handlers={SdiError: sdi_error, HTTPException: _http_error, Exception: _server_error})
    app.router.redirect_slashes = False
    app.state.web = web
    return app
