"""Date and timestamp filters do not depend on the session's ``TimeZone`` (real PostGIS; one live ``sdi serve``).

PostgreSQL converts between ``date``, ``timestamp`` and ``timestamptz`` at the session's time zone, which is the
server's unless the client says otherwise (``PGTZ``, ``-c timezone=...``). Every test here runs with the session in
Hong Kong (east of UTC) and in Los Angeles (west of it), where comparing a date column with UTC date-times used to
shift whole days: ``datetime``, temporal filters and property filters (``?day=2020-05-01``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from sdi.errors import QueryError
from sdi.query.cql import parse_filter, to_sql
from sdi.query.layer import LayerMeta
from sdi.query.params import ItemsQuery, parse_datetime, parse_items
from sdi.query.statements import conditions
from sdi.settings import Settings
from tests.conftest import loaded_database
from tests.live_server import sdi_server

pytestmark = pytest.mark.db

ZONES = ["Asia/Hong_Kong", "America/Los_Angeles"]
WAIVERS = "industrial_special_waivers"
UTC = dt.UTC
#: id → UTC instant of the rows of the scratch table (its date column holds each instant's UTC date).
INSTANTS = {1: dt.datetime(2020, 4, 30, 23, 30, tzinfo=UTC), 2: dt.datetime(2020, 5, 1, tzinfo=UTC),
            3: dt.datetime(2020, 5, 1, 10, tzinfo=UTC), 4: dt.datetime(2020, 5, 1, 23, 59, 59, tzinfo=UTC),
            5: dt.datetime(2020, 5, 2, tzinfo=UTC)}
COLUMNS = {"day": "date", "ts": "timestamp without time zone", "tz": "timestamp with time zone"}


@pytest.fixture(scope="module")
def waivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database holding the industrial special waivers (a layer whose time column is a ``date``)."""
    with loaded_database((WAIVERS,), data_dir=tmp_path_factory.mktemp("store")) as settings:
        yield settings


def zoned(url: str, zone: str) -> psycopg.Connection:
    """A connection whose session runs in ``zone`` (set after connecting, so an ambient ``PGTZ`` cannot win)."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("select set_config('timezone', %s, false)", (zone,))
    assert conn.execute("show timezone").fetchone() == (zone,)
    return conn


@pytest.fixture(params=ZONES)
def scratch(request: pytest.FixtureRequest, waivers: Settings) -> Iterator[psycopg.Connection]:
    """A connection in each zone with a temporary table ``scratch`` (id, day date, ts timestamp, tz timestamptz)."""
    with zoned(waivers.database_url, request.param) as conn:
        conn.execute("create temporary table scratch (id int primary key, day date, ts timestamp, tz timestamptz)")
        for key, moment in INSTANTS.items():  # typed values: nothing here depends on the session's zone
            conn.execute("insert into scratch values (%s, %s, %s, %s)",
                         (key, moment.date(), moment.replace(tzinfo=None), moment))
        yield conn


def selected(conn: psycopg.Connection, clause: Any, params: dict[str, Any]) -> set[int]:
    query = psycopg.sql.SQL("select id from scratch as t where {}").format(clause)
    return {row[0] for row in conn.execute(query, params).fetchall()}


def meta_for(conn: psycopg.Connection, column: str) -> LayerMeta:
    """The waivers' layer description, standing in for ``scratch`` with ``column`` as its time column."""
    meta = LayerMeta.read(conn, WAIVERS)
    assert meta is not None
    return dataclasses.replace(meta, columns={"id": "integer", **COLUMNS}, time_field=column)


#: ``datetime`` values → ids selected on the date column, then on both timestamp columns.
DATETIMES = {
    "2020-05-01": ({2, 3, 4}, {2, 3, 4}),
    "2020-05-01T10:00:00Z": ({2, 3, 4}, {3}),  # a date is the whole day
    "2020-05-01T18:00:00+08:00": ({2, 3, 4}, {3}),
    "2020-05-01T00:00:00Z/2020-05-01T10:00:00Z": ({2, 3, 4}, {2, 3}),
    "2020-04-30/2020-05-01": ({1, 2, 3, 4}, {1, 2, 3, 4}),
    "../2020-04-30": ({1}, {1}),
    "2020-05-02T00:00:00Z/..": ({5}, {5}),
}


