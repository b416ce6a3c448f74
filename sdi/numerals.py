"""What counts as a decimal integer in a request, in one place: ASCII digits ``0``-``9`` only.

:meth:`str.isdigit` also accepts superscripts (``²``), circled digits (``①``) and the digits of other scripts
(Arabic-Indic ``١٢``, fullwidth ``５``), and :class:`int` accepts some of those, underscores (``1_000``) and
surrounding whitespace too. A limit, an offset, a tile index or an EPSG code is none of those: each parser of
such a value asks :func:`decimal_integer`, and answers ``None`` with a one-line error naming its parameter.

>>> decimal_integer("42"), decimal_integer("-3", signed=True), decimal_integer("+7", signed=True)
(42, -3, 7)
>>> [decimal_integer(t) for t in ("²", "١٢", "５", "1_000", "0x10", "1e3", " 1", "-3", "", "1" * 19)]
[None, None, None, None, None, None, None, None, None, None]
"""

from __future__ import annotations

import re

__all__ = ["ASCII_SPACE", "MAX_DIGITS", "decimal_integer"]

ASCII_SPACE = " \t\r\n"  #: the spaces a parser may strip around a number (not NBSP or other Unicode spaces)
MAX_DIGITS = 18  #: the most digits :func:`decimal_integer` reads by default (fits a PostgreSQL bigint)
_SIGNED = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")


def decimal_integer(text: str, *, signed: bool = False, max_digits: int = MAX_DIGITS) -> int | None:
    """``text`` as an integer when it is a run of ASCII digits, else ``None``.

    Parameters
    ----------
    text : str
        The whole value; nothing around the digits is allowed (strip it first if spaces are to be accepted).
    signed : bool
        Whether one leading ``+`` or ``-`` is allowed.
    max_digits : int
        The most digits accepted (a longer run is ``None``, so a huge value never reaches :class:`int`).

    Returns
    -------
    int or None
        The value, or ``None`` when ``text`` is not such an integer.
    """
    if not (_SIGNED if signed else _UNSIGNED).fullmatch(text) or len(text.lstrip("+-")) > max_digits:
        return None
    return int(text)
