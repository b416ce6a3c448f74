"""A layer's time extent (``sdi.catalogue.store.temporal_extent``) is the same whatever the session's time zone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest

from sdi.catalogue.store import temporal_extent

pytestmark = pytest.mark.db

UTC = dt.UTC


@pytest.fixture
def dated(db: psycopg.Connection) -> Iterator[str]:
    db.execute("drop table if exists layers.extent_probe")
    db.execute("create table layers.extent_probe (d date, ts timestamp, tz timestamptz)")
    db.execute("insert into layers.extent_probe values ('2020-05-01', '2020-05-03 12:00', '2020-05-04 01:00+08'),"
               " ('2020-05-02', null, null)")
    yield "extent_probe"
    db.execute("drop table layers.extent_probe")


@pytest.mark.parametrize("zone", ["Etc/UTC", "Asia/Hong_Kong", "America/Los_Angeles"])
@pytest.mark.parametrize(("columns", "expected"), [
    (["d"], (dt.datetime(2020, 5, 1, tzinfo=UTC), dt.datetime(2020, 5, 2, tzinfo=UTC))),
    (["ts"], (dt.datetime(2020, 5, 3, 12, tzinfo=UTC), dt.datetime(2020, 5, 3, 12, tzinfo=UTC))),
    (["d", "ts", "tz"], (dt.datetime(2020, 5, 1, tzinfo=UTC), dt.datetime(2020, 5, 3, 17, tzinfo=UTC))),
])
def test_dates_and_naive_timestamps_are_read_as_utc(db: psycopg.Connection, dated: str, zone: str,
                                                    columns: list[str], expected: tuple[dt.datetime, ...]) -> None:
    db.execute("select set_config('timezone', %s, false)", (zone,))
    try:
        assert temporal_extent(db, dated, columns) == expected
    finally:
        db.execute("reset timezone")
