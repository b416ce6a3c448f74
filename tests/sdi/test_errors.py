"""The error hierarchy: built-in bases, one-line messages, one HTTP status table."""

from __future__ import annotations

import pytest

from sdi import errors


@pytest.mark.parametrize(
    ("cls", "builtin", "status"),
    [
        (errors.CrsError, ValueError, 400),
        (errors.ExtentError, ValueError, 400),
        (errors.LayerDefinitionError, ValueError, 400),
        (errors.SourceNotFoundError, FileNotFoundError, 404),
        (errors.LayerNotFoundError, KeyError, 404),
        (errors.DatabaseUnavailableError, ConnectionError, 503),
        (errors.DataError, ValueError, 400),
    ],
)
def test_error_classes(cls: type[errors.SdiError], builtin: type[Exception], status: int) -> None:
    err = cls("a\nmulti   line\tmessage")
    assert isinstance(err, errors.SdiError) and isinstance(err, builtin)
    assert str(err) == "a multi line message"
    assert errors.http_status(err) == status


def test_non_sdi_error_is_500() -> None:
    assert errors.http_status(RuntimeError("x")) == 500
