"""Shared pieces of the ``sdi`` command line: consoles, error handling, settings."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from sdi.errors import ConfigError, SdiError
from sdi.settings import Settings


class Consoles:
    """Rich consoles, made on first use (they write to whatever sys.stdout/stderr is then)."""

    @functools.cached_property
    def out(self) -> Console:
        return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)

    @functools.cached_property
    def err(self) -> Console:
        return Console(stderr=True, highlight=False, soft_wrap=True)


consoles = Consoles()
F = TypeVar("F", bound=Callable[..., Any])


def clean_errors(fn: F) -> F:
    """Turn :class:`SdiError` into one ``error:`` line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SdiError as exc:
            consoles.err.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings_from_env() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: a bad SDI_* variable
        raise ConfigError(f"invalid SDI_* setting: {str(exc).splitlines()[1:3]}") from exc