@pytest.mark.parametrize("column", list(COLUMNS))
def test_datetime_selects_the_same_rows_in_any_zone(scratch: psycopg.Connection, column: str) -> None:
    meta = meta_for(scratch, column)
    for value, (on_dates, on_stamps) in DATETIMES.items():
        params: dict[str, Any] = {}
        where = conditions(meta, ItemsQuery(limit=10, datetime=parse_datetime(value)), params)
        expected = on_dates if column == "day" else on_stamps
        assert selected(scratch, psycopg.sql.SQL(" and ").join(where), params) == expected, value


#: (filter, language) → ids selected on the date column, then on both timestamp columns.
FILTERS = {
    ("{c} >= DATE('2020-05-01')", None): ({2, 3, 4, 5}, {2, 3, 4, 5}),
    ("{c} < DATE('2020-05-01')", None): ({1}, {1}),
    ("{c} <= DATE('2020-05-01')", None): ({1, 2, 3, 4}, {1, 2, 3, 4}),  # to the end of that day
    ("{c} > DATE('2020-05-01')", None): ({5}, {5}),
    ("{c} = DATE('2020-05-01')", None): ({2, 3, 4}, {2, 3, 4}),
    ("{c} <> DATE('2020-05-01')", None): ({1, 5}, {1, 5}),
    ("{c} > TIMESTAMP('2020-05-01T10:00:00Z')", None): ({5}, {4, 5}),
    ("{c} >= TIMESTAMP('2020-05-01T10:00:00')", None): ({2, 3, 4, 5}, {3, 4, 5}),  # no offset: UTC
    ("{c} BETWEEN DATE('2020-05-01') AND DATE('2020-05-01')", None): ({2, 3, 4}, {2, 3, 4}),
    ("{c} IN (DATE('2020-05-02'), DATE('2020-04-30'))", None): ({1, 5}, {1, 5}),
    ("{c} AFTER 2020-04-30T23:59:59Z", "ecql"): ({2, 3, 4, 5}, {2, 3, 4, 5}),
    ("{c} BEFORE 2020-05-01T00:00:00Z", "ecql"): ({1}, {1}),
    ("{c} DURING 2020-05-01T00:00:00Z/2020-05-02T00:00:00Z", "ecql"): (set(), {3, 4}),
    ("{c} DURING 2020-04-30T00:00:00Z/P2D", "ecql"): ({2, 3, 4}, {1, 2, 3, 4}),
    ('{{"op": "t_intersects", "args": [{{"property": "{c}"}}, {{"interval": ["2020-05-01", ".."]}}]}}',
     "cql2-json"): ({2, 3, 4, 5}, {2, 3, 4, 5}),
    ('{{"op": "t_intersects", "args": [{{"property": "{c}"}}, {{"interval": ["..", "2020-05-01"]}}]}}',
     "cql2-json"): ({1, 2, 3, 4}, {1, 2, 3, 4}),
    ('{{"op": "t_equals", "args": [{{"property": "{c}"}}, {{"date": "2020-05-01"}}]}}', "cql2-json"):
        ({2, 3, 4}, {2, 3, 4}),
    ('{{"op": "t_after", "args": [{{"property": "{c}"}}, {{"timestamp": "2020-05-01T10:00:00Z"}}]}}',
     "cql2-json"): ({5}, {4, 5}),
    ('{{"op": "<", "args": [{{"date": "2020-05-01"}}, {{"property": "{c}"}}]}}', "cql2-json"): ({5}, {5}),
    # the interval first: symmetric predicates swap their operands, before/after/contains mirror
    ('{{"op": "t_intersects", "args": [{{"interval": ["2020-05-01", ".."]}}, {{"property": "{c}"}}]}}',
     "cql2-json"): ({2, 3, 4, 5}, {2, 3, 4, 5}),
    ('{{"op": "t_before", "args": [{{"interval": ["2020-04-30", "2020-04-30"]}}, {{"property": "{c}"}}]}}',
     "cql2-json"): ({2, 3, 4, 5}, {2, 3, 4, 5}),  # the property after the whole day
    ('{{"op": "t_after", "args": [{{"interval": ["2020-05-01T10:00:00Z", ".."]}}, {{"property": "{c}"}}]}}',
     "cql2-json"): ({1}, {1, 2}),
    ('{{"op": "t_contains", "args": [{{"interval": ["2020-05-01T00:00:00Z", "2020-05-02T00:00:00Z"]}}, '
     '{{"property": "{c}"}}]}}', "cql2-json"): (set(), {3, 4}),
    ("INTERVAL('2020-05-01T00:00:00Z','2020-05-01T10:00:00Z') T_INTERSECTS {c}", None): ({2, 3, 4}, {2, 3}),
    ("INTERVAL('2020-04-30T00:00:00Z','2020-05-01T10:00:00Z') T_BEFORE {c}", None): ({5}, {4, 5}),
    # the last day of the calendar has no next day: on a timestamp column it runs to its last microsecond
    ("{c} <= DATE('9999-12-31')", None): ({1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}),
    ("{c} = DATE('9999-12-31') OR {c} > DATE('9999-12-31')", None): (set(), set()),
    ("{c} <> DATE('9999-12-31')", None): ({1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}),
}


