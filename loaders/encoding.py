"""Text encodings of departmental files: detect them, decode them right.

GDAL reads a DBF marked CP950 (language driver 0x4F) through iconv's CP950, which silently turns
深水埗區 into 深水鶧; and a DBF with language driver 0 is read as ISO-8859-1. So for DBF files the
readers ask GDAL for ISO-8859-1 (one byte per character, lossless) and decode the bytes here with
Python's ``big5hkscs`` codec, which covers the Hong Kong Supplementary Character Set.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd

from loaders.report import LoadReport

#: DBF language-driver ids (byte 29 of the header) and the codec to decode with.
LDID_CODECS: dict[int, str] = {
    0x01: "cp437",
    0x02: "cp850",
    0x03: "cp1252",
    0x4D: "gb2312",
    0x4E: "cp949",
    0x4F: "big5hkscs",  # declared CP950 (Big5); big5hkscs is a superset that also has HKSCS
    0x57: "cp1252",
    0x58: "cp1252",
    0x59: "cp1252",
    0x7A: "gbk",
    0x7B: "cp949",
    0x7C: "big5hkscs",
    0x7D: "cp1255",
    0x7E: "cp1256",
    0xC8: "cp1250",
    0xC9: "cp1251",
    0xCA: "cp1254",
    0xCB: "cp1253",
}

#: .cpg contents (upper-cased) and their codecs; Big5 family names map to big5hkscs.
_CPG_ALIASES = {
    "UTF-8": "utf-8", "UTF8": "utf-8", "65001": "utf-8",
    "BIG5": "big5hkscs", "CP950": "big5hkscs", "950": "big5hkscs", "BIG5-HKSCS": "big5hkscs",
    "BIG5HKSCS": "big5hkscs", "ANSI 950": "big5hkscs",
    "LATIN1": "latin-1", "ISO-8859-1": "latin-1", "ISO88591": "latin-1", "8859_1": "latin-1",
    "1252": "cp1252", "ANSI 1252": "cp1252", "CP1252": "cp1252", "WINDOWS-1252": "cp1252",
    "GBK": "gbk", "936": "gbk", "GB2312": "gbk",
}


def normalise_codec(name: str) -> str:
    """Return Python's codec name for ``name``, mapping the Big5 family to ``big5hkscs``.

    Raises
    ------
    LookupError
        When Python knows no such codec.
    """
    alias = _CPG_ALIASES.get(name.strip().upper())
    if alias:
        return alias
    info = codecs.lookup(name.strip())
    return "big5hkscs" if info.name in ("big5", "cp950") else info.name


def read_cpg(shp_path: Path) -> str | None:
    """Return the codec named by the shapefile's ``.cpg`` sidecar, or ``None`` when absent or unknown."""
    for suffix in (".cpg", ".CPG"):
        cpg = shp_path.with_suffix(suffix)
        if cpg.exists():
            try:
                return normalise_codec(cpg.read_text("ascii", errors="ignore").strip())
            except LookupError:
                return None
    return None


def dbf_ldid(dbf_path: Path) -> int | None:
    """Return the DBF header's language-driver id, or ``None`` when the file is too short."""
    with dbf_path.open("rb") as fh:
        header = fh.read(32)
    return header[29] if len(header) >= 32 else None


def guess_codec(samples: list[bytes]) -> str | None:
    """Guess the codec of raw byte strings: ``None`` when all are ASCII, else UTF-8 or Big5-HKSCS.

    UTF-8 is chosen when every sample decodes strictly as UTF-8 (a random Big5 string rarely does);
    otherwise ``big5hkscs`` when every sample decodes with it; otherwise ``None`` (undetermined).
    """
    non_ascii = [s for s in samples if any(b >= 0x80 for b in s)]
    if not non_ascii:
        return None
    for codec in ("utf-8", "big5hkscs"):
        try:
            for s in non_ascii:
                s.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec
    return None


def repair_text(series: pd.Series, report: LoadReport, column: str) -> pd.Series:
    """Repair text a source got wrong (stub: returns ``series`` unchanged)."""
    return series
