"""Encodings: codec detection, HKSCS private-use mapping, Big5-read-as-Latin-1 repair (loaders/encoding.py)."""

from __future__ import annotations

import codecs
import contextlib
import unicodedata

import pandas as pd
import pyogrio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loaders.encoding import (
    detect_text_encoding,
    guess_codec,
    hkscs_pua_table,
    pua_to_big5,
    repair_mojibake,
    repair_text,
)
from loaders.report import LoadReport
from sdi.errors import SdiError, SourceFormatError
from tests.conftest import DATA, SAMPLE

ENC = DATA / "encoding"
HKSCS = "埗𨋢嘅噉咗嘢冇佢哋乜啲"  # HKSCS or Cantonese characters
TRAILS = [*range(0x40, 0x7F), *range(0xA1, 0xFF)]


def _chars(codec: str, leads: range, last: int) -> list[str]:
    out = []
    for lead in leads:
        for trail in TRAILS:
            if (lead << 8 | trail) <= last:
                with contextlib.suppress(UnicodeDecodeError):
                    out.append(bytes((lead, trail)).decode(codec))
    return out


BIG5_COMMON = _chars("big5hkscs", range(0xA4, 0xC7), 0xC67E)  # Big5 level 1: 5401 frequent characters
GB_COMMON = [c for c in _chars("gb2312", range(0xB0, 0xD8), 0xD7F9) if len(c) == 1]  # GB 2312 level 1
ASCII_WORD = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8)
TRAD_WORD = st.text(st.sampled_from(BIG5_COMMON + list(HKSCS)), min_size=1, max_size=6)
SIMP_WORD = st.text(st.sampled_from(GB_COMMON), min_size=1, max_size=6)


def _text(word: st.SearchStrategy[str], min_words: int = 1) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(word, ASCII_WORD), min_size=min_words, max_size=12).map(" ".join)


def _roundtrips(raw: bytes, text: str, codec: str) -> bool:
    try:
        return raw.decode(codec).lstrip("\ufeff") == text
    except UnicodeDecodeError:
        return False


# --- detection --------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "big5hkscs", "utf-16", "utf-16-le", "utf-16-be"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text(TRAD_WORD))
def test_detected_codec_decodes_traditional_chinese_back(codec: str, text: str) -> None:
    assume(not text.isascii())
    if codec in ("utf-16-le", "utf-16-be"):  # BOM-less UTF-16 is told by its ASCII: a small CSV
        text = f"name,value\r\n{text},1\r\n"
    raw = text.encode(codec)
    detected, how = detect_text_encoding(raw)
    assert _roundtrips(raw, text, detected), (detected, how)


def _double_byte_codes(raw: bytes) -> list[int]:
    codes, i = [], 0
    while i < len(raw):
        if raw[i] >= 0x80:
            codes.append(int.from_bytes(raw[i:i + 2], "big"))
            i += 2
        else:
            i += 1
    return codes


@settings(max_examples=150, deadline=None)
@given(text=_text(SIMP_WORD, min_words=1))
def test_detected_codec_decodes_gbk_back_unless_it_is_also_common_big5(text: str) -> None:
    raw = text.encode("gbk")
    # Bytes that are also all common Big5 characters (A440–C67E) are truly ambiguous: Hong Kong prefers Big5.
    assume(any(not 0xA440 <= code <= 0xC67E for code in _double_byte_codes(raw)))
    detected, _ = detect_text_encoding(raw)
    assert _roundtrips(raw, text, detected), detected


def test_gbk_sentence_and_big5_sentence() -> None:
    simplified = "香港特别行政区政府统计处发布人口普查结果，这个数据很重要"
    traditional = "香港特別行政區政府統計處發佈人口普查結果，深水埗區議會"
    assert detect_text_encoding(simplified.encode("gbk"))[0] == "gbk"
    assert detect_text_encoding(traditional.encode("big5hkscs"))[0] == "big5hkscs"
    assert detect_text_encoding("沙田區".encode("big5hkscs")) == ("big5hkscs", "strict decoding; preferred to GBK")
    assert detect_text_encoding(traditional.encode("utf-8"))[0] == "utf-8"


@pytest.mark.parametrize(("raw", "expected"), [
    (codecs.BOM_UTF8 + "深水埗".encode(), ("utf-8-sig", "byte-order mark")),
    ("深水埗".encode("utf-16"), ("utf-16", "byte-order mark")),
    ("a,b".encode("utf-32"), ("utf-32", "byte-order mark")),
    (b"EASTING,NORTHING\n1,2\n", ("utf-8", "ASCII only")),
    ("Café, Señor, Zürich, 25°C".encode("latin-1"), ("latin-1", "no multi-byte codec fits; single-byte text")),
    ("“Smart” quotes – café".encode("cp1252"), ("cp1252", "no multi-byte codec fits; single-byte text")),
])
def test_detect_examples(raw: bytes, expected: tuple[str, str]) -> None:
    assert detect_text_encoding(raw) == expected