@pytest.mark.parametrize("column", list(COLUMNS))
def test_temporal_filters_select_the_same_rows_in_any_zone(scratch: psycopg.Connection, column: str) -> None:
    for (text, lang), (on_dates, on_stamps) in FILTERS.items():
        clause, params = to_sql(parse_filter(text.format(c=column), lang), {"id": "integer", **COLUMNS})
        assert selected(scratch, clause, params) == (on_dates if column == "day" else on_stamps), text


@pytest.mark.parametrize("text", [
    '{"op": "t_during", "args": [{"interval": ["2020-05-01", ".."]}, {"property": "ts"}]}',
    '{"op": "t_intersects", "args": [{"interval": ["2020-05-01", ".."]}, {"interval": ["2020-05-01", ".."]}]}',
])
def test_an_interval_first_that_cannot_be_mirrored_is_a_query_error(text: str) -> None:
    """Before, the interval reached psycopg as a literal: no SQLSTATE, so a 400 saying ``SQLSTATE None``."""
    with pytest.raises(QueryError, match=r"^filter: .* needs the property first"):
        to_sql(parse_filter(text, "cql2-json"), COLUMNS)


#: Property filters (``?ts=...``) → ids selected on the date column, then on both timestamp columns.
PROPERTY_VALUES = {
    "2020-05-01": ({2, 3, 4}, {2, 3, 4}),  # a date is the whole UTC day
    "2020-05-01T10:00:00": ({2, 3, 4}, {3}),  # no offset: UTC
    "2020-05-01T18:00:00+08:00": ({2, 3, 4}, {3}),
    "2020-05-01T07:30:00+08:00": ({1}, {1}),  # 2020-04-30 23:30 in UTC
}


@pytest.mark.parametrize("column", list(COLUMNS))
def test_property_filters_select_the_same_rows_in_any_zone(scratch: psycopg.Connection, column: str) -> None:
    """Before, the text was bound untyped: PostgreSQL read it at the session's zone (and a date column dropped
    the time and the offset)."""
    meta = meta_for(scratch, column)
    for value, (on_dates, on_stamps) in PROPERTY_VALUES.items():
        expected = on_dates if column == "day" else on_stamps
        for query in (parse_items({column: value}, meta), ItemsQuery(limit=10, equals=((column, value),))):
            params: dict[str, Any] = {}  # parsed here, and as pygeoapi passes it (the text as sent)
            where = conditions(meta, query, params)
            assert selected(scratch, psycopg.sql.SQL(" and ").join(where), params) == expected, value
    with pytest.raises(QueryError, match=f"^{column}: 'May 1' is not"):
        parse_items({column: "May 1"}, meta)
    with pytest.raises(QueryError, match=rf"^{column}: .* is out of range"):
        conditions(meta, parse_items({column: "0001-01-01T00:00:00+01:00"}, meta), {})


