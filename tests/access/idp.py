"""A local OpenID Connect identity provider for tests: RSA keys, a JWKS file or URL, and signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sdi.access.oidc import OidcSettings

ISSUER = "https://idp.example.hk/realms/sdi"
AUDIENCE = "sdi-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalIdP:
    """An IdP that publishes its public key(s) as a JWKS (file and, within :meth:`serve`, HTTP) and signs tokens.

    Parameters
    ----------
    directory
        Where ``jwks.json`` is written.
    issuer, audience
        The ``iss`` and default ``aud`` of issued tokens (and of :meth:`settings`).
    jwk_alg
        The ``alg`` member of published keys; ``None`` publishes keys without one (any RS*/PS* then verifies).
    """

    def __init__(self, directory: Path, *, issuer: str = ISSUER, audience: str = AUDIENCE,
                 jwk_alg: str | None = "RS256") -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwk_alg = jwk_alg
        self.jwks_path = directory / "jwks.json"
        self.kid = "key-1"
        self.main = _new_key()
        self.rogue = _new_key()  # never published
        self.published: dict[str, rsa.RSAPrivateKey] = {self.kid: self.main}
        self.requests = 0  # JWKS requests answered by serve()
        self.http_status = 200  # what serve() answers; set to 500 to simulate an IdP failure
        self._count_lock = threading.Lock()
        self._rotations = 1
        self.write_jwks()

    def jwks(self) -> dict[str, Any]:
        """The JWKS document of the published public keys."""
        keys = []
        for kid, private in self.published.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            jwk.update({"kid": kid, "use": "sig"})
            if self.jwk_alg is not None:
                jwk["alg"] = self.jwk_alg
            keys.append(jwk)
        return {"keys": keys}

    def write_jwks(self, document: Mapping[str, Any] | None = None) -> None:
        """(Re)write the JWKS file atomically (a new inode, so a change is seen even within one mtime tick)."""
        partial = self.jwks_path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.jwks() if document is None else document), encoding="utf-8")
        os.replace(partial, self.jwks_path)

    def rotate(self, *, keep_old: bool = False) -> str:
        """Publish a new main key under a new ``kid`` (rewriting the file); return the new ``kid``."""
        self._rotations += 1
        self.kid, self.main = f"key-{self._rotations}", _new_key()
        self.published = {**(self.published if keep_old else {}), self.kid: self.main}
        self.write_jwks()
        return self.kid

    def public_pem(self, key: Literal["main", "rogue"] = "main") -> bytes:
        """The PEM of a public key (what an algorithm-confusion attacker would use as an HMAC secret)."""
        private = self.main if key == "main" else self.rogue
        return private.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, *, groups: list[str] | str | None = None, sub: str = "alice", aud: str | list[str] | None = None,
              iss: str | None = None, expires_in: float = 300, key: Literal["main", "rogue"] = "main",
              kid: str | None = None, no_kid: bool = False, algorithm: str = "RS256",
              extra_claims: Mapping[str, Any] | None = None, omit: Iterable[str] = ()) -> str:
        """A signed token.

        ``kid`` defaults to the current main key's (also when signing with the rogue key); ``no_kid`` leaves it
        out. ``algorithm="none"`` gives an unsigned token and ``HS*`` an HMAC signed with the chosen key's public
        PEM as the secret (PyJWT refuses to make either). ``groups`` goes to the ``groups`` claim;
        ``preferred_username`` is ``sub``; ``omit`` drops claims after ``extra_claims`` were merged.
        """
        now = time.time()
        claims: dict[str, Any] = {"iss": self.issuer if iss is None else iss,
                                  "aud": self.audience if aud is None else aud, "sub": sub,
                                  "preferred_username": sub, "iat": int(now), "exp": int(now + expires_in)}
        if groups is not None:
            claims["groups"] = groups
        claims.update(extra_claims or {})
        for name in omit:
            claims.pop(name, None)
        headers = {} if no_kid else {"kid": self.kid if kid is None else kid}
        if algorithm == "none" or algorithm.startswith("HS"):
            header = _b64(json.dumps({"alg": algorithm, "typ": "JWT", **headers}).encode())
            signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
            signature = b""
            if algorithm != "none":
                digest = getattr(hashlib, f"sha{algorithm[2:]}")
                signature = hmac.new(self.public_pem(key), signing_input.encode(), digest).digest()
            return f"{signing_input}.{_b64(signature)}"
        private = self.main if key == "main" else self.rogue
        return jwt.encode(claims, private, algorithm=algorithm, headers=headers)

    def settings(self, **overrides: Any) -> OidcSettings:
        """Settings for this IdP in file mode (``.env`` is not read); ``overrides`` replace any field."""
        values: dict[str, Any] = {"issuer": self.issuer, "audience": [self.audience], "jwks_file": self.jwks_path,
                                  **overrides}
        return OidcSettings(_env_file=None, **values)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the JWKS over HTTP on 127.0.0.1 from a thread; yield its URL. Each GET counts in ``requests``."""
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with idp._count_lock:
                    idp.requests += 1
                body = json.dumps(idp.jwks()).encode() if idp.http_status == 200 else b"{}"
                self.send_response(idp.http_status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/realms/sdi/protocol/openid-connect/certs"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
