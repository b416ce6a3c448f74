"""OpenID Connect bearer tokens: verify a JWT from the identity provider (IdP) and read who sent it.

Rules:

- OIDC is on when ``SDI_OIDC_ISSUER`` is set; a token must then carry that ``iss``, one of the
  ``SDI_OIDC_AUDIENCE`` values in ``aud``, a ``sub`` and an ``exp`` (checked with ``SDI_OIDC_LEEWAY_S``).
- Only asymmetric algorithms are accepted (``none`` and ``HS*`` are refused as settings). A key with an
  ``alg`` verifies only that algorithm; an RSA key without one verifies ``RS*``/``PS*``; EC and OKP keys
  their curve's algorithm. Symmetric (``oct``) and encryption (``use: enc``) keys are ignored.
- The key is picked by the token's ``kid``; a token without one only when the JWKS has exactly one key.
- Keys come from ``SDI_OIDC_JWKS_URL`` (cached ``SDI_OIDC_JWKS_REFRESH_S``; an unknown ``kid`` triggers one
  refetch, at most once per 30 s) or ``SDI_OIDC_JWKS_FILE`` (re-read when the file changes). When a
  refresh fails the cached keys stay in use and the next try is 30 s later; with no keys at all the
  request is answered 503.
- Groups are lower-cased; names not matching ``^[a-z][a-z0-9_]{0,39}$`` (such as Keycloak's full paths
  ``/a/b``) are ignored; a token without the groups claim is a valid identity with no groups.
- Failures are :class:`~sdi.errors.AuthenticationError` with a short message that never quotes the token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
import requests
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidSubjectError
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from sdi.access.groups import GROUP_PATTERN
from sdi.errors import AuthenticationError, ConfigError, ServiceBusyError

logger = logging.getLogger(__name__)

REFETCH_FLOOR_S = 30.0  #: least time between two refetches of the JWKS (unknown ``kid``, failed refresh)
_MAX_JWKS_BYTES = 1_000_000
_MAX_TOKEN_CHARS = 65_536
_GROUP = re.compile(GROUP_PATTERN)
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_BUSY = "the identity provider's keys cannot be fetched; retry shortly"
_monotonic = time.monotonic  # tests replace it to move time on


class OidcSettings(BaseSettings):
    """OIDC settings (``SDI_OIDC_*`` variables or ``.env``); invalid values raise :class:`ConfigError`."""

    model_config = SettingsConfigDict(env_prefix="SDI_OIDC_", env_file=".env", extra="ignore")

    issuer: str | None = Field(None, description="The `iss` a token must carry (exactly); OIDC is off when unset.")
    audience: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accepted `aud` values (JSON list or comma-separated); required with issuer.")
    jwks_url: str | None = Field(None, description="URL of the IdP's JWKS (https, or http on loopback only).")
    jwks_file: Path | None = Field(None, description="A local JWKS file instead of jwks_url; re-read when it changes.")
    groups_claim: str = Field("groups", description="Claim with the groups: a name or a dotted path such as "
                                                    "`realm_access.roles` (Keycloak); a list or a spaced string.")
    name_claim: str = Field("preferred_username", description="Claim with the name; else `email`, else `sub`.")
    algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
        description="Accepted signature algorithms; `none` and HS* (symmetric) are refused.")
    leeway_s: float = Field(30, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat (seconds).")
    timeout_s: float = Field(5, gt=0, le=60, description="Timeout of a JWKS fetch (seconds).")
    jwks_refresh_s: float = Field(300, ge=REFETCH_FLOOR_S, description="How long fetched JWKS keys are cached (s).")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            cause = (err.get("ctx") or {}).get("error")
            where = f"SDI_OIDC_{str(err['loc'][0]).upper()}" if err["loc"] else "SDI_OIDC_*"
            raise ConfigError(str(cause) if isinstance(cause, ConfigError) else f"{where}: {err['msg']}") from None
        except SettingsError as exc:
            raise ConfigError(f"OIDC settings: {exc}") from None

    @field_validator("audience", "algorithms", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """Read a list from the environment: JSON (``["a", "b"]``) or names separated by commas or spaces."""
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else re.split(r"[\s,]+", value.strip())
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        """Refuse ``none``, symmetric and unknown algorithms: with HS* the public key would act as the secret."""
        known = set(get_default_algorithms()) - {"none"}
        for name in value:
            if name.lower() == "none" or name.upper().startswith("HS"):
                raise ConfigError(f"SDI_OIDC_ALGORITHMS: {name} is refused; only asymmetric algorithms are safe "
                                  "with a public JWKS")
            if name not in known:
                raise ConfigError(f"SDI_OIDC_ALGORITHMS: unknown algorithm {name!r}")
        if not value:
            raise ConfigError("SDI_OIDC_ALGORITHMS: name at least one algorithm")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        """With an issuer, require an audience and exactly one JWKS source (an https or loopback URL)."""
        if self.issuer is None:
            return self
        if not self.audience:
            raise ConfigError("SDI_OIDC_AUDIENCE: set the accepted `aud` values when SDI_OIDC_ISSUER is set")
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ConfigError("SDI_OIDC_JWKS_URL / SDI_OIDC_JWKS_FILE: set exactly one when SDI_OIDC_ISSUER is set")
        url = self.jwks_url
        if url is not None and not re.match(r"https://|http://(127\.0\.0\.1|localhost|\[::1\])[:/]", url):
            raise ConfigError("SDI_OIDC_JWKS_URL: must be https (plain http only on 127.0.0.1/localhost)")
        return self


@dataclass(frozen=True)
class TokenClaims:
    """Who a verified token speaks for: ``sub``, a display name, normalised groups, ``exp`` and ``iss``."""

    subject: str
    name: str
    groups: frozenset[str]
    expires_at: float
    issuer: str


@dataclass(frozen=True)
class _Key:
    kid: str | None
    key: Any  # a cryptography public key
    algorithms: frozenset[str]


def _parse_jwks(data: object) -> tuple[_Key, ...]:
    """The usable signing keys of a JWKS document; ``ValueError`` when it has none."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS (no 'keys' list)")
    keys = []
    for jwk in data["keys"]:
        if (not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct"
                or "verify" not in jwk.get("key_ops", ["verify"])):
            continue
        try:
            parsed = jwt.PyJWK(jwk)
        except (jwt.PyJWTError, NotImplementedError, TypeError, ValueError):
            continue  # an unsupported key type or a broken key
        name = parsed.algorithm_name
        algorithms = frozenset({name}) if "alg" in jwk or name not in _RSA else _RSA
        kid = jwk.get("kid")
        keys.append(_Key(kid if isinstance(kid, str) else None, parsed.key, algorithms))
    if not keys:
        raise ValueError("no usable signing key")
    return tuple(keys)


