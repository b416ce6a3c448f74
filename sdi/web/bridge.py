"""pygeoapi for what sdi does not answer itself: landing page, conformance, coverages, records, processes, jobs.

pygeoapi is wrapped, never patched: its API functions (``pygeoapi.api.*``) are called with an
:class:`pygeoapi.api.API` built here from a *live* configuration: the server metadata (``base.yml`` or a
configuration written by ``sdi publish``) plus one resource per layer in the registry's current snapshot, with
the request's base URL. The snapshot is the identity's view (:mod:`sdi.web.registry`): pygeoapi knows only the
layers the caller may read, and its providers query under the caller's database role. API objects are cached per
(view version, base URL, language), so a load, reload, drop or access change shows on the next request that
follows the registry's check. sdi's own pygeoapi providers (records,
the feature and tile adapters) and the job manager receive the worker's :class:`~sdi.web.runtime.Runtime`
in their definitions and so share its connection pool.

pygeoapi 0.21 hands a provider its first configured language whatever the request asked, so the catalogue
provider's languages are listed with the requested one first.

pygeoapi logs every exception document it answers at ERROR, a client's mistake as much as a server's failure. Its log
records during a call are held (:data:`HELD_LOGS`, see :func:`hold`) and written only when the answer is a 5xx
or the call raised: a 4xx is the client's business, and its answer says why.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from sdi.errors import ConfigError
from sdi.publishing.config import CATALOGUE_ID, build_config, read_base, resolve_templates
from sdi.web.assets import default_base, package_templates
from sdi.web.http import exception_response
from sdi.web.pages import PageContext, pygeoapi_page, render
from sdi.web.registry import Snapshot
from sdi.web.runtime import Runtime

MAX_APIS = 16
LOGGER = logging.getLogger("sdi.web")
#: pygeoapi's log records of the call in progress in this context (``None``: no call), see :func:`hold`
HELD_LOGS: ContextVar[list[logging.LogRecord] | None] = ContextVar("sdi_pygeoapi_logs", default=None)
LANGUAGES = {"en": ["en-US", "zh"], "zh": ["zh", "en-US"]}  #: babel has no plain zh_HK locale


def server_base(runtime: Runtime) -> dict[str, Any]:
    """The server metadata (``server``, ``metadata``, ``logging``, process resources) the API is built from."""
    path = runtime.web.server_config or default_base()
    base = resolve_templates(read_base(path, runtime.web.basemap), path.parent)
    server = dict(base["server"])
    server["templates"] = package_templates(server.get("templates"))
    resources = {k: v for k, v in dict(base.get("resources") or {}).items()
                 if isinstance(v, dict) and v.get("type") == "process"}
    return {**base, "server": server, "resources": resources}


def live_config(runtime: Runtime, snapshot: Snapshot, base_url: str, lang: str) -> dict[str, Any]:
    """The pygeoapi configuration of this moment, for links under ``base_url``."""
    base = runtime.state["server_base"]
    keys = {layer_id: layer.primary_key for layer_id, layer in snapshot.layers.items()}
    config = build_config(base, list(snapshot.records.values()), runtime.settings, base_url, keys)
    server = config["server"]
    server["manager"] = {**server["manager"], "runtime": runtime}
    server.setdefault("limits", {})
    server["limits"] = {**server["limits"], "default_items": runtime.web.default_items,
                        "max_items": runtime.web.max_items, "on_exceed": "throttle"}
    for resource in config["resources"].values():
        if resource.get("type") == "process" and isinstance(resource.get("processor"), dict):
            resource["processor"] = {**resource["processor"], "runtime": runtime}
        for provider in resource.get("providers", []):
            if str(provider.get("name", "")).startswith("sdi."):
                provider["runtime"] = runtime
                provider["base_url"] = base_url
            if resource is config["resources"].get(CATALOGUE_ID):
                provider["languages"] = list(LANGUAGES[lang])
    return config


def served_language(languages: list[str], lang: str) -> str:
    """The server language (of ``languages``, as configured) of ``lang`` (``en`` or ``zh``, as
    :func:`sdi.web.http.language` decided), for pygeoapi.

    pygeoapi matches a requested language by itself and fails (a 500) on a plain ``zh`` or another Chinese
    territory when the server offers ``zh-HK`` (babel builds no ``zh_HK`` locale from its parts), so pygeoapi is
    always handed one of its own languages.
    """
    found = next((code for code in languages if code.lower().replace("_", "-").split("-")[0] == lang), None)
    return found or (languages[0] if languages else lang)


def hold(record: logging.LogRecord) -> bool:
    """Whether ``record`` is one of pygeoapi's during a call, held until its answer is known (for a log filter:
    a held record is not written now)."""
    held = HELD_LOGS.get()
    if held is None or not record.name.startswith("pygeoapi"):
        return False
    if not any(r is record for r in held):  # each handler's filter sees the record
        held.append(record)
    return True


def _release(held: list[logging.LogRecord]) -> None:
    """Write the held records (outside the call, so they are not held again)."""
    for record in held:
        logging.getLogger(record.name).handle(record)


def note_client_error(status: int, path: str, content: Any) -> None:
    """A 4xx from pygeoapi leaves no traceback (its held records are dropped) but one DEBUG line on ``sdi.web``,
    for whoever looks into a 400 that a server misconfiguration caused."""
    LOGGER.debug("pygeoapi answered %s for %s: %s", status, path, " ".join(str(content).split())[:300])


def format_allowed(asked: str | None, formats: tuple[str, ...] = ()) -> bool:
    """Whether pygeoapi can answer the format ``asked`` (``f=`` or the Accept header): none asked, one of
    pygeoapi's own, or one of ``formats`` ignoring case. (``APIRequest.is_valid`` compares the format as typed with
    the lower-cased list, so ``f=GTiff``, the name pygeoapi's coverage function needs, was refused.)"""
    from pygeoapi.api import FORMAT_TYPES

    if not asked or asked in FORMAT_TYPES:
        return True
    return asked.lower() in {f.lower() for f in formats}


