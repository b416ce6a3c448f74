"""The HK SDI web API: pygeoapi's Starlette app, connecting with the read-only role, wrapped with SDI rules.

``sdi serve`` prepares the environment and runs ``uvicorn sdi.publishing.app:app``; each worker imports
this module and builds :data:`app` on first access (pygeoapi reads ``PYGEOAPI_CONFIG`` and
``PYGEOAPI_OPENAPI`` when :mod:`pygeoapi.starlette_app` is imported, so nothing is built at import
time here). Around pygeoapi the app adds:

- :class:`QueryParameterMiddleware`: an unknown query parameter is a 400 naming it (pygeoapi would
  silently ignore it, so a typo such as ``limt=5`` looks like a working request);
- ``/metadata/{id}.xml`` (ISO 19139) and ``/metadata/{id}.jsonld`` (DCAT), 404 for unknown ids;
- :class:`~sdi.errors.SdiError` mapped to its HTTP status (:func:`sdi.errors.http_status`);
- ``DELETE /jobs/{id}`` answered as JSON (:func:`delete_job`).

The read-only role
------------------
Providers read ``SDI_DATABASE_URL``; ``sdi serve`` sets it to :func:`reader_url`: the same database as
``settings.database_url`` as ``settings.reader_role``, over TCP. On a stock Debian cluster local-socket
connections use ``peer`` authentication (the OS user must equal the role), so the reader connects to
``127.0.0.1`` with a password (``scram-sha-256``). The password is ``SDI_READER_PASSWORD`` when set;
otherwise one is generated once and kept in ``SDI_READER_PASSWORD_FILE`` (mode 0600, default
``~/.config/hk-sdi/reader-password``). When the reader cannot log in with it, :func:`prepare_reader`
sets it with ``ALTER ROLE`` through the serving user's own connection (a superuser or ``CREATEROLE``
role, as ``scripts/setup.sh`` creates), then checks the login again.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sdi.catalogue import Catalogue
from sdi.catalogue.export import export
from sdi.db import connect, redact
from sdi.errors import ConfigError, DatabaseUnavailableError, LayerNotFoundError, SdiError, http_status
from sdi.publishing.config import CATALOGUE_ID, CONFIG_DIR, CONFIG_FILE, OPENAPI_FILE
from sdi.publishing.cql import CRS84 as CRS84_URI
from sdi.publishing.cql import parse_filter_text
from sdi.publishing.features import RAW_BBOX
from sdi.settings import Settings

APPLICATION_NAME = "hk-sdi-api"  #: ``application_name`` of the API's database connections
COMMON = frozenset({"f", "lang"})
ITEMS = COMMON | {"limit", "offset", "bbox", "bbox-crs", "crs", "datetime", "properties", "sortby", "skipGeometry",
                  "filter", "filter-lang", "filter-crs", "q", "resulttype"}
#: Query parameters accepted below ``/collections/{id}/<segment>`` (items has the collection's queryables too).
COLLECTION_PARAMS: dict[str, frozenset[str]] = {
    "": COMMON, "items": ITEMS, "queryables": COMMON | {"profile"}, "schema": COMMON | {"profile"},
    "tiles": COMMON,
    "coverage": COMMON | {"bbox", "bbox-crs", "datetime", "subset", "subset-crs", "properties", "scale-factor",
                          "scale-axes", "scale-size"},
    "map": COMMON | {"bbox", "bbox-crs", "crs", "datetime", "width", "height", "transparent", "bgcolor"},
}
ITEM = COMMON | {"crs"}
TOP_PARAMS: dict[str, frozenset[str]] = {
    "": COMMON, "openapi": COMMON | {"ui"}, "conformance": COMMON, "collections": COMMON, "TileMatrixSets": COMMON,
    "metadata": frozenset(),
}
MEDIA_TYPES = {".xml": ("iso19139", "application/vnd.iso.19139+xml; charset=utf-8"),
               ".jsonld": ("dcat", "application/ld+json; charset=utf-8")}
QUERYABLES_TTL_S = 30.0


def _default_password_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hk-sdi" / "reader-password"


class ServeSettings(BaseSettings):
    """Settings of the web API (``SDI_*`` variables) beyond :class:`~sdi.settings.Settings`."""

    model_config = SettingsConfigDict(env_prefix="SDI_", env_file=".env", extra="ignore")

    pygeoapi_config: Path = Field(CONFIG_DIR / CONFIG_FILE, description="pygeoapi configuration to serve.")
    pygeoapi_openapi: Path | None = Field(None, description="Its OpenAPI document (default: next to it).")
    reader_password_file: Path = Field(default_factory=_default_password_file,
                                       description="Where a generated read-only role password is kept.")
    reader_host: str | None = Field(None, description="Host the read-only role connects to (default: "
                                                      "the database URL's TCP host, else 127.0.0.1).")


# --- the read-only role ---------------------------------------------------------------------------------------


def reader_url(database_url: str, role: str, password: str | None, host: str | None = None) -> str:
    """``database_url`` rewritten to log in as ``role`` over TCP (a socket path becomes ``127.0.0.1``)."""
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    for key in ("user", "password", "passfile"):
        params.pop(key, None)
    target = host or params.pop("host", "") or ""
    params.pop("host", None)
    if not target or target.startswith("/"):
        target = "127.0.0.1"
    port, dbname = params.pop("port", ""), params.pop("dbname", "")
    params.setdefault("application_name", APPLICATION_NAME)
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = f"{auth}@{target}" + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{urlencode(sorted(params.items()))}"
                                                                 if params else "")


def _stored_password(path: Path) -> str:
    """The password kept in ``path``; created (mode 0600, atomically) with a random one when missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ConfigError(f"{path}: the read-only role password file is empty; delete it") from None
        return text
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the read-only role password file: {exc}") from exc
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


