"""Keys and tokens never reach a log line: the API's log filter masks them in every record."""

from __future__ import annotations

import logging

import pytest

from sdi.web.app import OneLineLogs, redact_text

KEY = "sdi_k3x9q2m7ab_" + "Zq8-" * 10 + "abc"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize("text", [f"Authorization: Bearer {KEY}", f"token={JWT} failed", f"bearer {JWT}",
                                  f"key {KEY} revoked", f"BEARER {KEY[:20]}"])
def test_credentials_are_masked(text: str) -> None:
    masked = redact_text(text)
    assert "***" in masked
    for secret in (KEY, JWT, KEY[:20], JWT[:20]):
        assert secret not in masked


@pytest.mark.parametrize("name", ["sdi.web", "pygeoapi.api", "uvicorn.error"])
def test_the_filter_masks_every_logger(name: str) -> None:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, "refused %s for %s", (KEY, "/items"), None)
    assert OneLineLogs().filter(record)
    assert KEY not in record.getMessage() and "/items" in record.getMessage()