class Bridge:
    """Cached pygeoapi API objects and the calls into them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._apis: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def api(self, base_url: str, lang: str) -> Any:
        """The pygeoapi API for the current snapshot, ``base_url`` and language (built on first use)."""
        from pygeoapi.api import API

        snapshot = self.runtime.state["registry"].snapshot
        key = (snapshot.version, base_url, lang)
        found = self._apis.get(key)
        if found is None:
            found = API(live_config(self.runtime, snapshot, base_url, lang), {})
            self._apis[key] = found
            while len(self._apis) > MAX_APIS:
                self._apis.popitem(last=False)
        else:
            self._apis.move_to_end(key)
        return found

    async def _run(self, request: Request, function: Callable[..., tuple[dict[str, str], int, Any]],
                   args: tuple[Any, ...],
                   base_url: str, lang: str, as_json: bool,
                   formats: tuple[str, ...] = ()) -> tuple[dict[str, str], int, Any]:
        """Run a ``pygeoapi.api`` function in a worker thread (``as_json``: with ``f=json`` whatever was asked; a
        requested language as one of the server's, whether asked with ``lang`` or ``Accept-Language``)."""
        from pygeoapi.api import APIRequest

        api = self.api(base_url, lang)
        asked = "lang" in request.query_params or "accept-language" in request.headers
        typed = request.query_params.get("f") or ""
        spelling = next((f for f in formats if f.lower() == typed.lower() and f != typed), None)
        if as_json or asked or spelling:  # pygeoapi gets one of its own languages (see served_language), maybe
            # f=json, and a format in the spelling its function expects (f=gtiff becomes GTiff)
            served = served_language(list(api.config["server"].get("languages") or []), lang)
            forced = "json" if as_json else spelling
            pairs = [(k, v) for k, v in request.query_params.multi_items()
                     if k != "lang" and not (forced and k == "f")]
            pairs += ([("lang", served)] if asked else []) + ([("f", forced)] if forced else [])
            body = await request.body()  # read once; each APIRequest reads the body of the request it is given

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"accept-language"]
            request = Request({**request.scope, "query_string": urlencode(pairs).encode("latin-1"),
                               "headers": headers}, receive)
        held: list[logging.LogRecord] = []
        token = HELD_LOGS.set(held)
        try:
            api_request = await APIRequest.from_starlette(request, api.locales)
            if not format_allowed(api_request.format, formats):
                result: tuple[dict[str, str], int, Any] = tuple(api.get_format_exception(api_request))
            else:
                result = await run_in_threadpool(function, api, api_request, *args)
        except BaseException:
            HELD_LOGS.reset(token)
            _release(held)
            raise
        HELD_LOGS.reset(token)
        if result[1] >= 500:
            _release(held)
        elif result[1] >= 400:
            note_client_error(result[1], request.url.path, result[2])
        return result

    async def call(self, request: Request, function: Callable[..., tuple[dict[str, str], int, Any]],
                   *args: Any, base_url: str, lang: str, formats: tuple[str, ...] = (),
                   page: PageContext | None = None) -> Response:
        """Answer ``request`` with a ``pygeoapi.api`` function; HTML (when asked and ``page`` is given) is
        rendered by sdi from the JSON pygeoapi returns (see :mod:`sdi.web.pages`)."""
        f = (request.query_params.get("f") or "").lower()
        wants_html = page is not None and (f == "html" or (not f and "text/html" in request.headers.get("accept", "")))
        headers, status, content = await self._run(request, function, args, base_url, lang, wants_html, formats)
        if status >= 500:  # pygeoapi's own 5xx documents: answered as sdi answers them, with no detail
            unavailable = status == 503 or "unavailable" in str(content).lower()
            return exception_response(503 if unavailable else 500,
                                      "the database is unavailable; retry shortly" if unavailable
                                      else "internal error; see the server log")
        if not wants_html or page is None:
            return to_response(headers, status, content)
        doc = json.loads(content) if isinstance(content, str | bytes) else content
        if status >= 400:
            return await render(self.runtime, base_url, lang, "exception.html", doc, status=status)
        template, data = pygeoapi_page(page.name, doc, page)
        return await render(self.runtime, base_url, lang, template, data, status=status)

    async def document(self, request: Request, function: Callable[..., tuple[dict[str, str], int, Any]],
                       *args: Any, base_url: str, lang: str) -> dict[str, Any]:
        """The JSON document a ``pygeoapi.api`` function answers (``f=json``), as a dict."""
        _, status, content = await self._run(request, function, args, base_url, lang, True)
        if status != 200:
            raise ConfigError(f"pygeoapi answered {status} for {request.url.path}")
        return dict(json.loads(content))


def to_response(headers: dict[str, str] | None, status: int, content: Any) -> Response:
    """A Starlette response from what a pygeoapi API function returns."""
    headers = dict(headers or {})
    media = headers.pop("Content-Type", None) or "application/json"
    if isinstance(content, dict):
        return JSONResponse(content, status_code=status, headers=headers, media_type=media)
    if media.startswith("text/html"):
        return HTMLResponse(content, status_code=status, headers=headers)
    return Response(content, status_code=status, headers=headers, media_type=media)
