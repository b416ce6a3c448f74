"""Integers in requests are ASCII digits only (:mod:`sdi.numerals`): every parser of a limit, an offset, a tile
index, an EPSG code or an integer column's value refuses other "digits" with its own error, never a bare
ValueError (which the web layer answers 500)."""

from __future__ import annotations

import doctest

import pytest

import sdi.numerals
from sdi.crs import parse_crs, uri_crs
from sdi.errors import CrsError, QueryError
from sdi.numerals import decimal_integer
from sdi.query.params import parse_int, typed_value
from sdi.query.tms import tile_index

#: str.isdigit() is true for the first five (int() reads the Arabic-Indic and fullwidth ones, fails on the rest).
NOT_ASCII = ["²", "①", "١٢", "５", "𝟙", "1_000", "0x10", "1e3", "1.0", "\u00a01", "", "+", "-"]


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(sdi.numerals).failed == 0


@pytest.mark.parametrize("text", NOT_ASCII)
def test_only_ascii_digits_are_a_decimal_integer(text: str) -> None:
    assert decimal_integer(text) is None and decimal_integer(text, signed=True) is None


def test_signs_and_length() -> None:
    assert decimal_integer("0042") == 42 and decimal_integer("-42") is None
    assert decimal_integer("-42", signed=True) == -42 and decimal_integer("+-1", signed=True) is None
    assert decimal_integer("9" * 18) == int("9" * 18) and decimal_integer("9" * 19) is None
    assert decimal_integer("1\n") is None  # fullmatch, not a `$` that allows a trailing newline


@pytest.mark.parametrize("text", NOT_ASCII)
def test_every_parser_refuses_other_digits_naming_its_parameter(text: str) -> None:
    with pytest.raises(QueryError, match=r"^limit: .* is not an integer$"):
        parse_int(text, "limit", 1)
    with pytest.raises(QueryError, match=r"^tileRow: .* is not a non-negative integer$"):
        tile_index(text, "tileRow")
    with pytest.raises(QueryError, match=r"^lot_id: .* is not a number$"):
        typed_value("integer", text, "lot_id")
    with pytest.raises(CrsError, match=r"^bbox-crs: "):
        uri_crs(f"http://www.opengis.net/def/crs/EPSG/0/{text}", what="bbox-crs")
    with pytest.raises(CrsError, match=r"^bbox-crs: "):
        uri_crs(f"EPSG:{text}", what="bbox-crs")


def test_plain_integers_still_parse() -> None:
    assert parse_int(" 25 ", "limit", 1) == 25 and parse_int("+3", "offset", 0) == 3
    assert tile_index("12", "tileMatrix") == 12 and typed_value("bigint", "-7", "n") == -7
    assert uri_crs("EPSG:2326").srid == 2326 and parse_crs("2326").to_epsg() == 2326
    with pytest.raises(CrsError):
        parse_crs("²")