def _can_log_in(url: str, timeout: int) -> str | None:
    """``None`` when ``url`` accepts a connection, else the server's one-line reason."""
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            conn.execute("select 1 from sdi.layer limit 1")
        return None
    except psycopg.Error as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return lines[-1] if lines else type(exc).__name__


def prepare_reader(settings: Settings, serve: ServeSettings) -> str:
    """Make sure the read-only role can log in to the SDI database; return the URL it uses.

    Raises
    ------
    DatabaseUnavailableError
        When the role still cannot log in (pg_hba.conf, a missing grant, or no right to set its password).
    """
    password = settings.reader_password or _stored_password(serve.reader_password_file)
    url = reader_url(settings.database_url, settings.reader_role, password, serve.reader_host)
    if _can_log_in(url, settings.connect_timeout) is None:
        return url
    try:
        with connect(settings, autocommit=True) as conn:
            conn.execute(sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(settings.reader_role), sql.Literal(password)))
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot set the password of role {settings.reader_role!r} ({str(exc).strip().splitlines()[0]});"
            f" as a superuser run: alter role {settings.reader_role} password '...', and set SDI_READER_PASSWORD"
        ) from exc
    reason = _can_log_in(url, settings.connect_timeout)
    if reason is not None:
        raise DatabaseUnavailableError(f"role {settings.reader_role!r} cannot connect to {redact(url)}: {reason}")
    return url


def serve_environment(settings: Settings, serve: ServeSettings) -> dict[str, str]:
    """Environment for the API workers: pygeoapi's two files and the read-only ``SDI_DATABASE_URL``."""
    config = serve.pygeoapi_config.resolve()
    openapi = (serve.pygeoapi_openapi or config.with_name(OPENAPI_FILE)).resolve()
    for path in (config, openapi):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; run `sdi publish` first")
    return {"PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi),
            "SDI_DATABASE_URL": prepare_reader(settings, serve)}


# --- the wrapper ----------------------------------------------------------------------------------------------


def ogc_exception(status: int, code: str, description: str) -> JSONResponse:
    """An OGC API exception document, as pygeoapi writes them."""
    return JSONResponse({"code": code, "type": code, "description": description}, status_code=status)


async def sdi_error(request: Request, exc: Exception) -> Response:
    """Map an :class:`SdiError` to its HTTP status with a one-line description."""
    status = http_status(exc)
    code = {400: "InvalidParameterValue", 404: "NotFound", 503: "ServiceUnavailable"}.get(status, "ServerError")
    return ogc_exception(status, code, str(exc))


