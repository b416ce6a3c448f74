"""Dates stored as text: detection (every value or nothing), Excel serials, declared types, speed."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.dates import DATE_FORMATS, TIMESTAMP_FORMATS, detect_dates, is_date_name, parse_dates
from sdi.errors import DataError

DATES = st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2049, 12, 31))


def test_the_four_geodata_store_formats_and_iso_in_one_column() -> None:
    # registrationDateEN in the GeoData Store special-waiver file mixes '16/3/2022' and '15 October 2021'
    series = pd.Series(["28 Jan 2022", "16/3/2022", "27 OCTOBER 2021", "2022年1月28日", None, "2022-01-28"])
    out = detect_dates(series)
    assert out is not None and out.dtype == object
    assert out.tolist() == [dt.date(2022, 1, 28), dt.date(2022, 3, 16), dt.date(2021, 10, 27),
                            dt.date(2022, 1, 28), None, dt.date(2022, 1, 28)]
    assert set(out.attrs["date_formats"]) == {"%d %b %Y", "%d/%m/%Y", "%d %B %Y", "%Y年%m月%d日", "%Y-%m-%d"}


def test_day_first_and_month_first_is_not_guessed() -> None:
    assert detect_dates(pd.Series(["3/4/2022"])).tolist() == [dt.date(2022, 4, 3)]  # type: ignore[union-attr]
    assert detect_dates(pd.Series(["12/31/2021", "1/2/2022"])) is None  # month-first: stays text


def test_messy_spacing_ordinals_and_sept() -> None:
    out = detect_dates(pd.Series([" 1st  Sept, 2021 ", "3rd\tMarch 2020", "Jan 28, 2022"]))
    assert out is not None
    assert out.tolist() == [dt.date(2021, 9, 1), dt.date(2020, 3, 3), dt.date(2022, 1, 28)]


def test_unknown_among_dates_keeps_the_column_text() -> None:
    # landslide FAILDATE: d/m/YYYY text or 'Unknown'
    assert detect_dates(pd.Series(["17/9/2019", "Unknown", "2/8/2019"])) is None


@pytest.mark.parametrize("values", [["Chan Tai Man", "Wong"], ["A12", "B7"], ["2019", "2020"], [""], []])
def test_non_dates_are_none(values: list[str]) -> None:
    assert detect_dates(pd.Series(values, dtype=object)) is None


def test_times_give_a_timestamp_column() -> None:
    out = detect_dates(pd.Series(["2021-01-19 10:37:57", "2021-01-20", None]))
    assert out is not None and out.dtype == "datetime64[ns]"
    assert out[0] == pd.Timestamp("2021-01-19 10:37:57") and out[1] == pd.Timestamp("2021-01-20")
    assert pd.isna(out[2])


def test_excel_serials_only_for_date_names() -> None:
    calldate = pd.Series(["43725", "43727", None])
    out = detect_dates(calldate, "CALLDATE")
    assert out is not None and out.tolist() == [dt.date(2019, 9, 17), dt.date(2019, 9, 19), None]
    assert detect_dates(calldate) is None and detect_dates(calldate, "OBJECTID") is None
    assert detect_dates(pd.Series(["43725", "999999"]), "CALLDATE") is None  # beyond 2100
    assert detect_dates(pd.Series(["043725"]), "CALLDATE") is None  # a code with a leading zero
    half = detect_dates(pd.Series(["43725.5"]), "issue_date")
    assert half is not None and half[0] == pd.Timestamp("2019-09-17 12:00")


@pytest.mark.parametrize(("name", "expected"), [("CALLDATE", True), ("Last Update date", True), ("update_date", True),
                                                ("日期", True), ("issue_dt", True), ("OBJECTID", False),
                                                ("update", False)])
def test_is_date_name(name: str, expected: bool) -> None:
    assert is_date_name(name) is expected


def test_parse_dates_names_column_and_first_bad_value() -> None:
    with pytest.raises(DataError, match=r"^fields\.FAILDATE: value 'Unknown' is not a date"):
        parse_dates(pd.Series(["17/9/2019", "Unknown", "nope"]), "FAILDATE")
    with pytest.raises(DataError, match=r"fields\.CALLDATE: value '999999' is not a date"):
        parse_dates(pd.Series(["43725", "999999"]), "CALLDATE")


def test_parse_dates_declared_types() -> None:
    text = pd.Series(["2021-01-19 10:37:57", "43725", "28 Jan 2022", None])
    assert parse_dates(text, "d").tolist() == [dt.date(2021, 1, 19), dt.date(2019, 9, 17), dt.date(2022, 1, 28), None]
    stamps = parse_dates(text, "d", timestamp=True)
    assert stamps.dtype == "datetime64[ns]" and stamps[0] == pd.Timestamp("2021-01-19 10:37:57")
    assert parse_dates(pd.Series([43725.0, np.nan]), "n").tolist() == [dt.date(2019, 9, 17), None]
    native = pd.Series(pd.to_datetime(["2020-05-01 08:00", None]))
    assert parse_dates(native, "n").tolist() == [dt.date(2020, 5, 1), None]
    mixed = pd.Series([dt.date(2020, 1, 2), "3/1/2020"], dtype=object)
    assert parse_dates(mixed, "m").tolist() == [dt.date(2020, 1, 2), dt.date(2020, 1, 3)]


@settings(max_examples=60, deadline=None)
@given(st.lists(DATES, min_size=1, max_size=30), st.sampled_from(DATE_FORMATS), st.data())
def test_property_dates_round_trip_in_every_format(days: list[dt.date], fmt: str, data: st.DataObject) -> None:
    # each value may also use a second format: columns mixing formats still convert exactly
    other = data.draw(st.sampled_from(DATE_FORMATS))
    text = [d.strftime(data.draw(st.sampled_from([fmt, other]))) for d in days]
    out = detect_dates(pd.Series(text, dtype=object))
    assert out is not None, text
    assert out.tolist() == days


@settings(max_examples=30, deadline=None)
@given(st.lists(st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2049, 12, 31)),
                min_size=1, max_size=20), st.sampled_from([f for f in TIMESTAMP_FORMATS if "%f" not in f]))
def test_property_timestamps_round_trip(stamps: list[dt.datetime], fmt: str) -> None:
    text = [s.strftime(fmt) for s in stamps]
    expected = [pd.Timestamp(s.replace(microsecond=0) if "%S" in fmt else s.replace(second=0, microsecond=0))
                for s in stamps]
    out = detect_dates(pd.Series(text, dtype=object))
    assert out is not None and out.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(DATES, min_size=1, max_size=30), st.sampled_from(DATE_FORMATS), st.data(),
       st.sampled_from(["Unknown", "N.A.", "32/1/2020", "2020-13-01", "about 2020", "-", "TBC 2021"]))
def test_property_one_unparseable_value_keeps_text(days: list[dt.date], fmt: str, data: st.DataObject,
                                                   bad: str) -> None:
    text = [d.strftime(fmt) for d in days]
    text.insert(data.draw(st.integers(0, len(text))), bad)
    assert detect_dates(pd.Series(text, dtype=object)) is None
    with pytest.raises(DataError, match=f"value {bad!r} is not a date"):
        parse_dates(pd.Series(text, dtype=object), "col")


def test_a_million_rows_is_vectorised() -> None:
    n = 1_000_000
    text = pd.Series(pd.date_range("1950-01-01", periods=n, freq="h").strftime("%-d %b %Y"), dtype=object)
    started = time.perf_counter()
    out = detect_dates(text)
    assert out is not None and out[n - 1] == (pd.Timestamp("1950-01-01") + pd.Timedelta(hours=n - 1)).date()
    text[n - 1] = "Unknown"
    assert detect_dates(text) is None
    names = pd.Series([f"Chan Tai Man {i}" for i in range(n)], dtype=object)
    assert detect_dates(names) is None
    assert time.perf_counter() - started < 15  # about 2 s here; a per-value Python path takes far longer