def test_real_utf16_table_fixture() -> None:
    raw = (ENC / "library_utf16le_bom.csv").read_bytes()
    codec, how = detect_text_encoding(raw)
    assert (codec, how) == ("utf-16", "byte-order mark")
    assert "中文名稱" in raw.decode(codec)
    bomless = raw[2:]
    assert detect_text_encoding(bomless)[0] == "utf-16-le"
    assert bomless.decode("utf-16-le") == raw.decode("utf-16")


def test_binary_bytes_are_refused_with_one_line() -> None:
    with pytest.raises(SourceFormatError) as err:
        detect_text_encoding(bytes(range(0x80, 0xA0)) * 4)
    assert isinstance(err.value, SdiError) and isinstance(err.value, ValueError)
    assert "source.encoding" in str(err.value) and "\n" not in str(err.value)


def test_guess_codec_on_dbf_values() -> None:
    assert guess_codec([b"ABC", b"123"]) is None
    assert guess_codec(["深水埗區".encode("big5hkscs"), "九龍城區".encode("big5hkscs")]) == "big5hkscs"
    assert guess_codec(["深水埗區".encode(), "Café".encode()]) == "utf-8"
    assert guess_codec([b"Caf\xe9", b"Se\xf1or"]) == "latin-1"
    # A DBF field width can cut the last double-byte character in half: still Big5.
    assert guess_codec(["深水埗區".encode("big5hkscs")[:-1], "九龍城".encode("big5hkscs")]) == "big5hkscs"


# --- HKSCS private-use code points ------------------------------------------------------------------

def _eudc_sequence() -> list[bytes]:
    """The Big5 user-defined areas in Microsoft's EUDC order, written out independently of the module."""
    areas = [(0xFA, 0xFE, False), (0x8E, 0xA0, False), (0x81, 0x8D, False), (0xC6, 0xC8, True)]
    out = []
    for first, last, starts_high in areas:
        for lead in range(first, last + 1):
            for trail in TRAILS:
                if not (starts_high and lead == first and trail < 0xA1):
                    out.append(bytes((lead, trail)))
    return out


def test_pua_formula_matches_the_eudc_layout() -> None:
    sequence = _eudc_sequence()
    assert len(sequence) == 0xF849 - 0xE000
    assert [pua_to_big5(0xE000 + i) for i in range(len(sequence))] == sequence
    assert pua_to_big5(0xF849) is None and pua_to_big5(0xDFFF) is None


def test_pua_table_examples() -> None:
    table = hkscs_pua_table()
    assert table[0xE88C] == "埗"  # the census README's fix-chars.py
    assert pua_to_big5(0xE88C) == bytes.fromhex("96F5")
    assert len(table) > 4800
    assert 0xEEB8 not in table  # 0x8140: user-defined, nothing standard


@given(st.sampled_from(sorted(hkscs_pua_table())))
def test_every_pua_mapping_is_standard_and_encodes_back(code_point: int) -> None:
    text = hkscs_pua_table()[code_point]
    assert text and not any(0xE000 <= ord(c) <= 0xF8FF for c in text)
    assert text.encode("big5hkscs") == pua_to_big5(code_point)


def test_repair_text_maps_pua_and_warns_about_unmapped() -> None:
    report = LoadReport("t", "t")
    series = pd.Series(["深水\ue88c區", "\ue88c", "九龍", None, "\uefb8x", 3], dtype=object)  # U+EFB8 ← 0x8140+
    out = repair_text(series, report, "DC_CHIN")
    assert list(out[:3]) == ["深水埗區", "埗", "九龍"] and out[3] is None and out[5] == 3
    assert out[4] == "\uefb8x"
    assert report.repaired["HKSCS private-use characters mapped to standard Unicode in 'DC_CHIN'"] == 2
    assert report.warnings == ["column 'DC_CHIN': 1 private-use characters have no HKSCS mapping and were left "
                               "as they are (U+EFB8)"]


# --- Big5 read as Latin-1 -----------------------------------------------------------------------------

PUNCT = [*list("’‘“”（）"), " – ", " — ", "… ", "“「香港」”", "深水埗。"]
PLACES = ["深水埗", "九龍城", "沙田", "大埔", "屯門", "元朗", "觀塘", "灣仔", "油尖旺", "香港", "中文名稱", "嘅", "𨋢"]
ENGLISH = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,/-", min_size=0, max_size=10)