def _delete_job_json(api: Any, request: Any, job_id: str) -> tuple[dict[str, str], int, Any]:
    from pygeoapi.api import processes as processes_api

    headers, status, content = processes_api.delete_job(api, request, job_id)
    return {"Content-Type": "application/json", **(headers or {})}, status, content


async def delete_job(request: Request) -> Response:
    """``DELETE /jobs/{id}`` through pygeoapi, with the Content-Type header its answer lacks.

    pygeoapi 0.21 returns no headers for a dismissed job and its Starlette adapter then fails with a
    KeyError: the job was deleted but the client got a 500.
    """
    from pygeoapi import starlette_app as pygeoapi_app
    from pygeoapi.api import itemtypes

    itemtypes.parse_ecql_text = parse_filter_text  # CQL2 text as well as ECQL for `filter`

    response: Response = await pygeoapi_app.execute_from_starlette(_delete_job_json, request,
                                                                   str(request.path_params["job_id"]))
    return response


async def metadata(request: Request) -> Response:
    """``/metadata/{id}.xml`` (ISO 19139) and ``/metadata/{id}.jsonld`` (DCAT JSON-LD) of a catalogue record."""
    name = str(request.path_params["name"])
    suffix = next((s for s in MEDIA_TYPES if name.endswith(s)), None)
    if suffix is None:
        raise LayerNotFoundError(f"no metadata document {name!r}; use <id>.xml or <id>.jsonld")
    fmt, media_type = MEDIA_TYPES[suffix]
    record = await run_in_threadpool(Catalogue(Settings()).get, name[: -len(suffix)])
    return Response(export(record, fmt), media_type=media_type)


