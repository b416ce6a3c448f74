"""HTTP as OGC API clients expect it: links from the request, format negotiation, ETags, errors.

* **Links** use ``SDI_PUBLIC_URL`` when it is set; otherwise the request's own scheme, ``Host`` and root path,
  and, from a trusted proxy (``SDI_FORWARDED_ALLOW_IPS``), ``X-Forwarded-Proto``, ``-Host`` and ``-Prefix``.
* **Formats** come from ``f`` (``json``, ``html`` and the route's others) or else from ``Accept``.
* **ETags** are weak (one per representation whatever the content coding) and derive from the layer's load
  id and the normalised request, so they are known before any SQL runs and a ``304`` costs no database work.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sdi.catalogue.store import rebase
from sdi.errors import QueryError, SdiError, http_status

__all__ = ["rebase"]

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*/?$")
JSON = "application/json"
GEOJSON = "application/geo+json"
HTML = "text/html"
OGC_CODES = {400: "InvalidParameterValue", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
             406: "NotAcceptable", 429: "TooManyRequests", 503: "ServiceUnavailable"}
RETRY_AFTER_S = 5


def _trusted(request: Request, allow: Iterable[str]) -> bool:
    client = request.client.host if request.client else ""
    for item in allow:
        if item == "*":
            return True
        try:
            if ipaddress.ip_address(client) in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


def base_url(request: Request, public_url: str | None, forwarded_allow: Iterable[str] = ()) -> str:
    """The API's root URL as this client reaches it (no trailing slash)."""
    if public_url:
        return public_url.rstrip("/")
    scheme = request.url.scheme
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    prefix = str(request.scope.get("root_path") or "")
    if _trusted(request, forwarded_allow):
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else scheme
        fwd_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        host = fwd_host or host
        fwd_prefix = request.headers.get("x-forwarded-prefix", "").split(",")[0].strip()
        if fwd_prefix and _PREFIX.match(fwd_prefix):
            prefix = fwd_prefix.rstrip("/") + prefix
    if not _HOST.match(host):
        host = f"{request.url.hostname or '127.0.0.1'}" + (f":{request.url.port}" if request.url.port else "")
    return f"{scheme}://{host}{prefix.rstrip('/')}"


def query_string(params: dict[str, Any]) -> str:
    """``?a=1&b=2`` (empty when there are no parameters)."""
    pairs = [(k, str(v)) for k, v in params.items() if v is not None]
    return "?" + urlencode(pairs) if pairs else ""


def negotiate(request: Request, offered: dict[str, str], default: str = "json") -> str:
    """The output format: ``f`` when given (400 if not offered), else the best ``Accept`` match, else ``default``.

    Parameters
    ----------
    offered
        Format name (the value of ``f``) → media type, in order of preference.
    """
    f = request.query_params.get("f")
    if f is not None:
        name = f.strip().lower()
        if name == "geojson" and "json" in offered:
            name = "json"
        if name not in offered:
            raise QueryError(f"f: {f[:40]!r} is not offered here; use one of {', '.join(offered)}")
        return name
    accept = request.headers.get("accept", "")
    best, best_q = default, 0.0
    for part in accept.split(","):
        media, _, rest = part.strip().partition(";")
        q = 1.0
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        for name, offered_type in offered.items():
            if q > best_q and (media == offered_type or (media == JSON and offered_type == GEOJSON)):
                best, best_q = name, q
    return best


def language(request: Request) -> str:
    """``"zh"`` when ``lang`` (or ``Accept-Language``) asks for Chinese, else ``"en"``."""
    lang = request.query_params.get("lang")
    if lang is None:
        lang = request.headers.get("accept-language", "").split(",")[0]
    return "zh" if lang.strip().lower().startswith("zh") else "en"


def etag(*parts: object) -> str:
    """A weak ETag over ``parts``."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8", "replace"), digest_size=12).hexdigest()
    return f'W/"{digest}"'


def not_modified(request: Request, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weak comparison) or ``*``."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    wanted = tag.removeprefix("W/")
    return any(t.strip() == "*" or t.strip().removeprefix("W/") == wanted for t in header.split(","))


def cache_headers(tag: str, max_age: int) -> dict[str, str]:
    """``ETag``, ``Cache-Control`` and ``Vary`` for a cacheable representation."""
    return {"ETag": tag, "Cache-Control": f"public, max-age={max_age}",
            "Vary": "Accept, Accept-Encoding, Accept-Language"}


def not_modified_response(tag: str, max_age: int) -> Response:
    """``304 Not Modified`` with the validators."""
    return Response(status_code=304, headers=cache_headers(tag, max_age))


def json_bytes(doc: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def exception_response(status: int, description: str,
                       headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An OGC API exception document (JSON) with ``Retry-After`` on 503, and ``headers`` (e.g. a 405's ``Allow``)."""
    code = OGC_CODES.get(status, "ServerError" if status >= 500 else "InvalidParameterValue")
    sent = dict(headers or {})
    if status == 503:
        sent.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse({"code": code, "type": code, "description": description}, status_code=status,
                        headers=sent or None)


async def sdi_error(request: Request, exc: Exception) -> Response:
    """:class:`SdiError` → its HTTP status (:data:`sdi.errors.HTTP_STATUS`) with the one-line message."""
    status = http_status(exc)
    message = str(exc) if (isinstance(exc, SdiError) and status < 500) or status == 503 else \
        "internal error; see the server log"
    return exception_response(status, message)


def add_vary(headers: MutableHeaders, name: str) -> None:
    """Add ``name`` to the ``Vary`` header of ``headers`` unless it is there already."""
    present = [v.strip().lower() for v in headers.get("vary", "").split(",") if v.strip()]
    if name.lower() not in present and "*" not in present:
        headers.add_vary_header(name)
