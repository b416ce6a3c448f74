"""Reading a table file into text columns: delimited text (encoding and delimiter detected) and xlsx sheets.

:mod:`loaders.tables` turns the result into points. The header's width is checked against
``SDI_MAX_TABLE_COLUMNS`` in one linear pass before pandas parses anything: pandas renames duplicate
column names (``a``, ``a.1``, ...) in time quadratic in their number, so a one-line ``a,a,a,...`` file of
a few hundred kilobytes would otherwise take minutes.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loaders.encoding import normalise_codec
from loaders.limits import Limits, read_bytes
from loaders.report import LoadReport
from sdi.errors import SourceFormatError
from sdi.layerdef import LayerDefinition

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def detect_encoding(raw: bytes) -> tuple[str, str]:
    """Return ``(codec, how)`` for raw table bytes: a BOM, UTF-16 NUL pattern, strict UTF-8, else Big5-HKSCS.

    Raises
    ------
    SourceFormatError
        When no candidate decodes the bytes.
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return codec, "byte-order mark"
    head = raw[:4096]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if even + odd > len(head) // 4:
        return ("utf-16-be" if even > odd else "utf-16-le"), "NUL byte pattern (UTF-16 without BOM)"
    for codec in ("utf-8", "big5hkscs"):
        try:
            raw.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec, "strict decoding"
    raise SourceFormatError("text is neither UTF-8, UTF-16 nor Big5-HKSCS; set source.encoding")


def detect_delimiter(text: str) -> str:
    """Return the delimiter (tab, comma, semicolon or pipe) that splits the first records most consistently.

    Quoted fields are respected, so tabs or commas inside quotes do not count.
    """
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    best, best_score = ",", (0.0, 0)
    for delimiter in "\t,;|":
        counts = [len(r) for _, r in zip(range(50), csv.reader(io.StringIO(sample), delimiter=delimiter), strict=False)
                  if r]
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def header_width(text: str, delimiter: str) -> int:
    """How many fields the first record of ``text`` has (quotes respected), in one linear pass."""
    first = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    return len(first)


def _check_width(path: Path, columns: int, limits: Limits) -> None:
    if columns > limits.table_columns:
        raise SourceFormatError(f"{path}: the header has {columns:,} columns, more than the {limits.table_columns:,} "
                                f"allowed (SDI_MAX_TABLE_COLUMNS)")


def read_delimited(path: Path, definition: LayerDefinition, report: LoadReport, limits: Limits) -> pd.DataFrame:
    raw = read_bytes(path)
    if definition.source.encoding:
        codec, how = normalise_codec(definition.source.encoding), "declared in source.encoding"
    else:
        try:
            codec, how = detect_encoding(raw)
        except SourceFormatError as exc:
            raise SourceFormatError(f"{path}: {exc}") from exc
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(f"{path}: cannot decode as {codec}: byte {exc.start}") from exc
    text = text.lstrip("\ufeff")
    delimiter = detect_delimiter(text)
    _check_width(path, header_width(text, delimiter), limits)
    report.encoding = codec
    report.note(f"table decoded as {codec} ({how}); delimiter {delimiter!r}")
    try:
        return pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, quotechar='"')
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceFormatError(f"{path}: not a readable table: {str(exc).splitlines()[0]}") from exc


def read_spreadsheet(path: Path, definition: LayerDefinition, report: LoadReport, limits: Limits) -> pd.DataFrame:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise SourceFormatError(f"{path}: not a readable xlsx workbook ({exc})") from exc
    try:
        names = list(book.sheetnames)
        filled = [ws.title for ws in book.worksheets
                  if any(v not in (None, "") for row in ws.iter_rows(values_only=True) for v in row)]
        widths = {ws.title: max((len(row) for row in ws.iter_rows(max_row=1, values_only=True)), default=0)
                  for ws in book.worksheets}
    finally:
        book.close()
    sheet = definition.source.layer
    if sheet is not None and sheet not in names:
        raise SourceFormatError(f"{definition.label}: source.layer {sheet!r}: no such sheet in {path.name} "
                                f"(sheets: {', '.join(names)})")
    if sheet is None:
        if not filled:
            raise SourceFormatError(f"{path}: every sheet is empty ({', '.join(names)})")
        if len(filled) > 1:
            raise SourceFormatError(f"{definition.label}: {path.name} has {len(filled)} non-empty sheets "
                                    f"({', '.join(filled)}); set source.layer to the sheet to load")
        sheet = filled[0]
    _check_width(path, widths[sheet], limits)
    frame = pd.read_excel(path, sheet_name=sheet, engine="openpyxl", dtype=object)
    report.note(f"table read from sheet {sheet!r} of {path.name} ({len(names)} sheets)")
    mixed = []
    for column in frame.columns:
        frame[column], was_mixed = _spreadsheet_column(frame[column])
        if was_mixed:
            mixed.append(str(column))
    if mixed:
        report.note(f"{len(mixed)} spreadsheet columns mix text with numbers or dates: kept as text "
                    f"({', '.join(mixed)})")
    return frame


def _spreadsheet_column(series: pd.Series) -> tuple[pd.Series, bool]:
    """Give a spreadsheet column one type: text, numbers, booleans or datetimes; mixed columns become text."""
    present = series.dropna()
    kinds = {type(v) for v in present}
    if not present.empty and kinds <= {int, float} | {bool}:
        if kinds == {bool}:
            return series.astype("boolean"), False
        if bool not in kinds:
            numbers = pd.to_numeric(series)
            integral = kinds == {int}
            return (numbers.astype("Int64") if integral else numbers.astype("float64")), False
    if not present.empty and all(isinstance(v, pd.Timestamp | np.datetime64) or hasattr(v, "isoformat")
                                 for v in present) and str not in kinds:
        return pd.to_datetime(series), False

    def text(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return v.isoformat() if hasattr(v, "isoformat") else str(v)

    return series.map(text).astype(object), len(kinds) > 1
