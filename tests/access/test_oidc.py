"""OIDC bearer-token verification against a local IdP (JWKS file and URL); no database needed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdi.access import oidc
from sdi.access.oidc import OidcSettings, OidcVerifier, TokenClaims
from sdi.errors import AuthenticationError, ConfigError, ServiceBusyError, http_status
from tests.access.idp import AUDIENCE, ISSUER, LocalIdP


class Clock:
    """A monotonic clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_oidc_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come only from the test: no SDI_OIDC_* variable and no .env in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("SDI_OIDC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(oidc, "_monotonic", fake)
    return fake


@pytest.fixture
def idp(tmp_path: Path) -> LocalIdP:
    return LocalIdP(tmp_path)


@pytest.fixture
def verifier(idp: LocalIdP) -> OidcVerifier:
    return OidcVerifier(idp.settings())


def refused(verifier: OidcVerifier, token: str, expected: str) -> AuthenticationError:
    """Assert the token is refused with ``expected`` in the message, which never quotes the token."""
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    leaks = [token[i:i + 20] for i in range(len(token) - 19) if token[i:i + 20] in message]
    assert not leaks, "the message quotes the token"
    assert http_status(info.value) == 401
    return info.value


# --- valid tokens --------------------------------------------------------------------------------------------

def test_valid_token_gives_claims(idp: LocalIdP, verifier: OidcVerifier) -> None:
    before = time.time()
    claims = verifier.verify(idp.token(sub="u-123", groups=["Planners", "GIS_Team"], expires_in=600,
                                       extra_claims={"preferred_username": "chan.tm"}))
    assert claims == TokenClaims(subject="u-123", name="chan.tm", groups=frozenset({"planners", "gis_team"}),
                                 expires_at=claims.expires_at, issuer=ISSUER)
    assert before + 598 <= claims.expires_at <= time.time() + 601
    assert verifier.enabled


def test_name_falls_back_to_email_then_sub(idp: LocalIdP, verifier: OidcVerifier) -> None:
    with_email = idp.token(sub="u-1", omit=["preferred_username"], extra_claims={"email": "a@example.hk"})
    assert verifier.verify(with_email).name == "a@example.hk"
    assert verifier.verify(idp.token(sub="u-2", omit=["preferred_username"])).name == "u-2"


def test_one_of_several_audiences(idp: LocalIdP, verifier: OidcVerifier) -> None:
    assert verifier.verify(idp.token(aud=["account", AUDIENCE])).subject == "alice"


def test_disabled_verifier_refuses_tokens(idp: LocalIdP) -> None:
    verifier = OidcVerifier(OidcSettings(_env_file=None))
    assert not verifier.enabled
    refused(verifier, idp.token(), "not accepted")


# --- claims ----------------------------------------------------------------------------------------------

def test_expired_beyond_leeway(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(expires_in=-60), "token expired")


def test_expired_within_leeway_is_accepted(idp: LocalIdP, verifier: OidcVerifier) -> None:
    assert verifier.verify(idp.token(expires_in=-10)).subject == "alice"
    strict = OidcVerifier(idp.settings(leeway_s=0))
    refused(strict, idp.token(expires_in=-10), "token expired")


def test_wrong_audience(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(aud="another-app"), "token not for this audience")


def test_wrong_issuer(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(iss="https://evil.example.com/realms/sdi"), "token issuer not accepted")


@pytest.mark.parametrize("claim", ["sub", "exp", "aud", "iss"])
def test_required_claims(idp: LocalIdP, verifier: OidcVerifier, claim: str) -> None:
    refused(verifier, idp.token(omit=[claim]), f"no '{claim}' claim")


def test_malformed_tokens(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, "not-a-jwt-at-all-but-long-enough", "token malformed")
    header, payload, signature = idp.token().split(".")
    refused(verifier, f"{header}.{payload[:-7]}{'A' * 7}.{signature}", "token")
    refused(verifier, idp.token(extra_claims={"exp": "tomorrow"}), "token malformed")


# --- signatures, keys and algorithms ------------------------------------------------------------------

def test_rogue_key_with_main_kid(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(key="rogue"), "token signature invalid")


def test_unknown_kid_in_file_mode(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(key="rogue", kid="rogue-1"), "token signed with an unknown key")


def test_alg_none_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(algorithm="none"), "token algorithm not accepted")


def test_hs256_with_public_key_as_secret_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(algorithm="HS256"), "token algorithm not accepted")
    # even if an operator lists it, settings refuse it (see test_settings_refuse_symmetric_algorithms)


def test_algorithm_must_match_the_jwk(idp: LocalIdP, verifier: OidcVerifier) -> None:
    refused(verifier, idp.token(algorithm="PS256"), "token algorithm not accepted")  # the JWK says RS256


