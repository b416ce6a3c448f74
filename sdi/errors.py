"""Errors raised by HK SDI.

Every error derives from :class:`SdiError` and from the built-in exception it resembles, so callers
can catch either. Messages are safe to show to users: they name the file, parameter or layer and the
problem, on one line. :data:`HTTP_STATUS` is the one table that maps them to HTTP status codes at
the web edge; the CLI prints ``error: <message>`` and exits non-zero.
"""

from __future__ import annotations


class SdiError(Exception):
    """Root of all HK SDI errors; ``str(err)`` is a one-line, user-safe message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        """The one-line, user-safe message."""
        return str(self)


class ConfigError(SdiError, ValueError):
    """A setting or command-line parameter has an invalid value."""


class LayerDefinitionError(SdiError, ValueError):
    """A layer YAML file is missing a key or has a key of the wrong type."""


class SourceNotFoundError(SdiError, FileNotFoundError):
    """A layer's source file does not exist or cannot be read."""


class SourceFormatError(SdiError, ValueError):
    """A source file is in an unknown format or is corrupt."""


class CrsError(SdiError, ValueError):
    """A coordinate reference system is missing, ambiguous, or cannot be transformed safely."""


class ExtentError(CrsError):
    """Coordinates fall outside Hong Kong after reprojection."""


class GeometryError(SdiError, ValueError):
    """Geometries cannot be normalised to one layer (for example mixed families)."""


class DataError(SdiError, ValueError):
    """Attribute values break a declared rule (for example duplicate primary keys, bad types)."""


class LayerNotFoundError(SdiError, KeyError):
    """No layer with the given id is defined or loaded."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class DatabaseUnavailableError(SdiError, ConnectionError):
    """The database is down, unreachable, or refuses the connection."""

    def __init__(self, message: str = "the database is unreachable; retry shortly") -> None:
        super().__init__(message)


class LoadInterruptedError(SdiError, RuntimeError):
    """A load was stopped before it committed; the previous version of the layer is unchanged."""


class QueryError(SdiError, ValueError):
    """A request parameter is invalid (an unknown property, a malformed ``bbox``, a filter that does not parse)."""


class SearchError(ConfigError):
    """A catalogue search parameter is invalid (a query ``q`` longer than the search reads); HTTP 400."""


class FeatureNotFoundError(SdiError, KeyError):
    """No feature (or tile matrix set, or tile) with the given id."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ServiceBusyError(SdiError, RuntimeError):
    """The server cannot take more work now (all database connections busy); retry shortly."""


class AuthenticationError(SdiError, PermissionError):
    """An API key or bearer token is invalid, revoked or expired (HTTP 401 with ``WWW-Authenticate``)."""


class RateLimitedError(SdiError, RuntimeError):
    """An identity sent more requests than its rate limit allows (HTTP 429 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PlanningError(SdiError, ValueError):
    """A planning request is invalid: unknown engine or predicate, an empty district, a bad input frame."""


class CriteriaError(PlanningError):
    """A site-selection criteria file or input is invalid: unknown criterion, a weight that is not a number."""


#: HTTP status for each error class; the most specific class in an error's MRO wins.
HTTP_STATUS: dict[type[SdiError], int] = {
    ConfigError: 400,
    QueryError: 400,
    LayerDefinitionError: 400,
    PlanningError: 400,
    SourceFormatError: 400,
    CrsError: 400,
    GeometryError: 400,
    DataError: 400,
    SourceNotFoundError: 404,
    LayerNotFoundError: 404,
    FeatureNotFoundError: 404,
    AuthenticationError: 401,
    RateLimitedError: 429,
    ServiceBusyError: 503,
    DatabaseUnavailableError: 503,
    LoadInterruptedError: 500,
    SdiError: 500,
}


def http_status(error: BaseException) -> int:
    """Return the HTTP status code for ``error``.

    Parameters
    ----------
    error
        Any exception. Non-SDI exceptions map to 500.

    Returns
    -------
    int
        The status of the most specific :data:`HTTP_STATUS` entry in the error's class hierarchy.
    """
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def database_failure(sqlstate: str | None) -> SdiError:
    """The 503 error for PostgreSQL's operational failure of SQLSTATE ``sqlstate`` (psycopg's
    ``OperationalError.sqlstate``).

    No SQLSTATE (the connection failed or was lost), class ``08`` (connection exception) and ``57P0x`` (the
    server shutting down or unable to connect) mean the database is unreachable: :class:`DatabaseUnavailableError`.
    Anything else (out of memory or disk, too many connections, a lock not available...) comes from a database
    that is up but cannot take the work now: :class:`ServiceBusyError`.
    """
    if sqlstate is None or sqlstate.startswith(("08", "57P0")):
        return DatabaseUnavailableError()
    return ServiceBusyError("the database is busy; retry shortly")
