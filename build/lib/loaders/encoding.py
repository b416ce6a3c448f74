"""Text encodings of departmental files: detect them, decode them right.

GDAL reads a DBF marked CP950 (language driver 0x4F) through iconv's CP950, which silently turns
深水埗區 into 深水鶧; and a DBF with language driver 0 is read as ISO-8859-1. So for DBF files the
readers ask GDAL for ISO-8859-1 (one byte per character, lossless) and decode the bytes here with
Python's ``big5hkscs`` codec, which covers the Hong Kong Supplementary Character Set.

Three jobs live here: naming the codec a file declares (``.cpg``, DBF language driver), telling the
codec of undeclared bytes (:func:`detect_text_encoding`, :func:`guess_codec`), and repairing text a
source already got wrong (:func:`repair_text`): HKSCS characters stored as private-use code points by
older Big5 decoders, and Big5 punctuation read as Latin-1 (``St. Raphael¡¦s`` for ``St. Raphael’s``).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loaders.report import LoadReport
from sdi.errors import SourceFormatError

#: DBF language-driver ids (byte 29 of the header) and the codec to decode with.
LDID_CODECS: dict[int, str] = {
    0x01: "cp437", 0x02: "cp850", 0x03: "cp1252", 0x4D: "gbk", 0x4E: "cp949",
    0x4F: "big5hkscs",  # declared CP950 (Big5); big5hkscs is a superset that also has HKSCS
    0x57: "cp1252", 0x58: "cp1252", 0x59: "cp1252", 0x7A: "gbk", 0x7B: "cp949", 0x7C: "big5hkscs",
    0x7D: "cp1255", 0x7E: "cp1256", 0xC8: "cp1250", 0xC9: "cp1251", 0xCA: "cp1254", 0xCB: "cp1253",
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


# --- Detecting the codec of undeclared bytes -------------------------------------------------------

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_CJK = (r"\u2e80-\u2fdf\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe6f\uff00-\uffef"
        r"\U00020000-\U0003ffff")
#: Characters expected in Hong Kong departmental text: ASCII, Latin-1, general punctuation, CJK.
_GOOD = re.compile(rf"[\t\n\r -~\u00a0-\u00ff\u2000-\u206f{_CJK}]")
#: Characters no real text holds: C0/C1 controls (bar tab and newlines), replacement, non-characters.
_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ufffe\uffff\ud800-\udfff]")
#: An ideograph run wedged between ASCII letters: Latin-1 accents read as double-byte ("Se\uXXXXr").
_WEDGED = re.compile(r"(?<=[A-Za-z])[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]+(?=[A-Za-z])")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SCORE_CHARS = 65536
_CUT_SHORT = ("unexpected end of data", "incomplete multibyte sequence", "truncated data")


def _decode(samples: list[bytes], codec: str, cut_ok: bool) -> str | None:
    """Decode every sample strictly; with ``cut_ok``, a last character cut short (DBF widths) is dropped."""
    out = []
    for raw in samples:
        try:
            out.append(raw.decode(codec))
        except UnicodeDecodeError as exc:  # the first error: the bytes before it decode
            if not cut_ok or exc.end < len(raw) or exc.reason not in _CUT_SHORT:
                return None
            out.append(raw[:exc.start].decode(codec))
    return "\n".join(out)


def plausibility(text: str) -> float:
    """Score 0–1: how much ``text`` looks like Hong Kong departmental text (see :data:`_GOOD`).

    Other scripts count half, controls and U+FFFD nothing, and each ideograph run wedged between
    ASCII letters costs two characters (``Señor`` read as Big5 is ``Se`` + ideograph + ``r``).
    """
    text = text[:_SCORE_CHARS]
    if not text:
        return 1.0
    good, bad = len(_GOOD.findall(text)), len(_BAD.findall(text))
    other = len(text) - good - bad
    return max(0.0, (good + 0.5 * other - 2 * len(_WEDGED.findall(text))) / len(text))


#: Each codec's common characters: Big5 level 1 (A440–C67E), GB 2312 level 1 (B0A1–D7F9).
_LEVEL1 = {"big5hkscs": ("big5hkscs", 0xA440, 0xC67E), "gbk": ("gb2312", 0xB0A1, 0xD7F9)}
_RANK = ("big5hkscs", "gbk", "utf-16-le", "utf-16-be")  #: ties go to the earlier (Hong Kong: Big5)


def _common_share(text: str, codec: str) -> float:
    """Share of the non-ASCII characters in ``text`` that are common ideographs (the codec's level 1)."""
    chars = _NON_ASCII.findall(text[:_SCORE_CHARS])[:4000]
    return sum(_in_level(c, *_LEVEL1[codec]) for c in chars) / len(chars) if chars else 0.0


@lru_cache(maxsize=65536)
def _in_level(char: str, charset: str, lo: int, hi: int) -> bool:
    try:
        code = char.encode(charset)
    except UnicodeEncodeError:
        return False
    return len(code) == 2 and lo <= int.from_bytes(code, "big") <= hi


def _choose(samples: list[bytes], cut_ok: bool) -> tuple[str, str]:
    """Pick the codec for samples holding non-ASCII bytes (see :func:`detect_text_encoding`).

    With ``cut_ok`` (DBF values) a last character cut short is tolerated and implausible text is
    ``latin-1`` (kept as read) rather than an error.
    """
    if any(b"\x00" in s for s in samples):
        nul_odd = sum(s[1::2].count(0) for s in samples)
        order = _RANK[2:] if 2 * nul_odd >= sum(s.count(0) for s in samples) else _RANK[:1:-1]
        scored = [(plausibility(t), -i, c) for i, c in enumerate(order)
                  if (t := _decode(samples, c, cut_ok)) is not None]
        if scored and max(scored)[0] >= 0.9:
            return max(scored)[2], "NUL byte pattern (UTF-16 without BOM)"
    texts = {c: t for c in ("utf-8", *_RANK[:2], "latin-1", "cp1252")
             if (t := _decode(samples, c, cut_ok)) is not None}
    score = {c: plausibility(t) for c, t in texts.items()}
    single = "cp1252" if "cp1252" in score and score["cp1252"] > score["latin-1"] else "latin-1"
    if "utf-8" in score and score["utf-8"] >= max(score.values()):
        return "utf-8", "strict decoding"
    multi = [c for c in _RANK[:2] if c in score]
    if multi:  # Big5 text nearly always decodes as GBK too: weigh how common the ideographs are
        weight = {c: score[c] + _common_share(texts[c], c) - 0.01 * _RANK.index(c) for c in multi}
        best = max(multi, key=lambda c: weight[c])
        if score[best] >= score[single]:
            return best, "strict decoding" + ("; preferred to GBK" if best == "big5hkscs" and "gbk" in texts else "")
    if score[single] < 0.5 and not cut_ok:
        raise SourceFormatError("text is not in a recognised encoding (tried UTF-8, UTF-16, Big5-HKSCS, GBK, "
                                "Latin-1); set source.encoding")
    return single, "no multi-byte codec fits; single-byte text"


def detect_text_encoding(raw: bytes) -> tuple[str, str]:
    """Return ``(codec, how)`` for the raw bytes of a text file.

    A byte-order mark wins (``utf-8-sig``, ``utf-16``, ``utf-32``: the codec consumes the mark). Else
    NUL bytes mean UTF-16 (byte order from where the NULs of ASCII characters fall); ASCII alone is
    ``utf-8``; else every codec that decodes the bytes strictly is scored by :func:`plausibility`,
    preferring, on ties, UTF-8, then Big5-HKSCS over GBK (unless the GBK reading is clearly made of
    more common characters), then Latin-1 (``cp1252`` when it reads bytes 0x80–0x9F as text).

    Limits: UTF-16 without a BOM and without any ASCII character, and very short Big5/GBK samples
    made of rare characters, are ambiguous; declare ``source.encoding`` for those.

    Raises
    ------
    SourceFormatError
        When nothing reads the bytes as plausible text (for example a binary file).
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return codec, "byte-order mark"
    if raw.isascii() and b"\x00" not in raw:
        return "utf-8", "ASCII only"
    return _choose([raw], cut_ok=False)


def guess_codec(samples: list[bytes]) -> str | None:
    """Guess the codec of raw byte strings (for example DBF values): ``None`` when all are ASCII.

    Each sample must decode on its own (a last character cut short by a DBF field width is
    tolerated; NUL padding is ignored); the choice follows :func:`detect_text_encoding` without BOMs.
    Never ``None`` for non-ASCII samples and never raises: text no multi-byte codec fits is
    ``latin-1`` (left as read) or ``cp1252``.
    """
    non_ascii = [s.strip(b"\x00") for s in samples if not s.isascii()]
    return _choose(non_ascii, cut_ok=True)[0] if non_ascii else None


# --- HKSCS private-use code points -----------------------------------------------------------------

#: The Big5 user-defined (EUDC) areas and their private-use ranges, as Microsoft's CP950 and the
#: HKSCS-2001/2004 tables lay them out: (first code point, first lead byte, last lead byte, trail skip).
_EUDC = ((0xE000, 0xFA, 0xFE, 0), (0xE311, 0x8E, 0xA0, 0), (0xEEB8, 0x81, 0x8D, 0), (0xF6B1, 0xC6, 0xC8, 63))
_TRAILS = bytes(range(0x40, 0x7F)) + bytes(range(0xA1, 0xFF))  #: the 157 Big5 trail bytes, in order
_PUA_RE = re.compile("[\ue000-\uf8ff]")


def pua_to_big5(code_point: int) -> bytes | None:
    """Return the Big5 bytes a private-use code point stands for, or ``None`` outside the EUDC areas.

    >>> pua_to_big5(0xE88C).hex()  # 埗, as older decoders wrote it
    '96f5'
    """
    for first, lead_lo, lead_hi, skip in _EUDC:
        index = code_point - first + skip
        if skip <= index < (lead_hi - lead_lo + 1) * len(_TRAILS):
            return bytes((lead_lo + index // len(_TRAILS), _TRAILS[index % len(_TRAILS)]))
    return None


@lru_cache(maxsize=1)
def hkscs_pua_table() -> dict[int, str]:
    """Private-use code point → standard Unicode text, derived from Python's ``big5hkscs`` codec.

    Each code point of the EUDC areas is turned into its Big5 bytes (:func:`pua_to_big5`) and decoded
    with ``big5hkscs``; code points whose bytes HKSCS does not define (0x8140–0x86FE and a few
    others) are absent. Four entries decode to two code points (Ê̄, Ê̌, ê̄, ê̌).
    """
    table: dict[int, str] = {}
    for code_point in range(0xE000, 0xF849):
        try:
            text = (pua_to_big5(code_point) or b"\x80").decode("big5hkscs")
        except UnicodeDecodeError:
            continue
        if not _PUA_RE.search(text):
            table[code_point] = text
    return table


# --- Big5 read as Latin-1 ("¡¦" for ’) ------------------------------------------------------------

#: What a repaired run may decode to: general punctuation and the CJK blocks (ideographs, CJK
#: symbols and punctuation, compatibility and small forms, fullwidth forms).
_REPAIRED = re.compile(rf"[\u2000-\u206f{_CJK}]+")
#: Latin-1 symbols Latin text puts side by side (35°±5°, «») and, with three more, before letters
#: (¡Olé, 25°C, «Ça», l·l, Don´t, co\xadoperate).
_SIDE_BY_SIDE = frozenset("¡£©«®°±²³µ·¹º»¼½¾¿ª")
_BEFORE_LETTERS = _SIDE_BY_SIDE | {"\xad", "´", "¯"}
_LATIN_LETTERS = frozenset(chr(c) for c in range(0xC0, 0x100)) - {"×", "÷"}
#: ASCII trails after 0xA1 that make dashes and ellipses: ¡K …, ¡L ‥, ¡V –, ¡X —.
_DASHES = frozenset("KLVX")
_TRAILS_LATIN1 = frozenset(_TRAILS.decode("latin-1"))


def _candidate_pattern(esc: str) -> str:
    """A regex for values worth a look: a private-use character, or a pair :func:`_evidence` could accept.

    ``esc`` formats one code point, for Arrow's RE2 or for :mod:`re`.
    """
    def cls(chars: set[str]) -> str:
        return "[" + "".join(esc.format(ord(c)) for c in sorted(chars)) + "]"
    trails = set(_TRAILS_LATIN1)
    return "|".join((
        f"[{esc.format(0xE000)}-{esc.format(0xF8FF)}]",
        cls({chr(c) for c in range(0x81, 0xA0)}) + cls(trails),
        cls({chr(c) for c in range(0xA1, 0xC0)} - _BEFORE_LETTERS) + cls(trails),
        cls(set(_BEFORE_LETTERS)) + cls({chr(c) for c in range(0xA1, 0xFF)} - _LATIN_LETTERS),
        "¡" + cls({c for c in trails if c.isascii() and not c.isalpha()} | _DASHES),
    ))


_CANDIDATE_RE2 = _candidate_pattern(r"\x{{{:x}}}")
_CANDIDATE = re.compile(_candidate_pattern(r"\u{:04x}"))


def _evidence(lead: str, trail: str, after: str) -> bool:
    """Whether one Big5 byte pair read as Latin-1 could not be Latin text.

    Yes for a C1 control lead (HKSCS 0x81–0x9F) or a symbol Latin text never puts before letters
    (``¤j`` 大, ``¦W`` 名). A symbol it does (:data:`_BEFORE_LETTERS`) counts only before a non-letter
    byte not of that kind (``¡¦`` ’; not ``°C``, ``¡Ó``, ``°±``), or as ``¡`` before an ASCII non-letter
    (``¡]`` （) or dash/ellipsis trail with no letter or digit after (``¡V`` –; not ``¡Ve``). Accented
    letters never count.
    """
    lo = ord(lead)
    if lo <= 0x9F:
        return True
    if not 0xA1 <= lo <= 0xBF:
        return False
    if lead not in _BEFORE_LETTERS:
        return True
    if ord(trail) >= 0xA1:
        return trail not in _LATIN_LETTERS and not (lead in _SIDE_BY_SIDE and trail in _SIDE_BY_SIDE)
    if lead != "¡" or (trail.isalpha() and trail not in _DASHES):
        return False
    return not trail.isalpha() or not (after.isascii() and after.isalnum())


def _fix_run(run: str, after: str) -> str | None:
    """The Big5 reading of a run of byte pairs, or ``None`` when it is not clearly Big5 mojibake."""
    try:
        decoded = run.encode("latin-1").decode("big5hkscs")
    except UnicodeDecodeError:
        return None
    if not _REPAIRED.fullmatch(decoded):
        return None
    for k in range(0, len(run), 2):
        if _evidence(run[k], run[k + 1], run[k + 2] if k + 2 < len(run) else after):
            return decoded
    return None


def repair_mojibake(text: str) -> str:
    """Repair runs of Big5 bytes read as Latin-1 in ``text``; leave everything else as it is.

    The text is split as a Big5 decoder would split its bytes: runs of (lead 0x81–0xFE, trail
    0x40–0x7E or 0xA1–0xFE) pairs. A run is decoded with ``big5hkscs`` only when it all decodes to
    punctuation or CJK characters and one of its pairs is evidence (:func:`_evidence`); so
    ``St. Raphael¡¦s`` becomes ``St. Raphael’s`` while ``Café``, ``Señor`` and ``25°C`` stay.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j + 1 < n and 0x81 <= ord(text[j]) <= 0xFE and text[j + 1] in _TRAILS_LATIN1:
            j += 2
        if j == i:
            out.append(text[i])
            i += 1
            continue
        run = text[i:j]
        out.append(_fix_run(run, text[j] if j < n else "") or run)
        i = j
    return "".join(out)


