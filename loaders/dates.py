"""Dates stored as text in departmental data: detection for undeclared columns, parsing for declared ones.

Hong Kong publishers write dates in many ways, often several in one column (``28 Jan 2022``,
``16/3/2022``, ``27 OCTOBER 2021``, ``2022年1月28日``, ISO ``2022-01-28``) and export Excel serial
numbers as text (``'43725'`` is 2019-09-17). Parsing is vectorised: each explicit format in
:data:`DATE_FORMATS` then :data:`TIMESTAMP_FORMATS` is tried, with pandas, on the values no earlier
format parsed, so a column costs a few whole-column passes and never a Python call per value.

Rules (never guess):

* Numeric dates are day first (``3/4/2022`` is 3 April), the Hong Kong convention; month-first
  columns such as ``12/31/2021`` do not parse and stay text.
* A column is detected as dates only when EVERY non-null value parses. One ``'Unknown'`` among
  thousands of dates keeps the whole column text (declare ``type: date`` to be told which value).
* Excel serial numbers are read only when the column name suggests a date (``CALLDATE``,
  ``date_of_issue``, ``日期``...) or the type is declared, and only within 1900–2100.
* Two-digit years, time zones and month names other than English are not recognised.

Result types: ``datetime.date`` objects in an ``object`` series (PostgreSQL ``date``) when no value
has a time of day, else ``datetime64[ns]`` (``timestamp``). The formats used are listed in
``result.attrs["date_formats"]`` for the load report.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd

from sdi.errors import DataError

#: Date formats tried in order (after whitespace and commas are normalised); day first.
DATE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d", "%d/%m/%Y", "%d %b %Y", "%d %B %Y", "%Y年%m月%d日", "%Y/%m/%d", "%d-%m-%Y", "%d.%m.%Y",
    "%d-%b-%Y", "%b %d %Y", "%B %d %Y",
)
#: Formats with a time of day; a column using any of them becomes a timestamp column.
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
)
#: Excel's day zero (serial 1 is 1900-01-01 once Excel's 1900 leap-year bug is allowed for).
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
#: Dates outside this range are not accepted from Excel serial numbers.
SERIAL_RANGE = (pd.Timestamp("1900-01-01"), pd.Timestamp("2100-12-31"))
#: Column names that suggest a date (enables Excel serial numbers stored as text).
DATE_NAME = re.compile(r"(?<!up)date|datum|日期|(^|_)dt($|_)", re.IGNORECASE)  # not "update"
_SERIAL = re.compile(r"^[1-9]\d{0,4}(\.\d+)?$")
_SAMPLE = 1000
_PROBE = 20  #: values tried first; one that is no date ends detection
#: Normalising rewrites: ordinal suffixes (``1st``), ``Sept``, runs of whitespace.
_FIXES: tuple[tuple[str, str, str], ...] = (
    (r"\d(?i:st|nd|rd|th)\b", r"(\d)(?i:st|nd|rd|th)\b", r"\1"),
    (r"\b(?i:sept)\b", r"\b(?i:sept)\b", "Sep"),
    (r"\s\s|[\t\n\r]", r"\s+", " "),
)


def is_date_name(column: str | None) -> bool:
    """Return whether a column name suggests it holds dates (``CALLDATE``, ``issue_date``, ``日期``)."""
    return bool(column) and DATE_NAME.search(str(column)) is not None


def _normalise(text: pd.Series) -> pd.Series:
    """Strip, drop commas and ordinal suffixes, collapse spaces, ``Sept`` → ``Sep`` (Arrow string kernels).

    The regular-expression passes run only on the values that need them, so clean columns cost two
    cheap passes.
    """
    out = text.astype("string[pyarrow]").str.strip().str.replace(",", " ", regex=False)
    for probe, pattern, repl in _FIXES:
        need = out.str.contains(probe, regex=True)
        if need.any():
            out[need] = out[need].str.replace(pattern, repl, regex=True)
    return out


def _cascade(text: pd.Series, first: tuple[str, ...] = ()) -> tuple[pd.Series, list[str], bool]:
    """Parse normalised text with each format in turn on what is left; return (parsed, formats, has_time).

    ``first`` formats (those a sample needed) are tried before the others, so a whole column usually
    costs one pass per format it really uses.
    """
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    left = text
    used: list[str] = []
    has_time = False
    order = first + tuple(f for f in DATE_FORMATS + TIMESTAMP_FORMATS if f not in first)
    for fmt in order:
        if left.empty:
            break
        got = pd.to_datetime(left, format=fmt, errors="coerce")
        ok = got.notna()
        if ok.any():
            parsed[got.index[ok]] = got[ok]
            used.append(fmt)
            has_time |= fmt in TIMESTAMP_FORMATS
            left = left[~ok]
    return parsed, used, has_time


def _serials(text: pd.Series) -> pd.Series | None:
    """Excel serial numbers (as text or numbers) → timestamps, or ``None`` if any is not one or out of range."""
    if pd.api.types.is_numeric_dtype(text.dtype):
        numbers = pd.to_numeric(text, errors="coerce")
    else:
        if not text.str.fullmatch(_SERIAL).all():
            return None
        numbers = pd.to_numeric(text, errors="coerce")
    if numbers.isna().any() or (numbers < 1).any() or (numbers > 80_000).any():
        return None
    stamps = EXCEL_EPOCH + pd.to_timedelta(numbers.astype("float64"), unit="D").dt.round("s")
    if (stamps < SERIAL_RANGE[0]).any() or (stamps > SERIAL_RANGE[1] + pd.Timedelta(days=1)).any():
        return None
    return stamps


def _finish(parsed: pd.Series, index: pd.Index, has_time: bool, formats: list[str]) -> pd.Series:
    full = pd.Series(pd.NaT, index=index, dtype="datetime64[ns]")
    full[parsed.index] = parsed
    if has_time:
        out = full
    else:
        days = full.to_numpy().astype("datetime64[D]").astype(object)  # datetime.date, None for NaT
        out = pd.Series(days, index=index, dtype=object)
    out.attrs["date_formats"] = formats
    return out


def _text_values(series: pd.Series) -> pd.Series | None:
    present = series.dropna()
    if present.empty or pd.api.types.infer_dtype(present, skipna=True) != "string":
        return None
    return present


def detect_dates(series: pd.Series, column: str | None = None) -> pd.Series | None:
    """Return ``series`` as dates when EVERY non-null text value parses as one, else ``None``.

    Parameters
    ----------
    series
        A text column (``object`` dtype, ``None`` for NULL).
    column
        The column's source name. Excel serial numbers stored as text (``'43725'``) are read as
        dates only when this name suggests a date (see :func:`is_date_name`).

    Returns
    -------
    pandas.Series or None
        ``datetime.date`` objects (``object`` dtype, ``None`` for NULL) when no value carries a time
        of day, else ``datetime64[ns]``; ``None`` when the column is not entirely dates (for
        example ``'Unknown'`` among them), so it stays text.
    """
    present = _text_values(series)
    if present is None:
        return None
    head = _normalise(present.head(_SAMPLE))
    if not head.str.contains(r"\d", regex=True).all() or (head.str.len() > 40).any():
        return None
    if is_date_name(column) and head.str.fullmatch(_SERIAL).all():
        stamps = _serials(_normalise(present))
        if stamps is not None:
            has_time = bool((stamps != stamps.dt.normalize()).any())
            return _finish(stamps, series.index, has_time, ["Excel serial number"])
    if _cascade(head.head(_PROBE))[0].isna().any():  # cheapest exit: a value of the first few is no date
        return None
    parsed, sample_formats, _ = _cascade(head)  # cheap early exit on a sample before the whole column
    if parsed.isna().any():
        return None
    parsed, used, has_time = _cascade(_normalise(present), tuple(sample_formats))
    if parsed.isna().any():
        return None
    return _finish(parsed, series.index, has_time, used)


def parse_dates(series: pd.Series, column: str, *, timestamp: bool = False) -> pd.Series:
    """Convert a column declared ``type: date`` (or ``timestamp``) with the formats of :func:`detect_dates`.

    Text is parsed with :data:`DATE_FORMATS` / :data:`TIMESTAMP_FORMATS` (day first); values that are
    all digits, and numeric columns, are Excel serial numbers (1900–2100); ``datetime`` values pass
    through. With ``timestamp=False`` a time of day is dropped (the declared type is ``date``).

    Raises
    ------
    DataError
        Naming the column and the first value that is not a date.
    """
    index = series.index
    present = series.dropna()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = pd.to_datetime(series)
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            return stamps if timestamp else _finish(stamps.dt.tz_localize(None), index, False, [])
        return _finish(stamps, index, timestamp, [])
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        converted = _serials(present)
        if converted is None:
            bad = _first_bad_serial(present)
            raise DataError(f"fields.{column}: value {bad!r} is not a date (as an Excel serial number it is "
                            f"outside 1900–2100)")
        return _finish(converted, index, timestamp, ["Excel serial number"])
    parsed = pd.Series(pd.NaT, index=present.index, dtype="datetime64[ns]")
    is_text = present.map(lambda v: isinstance(v, str))
    others = present[~is_text]
    for key, value in others.items():
        parsed[key] = _one_datetime(value, column)
    text = _normalise(present[is_text].astype(str))
    digits = text.str.fullmatch(_SERIAL)
    if digits.any():
        converted = _serials(text[digits])
        if converted is None:
            bad = _first_bad_serial(text[digits])
            raise DataError(f"fields.{column}: value {bad!r} is not a date (as an Excel serial number it is "
                            f"outside 1900–2100)")
        parsed[converted.index] = converted
    rest, used, _ = _cascade(text[~digits])
    if rest.isna().any():
        first = rest.index[rest.isna()][0]
        raise DataError(f"fields.{column}: value {present[first]!r} is not a date (expected for example "
                        f"2022-01-28, 28/1/2022, 28 Jan 2022 or 2022年1月28日)")
    parsed[rest.index] = rest
    return _finish(parsed, index, timestamp, used)


def _first_bad_serial(values: pd.Series) -> Any:
    for value in values:
        if _serials(pd.Series([value])) is None:
            return value
    return values.iloc[0]


def _one_datetime(value: Any, column: str) -> pd.Timestamp:
    if isinstance(value, dt.date | np.datetime64 | pd.Timestamp):
        return pd.Timestamp(value)
    raise DataError(f"fields.{column}: value {value!r} is not a date")
