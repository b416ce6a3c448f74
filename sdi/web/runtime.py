"""One runtime per web worker: settings read once, the read-only role's URL, one bounded connection pool.

Built in the app's lifespan (:func:`open_runtime`) and reached by every route as ``request.app.state.runtime``;
every database access of the web layer goes through :meth:`Runtime.connection`, except download builds and
process runs, which open their own bounded connections inside a heavy-request slot (DESIGN.md says why).
pygeoapi's providers run in worker threads and reach the same pool through :meth:`Runtime.run_sync`.

Each connection runs with ``statement_timeout`` (``SDI_STATEMENT_TIMEOUT_MS``), ``plan_cache_mode =
force_custom_plan`` (psycopg prepares a statement after 5 runs and PostgreSQL would switch it to a generic
plan after 5 more, in which the bbox is an unknown parameter: re-transformed for every row and never used to
estimate selectivity), no parallel workers (their start-up costs more than they save on API queries) and no
JIT compilation.

Each request's queries run under its identity's database role (:mod:`sdi.access.roles`): a connection is
switched with ``SET ROLE`` when it last served another role (most never are: the public's role stays set), so
PostgreSQL itself refuses a layer the identity may not read, whatever the web layer does. The worker's own work
(the registry, the audit log, key checks) runs as the login role, which reads the catalogue but no layer.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sdi.access.identity import Identity, current
from sdi.access.roles import ANON, role_for
from sdi.errors import DatabaseUnavailableError, LayerNotFoundError, QueryError, ServiceBusyError, database_failure
from sdi.query.sqlerrors import client_reason
from sdi.settings import Settings
from sdi.web.settings import WebSettings

LOGGER = logging.getLogger("sdi.web")
T = TypeVar("T")


class RawText(Loader):
    """Load ``text`` results as the bytes PostgreSQL sent (UTF-8), without decoding them."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


class StaleLayer(Exception):
    """A layer's table or columns changed since the registry read them (a reload or drop)."""