def _lookup(claims: dict[str, Any], path: str) -> object:
    """A claim by name, else by dotted path (so namespaced names such as ``https://x.hk/roles`` also work)."""
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: object) -> frozenset[str]:
    """Lower-cased group names; names not matching ``^[a-z][a-z0-9_]{0,39}$`` (e.g. ``/a/b`` paths) are dropped."""
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else value if isinstance(value, list) else []
    names = (item.strip().lower() for item in items if isinstance(item, str))
    return frozenset(name for name in names if _GROUP.fullmatch(name))


_FAILURES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "token not for this audience"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.DecodeError, "token malformed"),
    (InvalidSubjectError, "token malformed"),
)


class OidcVerifier:
    """Verifies bearer tokens against one issuer's keys; safe to share between threads.

    Parameters
    ----------
    settings
        The OIDC settings; with no issuer the verifier is disabled and :meth:`verify` refuses every token.
    """

    def __init__(self, settings: OidcSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._keys: tuple[_Key, ...] | None = None
        self._next_refresh = 0.0  # monotonic time the cached URL keys expire
        self._last_refetch = -REFETCH_FLOOR_S  # monotonic time of the last unknown-kid refetch
        self._file_stamp: tuple[int, int, int] | None = None

    @property
    def enabled(self) -> bool:
        """Whether OIDC is configured (``SDI_OIDC_ISSUER`` is set)."""
        return self._settings.issuer is not None

    def verify(self, token: str) -> TokenClaims:
        """Check a token's signature and claims and return who it speaks for.

        Parameters
        ----------
        token
            The compact JWT, without the ``Bearer`` prefix.

        Returns
        -------
        TokenClaims
            Subject, name, groups (lower-cased, invalid names dropped, empty without the claim), expiry, issuer.

        Raises
        ------
        AuthenticationError
            Malformed, expired, for another audience or issuer, or not signed by a known key and algorithm.
        ServiceBusyError
            The JWKS URL cannot be fetched and no keys are cached.
        ConfigError
            The JWKS file cannot be read or holds no usable signing key.
        """
        s = self._settings
        if s.issuer is None:
            raise AuthenticationError("bearer tokens are not accepted here")
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise AuthenticationError("token malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("token malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise AuthenticationError("token algorithm not accepted")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("token malformed")
        key = self._key(kid)
        if alg not in key.algorithms:
            raise AuthenticationError("token algorithm not accepted")
        try:
            claims = jwt.decode(token, key.key, algorithms=[a for a in s.algorithms if a in key.algorithms],
                                audience=s.audience, issuer=s.issuer, leeway=s.leeway_s,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token malformed: no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            message = next((text for kind, text in _FAILURES if isinstance(exc, kind)), "token invalid")
            raise AuthenticationError(message) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise AuthenticationError("token malformed: empty 'sub' claim")
        names = (_lookup(claims, path) for path in (s.name_claim, "email", "sub"))
        name = next(n for n in names if isinstance(n, str) and n.strip())
        return TokenClaims(subject=subject, name=name, groups=_groups(_lookup(claims, s.groups_claim)),
                           expires_at=float(claims["exp"]), issuer=str(claims["iss"]))

    def _key(self, kid: str | None) -> _Key:
        """The key for ``kid``, loading, refreshing or (once per 30 s) refetching the JWKS as the rules say."""
        with self._lock:
            now = _monotonic()
            fetched = self._keys is None or (self._settings.jwks_file is None and now >= self._next_refresh)
            keys = self._load_file() if self._settings.jwks_file is not None else self._load_url(now, fetched)
            key = self._pick(keys, kid)
            if (key is None and kid is not None and self._settings.jwks_url is not None and not fetched
                    and now - self._last_refetch >= REFETCH_FLOOR_S):
                self._last_refetch = now
                key = self._pick(self._load_url(now, True), kid)
        if key is None:
            raise AuthenticationError("token signed with an unknown key")
        return key

    @staticmethod
    def _pick(keys: tuple[_Key, ...], kid: str | None) -> _Key | None:
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.kid == kid), None)

    def _load_url(self, now: float, fetch: bool) -> tuple[_Key, ...]:
        """The cached keys, fetched first when ``fetch``; a failed refresh keeps them and retries in 30 s."""
        if not fetch and self._keys is not None:
            return self._keys
        url = str(self._settings.jwks_url)
        try:
            body = b""
            with requests.get(url, timeout=self._settings.timeout_s, stream=True,
                              headers={"Accept": "application/jwk-set+json, application/json"}) as response:
                response.raise_for_status()
                for chunk in response.iter_content(65_536):
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise ValueError("JWKS larger than 1 MB")
            self._keys = _parse_jwks(json.loads(body))
            self._next_refresh = now + self._settings.jwks_refresh_s
        except (requests.RequestException, OSError, ValueError) as exc:
            logger.warning("OIDC: cannot fetch the JWKS from %s: %s", url, type(exc).__name__)
            if self._keys is None:
                raise ServiceBusyError(_BUSY) from None
            self._next_refresh = now + REFETCH_FLOOR_S
        return self._keys

    def _load_file(self) -> tuple[_Key, ...]:
        """The keys of the JWKS file, re-read when its modification time, size or inode changes."""
        path = Path(str(self._settings.jwks_file))
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if self._keys is None or stamp != self._file_stamp:
                self._keys, self._file_stamp = _parse_jwks(json.loads(path.read_bytes())), stamp
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"SDI_OIDC_JWKS_FILE {path}: cannot be read ({reason})") from None
        except ValueError as exc:
            raise ConfigError(f"SDI_OIDC_JWKS_FILE {path}: {exc}") from None
        return self._keys