def test_rsa_jwk_without_alg_accepts_pss(tmp_path: Path) -> None:
    idp = LocalIdP(tmp_path, jwk_alg=None)
    verifier = OidcVerifier(idp.settings())
    assert verifier.verify(idp.token(algorithm="PS256")).subject == "alice"
    assert verifier.verify(idp.token(algorithm="RS384")).subject == "alice"
    refused(OidcVerifier(idp.settings(algorithms=["RS256"])), idp.token(algorithm="PS256"),
            "token algorithm not accepted")


def test_token_without_kid(idp: LocalIdP, verifier: OidcVerifier) -> None:
    assert verifier.verify(idp.token(no_kid=True)).subject == "alice"  # one key: accepted
    idp.rotate(keep_old=True)
    refused(verifier, idp.token(no_kid=True), "token signed with an unknown key")  # two keys: which?


def test_encryption_and_symmetric_keys_are_ignored(idp: LocalIdP) -> None:
    document = idp.jwks()
    document["keys"][0]["use"] = "enc"
    document["keys"].append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    idp.write_jwks(document)
    with pytest.raises(ConfigError, match="no usable signing key"):
        OidcVerifier(idp.settings()).verify(idp.token())


# --- JWKS file ----------------------------------------------------------------------------------------

def test_file_mode_picks_up_a_rewritten_file(idp: LocalIdP, verifier: OidcVerifier) -> None:
    old = idp.token()
    assert verifier.verify(old).subject == "alice"
    idp.rotate()
    assert verifier.verify(idp.token(sub="bob")).subject == "bob"
    refused(verifier, old, "token signed with an unknown key")


def test_unreadable_or_invalid_file(idp: LocalIdP, tmp_path: Path) -> None:
    token = idp.token()
    missing = OidcVerifier(idp.settings(jwks_file=tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match=r"SDI_OIDC_JWKS_FILE .*absent\.json: cannot be read"):
        missing.verify(token)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="SDI_OIDC_JWKS_FILE"):
        OidcVerifier(idp.settings(jwks_file=tmp_path / "bad.json")).verify(token)
    (tmp_path / "empty.json").write_text(json.dumps({"keys": []}), encoding="utf-8")
    with pytest.raises(ConfigError, match="no usable signing key"):
        OidcVerifier(idp.settings(jwks_file=tmp_path / "empty.json")).verify(token)


# --- JWKS URL -----------------------------------------------------------------------------------------

@pytest.fixture
def served(idp: LocalIdP) -> Iterator[str]:
    with idp.serve() as url:
        yield url


def test_url_mode_caches_keys(idp: LocalIdP, served: str, clock: Clock) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served, jwks_refresh_s=300))
    for _ in range(3):
        verifier.verify(idp.token())
    assert idp.requests == 1
    clock.now += 301
    verifier.verify(idp.token())
    assert idp.requests == 2


def test_unknown_kid_refetches_at_most_once_per_30s(idp: LocalIdP, served: str, clock: Clock) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served))
    verifier.verify(idp.token())
    assert idp.requests == 1
    refused(verifier, idp.token(key="rogue", kid="unknown-1"), "token signed with an unknown key")
    assert idp.requests == 2  # one refetch
    clock.now += 5
    refused(verifier, idp.token(key="rogue", kid="unknown-2"), "token signed with an unknown key")
    assert idp.requests == 2  # within 30 s of the last refetch: none
    clock.now += 26
    refused(verifier, idp.token(key="rogue", kid="unknown-3"), "token signed with an unknown key")
    assert idp.requests == 3


def test_key_rotation_is_picked_up_by_refetch(idp: LocalIdP, served: str, clock: Clock) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served))
    verifier.verify(idp.token())
    idp.rotate()
    claims = verifier.verify(idp.token(sub="bob"))
    assert claims.subject == "bob"
    assert idp.requests == 2
    clock.now += 1
    idp.rotate()  # a second rotation within 30 s is only seen at the next refetch
    refused(verifier, idp.token(), "token signed with an unknown key")
    assert idp.requests == 2
    clock.now += 30
    assert verifier.verify(idp.token()).subject == "alice"
    assert idp.requests == 3


def test_first_fetch_does_not_refetch(idp: LocalIdP, served: str) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served))
    refused(verifier, idp.token(kid="unknown"), "token signed with an unknown key")
    assert idp.requests == 1  # the keys were fetched for this very token


def test_jwks_url_down(idp: LocalIdP) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the fetch: nothing listens there
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=f"http://127.0.0.1:{port}/certs", timeout_s=2))
    token = idp.token()
    with pytest.raises(ServiceBusyError) as info:
        verifier.verify(token)
    assert str(info.value) == "the identity provider's keys cannot be fetched; retry shortly"
    assert http_status(info.value) == 503


def test_jwks_url_error_status(idp: LocalIdP, served: str) -> None:
    idp.http_status = 500
    with pytest.raises(ServiceBusyError):
        OidcVerifier(idp.settings(jwks_file=None, jwks_url=served)).verify(idp.token())


