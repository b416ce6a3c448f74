"""Executing the site-selection process and its jobs: ``POST /processes/{id}/execution`` and ``/jobs``.

sdi runs executions itself (pygeoapi still describes the process at ``/processes``):

* the body is bounded (``SDI_MAX_BODY_BYTES``), must be a JSON object with an ``inputs`` object, and every
  input is checked before any work starts (:func:`sdi.publishing.process.prepare`: criteria size and layers —
  only published ones —, ``engine: dask`` only with a configured scheduler); a bad one is a 400;
* ``subscriber`` callbacks are refused: the server never requests a URL a client names;
* a synchronous execution takes a heavy-request slot; an asynchronous one (``Prefer: respond-async``) runs
  on one of ``SDI_ASYNC_JOBS`` threads of the worker (503 when they are all busy) and answers ``201`` with
  ``Location: /jobs/{id}``;
* the planning library connects as the read-only role, under the database role of the identity that asked (it
  reads only layers that identity may read), with ``SDI_PROCESS_TIMEOUT_S`` as its statement timeout; an
  asynchronous job runs as that identity and is visible only to it (:mod:`sdi.web.jobs`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sdi.errors import (
    FeatureNotFoundError,
    LayerNotFoundError,
    QueryError,
    SdiError,
    ServiceBusyError,
    database_failure,
)
from sdi.publishing.process import PROCESS_ID, Prepared, prepare, run_prepared
from sdi.query.params import check_parameters, parse_int
from sdi.settings import Settings
from sdi.web.features import client_base, params_of, runtime_of
from sdi.web.http import GEOJSON, HTML, JSON, json_bytes, language, negotiate
from sdi.web.jobs import JobStore, new_job_id, status_document
from sdi.web.pages import render
from sdi.web.runtime import Runtime, with_options

MAX_JSON_DEPTH = 32
MAX_BODY_INTEGER = 2**63 - 1  #: larger whole numbers are refused (no input is that big; math on them overflows)
MAX_PATH_SHOWN = 200  #: characters of a body location quoted in a message
MAX_JOBS_LISTED = 1000
RESULT_NOT_READY = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/result-not-ready"


def _where(path: str) -> str:
    """A location in the body for a message: ``the document`` for the root, at most :data:`MAX_PATH_SHOWN`
    characters."""
    if not path:
        return "the document"
    return path if len(path) <= MAX_PATH_SHOWN else path[:MAX_PATH_SHOWN] + "…"


def _segment(key: str) -> str:
    """A key as a step of a path in a message: printable and short."""
    return key[:40] if key.isprintable() else repr(key[:40])


def _check_tree(doc: Any, limit: int) -> None:
    """Refuse ``doc`` (400) when it nests deeper than ``limit``, a string or key in it holds a NUL character, or a
    number in it is not finite.

    One walk, with the path of each node (``inputs.criteria.constraints[0].where.in[1]``) for the message:
    PostgreSQL text cannot hold a NUL, so a NUL must never get as far as a query; and :func:`json.loads` reads
    ``NaN``, ``Infinity`` and ``1e400`` as floats that no weight, area or distance can be.
    """
    stack: list[tuple[Any, int, str]] = [(doc, 1, "")]
    while stack:
        current, depth, path = stack.pop()
        if depth > limit:
            raise QueryError(f"body: JSON nested more than {limit} levels deep")
        if isinstance(current, str):
            if "\x00" in current:
                raise QueryError(f"body: {_where(path)} contains a NUL character")
        elif isinstance(current, float) and not math.isfinite(current):
            raise QueryError(f"body: {_where(path)} is not a finite number")
        elif isinstance(current, int) and not isinstance(current, bool) and abs(current) > MAX_BODY_INTEGER:
            raise QueryError(f"body: {_where(path)} is out of range")
        elif isinstance(current, dict):
            if any("\x00" in key for key in current):
                raise QueryError(f"body: {_where(path)} has a key with a NUL character")
            stack.extend((v, depth + 1, f"{path}.{_segment(k)}" if path else _segment(k)) for k, v in current.items())
        elif isinstance(current, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(current))


async def read_execute_body(request: Request, max_bytes: int) -> dict[str, Any]:
    """The execute request: a JSON object of at most ``max_bytes``, at most :data:`MAX_JSON_DEPTH` deep, with no NUL
    character in any string or key, only finite numbers, and with an optional ``inputs`` object; else a
    :class:`QueryError` (400)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise QueryError(f"body: larger than {max_bytes:,} bytes")
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise QueryError("body: not a JSON document") from None
    if not isinstance(doc, dict):
        raise QueryError("body: expected a JSON object such as {\"inputs\": {...}}")
    _check_tree(doc, MAX_JSON_DEPTH)
    if doc.get("subscriber") is not None:
        raise QueryError("subscriber: callbacks are not supported; poll /jobs/{jobID} instead")
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict):
        raise QueryError("inputs: expected an object of named inputs")
    return doc


