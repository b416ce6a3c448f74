"""The ASGI application of ``sdi serve``: ``uvicorn sdi.publishing.app:app``.

The application itself is :func:`sdi.web.app.create_app`; it is built on first access of :data:`app` (by
uvicorn in each worker), never at import, and connects as the read-only role whatever ``SDI_DATABASE_URL``
names (see :mod:`sdi.web.reader`).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from sdi.settings import Settings
from sdi.web.reader import APPLICATION_NAME, is_reader_url, prepare_reader, reader_url
from sdi.web.settings import WebSettings

__all__ = ["APPLICATION_NAME", "create_app", "reader_url", "serve_environment"]


def create_app() -> Starlette:
    """The API application (see :mod:`sdi.web.app`)."""
    from sdi.web.app import create_app as build

    return build()


def serve_environment(settings: Settings, web: WebSettings) -> dict[str, str]:
    """Environment for the API workers: ``SDI_DATABASE_URL`` as the read-only role (its password checked or set).

    Raises
    ------
    DatabaseUnavailableError
        When the role cannot log in and its password cannot be set.
    """
    if is_reader_url(settings.database_url, settings.reader_role):
        return {"SDI_DATABASE_URL": settings.database_url}
    return {"SDI_DATABASE_URL": prepare_reader(settings, web)}


_APP: Starlette | None = None


def __getattr__(name: str) -> Any:
    """``app`` is built on first access (by uvicorn in each worker), not at import."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = create_app()
        return _APP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