def truth(conn: psycopg.Connection, where: str) -> int:
    """Rows of the waivers meeting ``where`` (date against date literals: no zone involved)."""
    row = conn.execute(f"select count(*) from layers.{WAIVERS} where {where}").fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize("zone", ZONES)
def test_datetime_on_a_date_column_over_http(waivers: Settings, tmp_path: Path, zone: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``sdi serve`` whose sessions run in ``zone`` (libpq takes ``PGTZ`` as the session's TimeZone)."""
    monkeypatch.setenv("PGTZ", zone)
    with psycopg.connect(waivers.database_url) as conn:  # what the server's libpq does with PGTZ
        assert conn.execute("show timezone").fetchone() == (zone,)
        meta = LayerMeta.read(conn, WAIVERS)
        assert meta is not None and meta.time_field is not None and meta.columns[meta.time_field] == "date"
        column = meta.time_field
        first = conn.execute(f"select min({column}) from layers.{WAIVERS}").fetchone()[0]
        expected = {"2010-01-01/2010-12-31": truth(conn, f"{column} between '2010-01-01' and '2010-12-31'"),
                    first.isoformat(): truth(conn, f"{column} = '{first.isoformat()}'"),
                    f"{first.isoformat()}T10:00:00Z": truth(conn, f"{column} = '{first.isoformat()}'"),
                    "2015-01-01T00:00:00Z/..": truth(conn, f"{column} >= '2015-01-01'")}
    assert all(n > 0 for n in expected.values()), expected
    with sdi_server(waivers, tmp_path, workers=1, extra_env={"PGTZ": zone}) as url:
        for value, count in expected.items():
            response = requests.get(f"{url}/collections/{WAIVERS}/items",
                                    params={"datetime": value, "f": "json", "limit": "1"}, timeout=30)
            assert response.status_code == 200, response.text[:300]
            assert response.json()["numberMatched"] == count, value
        ecql = {"filter": f"{column} AFTER 2014-12-31T23:59:59Z", "filter-lang": "ecql", "f": "json", "limit": "1"}
        response = requests.get(f"{url}/collections/{WAIVERS}/items", params=ecql, timeout=30)
        assert response.json()["numberMatched"] == expected["2015-01-01T00:00:00Z/.."]


@pytest.mark.parametrize("zone", ZONES)
def test_the_analyst_client_reads_the_same_days_in_any_zone(waivers: Settings, zone: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``sdi.connect(...).read(where=...)`` translates its filter with the same core."""
    import sdi

    monkeypatch.setenv("PGTZ", zone)
    with psycopg.connect(waivers.database_url) as conn:
        assert conn.execute("show timezone").fetchone() == (zone,)
        meta = LayerMeta.read(conn, WAIVERS)
        assert meta is not None and meta.time_field is not None
        column = meta.time_field
        since = truth(conn, f"{column} >= '2015-01-01'")
        first = conn.execute(f"select min({column}) from layers.{WAIVERS}").fetchone()[0].isoformat()
        on_first = truth(conn, f"{column} = '{first}'")
    client = sdi.connect(settings=waivers)
    frame = client.read(WAIVERS, where=f"{column} AFTER 2014-12-31T23:59:59Z", columns=[column])
    assert len(frame) == since
    # the first day's rows: lost east of UTC (>=) or west of it (<=) when the date was converted at the zone
    where = f"{column} >= TIMESTAMP('{first}T00:00:00Z') AND {column} <= TIMESTAMP('{first}T00:00:00Z')"
    assert len(client.read(WAIVERS, where=where, columns=[column])) == on_first > 0


def test_an_interval_outside_a_temporal_predicate_is_a_query_error() -> None:
    text = '{"op": "=", "args": [{"property": "ts"}, {"interval": ["2020-05-01", ".."]}]}'
    with pytest.raises(QueryError, match="temporal predicate"):
        to_sql(parse_filter(text, "cql2-json"), COLUMNS)