@dataclass
class Runtime:
    """Everything a worker's routes share; see the module docstring."""

    settings: Settings
    web: WebSettings
    pool: AsyncConnectionPool
    loop: asyncio.AbstractEventLoop
    state: dict[str, Any] = field(default_factory=dict)
    #: The role each pooled connection is set to (``None``: the login role itself).
    roles: weakref.WeakKeyDictionary[Any, str | None] = field(default_factory=weakref.WeakKeyDictionary)
    #: Roles known to exist (made by ``sdi.access_role()`` on first use).
    ensured: set[str] = field(default_factory=lambda: {ANON})
    #: Connections being put back after their request gave up waiting (kept referenced until done).
    _returning: set[asyncio.Future[None]] = field(default_factory=set)

    def __deepcopy__(self, memo: dict[int, Any]) -> Runtime:
        return self  # shared, not data: pygeoapi deep-copies its configuration, which references the runtime

    @property
    def deadline_s(self) -> float:
        """The longest a request may hold a connection: statement timeout plus the wait for a connection, plus 1 s.

        PostgreSQL ends a statement at its timeout; this is the client's own limit for a server that stopped
        answering at all (frozen, or cut off without a TCP reset).
        """
        return self.web.statement_timeout_ms / 1000 + self.web.pool_timeout_s + 1.0

    @asynccontextmanager
    async def heavy(self, needed: bool = True) -> AsyncIterator[None]:
        """A slot for a heavy request (a page, a tile to make, a process); 503 when none frees up promptly.

        There are :attr:`WebSettings.heavy_requests` slots per worker, fewer than its connections, so light
        requests (a feature, a collection) always find a connection while heavy ones queue briefly or are turned
        away with ``Retry-After``. ``needed=False`` (a request that cannot cost much) takes no slot.
        """
        if not needed:
            yield
            return
        semaphore: asyncio.Semaphore = self.state["heavy"]
        try:
            await asyncio.wait_for(semaphore.acquire(), self.web.heavy_wait_s)
        except TimeoutError:
            raise ServiceBusyError("the server is busy with other heavy requests; retry shortly") from None
        try:
            yield
        finally:
            semaphore.release()

    async def bounded(self, work: Awaitable[T]) -> T:
        """``work`` (database work), given up after :attr:`deadline_s` with a 503.

        The work runs as a task of its own: when the deadline passes it is cancelled and left to finish its
        clean-up in the background (psycopg then cancels the statement, which a frozen server may take long
        to hear), while the client gets its answer at once.
        """
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.deadline_s)
        except asyncio.CancelledError:  # the request was cancelled (its client left): so is its work
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: nothing is logged
        raise ServiceBusyError("the database did not answer in time; retry shortly")

    def groups_of(self, identity: Identity) -> list[str]:
        """The identity's groups that some layer names (the others grant nothing), sorted."""
        registry = self.state.get("registry")
        in_use: frozenset[str] = registry.groups if registry is not None else frozenset()
        return sorted(identity.groups & in_use)

    def role_of(self, identity: Identity) -> str | None:
        """The database role ``identity``'s queries run under (``None``: the login role, for the system)."""
        return None if identity.kind == "system" else role_for(self.groups_of(identity))

    async def ensure_role(self, conn: psycopg.AsyncConnection[Any], identity: Identity) -> str | None:
        """Make ``identity``'s role exist (once per worker; the connection is left as the login role)."""
        wanted = self.role_of(identity)
        if wanted is not None and wanted not in self.ensured:
            await conn.execute("reset role")
            self.roles[conn] = None
            await conn.execute("select sdi.access_role(%s::text[])", (self.groups_of(identity),))
            self.ensured.add(wanted)
        return wanted

    async def database_role(self) -> str | None:
        """The current identity's role, made to exist: for work on connections of its own (processes, downloads)."""
        async with self.connection():
            return self.role_of(current())

    async def _become(self, conn: psycopg.AsyncConnection[Any], identity: Identity) -> None:
        wanted = self.role_of(identity)
        if conn in self.roles and self.roles[conn] == wanted:
            return
        self.roles.pop(conn, None)  # unknown until the statement below succeeds
        wanted = await self.ensure_role(conn, identity)
        await conn.execute(sql.SQL("set role {}").format(sql.Identifier(wanted)) if wanted else sql.SQL("reset role"))
        self.roles[conn] = wanted

    async def _checkout(self) -> psycopg.AsyncConnection[Any]:
        """A connection from the pool, waited for at most :attr:`WebSettings.pool_timeout_s`, but no longer than
        the connect timeout once the database is unreachable (:func:`unreachable`).

        One place in the pool's queue (first come, first served) is waited on in slices of the connect timeout
        (``SDI_CONNECT_TIMEOUT``, the longest one connection attempt of the pool takes): after each, a request
        whose pool's latest attempts all failed is answered 503 at once, so a stopped database is reported within
        the connect timeout however long the pool timeout is, while a reachable but saturated database keeps
        requests waiting for the whole pool timeout. A place given up (503, or the client gone) is not
        cancelled: a connection it still gets goes straight back to the pool. When the pool holds an idle
        connection nobody waits for (the usual case), it is taken directly, with no task of its own.

        Raises
        ------
        DatabaseUnavailableError
            The database is unreachable (503).
        PoolTimeout
            No connection freed up within the pool timeout (the caller answers 503).
        """
        measures = self.pool.get_stats()
        if measures.get("pool_available", 0) > measures.get("requests_waiting", 0):  # the usual case: no wait
            conn: psycopg.AsyncConnection[Any] = await self.pool.getconn(timeout=self.web.pool_timeout_s)
            return conn
        step = min(self.web.pool_timeout_s, float(self.settings.connect_timeout))
        waiter = asyncio.ensure_future(self.pool.getconn(timeout=self.web.pool_timeout_s))
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=step)
                if done:
                    return waiter.result()
                if unreachable(self.pool):
                    raise DatabaseUnavailableError()
        except BaseException:
            if not waiter.done():
                waiter.add_done_callback(self._give_back)
            raise

    def _give_back(self, waiter: asyncio.Future[psycopg.AsyncConnection[Any]]) -> None:
        """Return to the pool the connection a given-up place in its queue got (see :meth:`_checkout`)."""
        if waiter.cancelled() or waiter.exception() is not None:
            return
        task = asyncio.ensure_future(self.pool.putconn(waiter.result()))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection under the current identity's role; pool exhaustion, an unreachable database and
        timeouts become 503 errors, and a table the role may not read a 404 (as if it did not exist)."""
        try:
            conn = await self._checkout()
            try:
                await self._become(conn, current())
                yield conn
            except BaseException:
                self.roles.pop(conn, None)
                raise
            finally:
                await self.pool.putconn(conn)
        except PoolTimeout as exc:
            raise ServiceBusyError("the database is busy or unreachable; retry shortly") from exc
        except pg_errors.QueryCanceled as exc:
            raise ServiceBusyError(f"the request took longer than {self.web.statement_timeout_ms / 1000:g} s; "
                                   "narrow it (bbox, filter, limit) or retry later") from exc
        except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn) as exc:
            raise StaleLayer() from exc
        except pg_errors.InsufficientPrivilege as exc:  # the web layer let through what the role may not read
            LOGGER.warning("the database refused a query of %s (role %s): %s", current().id,
                           self.role_of(current()), str(exc).splitlines()[0] if str(exc) else "")
            raise LayerNotFoundError("no such collection") from exc
        except psycopg.OperationalError as exc:
            raise database_failure(exc.sqlstate) from exc
        except (psycopg.DataError, psycopg.ProgrammingError, psycopg.InternalError) as exc:
            reason = client_reason(exc.sqlstate)
            if reason is None:
                LOGGER.error("query failed (SQLSTATE %s): %s", exc.sqlstate,
                             str(exc).splitlines()[0] if str(exc) else "")
            raise QueryError(f"the query cannot run: {reason or f'SQLSTATE {exc.sqlstate}'}") from exc

    async def fresh(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work``; when a layer changed under it, re-read the catalogue and run it once more."""
        registry = self.state["registry"]
        try:
            return await self.bounded(work())
        except StaleLayer:
            await registry.refresh(force=True)
        try:
            return await self.bounded(work())
        except StaleLayer as exc:
            raise LayerNotFoundError("the collection changed during the request; retry") from exc

    async def fetch_dicts(self, query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows of one statement as dicts (bounded by :attr:`deadline_s`)."""
        async def run() -> list[dict[str, Any]]:
            async with self.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)
                return list(await cur.fetchall())

        return await self.bounded(run())

    def fetcher(self) -> Callable[[Any, dict[str, Any]], list[dict[str, Any]]]:
        """A synchronous ``fetch(query, params)`` over the pool, for code running in worker threads."""
        return lambda query, params: self.run_sync(self.fetch_dicts(query, params))

    def run_sync(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the worker's event loop from another thread (pygeoapi's providers) and wait."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout or (self.web.statement_timeout_ms / 1000 + self.web.pool_timeout_s + 5))


def with_options(url: str, **settings: Any) -> str:
    """``url`` (a URL or a keyword/value string, kept in its form) with a ``-c name=value`` option added for each
    setting that is not ``None`` (``role`` too: the connection then starts as that role)."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    extra = " ".join(f"-c {k}={v}" for k, v in settings.items() if v is not None)
    if not extra:
        return url
    if "://" not in url:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
        params["options"] = f"{params.get('options', '')} {extra}".strip()
        return make_conninfo("", **params)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([v for k, v in query if k == "options"] + [extra])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def connection_options(web: WebSettings) -> str:
    """libpq ``options`` for the API's connections (see the module docstring)."""
    settings = {"statement_timeout": web.statement_timeout_ms, "plan_cache_mode": "force_custom_plan",
                "max_parallel_workers_per_gather": 0, "jit": "off",
                "idle_in_transaction_session_timeout": max(web.statement_timeout_ms, 10_000)}
    return " ".join(f"-c {k}={v}" for k, v in settings.items())


RECONNECT_S = 1.0  #: psycopg_pool's ``reconnect_timeout`` for the API's pool (see :func:`open_pool`)


class ApiPool(AsyncConnectionPool):
    """The worker's pool, which also tells whether its latest connection attempts failed (:func:`unreachable`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, configure=self._connected, **kwargs)
        self.errors_at_success = 0  #: the pool's count of failed connection attempts at its latest success

    async def _connected(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.errors_at_success = int(self.get_stats().get("connections_errors", 0))


def unreachable(pool: AsyncConnectionPool) -> bool:
    """Whether ``pool`` failed to connect since it last connected (always ``False`` for a pool not an
    :class:`ApiPool`): the database is stopped, unreachable or refusing the role."""
    if not isinstance(pool, ApiPool):
        return False
    return int(pool.get_stats().get("connections_errors", 0)) > pool.errors_at_success


async def open_pool(url: str, settings: Settings, web: WebSettings) -> AsyncConnectionPool:
    """The worker's pool (an :class:`ApiPool`): opened without waiting, so a worker starts even while the
    database is away.

    psycopg_pool retries a lost connection with a doubling delay (1, 2, 4... s) until ``reconnect_timeout``;
    after an outage of a minute it would sleep for half a minute before noticing the database is back. Here the
    retries give up after :data:`RECONNECT_S` (one more try about a second after the first), and the next request
    that waits starts a new attempt at once, so requests succeed again within one to two seconds of the
    database's return, however long it was away.
    """
    pool: AsyncConnectionPool = ApiPool(
        url, min_size=web.pool_min, max_size=max(web.pool_max, web.pool_min), timeout=web.pool_timeout_s,
        open=False, name="sdi-api", reconnect_timeout=RECONNECT_S,
        kwargs={"autocommit": True, "connect_timeout": settings.connect_timeout,
                "options": connection_options(web), "keepalives": 1, "keepalives_idle": 10,
                "keepalives_interval": 5, "keepalives_count": 3})
    await pool.open(wait=False)
    return pool
