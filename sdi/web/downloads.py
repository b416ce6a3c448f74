"""``/collections/{id}/download/{format}``: a vector layer's download file, made on first request, then cached.

The file of each (layer, load, format) is made once (:class:`sdi.distribution.cache.DownloadCache`, under
``SDI_DATA_DIR/downloads``), in a worker thread within a heavy-request slot, by one worker process at a time; later
requests (from any worker) stream the file. A build is not abandoned when its client goes away: the slot stays held
until the file is made, so builds stay bounded. Responses carry ``Content-Disposition``, ``Content-Length``, a strong
``ETag`` (the SHA-256), ``Repr-Digest`` and ``Digest`` (SHA-256) and ``Accept-Ranges`` (ranges resume a broken
download). They are never compressed on the fly (the compression middleware leaves attachments alone), so
length, ranges and digest hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from sdi.access.audit import note_features
from sdi.distribution.cache import Download, DownloadCache
from sdi.distribution.formats import FORMATS, Format
from sdi.errors import FeatureNotFoundError, GeometryError
from sdi.query.layer import LayerMeta
from sdi.query.params import check_parameters
from sdi.web.features import params_of, runtime_of
from sdi.web.http import not_modified
from sdi.web.runtime import Runtime, with_options


def download_cache(runtime: Runtime) -> DownloadCache:
    """The worker's view of the download cache (``SDI_DATA_DIR/downloads``)."""
    cache: DownloadCache | None = runtime.state.get("downloads")
    if cache is None:
        cache = runtime.state["downloads"] = DownloadCache.of(runtime.settings)
    return cache


def known_lengths(runtime: Runtime, layer: LayerMeta) -> Mapping[str, int]:
    """Format id → size of the layer's download files already made for its current load (for link ``length``)."""
    return download_cache(runtime).lengths(layer.id, layer.load_id)


class OpenFileResponse(FileResponse):
    """A :class:`FileResponse` of a file opened before the response starts, so a file removed meanwhile (a newer
    load's file replacing it) is still sent whole."""

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        import os

        self._file = file
        super().__init__(file.name, stat_result=os.fstat(file.fileno()), **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self._file.seek(0)
        yield anyio.wrap_file(self._file)


async def _build(runtime: Runtime, layer: LayerMeta, fmt: Format) -> Download:
    """The layer's file of ``fmt``, made in a heavy slot; concurrent requests of a worker share one build."""
    builds: dict[tuple[str, int, str], asyncio.Future[Download]] = runtime.state.setdefault("download_builds", {})
    key = (layer.id, layer.load_id, fmt.id)
    task = builds.get(key)
    if task is None:
        async def build() -> Download:
            async with runtime.heavy():  # read under the role of the identity that asked (it may read the layer)
                settings = runtime.settings.model_copy(update={"database_url": with_options(
                    runtime.settings.database_url, role=await runtime.database_role())})
                return await run_in_threadpool(download_cache(runtime).ensure, settings, layer.id, fmt,
                                               statement_timeout_ms=runtime.web.statement_timeout_ms)

        task = builds[key] = asyncio.ensure_future(build())
        task.add_done_callback(lambda t: (builds.pop(key, None), t.cancelled() or t.exception()))
    return await asyncio.shield(task)  # a client that leaves does not stop the build (it holds its slot)


def _headers(found: Download, max_age: int) -> dict[str, str]:
    headers = {"ETag": f'"{found.sha256}"', "Cache-Control": f"public, max-age={max_age}, no-transform",
               "Repr-Digest": f"sha-256=:{found.sha256_base64}:", "Digest": f"SHA-256={found.sha256_base64}",
               "X-Load-Id": str(found.load_id)}
    return headers


async def download(request: Request) -> Response:
    """``GET /collections/{id}/download/{format}`` (and ``HEAD``); 404 for an unknown layer or format."""
    runtime = runtime_of(request)
    check_parameters(params_of(request), set())
    layer = await runtime.state["registry"].layer(request.path_params["collection"])
    name = str(request.path_params["format"])
    fmt = FORMATS.get(name)
    if fmt is None:
        raise FeatureNotFoundError(f"no download format {name[:40]!r}; use one of {', '.join(FORMATS)}")
    cache = download_cache(runtime)
    for _ in range(2):  # a second time when the file went away between finding and opening it
        found = cache.find(layer.id, layer.load_id, fmt)
        if found is None:
            try:
                found = await _build(runtime, layer, fmt)
            except GeometryError as exc:  # a layer this format cannot hold: no such download
                raise FeatureNotFoundError(str(exc)) from exc
        headers = _headers(found, runtime.web.cache_max_age_s)
        note_features(found.features)
        if not_modified(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        try:
            file = open(found.path, "rb")  # noqa: SIM115  # closed by the response
        except FileNotFoundError:
            cache.forget(found)
            continue
        return OpenFileResponse(file, headers=headers, media_type=fmt.media_type,
                                filename=fmt.filename(layer.id))
    raise FeatureNotFoundError(f"the {fmt.id} download of {layer.id} is being replaced; retry")