def _is_utf8_as_latin1(text: str) -> bool:
    try:
        return bool(text.encode("latin-1").decode("utf-8")) and not text.isascii()
    except UnicodeError:
        return False


def _candidates(series: pd.Series) -> np.ndarray:
    """Positions of values with private-use characters or possible Big5-as-Latin-1 pairs."""
    try:
        arr = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        hits = series.map(lambda v: isinstance(v, str) and _CANDIDATE.search(v) is not None)
        return np.flatnonzero(hits.to_numpy(dtype=bool))
    if pc.all(pc.string_is_ascii(arr).fill_null(True)).as_py():
        return np.empty(0, dtype=np.int64)
    hits = pc.match_substring_regex(arr, _CANDIDATE_RE2).fill_null(False)
    return np.flatnonzero(hits.to_numpy(zero_copy_only=False))


def repair_text(series: pd.Series, report: LoadReport, column: str) -> pd.Series:
    """Repair text a source got wrong, counting each repaired value in ``report``.

    1. HKSCS private-use characters (U+E000–U+F848, as older Big5 decoders wrote them) become their
       standard characters (:func:`hkscs_pua_table`; U+E88C becomes 埗); private-use characters with
       no mapping stay and are warned about.
    2. Big5 bytes read as Latin-1 are re-decoded (:func:`repair_mojibake`), except in values that
       read whole as UTF-8 (that is another mix-up: warned about, left alone).

    Repaired values are NFC-normalised (a few Big5 codes decode to compatibility ideographs).
    Values without such characters are found with one Arrow regex pass and never touched in Python.
    """
    positions = _candidates(series)
    if not len(positions):
        return series
    mapped = mojibake = 0
    unmapped: Counter[str] = Counter()
    utf8: list[str] = []
    changes: dict[int, str] = {}
    for pos in positions:
        value = series.iat[pos]
        new = value
        if _PUA_RE.search(new):
            new = new.translate(hkscs_pua_table())
            mapped += new != value
            unmapped.update(_PUA_RE.findall(new))
        if _is_utf8_as_latin1(new):
            utf8.append(new)
        else:
            fixed = repair_mojibake(new)
            mojibake += fixed != new
            new = fixed
        if new != value:
            changes[int(pos)] = unicodedata.normalize("NFC", new)
    report.repair(f"HKSCS private-use characters mapped to standard Unicode in {column!r}", mapped)
    report.repair(f"Big5 text read as Latin-1 repaired in {column!r}", mojibake)
    if unmapped:
        shown = ", ".join(f"U+{ord(c):04X}" for c, _ in unmapped.most_common(5))
        report.warn(f"column {column!r}: {unmapped.total()} private-use characters have no HKSCS mapping "
                    f"and were left as they are ({shown})")
    if utf8:
        report.warn(f"column {column!r}: {len(utf8)} values look like UTF-8 read as Latin-1 "
                    f"(for example {utf8[0][:40]!r}); left as they are, declare source.encoding")
    if not changes:
        return series
    out = series.copy()
    keys = list(changes)
    out.iloc[keys] = [changes[k] for k in keys]
    return out