@settings(max_examples=300)
@given(st.lists(st.tuples(ENGLISH, st.sampled_from(PUNCT + PLACES)), min_size=1, max_size=6), ENGLISH)
def test_mojibake_repair_fixes_big5_read_as_latin1(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(a + b for a, b in parts) + tail
    mangled = text.encode("big5hkscs").decode("latin-1")
    assert repair_mojibake(mangled) == text


LATIN_WORD = st.text("abcdeéèêëàáâäãåçñöóôõøüúûùßíïîÿæÆÉÑÜÖÄÇÅØðþ", min_size=2, max_size=10)
LATIN_TOKEN = st.one_of(LATIN_WORD, LATIN_WORD.map(lambda w: "¡" + w.capitalize() + "!"),
                        LATIN_WORD.map(lambda w: "¿" + w + "?"), st.sampled_from(
                            ["25°C", "35°±5°", "½", "10µm", "«Ça»", "l·l", "Don´t", "©HKSAR", "£5", "m²", "Nº3"]))


@settings(max_examples=300)
@given(st.lists(LATIN_TOKEN, min_size=1, max_size=8).map(" ".join))
def test_mojibake_repair_leaves_latin1_text_alone(text: str) -> None:
    assert repair_mojibake(text) == text
    report = LoadReport("t", "t")
    assert repair_text(pd.Series([text]), report, "c").iloc[0] == text
    assert not report.repaired


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), _text(TRAD_WORD), LATIN_TOKEN,
                          st.sampled_from(PLACES + PUNCT).map(lambda t: t.encode("big5hkscs").decode("latin-1")),
                          st.sampled_from(sorted(hkscs_pua_table())).map(chr)), min_size=1, max_size=4).map("".join))
def test_repair_text_is_idempotent(text: str) -> None:
    text = unicodedata.normalize("NFC", text)
    once = repair_text(pd.Series([text, None]), LoadReport("t", "t"), "c")
    report = LoadReport("t", "t")
    twice = repair_text(once, report, "c")
    assert list(twice) == list(once)
    assert not report.repaired


def test_utf8_read_as_latin1_is_left_alone_and_warned() -> None:
    report = LoadReport("t", "t")
    mangled = "深水埗 Café".encode().decode("latin-1")
    assert repair_text(pd.Series([mangled]), report, "NAME").iloc[0] == mangled
    assert not report.repaired and "UTF-8 read as Latin-1" in report.warnings[0]


def test_real_landslide_locations_are_repaired() -> None:
    frame = pyogrio.read_dataframe(SAMPLE / "landslides" / "landslides_extract.shp", read_geometry=False)
    location = frame["LOCATION"]
    affected = int(location.str.contains("[¡¦]", regex=True, na=False).sum())
    assert affected == 23
    report = LoadReport("landslide_incidents", "x")
    out = repair_text(location, report, "LOCATION")
    assert report.repaired == {"Big5 text read as Latin-1 repaired in 'LOCATION'": affected}
    assert "St. Raphael’s Catholic Cemetery, Cheung Sha Wan" in set(out)
    assert "1 – 5, Hatton Road, Lung Fu Shan" in set(out)
    assert not out.str.contains("[\u0080-\u00ff]", regex=True, na=False).any()
    unchanged = ~location.str.contains("[¡¦]", regex=True, na=False)
    assert out[unchanged].equals(location[unchanged])


def test_real_dc_land_dbf_gives_sham_shui_po() -> None:
    from loaders.read import _decode_latin1_columns

    frame = pyogrio.read_dataframe(SAMPLE / "dc_2001" / "dc_land.dbf", encoding="ISO-8859-1", read_geometry=False)
    raw = [v.encode("latin-1") for v in frame["DC_CHIN"]]
    assert guess_codec(raw) == "big5hkscs"
    _decode_latin1_columns(frame, "big5hkscs")
    report = LoadReport("t", "t")
    out = repair_text(frame["DC_CHIN"], report, "DC_CHIN")
    assert "深水埗區" in set(out) and not report.repaired and not report.warnings
    # The same name as older decoders wrote it (PUA U+E88C) comes out the same.
    old = out.str.replace("埗", "\ue88c", regex=False)
    assert list(repair_text(old, LoadReport("t", "t"), "DC_CHIN")) == list(out)


def test_repair_text_skips_clean_columns_without_python_loops() -> None:
    # Neither ASCII nor ordinary Chinese/Latin-1 text is a candidate: the column comes back untouched.
    for values in (["a", "b", None], ["深水埗區", "Café", "25°C", "35°±5°", None]):
        series = pd.Series(values * 100_000)
        report = LoadReport("t", "t")
        assert repair_text(series, report, "c") is series
        assert not report.repaired and not report.warnings