class Queryables:
    """Property names of each layer (from ``sdi.layer``), cached for :data:`QUERYABLES_TTL_S` seconds."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}
        self._read_at = float("-inf")

    def _read(self) -> dict[str, frozenset[str]]:
        from sdi.catalogue.records_provider import FIELDS

        with connect(Settings()) as conn:
            rows = conn.execute("select id, fields from sdi.layer").fetchall()
        names = {str(i): frozenset(str(f["name"]) for f in (fields or []) if f.get("name")) for i, fields in rows}
        names[CATALOGUE_ID] = frozenset(FIELDS)
        return names

    async def of(self, collection: str) -> frozenset[str]:
        """Queryable names of ``collection`` (empty for an unknown one: pygeoapi answers 404 then)."""
        if time.monotonic() - self._read_at > QUERYABLES_TTL_S or collection not in self._names:
            self._names = await run_in_threadpool(self._read)
            self._read_at = time.monotonic()
        return self._names.get(collection, frozenset())


class QueryParameterMiddleware:
    """Reject unknown query parameters with 400 and an OGC exception naming the parameter."""

    def __init__(self, app: ASGIApp, prefix: str = "") -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.queryables = Queryables()

    async def allowed(self, path: str) -> frozenset[str] | None:
        """Parameters accepted at ``path``; ``None`` for paths this middleware does not police."""
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix):]
        parts = [p for p in path.split("/") if p]
        if len(parts) <= 1:
            return TOP_PARAMS.get(parts[0] if parts else "")
        if parts[0] == "TileMatrixSets" and len(parts) == 2:
            return COMMON
        if parts[0] != "collections":
            return TOP_PARAMS.get(parts[0]) if parts[0] == "metadata" else None
        segment = parts[2] if len(parts) > 2 else ""
        if segment == "items" and len(parts) > 3:
            return ITEM
        found = COLLECTION_PARAMS.get(segment)
        if segment == "items" and found is not None:
            return found | await self.queryables.of(parts[1])
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        names = [k for k, _ in pairs]
        try:
            allowed = await self.allowed(scope["path"])
        except SdiError as exc:
            await (await sdi_error(Request(scope), exc))(scope, receive, send)
            return
        unknown = sorted({n for n in names if allowed is not None and n not in allowed})
        if unknown:
            expected = ", ".join(sorted(allowed or ())) or "none"
            response = ogc_exception(400, "InvalidParameterValue",
                                     f"unknown query parameter {unknown[0]!r}"
                                     + (f" (and {', '.join(repr(u) for u in unknown[1:])})" if unknown[1:] else "")
                                     + f"; expected one of: {expected}")
            await response(scope, receive, send)
            return
        params = dict(pairs)
        problem = _invalid_value(params)
        if problem:
            await ogc_exception(400, "InvalidParameterValue", problem)(scope, receive, send)
            return
        if params.get("filter-lang") == "cql2-text":  # pygeoapi 0.21 refuses the name (create_app lets it parse it)
            scope = dict(scope, query_string=urlencode([(k, v) for k, v in pairs if k != "filter-lang"]).encode())
        token = RAW_BBOX.set(_raw_bbox(params))
        try:
            await self.app(scope, receive, send)
        finally:
            RAW_BBOX.reset(token)


def _valid_instant(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _invalid_value(params: dict[str, str]) -> str | None:
    """A one-line reason when a value pygeoapi lets through (or crashes on) is invalid, else ``None``.

    pygeoapi checks ``datetime`` only for collections with a temporal extent, and an empty ``sortby``
    item makes it fail with an IndexError (500).
    """
    if "datetime" in params:
        value = params["datetime"]
        parts = value.split("/")
        real = [p for p in parts if p not in ("", "..")]
        if len(parts) > 2 or not real or not all(_valid_instant(p) for p in real) or (
                len(parts) == 1 and value in ("", "..")):
            return f"datetime: {value!r} is not an RFC 3339 date-time or interval"
    if "sortby" in params and any(not s.strip().lstrip("+-") for s in params["sortby"].split(",")):
        return f"sortby: empty sort property in {params['sortby']!r}"
    return None


def _raw_bbox(params: dict[str, str]) -> tuple[tuple[float, ...], str] | None:
    """The bbox exactly as the client sent it, with its CRS, for sdi's feature provider.

    pygeoapi transforms a bbox to the storage CRS through two corners only (edges off by metres);
    with this the provider builds the true box in the client's CRS and transforms it in PostGIS.
    """
    if "bbox" not in params:
        return None
    try:
        values = tuple(float(v) for v in params["bbox"].split(","))
    except ValueError:
        return None  # pygeoapi answers 400
    return values, params.get("bbox-crs") or CRS84_URI


class _ContextThreadPool(ThreadPoolExecutor):
    """The event loop's default executor, carrying the caller's contextvars into the worker thread.

    pygeoapi runs each API call with ``loop.run_in_executor``, which (unlike Starlette's threadpool)
    drops contextvars; :data:`~sdi.publishing.features.RAW_BBOX` must reach the provider.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    pool = _ContextThreadPool(thread_name_prefix="sdi-api")
    loop.set_default_executor(pool)
    yield
    pool.shutdown(wait=False)


def create_app() -> Starlette:
    """Build the API from ``PYGEOAPI_CONFIG`` / ``PYGEOAPI_OPENAPI`` (importing pygeoapi's Starlette app)."""
    serve = ServeSettings()
    os.environ.setdefault("PYGEOAPI_CONFIG", str(serve.pygeoapi_config.resolve()))
    os.environ.setdefault("PYGEOAPI_OPENAPI", str((serve.pygeoapi_openapi or serve.pygeoapi_config.with_name(
        OPENAPI_FILE)).resolve()))
    from pygeoapi import starlette_app as pygeoapi_app
    from pygeoapi.api import itemtypes

    itemtypes.parse_ecql_text = parse_filter_text  # CQL2 text as well as ECQL for `filter`

    inner: Starlette = pygeoapi_app.APP
    inner.debug = False  # pygeoapi turns Starlette's debug tracebacks on; never show them to clients
    inner.add_exception_handler(SdiError, sdi_error)
    prefix = str(pygeoapi_app.url_prefix or "")
    outer = Starlette(routes=[Route(f"{prefix}/metadata/{{name}}", metadata),
                              Route(f"{prefix}/jobs/{{job_id}}", delete_job, methods=["DELETE"]),
                              Mount("/", app=inner)],
                      exception_handlers={SdiError: sdi_error}, lifespan=_lifespan)
    outer.add_middleware(QueryParameterMiddleware, prefix=prefix)
    return outer


_APP: Starlette | None = None


def __getattr__(name: str) -> Any:
    """``app`` is built on first access (by uvicorn in each worker), not at import."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = create_app()
        return _APP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
