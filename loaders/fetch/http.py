"""HTTP for harvesting: one session per layer with timeouts, retries with back-off, a byte cap and
conditional GET.

Every request of one layer's fetch goes through one :class:`Client`:

- **Timeouts**: ``SDI_FETCH_TIMEOUT_S`` to connect and between bytes; ``SDI_FETCH_DEADLINE_S`` for a whole answer.
- **Retries**: connection errors, timeouts, answers cut short, HTTP 5xx and 429 are retried ``SDI_FETCH_RETRIES``
  times, after ``SDI_FETCH_BACKOFF_S`` doubled at each retry (with jitter; ``Retry-After`` honoured up to 60 s).
  Other 4xx answers fail at once.
- **Size**: all answers for one layer together may be at most ``SDI_FETCH_MAX_BYTES`` (decoded bytes, so a
  compressed bomb is stopped too); a ``Content-Length`` over what is left is refused before reading.
- **Conditional GET**: :meth:`Client.download` sends ``If-None-Match`` / ``If-Modified-Since`` from the previous
  fetch and reports a ``304`` as not modified.

Messages name URLs through :func:`shown_url` (user information and token-like query parameters masked) and never
repeat a library's text that may hold the full URL.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
import urllib3

from sdi import __version__
from sdi.errors import SdiError
from sdi.settings import Settings

_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 60.0
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
#: Query parameters masked in messages (ArcGIS tokens, API keys, signatures, passwords).
_SECRET_PARAMS = re.compile(r"token|key|secret|password|passwd|pwd|sig|signature|auth|credential", re.IGNORECASE)


class FetchError(SdiError, ConnectionError):
    """A harvested source could not be fetched (unreachable, timed out, an HTTP error, too large, malformed)."""


def shown_url(url: str) -> str:
    """``url`` for messages: the password of user information and token-like query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.search(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe=",:/*=")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Validators:
    """What a previous fetch of a URL answered, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Download:
    """A response body saved to a file, with its digest and validators."""

    path: Path
    sha256: str
    size: int
    content_type: str
    validators: Validators
    disposition_name: str | None  #: the file name a ``Content-Disposition`` header gives, if any


class _Retry(Exception):
    """A try that may be retried; ``reason`` is the user-safe text."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class Client:
    """One layer's HTTP session: see the module docstring.

    Parameters
    ----------
    settings
        The ``SDI_FETCH_*`` settings.
    label
        How messages name the layer (its YAML file).
    """

    def __init__(self, settings: Settings, label: str) -> None:
        self.settings, self.label = settings, label
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.fetch_user_agent or f"hk-sdi/{__version__} (sdi sync)"
        self.used = 0  #: bytes received so far, every answer together
        self.requests = 0  #: requests sent, retries included

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail(self, url: str, problem: str) -> FetchError:
        """A :class:`FetchError` naming the layer, the URL and ``problem``."""
        return FetchError(f"{self.label}: {shown_url(url)}: {problem}")

    # --- requests with retries -------------------------------------------------------------------------------

    def _pause(self, attempt: int, wait: float | None) -> None:
        backoff = self.settings.fetch_backoff_s * (2**attempt) * random.uniform(0.75, 1.25)
        time.sleep(min(_MAX_RETRY_AFTER_S, wait) if wait is not None else backoff)

    def _open(self, url: str, params: Mapping[str, Any] | None, headers: Mapping[str, str]) -> requests.Response:
        """Send one GET (streamed); classify what goes wrong as retryable or not."""
        self.requests += 1
        timeout = self.settings.fetch_timeout_s
        try:
            response = self.session.get(url, params=params, headers=dict(headers), stream=True,
                                        timeout=(timeout, timeout))
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out after {timeout:g} s (SDI_FETCH_TIMEOUT_S)") from None
        except requests.exceptions.SSLError:
            raise self.fail(url, "TLS certificate or handshake failed") from None
        except requests.exceptions.ConnectionError as exc:
            raise _Retry(_connection_problem(exc)) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise self.fail(url, f"not a URL that can be fetched ({type(exc).__name__})") from None
        except requests.exceptions.TooManyRedirects:
            raise self.fail(url, "too many redirects") from None
        if response.status_code in _RETRY_STATUS:
            wait = _retry_after(response.headers.get("Retry-After"))
            response.close()
            raise _Retry(f"HTTP {response.status_code} {response.reason or ''}".strip(), wait)
        return response

    def _body(self, url: str, response: requests.Response) -> Iterator[bytes]:
        """The (decoded) body in chunks, within the byte cap and the deadline."""
        cap = self.settings.fetch_max_bytes
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and "Content-Encoding" not in response.headers \
                and self.used + int(length) > cap:
            response.close()
            raise self.fail(url, f"answer of {int(length):,} bytes is over SDI_FETCH_MAX_BYTES ({cap:,} bytes "
                                 f"for one layer)")
        deadline = time.monotonic() + self.settings.fetch_deadline_s
        try:
            for chunk in response.iter_content(_CHUNK):
                self.used += len(chunk)
                if self.used > cap:
                    raise self.fail(url, f"more than SDI_FETCH_MAX_BYTES ({cap:,} bytes) for one layer; refused "
                                         f"while downloading")
                if time.monotonic() > deadline:
                    raise _Retry(f"answer took more than {self.settings.fetch_deadline_s:g} s (SDI_FETCH_DEADLINE_S)")
                yield chunk
        except requests.exceptions.ConnectionError as exc:  # a read timeout while streaming
            if "timed out" in str(exc).lower() or "timeout" in type(exc.__context__).__name__.lower():
                raise _Retry(f"timed out after {self.settings.fetch_timeout_s:g} s (SDI_FETCH_TIMEOUT_S) "
                             f"while receiving") from None
            raise _Retry("the connection broke while receiving") from None
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError):
            raise _Retry("the answer was cut short (fewer bytes than announced)") from None
        except requests.exceptions.ContentDecodingError:
            raise self.fail(url, "the compressed answer could not be decoded") from None
        finally:
            response.close()

    def _request(self, url: str, params: Mapping[str, Any] | None, headers: Mapping[str, str],
                 consume: Any) -> Any:
        """GET ``url`` and pass the open response to ``consume``, retrying what may be retried."""
        last = ""
        tries = self.settings.fetch_retries + 1
        for attempt in range(tries):
            used = self.used
            try:
                response = self._open(url, params, headers)
                return consume(response)
            except _Retry as exc:
                self.used = used  # a retried answer is downloaded again; count it once
                last = exc.reason
                if attempt + 1 < tries:
                    self._pause(attempt, exc.wait)
        raise self.fail(url, f"{last} ({tries} {'try' if tries == 1 else 'tries'})")

    def _check_status(self, url: str, response: requests.Response) -> None:
        if response.status_code >= 400:
            detail = _error_detail(response)
            response.close()
            raise self.fail(url, f"HTTP {response.status_code} {response.reason or ''}".strip() + detail)

    # --- what the services use -------------------------------------------------------------------------------

    def download(self, url: str, folder: Path, previous: Validators | None = None) -> Download | None:
        """Save the body of ``url`` to a file in ``folder``; ``None`` when the server answers ``304``.

        Parameters
        ----------
        previous
            Validators of an earlier fetch of the same URL whose data is live: sent as ``If-None-Match`` and
            ``If-Modified-Since``.

        Raises
        ------
        FetchError
            After the retries, or at once for a 4xx answer or a body over the byte cap.
        """
        headers: dict[str, str] = {}
        if previous is not None and previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous is not None and previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
        target = folder / "download.part"

        def consume(response: requests.Response) -> Download | None:
            if response.status_code == 304:
                response.close()
                return None
            self._check_status(url, response)
            digest, size = hashlib.sha256(), 0
            with target.open("wb") as out:
                for chunk in self._body(url, response):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            headers_ = response.headers
            return Download(target, digest.hexdigest(), size, headers_.get("Content-Type", ""),
                            Validators(headers_.get("ETag"), headers_.get("Last-Modified")),
                            _disposition_name(headers_.get("Content-Disposition")))

        result: Download | None = self._request(url, None, headers, consume)
        return result

    def get_bytes(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[bytes, requests.Response]:
        """The whole body of ``url`` (with ``params``) in memory, within the byte cap, and the response."""

        def consume(response: requests.Response) -> tuple[bytes, requests.Response]:
            self._check_status(url, response)
            return b"".join(self._body(url, response)), response

        result: tuple[bytes, requests.Response] = self._request(url, params, {}, consume)
        return result

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """The JSON document at ``url``.

        Raises
        ------
        FetchError
            As :meth:`download`, or when the body is not JSON.
        """
        body, response = self.get_bytes(url, params)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise self.fail(response.url or url, f"answered {kind}, not JSON ({len(body):,} bytes)") from None


def _connection_problem(exc: requests.exceptions.ConnectionError) -> str:
    """A user-safe description of a connection error (the library's text holds the whole URL)."""
    text = str(exc).lower()
    for needle, said in (("refused", "connection refused"), ("name or service not known", "unknown host"),
                         ("nodename nor servname", "unknown host"), ("temporary failure in name", "unknown host"),
                         ("network is unreachable", "network unreachable"), ("reset by peer", "connection reset"),
                         ("remotedisconnected", "the server closed the connection without answering"),
                         ("timed out", "timed out")):
        if needle in text:
            return said
    return "connection failed"


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), if any."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(response: requests.Response) -> str:
    """A short, printable excerpt of an error body (OGC exception text, JSON ``description``), or ``""``."""
    try:
        raw = response.raw.read(4096, decode_content=True) or b""
    except Exception:  # the body is only a courtesy
        return ""
    text = raw.decode("utf-8", errors="replace")
    match = re.search(r"<(?:\w+:)?ExceptionText>(.*?)</", text, re.DOTALL)
    if match:
        text = match.group(1)
    else:
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                text = str(data.get("description") or data.get("detail") or data.get("message") or "")
        except ValueError:
            text = "" if "<" in text else text
    text = " ".join(text.split())[:200]
    return f": {text}" if text else ""


def _disposition_name(value: str | None) -> str | None:
    """The file name in a ``Content-Disposition`` header (``filename=`` or ``filename*=UTF-8''``), if any."""
    if not value:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*''([^;]+)", value) or re.search(r'filename\s*=\s*"?([^";]+)"?', value)
    if not match:
        return None
    from urllib.parse import unquote

    name = Path(unquote(match.group(1).strip())).name
    return name or None