def test_failed_refresh_keeps_cached_keys(idp: LocalIdP, served: str, clock: Clock) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served))
    verifier.verify(idp.token())
    idp.http_status = 500
    clock.now += 301
    assert verifier.verify(idp.token()).subject == "alice"  # stale keys, refresh failed
    assert idp.requests == 2
    verifier.verify(idp.token())
    assert idp.requests == 2  # next try only after 30 s
    clock.now += 30
    verifier.verify(idp.token())
    assert idp.requests == 3


def test_concurrent_verification(idp: LocalIdP, served: str) -> None:
    verifier = OidcVerifier(idp.settings(jwks_file=None, jwks_url=served))
    token = idp.token(groups=["a"])
    results: list[TokenClaims] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                results.append(verifier.verify(token))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 80
    assert idp.requests == 1


# --- groups -------------------------------------------------------------------------------------------

def test_groups_claim_absent(idp: LocalIdP, verifier: OidcVerifier) -> None:
    claims = verifier.verify(idp.token(groups=None))
    assert claims.groups == frozenset()
    assert claims.subject == "alice"


def test_dotted_groups_claim(idp: LocalIdP) -> None:
    verifier = OidcVerifier(idp.settings(groups_claim="realm_access.roles"))
    token = idp.token(groups=["ignored"], extra_claims={"realm_access": {"roles": ["Planner", "offline_access"]}})
    assert verifier.verify(token).groups == {"planner", "offline_access"}
    assert verifier.verify(idp.token(extra_claims={"realm_access": {}})).groups == frozenset()
    assert verifier.verify(idp.token(extra_claims={"realm_access": ["x"]})).groups == frozenset()


def test_namespaced_groups_claim(idp: LocalIdP) -> None:
    verifier = OidcVerifier(idp.settings(groups_claim="https://sdi.example.hk/groups"))
    token = idp.token(extra_claims={"https://sdi.example.hk/groups": ["lands"]})
    assert verifier.verify(token).groups == {"lands"}


def test_groups_as_a_string(idp: LocalIdP, verifier: OidcVerifier) -> None:
    assert verifier.verify(idp.token(groups="planners  LANDS,survey")).groups == {"planners", "lands", "survey"}


def test_invalid_group_names_dropped(idp: LocalIdP, verifier: OidcVerifier) -> None:
    names = ["ok_1", "/admins", "1abc", "has space", "x" * 41, "y" * 40, "dash-ed", "", "Ümlaut", 7, None]
    claims = verifier.verify(idp.token(groups=names))  # type: ignore[arg-type]
    assert claims.groups == {"ok_1", "y" * 40}


# --- settings -----------------------------------------------------------------------------------------

def test_settings_off_by_default() -> None:
    settings = OidcSettings(_env_file=None)
    assert settings.issuer is None
    assert not OidcVerifier(settings).enabled


def test_settings_issuer_without_audience(idp: LocalIdP) -> None:
    with pytest.raises(ConfigError, match="SDI_OIDC_AUDIENCE") as info:
        idp.settings(audience=[])
    assert "\n" not in str(info.value)


def test_settings_need_exactly_one_jwks_source(idp: LocalIdP) -> None:
    with pytest.raises(ConfigError, match="SDI_OIDC_JWKS_URL / SDI_OIDC_JWKS_FILE"):
        idp.settings(jwks_url="https://idp.example.hk/certs")
    with pytest.raises(ConfigError, match="SDI_OIDC_JWKS_URL / SDI_OIDC_JWKS_FILE"):
        idp.settings(jwks_file=None)


def test_settings_refuse_plain_http_jwks_url(idp: LocalIdP) -> None:
    with pytest.raises(ConfigError, match="SDI_OIDC_JWKS_URL"):
        idp.settings(jwks_file=None, jwks_url="http://idp.example.hk/certs")
    assert idp.settings(jwks_file=None, jwks_url="http://localhost:8080/certs").jwks_url


@pytest.mark.parametrize("algorithms", [["RS256", "HS256"], ["none"], ["NONE"], ["hs512"], ["XY999"], []])
def test_settings_refuse_symmetric_algorithms(idp: LocalIdP, algorithms: list[str]) -> None:
    with pytest.raises(ConfigError, match="SDI_OIDC_ALGORITHMS") as info:
        idp.settings(algorithms=algorithms)
    assert "\n" not in str(info.value)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, idp: LocalIdP) -> None:
    monkeypatch.setenv("SDI_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("SDI_OIDC_AUDIENCE", "sdi-api, account")
    monkeypatch.setenv("SDI_OIDC_JWKS_FILE", str(idp.jwks_path))
    monkeypatch.setenv("SDI_OIDC_ALGORITHMS", '["RS256", "PS256"]')
    settings = OidcSettings(_env_file=None)
    assert settings.audience == ["sdi-api", "account"]
    assert settings.algorithms == ["RS256", "PS256"]
    assert OidcVerifier(settings).verify(idp.token(aud="account")).subject == "alice"
    monkeypatch.setenv("SDI_OIDC_LEEWAY_S", "soon")
    with pytest.raises(ConfigError, match="SDI_OIDC_LEEWAY_S"):
        OidcSettings(_env_file=None)