def process_settings(runtime: Runtime, role: str | None) -> Settings:
    """The planning library's settings: the read-only role, under ``role``, with the process's statement timeout."""
    cache: dict[str | None, Settings] = runtime.state.setdefault("process_settings", {})
    found = cache.get(role)
    if found is None:
        found = cache[role] = runtime.settings.model_copy(update={"database_url": with_options(
            runtime.settings.database_url, statement_timeout=int(runtime.web.process_timeout_s * 1000), role=role)})
    return found


T = TypeVar("T")


def with_503s(runtime: Runtime, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(*args, **kwargs)`` (the planning library, in a thread) with its database failures as 503s.

    Its statement timeout (``SDI_PROCESS_TIMEOUT_S``) is a :class:`ServiceBusyError` naming the limit, and an
    operational failure :func:`sdi.errors.database_failure` (unreachable or busy): one-line messages, never
    PostgreSQL's text.
    """
    try:
        return work(*args, **kwargs)
    except pg_errors.QueryCanceled as exc:
        raise ServiceBusyError(f"the process took longer than {runtime.web.process_timeout_s:g} s "
                               "(SDI_PROCESS_TIMEOUT_S); narrow its inputs or retry later") from exc
    except psycopg.OperationalError as exc:
        raise database_failure(exc.sqlstate) from exc


def _job_pool(runtime: Runtime) -> tuple[ThreadPoolExecutor, asyncio.Semaphore]:
    if "job_pool" not in runtime.state:
        runtime.state["job_pool"] = (ThreadPoolExecutor(runtime.web.async_jobs, thread_name_prefix="sdi-job"),
                                     asyncio.Semaphore(runtime.web.async_jobs))
    pool: tuple[ThreadPoolExecutor, asyncio.Semaphore] = runtime.state["job_pool"]
    return pool


async def execute(request: Request) -> Response:
    """``POST /processes/{id}/execution``."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    if request.path_params["process"] != PROCESS_ID:
        raise FeatureNotFoundError(f"no process {str(request.path_params['process'])[:80]!r}")
    doc = await read_execute_body(request, runtime.web.max_body_bytes)
    published = set(runtime.state["registry"].snapshot.records)  # what this identity may read
    settings = process_settings(runtime, await runtime.database_role())
    async with runtime.heavy():
        try:
            prepared = await run_in_threadpool(with_503s, runtime, prepare, doc.get("inputs", {}),
                                               published=published, scheduler=runtime.web.dask_scheduler,
                                               settings=settings)
        except LayerNotFoundError as exc:  # a layer the inputs name: a bad input, not a missing resource
            raise QueryError(str(exc)) from exc
    if "respond-async" not in request.headers.get("prefer", ""):
        async with runtime.heavy():
            result = await run_in_threadpool(with_503s, runtime, run_prepared, prepared, settings)
        return Response(json_bytes(result), media_type=GEOJSON)
    store: JobStore = runtime.state["jobs"]
    executor, slots = _job_pool(runtime)
    if slots.locked():
        raise ServiceBusyError("every job slot of this server is busy; retry shortly")
    await slots.acquire()  # free, so taken at once: nothing runs between the check and here (no await suspends)
    job_id = new_job_id()
    try:
        await store.expire()
        await store.create(job_id, PROCESS_ID, doc.get("inputs", {}))
        asyncio.get_running_loop().run_in_executor(executor, contextvars.copy_context().run, _run_job, runtime,
                                                   store, job_id, prepared, settings, slots)  # as who asked
    except BaseException:  # the job never started: its thread will not release the slot
        slots.release()
        raise
    base = client_base(request, runtime)
    job = await store.get(job_id)
    return Response(json_bytes(status_document(job or {"identifier": job_id, "process_id": PROCESS_ID,
                                                       "status": "accepted"}, base)),
                    status_code=201, media_type=JSON, headers={"Location": f"{base}/jobs/{job_id}",
                                                               "Preference-Applied": "respond-async"})


def _run_job(runtime: Runtime, store: JobStore, job_id: str, prepared: Prepared, settings: Settings,
             slots: asyncio.Semaphore) -> None:
    """A job's thread: run it, write its result file, record how it ended (a dismissed job's result is dropped)."""
    import datetime as dt

    def update(**fields: Any) -> bool:
        return bool(runtime.run_sync(store.update(job_id, **fields)))

    try:
        if not update(status="running", started=dt.datetime.now(dt.UTC), progress=10, message="running"):
            return
        try:
            result = with_503s(runtime, run_prepared, prepared, settings)
        except SdiError as exc:
            update(status="failed", finished=dt.datetime.now(dt.UTC), message=str(exc)[:1000])
            return
        except Exception as exc:  # a bug: the message names it; the traceback stays in the server
            update(status="failed", finished=dt.datetime.now(dt.UTC),
                   message=f"internal error ({type(exc).__name__}); see the server log")
            raise
        path = store.result_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(json_bytes(result))
        tmp.replace(path)
        if not update(status="successful", finished=dt.datetime.now(dt.UTC), progress=100,
                      message="finished", location=str(path), mimetype=GEOJSON):
            path.unlink(missing_ok=True)  # dismissed while running
    finally:
        runtime.loop.call_soon_threadsafe(slots.release)


async def jobs(request: Request) -> Response:
    """``GET /jobs`` (the identity's own; none for anonymous callers), ``GET /jobs/{id}``, ``DELETE /jobs/{id}``."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang", "limit", "offset"})
    store: JobStore = runtime.state["jobs"]
    base, lang = client_base(request, runtime), language(request)
    job_id = request.path_params.get("job")
    fmt = negotiate(request, {"json": JSON, "html": HTML})
    if job_id is None:
        params = params_of(request)
        limit = 100 if params.get("limit") is None else parse_int(params["limit"], "limit", 1, MAX_JOBS_LISTED)
        offset = 0 if params.get("offset") is None else parse_int(params["offset"], "offset", 0, 1_000_000)
        mine = await store.mine(limit, offset)
        doc: dict[str, Any] = {"jobs": [status_document(job, base) for job in mine],
                               "links": [{"rel": "self", "type": JSON, "title": "Jobs", "href": f"{base}/jobs?f=json"}]}
        if fmt == "html":
            return await render(runtime, base, lang, "jobs/index.html", {"jobs": doc, "offset": 0, "now": ""})
        return Response(json_bytes(doc), media_type=JSON)
    if request.method == "DELETE":
        job = await store.delete(str(job_id))
        if job is None:
            raise FeatureNotFoundError(f"no job {str(job_id)[:80]!r}")
        return Response(json_bytes({**status_document(job, base), "status": "dismissed",
                                    "message": "dismissed"}), media_type=JSON)
    job = await store.get(str(job_id))
    if job is None:
        raise FeatureNotFoundError(f"no job {str(job_id)[:80]!r}")
    doc = status_document(job, base)
    if fmt == "html":
        return await render(runtime, base, lang, "jobs/job.html", {"jobs": doc, "offset": 0, "now": ""})
    return Response(json_bytes(doc), media_type=JSON)


async def job_results(request: Request) -> Response:
    """``GET /jobs/{id}/results``: the ranked sites of a successful job."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), {"f", "lang"})
    store: JobStore = runtime.state["jobs"]
    job_id = str(request.path_params["job"])
    job = await store.get(job_id)
    if job is None:
        raise FeatureNotFoundError(f"no job {job_id[:80]!r}")
    if job["status"] != "successful":
        state = "failed: " + str(job.get("message") or "") if job["status"] == "failed" else job["status"]
        return Response(json_bytes({"type": RESULT_NOT_READY, "code": "NotFound",
                                    "description": f"job {job_id} has no results ({state})"}),
                        status_code=404, media_type=JSON)
    try:
        body = await run_in_threadpool(store.result_path(job_id).read_bytes)
    except OSError:
        raise FeatureNotFoundError(f"the results of job {job_id} are gone") from None
    return Response(body, media_type=GEOJSON)
