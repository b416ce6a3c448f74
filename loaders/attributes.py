"""Attribute normalisation: column names, NULLs, Unicode, declared and detected types, primary key."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loaders.dates import detect_dates, is_date_name, parse_dates
from loaders.encoding import repair_text
from loaders.naming import column_names, snake_ascii
from loaders.report import FieldInfo, LoadReport
from sdi.errors import DataError, LayerDefinitionError
from sdi.layerdef import LayerDefinition

NULL_TEXT = frozenset({"nan", "NaN", "NAN", ""})
_NULL_TEXT_ARROW = pa.array(sorted(NULL_TEXT), type=pa.string())
GENERATED_KEY = "fid"
MAX_COLUMNS = 1600  #: PostgreSQL's limit on columns per table
#: A code ("0012") or a telephone number written whole ("+85225110690"): the column stays text. A leading "+"
#: alone does not make a phone number ("+1.5" is a change): "+", a digit and 7 more digits, spaces, () or -.
_CODE_LIKE = re.compile(r"^(?:[+-]?0\d|\+\d[\d\s()-]{7,}$)")
#: Identifier column names (see :func:`is_identifier`): words anywhere, last words, Chinese words.
_ID_WORDS = frozenset({"tel", "telephone", "phone", "fax", "mobile", "code", "codes", "postcode", "zipcode",
                       "isbn", "hkid", "uprn"})
_ID_LAST = frozenset({"no", "nos", "num", "nbr", "number", "ref"})
_COUNT_FIRST = frozenset({"total", "count", "sum", "max", "min", "mean", "average"})
_ID_ZH = ("電話", "傳真", "編號", "號碼", "代號", "代碼", "編碼", "地段", "郵編")
_BOOL = {"true": True, "t": True, "yes": True, "y": True, "1": True,
         "false": False, "f": False, "no": False, "n": False, "0": False}


def _is_text(series: pd.Series) -> bool:
    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)


def clean_text(series: pd.Series) -> tuple[pd.Series, int]:
    """NFC-normalise text, strip NUL characters, and turn 'nan'/'NaN'/'' into NULL.

    Returns the cleaned series (object dtype) and how many values became NULL.
    """
    try:
        arr = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _clean_mixed(series)
    nulls = pc.is_in(arr, value_set=_NULL_TEXT_ARROW).fill_null(False)
    if pc.any(pc.invert(pc.string_is_ascii(arr).fill_null(True))).as_py():
        arr = pc.utf8_normalize(pc.replace_substring(arr, "\x00", ""), "NFC")
    elif pc.any(pc.match_substring(arr, "\x00").fill_null(False)).as_py():
        arr = pc.replace_substring(arr, "\x00", "")
    cleaned = pc.if_else(nulls, pa.scalar(None, type=pa.string()), arr)
    values = cleaned.to_numpy(zero_copy_only=False)  # positional: the series may have gaps in its index
    return pd.Series(values, index=series.index, dtype=object), int(pc.sum(nulls).as_py() or 0)


def _clean_mixed(series: pd.Series) -> tuple[pd.Series, int]:
    """:func:`clean_text` for object columns that mix text with other values (lists, numbers)."""
    values = series.astype(object)
    nulled = 0

    def one(v: Any) -> Any:
        nonlocal nulled
        if not isinstance(v, str):
            return v
        if v in NULL_TEXT:
            nulled += 1
            return None
        return v if v.isascii() and "\x00" not in v else unicodedata.normalize("NFC", v.replace("\x00", ""))

    return values.map(one), nulled


def _to_number(series: pd.Series, column: str, integer: bool) -> pd.Series:
    numbers = pd.to_numeric(series.map(lambda v: v.replace(",", "").strip() if isinstance(v, str) else v),
                            errors="coerce")
    bad = numbers.isna() & series.notna()
    if bad.any():
        raise DataError(f"fields.{column}: value {series[bad].iloc[0]!r} is not a number")
    if integer:
        frac = numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
        if frac.any():
            raise DataError(f"fields.{column}: value {series[frac].iloc[0]!r} is not a whole number")
        return numbers.astype("Int64")
    return numbers.astype("float64")


def _to_bool(series: pd.Series, column: str) -> pd.Series:
    def conv(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, bool | np.bool_):
            return bool(v)
        key = str(v).strip().lower()
        if key not in _BOOL:
            raise DataError(f"fields.{column}: value {v!r} is not a boolean (true/false, yes/no, 1/0)")
        return _BOOL[key]
    return series.map(conv).astype("boolean")


def _to_datetime(series: pd.Series, column: str, date_only: bool) -> pd.Series:
    return parse_dates(series, column, timestamp=not date_only)


def _to_json(series: pd.Series, column: str) -> pd.Series:
    def conv(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, str):
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise DataError(f"fields.{column}: value {v[:40]!r} is not JSON") from exc
        return v.tolist() if isinstance(v, np.ndarray) else v
    return series.map(conv)


def convert(series: pd.Series, column: str, type_: str) -> pd.Series:
    """Convert a column to a declared field type; raise :class:`DataError` naming the first bad value."""
    if type_ in ("integer", "bigint"):
        return _to_number(series, column, integer=True)
    if type_ == "float":
        return _to_number(series, column, integer=False)
    if type_ == "boolean":
        return _to_bool(series, column)
    if type_ in ("date", "timestamp"):
        return _to_datetime(series, column, date_only=type_ == "date")
    if type_ == "json":
        return _to_json(series, column)
    return series.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def is_identifier(*names: str) -> bool:
    """Whether a column named ``names`` (its source label, its loaded name) holds identifiers kept as text.

    Telephone and fax numbers, codes, lot, licence and reference numbers are text even when every value
    is digits: ``"28170018"`` is a telephone number, not an amount, and ``"0012"`` keeps its zeros. A name
    is an identifier's when a word of it is one of ``tel``, ``phone``, ``fax``, ``code``, …; when it ends in
    ``no``, ``number`` or ``ref`` after another word that is not ``total``, ``count``, …; or when it holds
    電話, 傳真, 編號, 號碼, 代號, 代碼, 編碼, 地段 or 郵編.

    >>> is_identifier("TELEPHONE"), is_identifier("傳真號碼"), is_identifier("Licence No."), is_identifier("Lot Number")
    (True, True, True, True)
    >>> is_identifier("Total Number"), is_identifier("NO_OF_BEDS"), is_identifier("No."), is_identifier("EASTING")
    (False, False, False, False)
    """
    for name in names:
        if any(word in name for word in _ID_ZH):
            return True
        words = snake_ascii(name).split("_")
        if _ID_WORDS.intersection(words):
            return True
        if len(words) >= 2 and words[-1] in _ID_LAST and words[0] not in _COUNT_FIRST:
            return True
    return False


def detect_numbers(series: pd.Series) -> pd.Series | None:
    """Return ``series`` as numbers when every non-null text value parses as one, else ``None``.

    Values with leading zeros (codes such as ``"0012"``) or shaped as an international telephone number
    (``"+85228170018"``) keep the column as text, and so do values with spaces between digits (they are not
    numbers); a signed number (``"+1.5"``, ``"-2"``) is a number.
    """
    present = series.dropna()
    if present.empty or not all(isinstance(v, str) for v in present.head(1000)):
        return None
    head = present.head(1000).str.strip()
    if pd.to_numeric(head, errors="coerce").isna().any() or head.str.match(_CODE_LIKE).any():
        return None  # cheap early exit on a sample before parsing the whole column
    stripped = present.str.strip()
    if stripped.str.match(_CODE_LIKE).any():
        return None
    numbers = pd.to_numeric(stripped, errors="coerce")
    if numbers.isna().any():
        return None
    integral = (numbers == np.floor(numbers)).all() and not stripped.str.contains(r"[.eE]").any()
    out = pd.to_numeric(series, errors="coerce")
    return out.astype("Int64") if integral else out.astype("float64")


def pg_type(series: pd.Series) -> str:
    """Return the PostgreSQL type for a normalised column."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    present = series.dropna()
    if len(present):
        sample = present.head(1000)
        if all(isinstance(v, dict | list | np.ndarray) for v in sample):
            return "jsonb"
        if all(isinstance(v, dt.datetime) for v in sample):
            return "timestamp"
        if all(isinstance(v, dt.date) for v in sample):
            return "date"
        if all(isinstance(v, bool | np.bool_) for v in sample):
            return "boolean"
    return "text"


