"""Who is asking: ``Authorization: Bearer <API key or OIDC token>``, checked before any route runs.

* No ``Authorization`` header: anonymous (public layers only).
* ``Bearer sdi_<id>_<secret>``: an API key (:mod:`sdi.access.keys`), looked up as the login role and trusted for
  ``SDI_KEY_CACHE_S`` seconds, so a revoked key is refused within that time.
* ``Bearer <JWT>``: an OpenID Connect token, verified against the identity provider's keys
  (:mod:`sdi.access.oidc`); its groups claim gives the groups. Verified tokens are remembered until they expire.
* Anything else, an unknown or revoked key, a bad or expired token: ``401`` with ``WWW-Authenticate: Bearer``
  (RFC 6750), the same answer for every route, before the route runs, so nothing about the layers shows.

Each request then runs as its identity (:data:`sdi.access.identity.CURRENT`): the registry shows it only the
layers it may read, and its queries run under its database role (:mod:`sdi.web.runtime`). Requests per minute
are limited per key, per token subject and (when ``SDI_ANONYMOUS_RATE_LIMIT`` is set) per anonymous client
address, in each worker (``429`` with ``Retry-After``); failed authentications are limited per client address.
Responses say ``Vary: Authorization``, and those to an identity are ``Cache-Control: private``. Keys and tokens
never reach a log line or an error message.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdi.access import audit
from sdi.access.identity import ANONYMOUS, CURRENT, SYSTEM, Identity, acting_as
from sdi.access.keys import LOOKUP_SQL, identity_of, looks_like_key, parse
from sdi.errors import AuthenticationError, RateLimitedError, SdiError, http_status
from sdi.web.http import add_vary, exception_response

REALM = "HK SDI"
MAX_CACHED = 10_000  #: keys and tokens each worker remembers
FAILED_AUTH_PER_MIN = 60  #: failed authentications one client address may make per minute, per worker


class RateLimiter:
    """Token buckets: ``per_minute`` requests a minute, in bursts of up to that many, per key."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after(self, key: str, per_minute: int) -> float | None:
        """Take one request from ``key``'s bucket: ``None`` when allowed, else the seconds until it would be."""
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - at) * per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * 60.0 / per_minute
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return None


class _Expiring:
    """A bounded map whose entries expire."""

    def __init__(self, size: int = MAX_CACHED) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Any]:
        found = self._items.get(key)
        if found is None or found[0] <= time.monotonic():
            self._items.pop(key, None)
            return False, None
        return True, found[1]

    def put(self, key: str, value: Any, ttl_s: float) -> None:
        self._items[key] = (time.monotonic() + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class Authenticator:
    """A worker's identities: key rows and verified tokens, remembered for a while; rate limits."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.keys = _Expiring()
        self.tokens = _Expiring()
        self.limits = RateLimiter()

    async def identity(self, authorization: str | None) -> Identity:
        """The identity of an ``Authorization`` header value (``None``: anonymous).

        Raises
        ------
        AuthenticationError
            For another scheme, a malformed, unknown or revoked key, or a token that does not verify.
        """
        if authorization is None:
            return ANONYMOUS
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise AuthenticationError("send an API key or a token as `Authorization: Bearer <key or token>`")
        if looks_like_key(credentials):
            return await self._key(credentials)
        return await self._token(credentials)

    async def _key(self, text: str) -> Identity:
        parsed = parse(text)
        if parsed is None:
            raise AuthenticationError("the API key is malformed")
        key_id, secret = parsed
        known, row = self.keys.get(key_id)
        if not known:
            with acting_as(SYSTEM):
                rows = await self.runtime.fetch_dicts(LOOKUP_SQL, {"id": key_id})
            row = rows[0] if rows else None
            self.keys.put(key_id, row, self.runtime.web.key_cache_s)
        found = identity_of(row, secret)
        if found is None:
            raise AuthenticationError("the API key is unknown or revoked")
        return found

    async def _token(self, token: str) -> Identity:
        verifier = self.runtime.state.get("oidc")
        if verifier is None or not verifier.enabled:
            raise AuthenticationError("this server accepts API keys only (no identity provider is configured)")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        known, found = self.tokens.get(digest)
        if known:
            return found
        claims = await run_in_threadpool(verifier.verify, token)
        found = Identity("token", f"oidc:{claims.issuer}#{claims.subject}", claims.name, frozenset(claims.groups))
        self.tokens.put(digest, found, max(0.0, min(claims.expires_at - time.time(), 3600.0)))
        return found

    def check_rate(self, identity: Identity, client: str) -> None:
        """Raise :class:`RateLimitedError` when ``identity`` (or an anonymous ``client``) is over its limit."""
        web = self.runtime.web
        if identity.kind == "key":
            key, limit = identity.id, identity.rate_limit or web.key_rate_limit
        elif identity.kind == "token":
            key, limit = identity.id, web.token_rate_limit
        elif web.anonymous_rate_limit:
            key, limit = f"client:{client}", web.anonymous_rate_limit
        else:
            return
        wait = self.limits.retry_after(key, limit)
        if wait is not None:
            raise RateLimitedError(f"more than {limit} requests a minute; retry in {math.ceil(wait)} s", wait)

    def check_failures(self, client: str) -> None:
        """Count a failed authentication from ``client``; raise when it made too many."""
        wait = self.limits.retry_after(f"failed:{client}", FAILED_AUTH_PER_MIN)
        if wait is not None:
            raise RateLimitedError(f"too many failed authentications; retry in {math.ceil(wait)} s", wait)


def _challenge(exc: SdiError) -> dict[str, str]:
    description = str(exc).replace('"', "'")
    return {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'}


class AuthMiddleware:
    """See the module docstring; inside CORS (preflights need no identity), outside every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        auth: Authenticator | None = runtime.state.get("auth") if runtime is not None else None
        if auth is None:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        header = Headers(scope=scope).get("authorization")
        try:
            try:
                identity = await auth.identity(header)
            except AuthenticationError:
                auth.check_failures(client)
                raise
            auth.check_rate(identity, client)
        except SdiError as exc:
            status = http_status(exc)
            response = exception_response(status, str(exc) if status < 500 or status == 503 else "internal error")
            if isinstance(exc, AuthenticationError):
                response.headers.update(_challenge(exc))
            elif isinstance(exc, RateLimitedError):
                response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            response.headers["Vary"] = "Authorization"
            await response(scope, receive, send)
            return
        status = 0

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(raw=message["headers"])
                add_vary(headers, "Authorization")
                if identity.authenticated:
                    cache = headers.get("cache-control")
                    headers["Cache-Control"] = (cache.replace("public", "private") if cache and "public" in cache
                                                else cache or "private")
            await send(message)

        started = time.time()
        reads, noting = audit.reading()
        token = CURRENT.set(identity)
        try:
            await self.app(scope, receive, wrapped)
        finally:
            CURRENT.reset(token)
            audit.stop(noting)
            if reads.layers and identity.kind != "system":
                log = runtime.state.get("audit") if runtime is not None else None
                if log is not None:
                    path = scope.get("path", "")
                    query = scope.get("query_string", b"").decode("latin-1")
                    log.add(started, identity, reads, audit.action_of(path),
                            path + (f"?{query}" if query else ""), status or 499)
