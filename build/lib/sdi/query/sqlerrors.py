"""What a client did wrong when PostgreSQL refuses a query, said without quoting PostgreSQL's own text."""

from __future__ import annotations

#: SQLSTATE → a one-line reason a user can act on.
CLIENT_ERRORS = {
    "42883": "a value does not match the type of the property it is compared with",
    "42804": "a value does not match the type of the property it is compared with",
    "22P02": "a value does not match the type of the property it is compared with",
    "22007": "a date or time is not valid",
    "22008": "a date or time is out of range",
    "22003": "a number is out of range",
    "22012": "division by zero",
    "2201B": "an invalid regular expression or LIKE pattern",
    "22025": "an invalid escape in a LIKE pattern",
    "XX000": "the geometry cannot be processed",
}


def client_reason(sqlstate: str | None) -> str | None:
    """The reason for ``sqlstate`` when it is the client's doing, else ``None`` (a server-side fault)."""
    return CLIENT_ERRORS.get(sqlstate or "")