def _detect_type(series: pd.Series, column: str, report: LoadReport) -> pd.Series:
    """Numbers or dates, when every non-null text value parses; otherwise the text as it is.

    Dates are tried first for columns whose name says date (CALLDATE holding Excel serials such as
    '43725' is a date, not an integer); numbers first otherwise.
    """
    def as_numbers() -> pd.Series | None:
        numbers = detect_numbers(series)
        if numbers is not None:
            kind = "integers" if numbers.dtype == "Int64" else "numbers"
            report.note(f"column {column!r}: text converted to {kind}")
        return numbers

    def as_dates() -> pd.Series | None:
        dates = detect_dates(series, column)
        if dates is not None:
            formats = ", ".join(dates.attrs.get("date_formats", [])) or "dates"
            report.note(f"column {column!r}: text converted to dates ({formats})")
        return dates

    order = (as_dates, as_numbers) if is_date_name(column) else (as_numbers, as_dates)
    for attempt in order:
        converted = attempt()
        if converted is not None:
            return converted
    return series


@dataclass
class Attributes:
    """Normalised attributes: the frame (columns renamed) and the published field list."""

    frame: gpd.GeoDataFrame
    fields: list[FieldInfo]
    primary_key: str


def normalise_attributes(frame: gpd.GeoDataFrame, definition: LayerDefinition, report: LoadReport, *,
                         text_columns: frozenset[str] = frozenset(), key_start: int = 1,
                         check_key: bool = True) -> Attributes:
    """Rename, clean and type the attribute columns, and settle the primary key.

    Parameters
    ----------
    text_columns
        Source columns kept as text without type detection (a streamed load found that their
        chunks disagree, so the whole column is text, as a whole-file load would make it).
    key_start
        The first generated feature id (``fid``), for a chunk that does not start the source.
    check_key
        Check the declared primary key for nulls and duplicates here (a streamed load checks the
        whole column in its staging table instead).

    Raises
    ------
    LayerDefinitionError
        When ``fields`` or ``primary_key`` name a column the source does not have.
    DataError
        When a declared type does not fit a value, or primary keys are null or duplicated.
    """
    geom_name = frame.geometry.name
    originals = [str(c) for c in frame.columns if c != geom_name]
    if len(originals) + 2 > MAX_COLUMNS:
        raise DataError(f"{definition.label}: {len(originals):,} columns; a PostgreSQL table holds at most "
                        f"{MAX_COLUMNS:,} (with the key and geometry): split the source or drop columns")
    unknown = [k for k in definition.fields if k not in originals]
    if unknown:
        raise LayerDefinitionError(f"{definition.label}: fields.{unknown[0]}: no such column in the source "
                                   f"(columns: {', '.join(originals[:20])})")
    pk_original = definition.primary_key
    if pk_original is not None and pk_original not in originals:
        raise LayerDefinitionError(f"{definition.label}: primary_key: no column {pk_original!r} in the source")
    reserved = {GENERATED_KEY} if pk_original is None else set()
    names = column_names(originals, definition.fields, reserved)
    data: dict[str, pd.Series] = {}
    fields: list[FieldInfo] = []
    nulled = 0
    identifiers: list[str] = []
    for original in originals:
        series = frame[original]
        spec = definition.fields.get(original)
        name = names[original]
        if _is_text(series):
            series, n = clean_text(series)
            nulled += n
            series = repair_text(series, report, original)
        if spec and spec.type:
            series = convert(series, original, spec.type)
        elif _is_text(series) and is_identifier(original, name):
            identifiers.append(original)
        elif _is_text(series) and original not in text_columns:
            series = _detect_type(series, original, report)
        data[name] = series
        desc = spec.description if spec else None
        fields.append(FieldInfo(name, original, pg_type(series), desc.en if desc else None,
                                desc.zh if desc else None))
    if nulled:
        report.note(f"{nulled} text values 'nan'/'NaN'/'' set to NULL")
    if identifiers:
        report.note(f"{len(identifiers)} identifier columns (telephone, fax, codes, numbers) kept as text: "
                    f"{', '.join(identifiers)}")
    renamed = {o: n for o, n in names.items() if o != n}
    if renamed:
        report.note(f"{len(renamed)} columns renamed to snake_case ASCII")
    out = pd.DataFrame(data, index=frame.index)
    if pk_original is None:
        key = GENERATED_KEY
        out.insert(0, key, np.arange(key_start, key_start + len(out), dtype="int64"))
        fields.insert(0, FieldInfo(key, "(generated)", "bigint", "Feature id, in source order", "要素編號"))
    else:
        key = names[pk_original]
        if check_key:
            _check_unique(out[key], pk_original, definition)
    result = gpd.GeoDataFrame(out, geometry=frame.geometry.array, crs=frame.crs)
    result = result.rename_geometry("geom")
    return Attributes(result, fields, key)


def _check_unique(series: pd.Series, original: str, definition: LayerDefinition) -> None:
    if series.isna().any():
        raise key_error(definition, original, empty=int(series.isna().sum()))
    dup = series[series.duplicated(keep=False)]
    if len(dup):
        raise key_error(definition, original, duplicates=sorted({str(v) for v in dup}))


def key_error(definition: LayerDefinition, original: str, *, empty: int = 0,
              duplicates: list[str] | None = None) -> DataError:
    """The error for a declared primary key with ``empty`` NULL rows or (sorted) ``duplicates``."""
    if empty:
        return DataError(f"{definition.label}: primary_key {original!r} is empty in {empty} rows")
    keys = duplicates or []
    shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
    return DataError(f"{definition.label}: duplicate primary keys in {original!r}: {shown}")
