"""CQL filters (OGC API – Features Part 3) as PostgreSQL ``WHERE`` clauses with bound values.

:func:`parse_filter` reads ``filter`` as CQL2 text, ECQL (the dialect pygeoapi and GeoServer speak) or CQL2
JSON with pygeofilter's parsers; :func:`to_sql` turns the syntax tree into :mod:`psycopg.sql` with an
evaluator in the style of pygeofilter's own backends (one ``@handle`` method per node type). Identifiers are
quoted and every value is bound as a *named* placeholder, so a clause can appear twice in one statement.

Geometry literals are in ``filter-crs`` (CRS84 by default), in that CRS's axis order: EPSG:4326 literals are
latitude first and EPSG:2326 ones northing first; they are flipped to x/y when the CRS's first axis points
north, then transformed to the layer's SRID in PostGIS.

Date and date-time literals (``DATE()``, ``TIMESTAMP()``, intervals, ECQL's instants) compared with a
``date``, ``timestamp`` or ``timestamptz`` property are bound typed for that column, so those comparisons do
not depend on the session's ``TimeZone`` (PostgreSQL converts between the three types at that zone): a
``date`` column is compared with UTC calendar days (a date-time literal becomes the day it falls on in UTC), a
``timestamp`` column with naive UTC date-times, a ``timestamptz`` column with UTC date-times; date-times
without an offset are UTC, and a date literal compared with a timestamp column stands for its whole UTC day
(:func:`time_condition`). Still read at the session's zone: string literals compared with a time column
(``day = '2020-05-01'``, which PostgreSQL casts) and comparisons of two columns of different time types.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from pygeofilter import ast, values
from pygeofilter.backends.evaluator import Evaluator, handle

from sdi.crs import CRS84_URI, uri_crs
from sdi.errors import CrsError, QueryError
from sdi.query.boxes import box_sql, check_geographic

MAX_FILTER_CHARS = 20_000  #: longer filters are refused before parsing
MAX_NODES = 1000  #: filters with more nodes are refused (each node is SQL the database must plan)
MAX_DEPTH = 200  #: filters nested deeper are refused (an OR chain of n terms is n deep)

_COMPARISON = {ast.ComparisonOp.EQ: "=", ast.ComparisonOp.NE: "<>", ast.ComparisonOp.LT: "<",
               ast.ComparisonOp.LE: "<=", ast.ComparisonOp.GT: ">", ast.ComparisonOp.GE: ">="}
_ARITHMETIC = {ast.ArithmeticOp.ADD: "+", ast.ArithmeticOp.SUB: "-", ast.ArithmeticOp.MUL: "*",
               ast.ArithmeticOp.DIV: "/"}
_SPATIAL = {ast.SpatialComparisonOp.INTERSECTS: "st_intersects", ast.SpatialComparisonOp.DISJOINT: "st_disjoint",
            ast.SpatialComparisonOp.CONTAINS: "st_contains", ast.SpatialComparisonOp.WITHIN: "st_within",
            ast.SpatialComparisonOp.TOUCHES: "st_touches", ast.SpatialComparisonOp.CROSSES: "st_crosses",
            ast.SpatialComparisonOp.OVERLAPS: "st_overlaps", ast.SpatialComparisonOp.EQUALS: "st_equals"}
#: Each temporal predicate of an instant (the property) against an instant and against an interval: the operator
#: of :func:`time_condition` (``None``: needs an interval), then how the interval terms combine and each term as
#: (which end, operator of :func:`time_condition`) (``None``: needs an instant).
_TEMPORAL: dict[type, tuple[str | None, tuple[str, tuple[tuple[str, str], ...]] | None]] = {
    ast.TimeBefore: ("<", ("and", (("start", "<"),))),
    ast.TimeAfter: (">", ("and", (("end", ">"),))),
    ast.TimeEquals: ("=", None),
    ast.TimeDuring: (None, ("and", (("start", ">start"), ("end", "<end")))),
    ast.TimeOverlaps: ("=", ("and", (("start", ">="), ("end", "<=")))),  # CQL2 JSON t_intersects
    ast.TimeBeforeOrDuring: (None, ("and", (("end", "<end"),))),
    ast.TimeDuringOrAfter: (None, ("and", (("start", ">start"),))),
    ast.TimeDisjoint: ("<>", ("or", (("start", "<"), ("end", ">")))),
}
#: A predicate with the interval first, as the same predicate with the property first (``p(I, a) == q(a, I)``).
_MIRRORED: dict[type, type] = {ast.TimeOverlaps: ast.TimeOverlaps, ast.TimeEquals: ast.TimeEquals,
                               ast.TimeDisjoint: ast.TimeDisjoint, ast.TimeBefore: ast.TimeAfter,
                               ast.TimeAfter: ast.TimeBefore, ast.TimeContains: ast.TimeDuring}
_DISTANCE_UNITS = {"meters": 1.0, "metres": 1.0, "m": 1.0, "kilometers": 1000.0, "kilometres": 1000.0,
                   "km": 1000.0, "feet": 0.3048, "ft": 0.3048, "statute miles": 1609.344, "miles": 1609.344,
                   "nautical miles": 1852.0}
_TEXT_FUNCTIONS = ("lower", "casei", "upper", "accenti")
_SWAPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>"}


def time_kind(pg_type: str | None) -> str | None:
    """How temporal values are compared with a column of ``pg_type``: ``"date"``, ``"timestamp"`` (without time
    zone), ``"timestamptz"``, or ``None`` for a column that holds no dates."""
    text = " ".join((pg_type or "").lower().split())
    if text == "date":
        return "date"
    if text == "timestamptz" or (text.startswith("timestamp") and text.endswith(" with time zone")):
        return "timestamptz"
    return "timestamp" if text.startswith("timestamp") else None


@dataclass(frozen=True)
class TimeSpan:
    """The values of a date or timestamp column that one date or date-time stands for.

    Attributes
    ----------
    first
        The first value in the column's type (a ``date``, a naive or an aware UTC ``datetime``).
    last
        The last value or, when ``exclusive``, the first value after the span.
    exclusive
        Whether ``last`` lies outside the span (a whole day on a timestamp column).
    """

    first: dt.date
    last: dt.date
    exclusive: bool = False


def time_span(value: dt.date, kind: str, what: str = "filter") -> TimeSpan:
    """``value`` (a date, or a date-time; one without an offset is UTC) in the terms of a ``kind`` column.

    On a ``date`` column that is one day: a date-time's UTC calendar date. On a timestamp column a date-time is
    one instant and a date its whole UTC day ``[00:00, next day 00:00)`` (the last day of the calendar, which
    has no next day: up to its last microsecond); ``timestamp`` columns get naive UTC values, ``timestamptz``
    ones aware UTC values.

    Raises
    ------
    QueryError
        Naming the parameter ``what``, when the value lies at the end of the calendar (year 1 or 9999) and
        cannot be moved to UTC.
    """
    try:
        if kind == "date":
            day = _utc(value).date() if isinstance(value, dt.datetime) else value
            return TimeSpan(day, day)
        if isinstance(value, dt.datetime):
            first = last = _utc(value)
            exclusive = False
        else:
            first = dt.datetime.combine(value, dt.time.min, dt.UTC)
            exclusive = value < dt.date.max
            last = first + dt.timedelta(days=1) if exclusive else dt.datetime.combine(value, dt.time.max, dt.UTC)
    except OverflowError:
        raise QueryError(f"{what}: {value.isoformat()[:40]!r} is out of range") from None
    if kind == "timestamp":
        first, last = first.replace(tzinfo=None), last.replace(tzinfo=None)
    return TimeSpan(first, last, exclusive)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _compare(left: sql.Composable, op: str, right: sql.Composable) -> sql.Composable:
    return sql.SQL("({} " + op + " {})").format(left, right)


#: The operators of :func:`time_condition` that are not SQL, on a column of another type.
_PLAIN = {">start": ">", "<end": "<"}


def time_condition(column: sql.Composable, kind: str | None, op: str, value: Any,
                   bind: Callable[[Any], sql.Composable], what: str = "filter") -> sql.Composable:
    """``column op value`` with ``value`` bound in the column's own type (see :func:`time_span`).

    Parameters
    ----------
    column
        The date or timestamp column.
    kind
        Its :func:`time_kind`; ``None`` (a column of another type, or an expression): ``value`` is bound as it
        is and PostgreSQL casts it.
    op
        ``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=`` (on a date column: day against day; on a timestamp column a
        date's whole day: ``=`` within it, ``<`` before it, ``<=`` before its end, ``>`` after it, ``>=`` from
        its start), or ``>start`` / ``<end``: strictly after the span's start, strictly before its end.
    value
        A date or date-time literal.
    bind
        Binds a value and returns its placeholder.
    what
        The parameter named in errors (``filter``, ``datetime``, a property name).

    Raises
    ------
    QueryError
        Naming ``what``, for a value :func:`time_span` cannot place or an unknown ``op``.
    """
    if kind is None:
        return _compare(column, _PLAIN.get(op, op), bind(value))
    span = time_span(value, kind, what)
    single = span.first == span.last
    to_end = "<" if span.exclusive else "<="  # the span's last value and what lies before it
    past_end = ">=" if span.exclusive else ">"
    if op in ("<", ">=", ">start"):
        return _compare(column, _PLAIN.get(op, op), bind(span.first))
    if op in ("<=", ">", "<end"):
        text = {"<=": to_end, ">": past_end, "<end": "<" if single else to_end}[op]
        return _compare(column, text, bind(span.last))
    if op not in ("=", "<>"):
        raise QueryError(f"{what}: unsupported comparison {op!r}")
    if single:
        return _compare(column, op, bind(span.first))
    text = "({c} >= {a} and {c} " + to_end + " {b})" if op == "=" else "({c} < {a} or {c} " + past_end + " {b})"
    return sql.SQL(text).format(c=column, a=bind(span.first), b=bind(span.last))


def interval_condition(column: sql.Composable, kind: str | None, start: dt.date | None, end: dt.date | None,
                       bind: Callable[[Any], sql.Composable], predicate: type = ast.TimeOverlaps,
                       what: str = "filter") -> sql.Composable:
    """``column`` against the closed interval ``[start, end]`` (``None``: open) with a temporal ``predicate``
    (by default intersects, as ``datetime`` asks), values typed for the column (:func:`time_condition`).

    Raises
    ------
    QueryError
        Naming ``what``, for a predicate that does not compare an instant with an interval.
    """
    forms = _TEMPORAL.get(predicate, (None, None))[1]
    if forms is None:
        raise QueryError(f"{what}: {predicate.__name__} needs an instant")
    joiner, terms = forms
    parts: list[sql.Composable] = []
    for which, op in terms:
        value = start if which == "start" else end
        if value is not None:
            parts.append(time_condition(column, kind, op, value, bind, what))
        elif joiner == "and" and op in ("<", ">"):  # before the open start / after the open end: nothing
            return sql.SQL("false")
    if not parts:
        return sql.SQL("false") if joiner == "or" else sql.SQL("({} is not null)").format(column)
    return sql.SQL("({})").format(sql.SQL(f" {joiner} ").join(parts))


@dataclass(frozen=True)
class _Period:
    """An interval literal's ends as Python values (durations resolved; ``None``: open)."""

    start: dt.date | None
    end: dt.date | None


def _period(node: values.Interval) -> _Period:
    start, end = node.start, node.end
    try:
        if isinstance(end, dt.timedelta) and isinstance(start, dt.date):
            end = start + end
        elif isinstance(start, dt.timedelta) and isinstance(end, dt.date):
            start = end - start
    except OverflowError:
        raise QueryError("filter: an interval reaches beyond the calendar") from None
    if not all(v is None or isinstance(v, dt.date) for v in (start, end)):
        raise QueryError("filter: an interval needs dates or date-times at its ends (or '..')")
    return _Period(start, end)


class _Bound(sql.Placeholder):
    """A placeholder that remembers its parameter name (so a value can be bound again, typed for its column)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class Binder:
    """Binds values into ``params`` as named placeholders ``<prefix>0``, ``<prefix>1``, ...

    Parameters
    ----------
    params
        The statement's parameters, added to in place.
    prefix
        Starts every name this binder gives (distinct per binder of one statement).
    """

    def __init__(self, params: dict[str, Any], prefix: str) -> None:
        self.params = params
        self.prefix = prefix
        self._count = 0

    def name(self, label: str = "") -> str:
        """A fresh parameter name, ``<prefix><label><n>``."""
        self._count += 1
        return f"{self.prefix}{label}{self._count - 1}"

    def __call__(self, value: Any) -> sql.Composable:
        """A named placeholder for ``value``."""
        key = self.name()
        self.params[key] = value
        return _Bound(key)

    def unbind(self, placeholder: Any) -> None:
        """Forget the value behind ``placeholder`` (it is bound again in another type)."""
        if isinstance(placeholder, _Bound):
            self.params.pop(placeholder.key, None)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.split(" Expected")[0][:160] or type(exc).__name__


#: ``filter-lang`` values understood (``cql-text``/``cql-json``: earlier drafts' names).
FILTER_LANGS = ("cql2-text", "cql2-json", "ecql", "cql-text", "cql-json")


def check_filter_lang(lang: str | None) -> None:
    """Refuse (:class:`QueryError`) a ``filter-lang`` that is not one of :data:`FILTER_LANGS` (``None``: absent)."""
    if lang not in (None, "", *FILTER_LANGS):
        raise QueryError(f"filter-lang: {lang[:40]!r} is not one of cql2-text, cql2-json, ecql")


def parse_filter(text: str, lang: str | None = None) -> Any:
    """Parse a ``filter`` value into a pygeofilter syntax tree.

    Parameters
    ----------
    text
        The filter as sent.
    lang
        ``filter-lang``: ``cql2-text`` (or ``None``: CQL2 text, else ECQL, the two agree on comparisons,
        ``LIKE``, ``IN``, ``BETWEEN``, ``IS NULL`` and ``AND``/``OR``/``NOT``), ``ecql``/``cql-text`` or
        ``cql2-json``.

    Raises
    ------
    QueryError
        When the text does not parse, is too long, or ``lang`` is unknown.
    """
    if len(text) > MAX_FILTER_CHARS:
        raise QueryError(f"filter: longer than {MAX_FILTER_CHARS} characters")
    if "\x00" in text:
        raise QueryError("filter: contains a NUL character")
    check_filter_lang(lang)
    if lang in ("cql2-json", "cql-json"):
        return _parse_json(text)
    from pygeofilter.parsers.ecql import parse as parse_ecql

    from sdi.query.cql2_text import Cql2TextError, Cql2TextRefused
    from sdi.query.cql2_text import parse as parse_cql2

    cql2_error: Cql2TextError | None = None
    if lang in (None, "", "cql2-text"):
        try:
            return parse_cql2(text)
        except Cql2TextRefused as exc:  # CQL2 the server does not do: ECQL would only misread it
            raise QueryError(f"filter: {exc}") from exc
        except Cql2TextError as exc:  # ECQL (BBOX(geom, ...), DWITHIN, BEFORE, ILIKE...) may still read it
            cql2_error = exc
    try:
        return parse_ecql(text)
    except Exception as exc:
        reason = str(cql2_error) if cql2_error is not None else _first_line(exc)
        raise QueryError(f"filter: not valid CQL2 or ECQL text: {reason}") from exc


def _parse_json(text: str) -> Any:
    from pygeofilter.parsers.cql2_json import parse as parse_json

    from sdi.query.cql2_json import normalise

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise QueryError(f"filter: not valid JSON: {_first_line(exc)}") from exc
    try:
        return parse_json(normalise(doc))
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(f"filter: not valid CQL2 JSON: {_first_line(exc)}") from exc


class SqlEvaluator(Evaluator):
    """Evaluate a pygeofilter tree to SQL over the table alias ``t`` (one handler per node type).

    Parameters
    ----------
    columns
        Queryable column names mapped to their PostgreSQL types.
    geom_column
        The geometry column, also accepted as a property name.
    srid
        The SRID of ``geom_column``; geometry literals are transformed to it.
    filter_crs
        The CRS URI of geometry literals (``filter-crs``; CRS84 by default).
    """

    def __init__(self, columns: Mapping[str, str], geom_column: str = "geom", srid: int = 2326,
                 filter_crs: str = CRS84_URI) -> None:
        self.columns = columns
        self.geom_column = geom_column
        self.srid = srid
        self.filter_crs = filter_crs
        self.params: dict[str, Any] = {}
        self.bind = Binder(self.params, "cql")  #: binds a value, returning its placeholder

    def _kind(self, node: Any) -> str | None:
        """The :func:`time_kind` of ``node`` when it is a property, else ``None``."""
        return time_kind(self.columns.get(node.name)) if isinstance(node, ast.Attribute) else None

    def evaluate(self, node: Any, adopt_result: bool = True) -> Any:
        """Evaluate ``node``; an interval literal stays a :class:`_Period` of Python values."""
        if isinstance(node, values.Interval):
            return _period(node)
        if not isinstance(node, ast.TemporalPredicate) and any(isinstance(c, values.Interval) for c in _children(node)):
            raise QueryError("filter: an interval can only be used with a temporal predicate such as T_INTERSECTS")
        return super().evaluate(node, adopt_result)

    def _time_operands(self, a: Any, b: Any, a_sql: Any, b_sql: Any) -> tuple[sql.Composable, str, Any, bool] | None:
        """(column, its kind, the literal, swapped) when one of ``a``, ``b`` is a date or timestamp property and
        the other a date or date-time literal (whose placeholder is then dropped), else ``None``."""
        for column, literal, column_sql, literal_sql, swapped in ((a, b, a_sql, b_sql, False),
                                                                  (b, a, b_sql, a_sql, True)):
            kind = self._kind(column)
            if kind is not None and isinstance(literal, dt.date):
                self.bind.unbind(literal_sql)
                return column_sql, kind, literal, swapped
        return None

    def adopt(self, node: Any, *sub_args: Any) -> Any:
        """Refuse what no handler translates."""
        raise QueryError(f"filter: unsupported expression {type(node).__name__}")

    # --- expressions -----------------------------------------------------------------------------------

    @handle(ast.Attribute)
    def attribute(self, node: ast.Attribute) -> sql.Composable:
        if node.name not in self.columns and node.name != self.geom_column:
            raise QueryError(f"filter: unknown property {node.name!r}")
        return sql.SQL("t.{}").format(sql.Identifier(node.name))

    @handle(str, float, int, bool, dt.datetime, dt.date)
    def literal(self, node: Any) -> sql.Composable:
        if (isinstance(node, float) and node != node) or node in (float("inf"), float("-inf")):
            raise QueryError("filter: numbers must be finite")
        return self.bind(node)

    @handle(type(None))
    def null_literal(self, node: None) -> sql.Composable:
        return sql.NULL

    @handle(list)
    def array(self, node: list[Any]) -> sql.Composable:
        raise QueryError("filter: arrays are not supported")

    @handle(ast.Function)
    def function(self, node: ast.Function, *arguments: sql.Composable) -> sql.Composable:
        name = node.name.lower()
        if name in _TEXT_FUNCTIONS and len(arguments) == 1:
            wrap = "upper" if name == "upper" else "lower"  # CQL2 CASEI; ACCENTI compares case-insensitively too
            return sql.SQL(wrap + "(({})::text)").format(arguments[0])
        raw = node.arguments
        if name == "bbox" and len(raw) in (4, 6) and all(_is_number(v) for v in raw):  # CQL2 BBOX(...) literal
            dims = len(raw) // 2
            return self._envelope(raw[0], raw[1], raw[dims], raw[dims + 1], self.filter_crs)
        raise QueryError(f"filter: unsupported function {node.name!r}")

    @handle(ast.Arithmetic, subclasses=True)
    def arithmetic(self, node: ast.Arithmetic, lhs: sql.Composable, rhs: sql.Composable) -> sql.Composable:
        if node.op == ast.ArithmeticOp.DIV:  # CQL2's "/" divides as real numbers (PostgreSQL's int / int truncates)
            return sql.SQL("(({})::double precision / ({})::double precision)").format(lhs, rhs)
        return sql.SQL("({} " + _ARITHMETIC[node.op] + " {})").format(lhs, rhs)

    @handle(values.Geometry)
    def geometry(self, node: values.Geometry) -> sql.Composable:
        crs_name = (node.geometry.get("crs") or {}).get("properties", {}).get("name") or self.filter_crs
        geojson = {k: v for k, v in node.geometry.items() if k != "crs"}
        return self._literal_geometry(sql.SQL("st_geomfromgeojson({})").format(self.bind(json.dumps(geojson))),
                                      crs_name)

    @handle(values.Envelope)
    def envelope(self, node: values.Envelope) -> sql.Composable:
        return self._envelope(node.x1, node.y1, node.x2, node.y2, self.filter_crs)

    def _crs(self, crs_name: str) -> Any:
        try:
            return uri_crs(str(crs_name), what="filter-crs")
        except CrsError as exc:
            raise QueryError(str(exc)) from exc

    def _envelope(self, x0: float, y0: float, x1: float, y1: float, crs_name: str) -> sql.Composable:
        crs = self._crs(crs_name)
        if crs.north_first:  # corners in the CRS's axis order
            x0, y0, x1, y1 = y0, x0, y1, x1
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise QueryError("filter: BBOX numbers must be finite")
        check_geographic((x0, y0, x1, y1), crs.geographic, "filter: BBOX", crs.axis_label)
        box = box_sql((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), crs.srid, self.params,
                      self.bind.name("box") + "_", self.srid)
        return box if box is not None else sql.SQL("st_setsrid('POLYGON EMPTY'::geometry, {})").format(
            sql.Literal(self.srid))

    def _literal_geometry(self, expr: sql.Composable, crs_name: str) -> sql.Composable:
        crs = self._crs(crs_name)
        if crs.north_first:
            expr = sql.SQL("st_flipcoordinates({})").format(expr)
        expr = sql.SQL("st_setsrid({}, {})").format(expr, sql.Literal(crs.srid))
        if crs.srid != self.srid:
            expr = sql.SQL("st_transform({}, {})").format(expr, sql.Literal(self.srid))
        return expr

    # --- predicates ------------------------------------------------------------------------------------

    @handle(ast.Not)
    def not_(self, node: ast.Not, sub: sql.Composable) -> sql.Composable:
        return sql.SQL("(not {})").format(sub)

    @handle(ast.And, ast.Or)
    def combination(self, node: ast.Combination, lhs: sql.Composable, rhs: sql.Composable) -> sql.Composable:
        return sql.SQL("({} " + ("and" if isinstance(node, ast.And) else "or") + " {})").format(lhs, rhs)

    @handle(ast.Comparison, subclasses=True)
    def comparison(self, node: ast.Comparison, lhs: sql.Composable, rhs: sql.Composable) -> sql.Composable:
        op = _COMPARISON[node.op]
        timed = self._time_operands(node.lhs, node.rhs, lhs, rhs)
        if timed is not None:
            column, kind, value, swapped = timed
            return time_condition(column, kind, _SWAPPED[op] if swapped else op, value, self.bind)
        return sql.SQL("({} " + op + " {})").format(lhs, rhs)

    @handle(ast.Between)
    def between(self, node: ast.Between, lhs: sql.Composable, low: sql.Composable,
                high: sql.Composable) -> sql.Composable:
        kind = self._kind(node.lhs)
        if kind is not None and isinstance(node.low, dt.date) and isinstance(node.high, dt.date):
            self.bind.unbind(low)
            self.bind.unbind(high)
            clause = sql.SQL("({} and {})").format(time_condition(lhs, kind, ">=", node.low, self.bind),
                                                   time_condition(lhs, kind, "<=", node.high, self.bind))
            return sql.SQL("(not {})").format(clause) if node.not_ else clause
        return sql.SQL("({} " + ("not " if node.not_ else "") + "between {} and {})").format(lhs, low, high)

    @handle(ast.Like)
    def like(self, node: ast.Like, lhs: sql.Composable) -> sql.Composable:
        pattern, nocase = node.pattern, node.nocase
        if (isinstance(pattern, ast.Function) and pattern.name.lower() in _TEXT_FUNCTIONS
                and len(pattern.arguments) == 1 and isinstance(pattern.arguments[0], str)):
            pattern, nocase = pattern.arguments[0], True  # CASEI(name) LIKE CASEI('%lib%')
        if not isinstance(pattern, str):
            raise QueryError("filter: LIKE needs a text pattern")
        op = ("not " if node.not_ else "") + ("ilike" if nocase else "like")
        # '%' any run, '_' one character, '\' escapes: SQL's own LIKE, which CQL2 and ECQL follow
        return sql.SQL("(({})::text " + op + " {})").format(lhs, self.bind(pattern))

    @handle(ast.In)
    def in_(self, node: ast.In, lhs: sql.Composable, *options: sql.Composable) -> sql.Composable:
        if not options:
            return sql.SQL("true" if node.not_ else "false")
        kind = self._kind(node.lhs)
        if kind is not None and all(isinstance(v, dt.date) for v in node.sub_nodes):
            for option in options:
                self.bind.unbind(option)
            clause = sql.SQL("({})").format(sql.SQL(" or ").join(
                time_condition(lhs, kind, "=", v, self.bind) for v in node.sub_nodes))
            return sql.SQL("(not {})").format(clause) if node.not_ else clause
        return sql.SQL("({} " + ("not " if node.not_ else "") + "in ({}))").format(lhs, sql.SQL(", ").join(options))

    @handle(ast.IsNull)
    def null(self, node: ast.IsNull, lhs: sql.Composable) -> sql.Composable:
        return sql.SQL("({} is " + ("not " if node.not_ else "") + "null)").format(lhs)

    @handle(ast.Include)
    def include(self, node: ast.Include) -> sql.Composable:
        return sql.SQL("false" if node.not_ else "true")

    @handle(ast.SpatialComparisonPredicate, subclasses=True)
    def spatial(self, node: ast.SpatialComparisonPredicate, lhs: sql.Composable,
                rhs: sql.Composable) -> sql.Composable:
        return sql.SQL(_SPATIAL[node.op] + "({}, {})").format(lhs, rhs)

    @handle(ast.BBox)
    def bbox(self, node: ast.BBox, lhs: sql.Composable) -> sql.Composable:
        box = self._envelope(node.minx, node.miny, node.maxx, node.maxy, str(node.crs or self.filter_crs))
        return sql.SQL("st_intersects({}, {})").format(lhs, box)

    @handle(ast.DistanceWithin, ast.DistanceBeyond)
    def distance(self, node: ast.SpatialDistancePredicate, lhs: sql.Composable,
                 rhs: sql.Composable) -> sql.Composable:
        units = str(node.units or "meters").lower()
        if units not in _DISTANCE_UNITS:
            raise QueryError(f"filter: unknown distance unit {units!r}; use meters or kilometers")
        metres = self.bind(float(node.distance) * _DISTANCE_UNITS[units])
        text = "st_dwithin({}, {}, {})" if isinstance(node, ast.DistanceWithin) else "(not st_dwithin({}, {}, {}))"
        return sql.SQL(text).format(lhs, rhs, metres)  # EPSG:2326 is in metres

    @handle(ast.TemporalPredicate, subclasses=True)
    def temporal(self, node: ast.TemporalPredicate, lhs: Any, rhs: Any) -> sql.Composable:
        predicate, first, second = type(node), node.lhs, node.rhs
        if isinstance(lhs, _Period):  # the interval first: the same predicate with the property first
            if isinstance(rhs, _Period) or predicate not in _MIRRORED:
                raise QueryError(f"filter: {predicate.__name__} needs the property first and an interval second")
            predicate, first, second, lhs, rhs = _MIRRORED[predicate], second, first, rhs, lhs
        if predicate not in _TEMPORAL:
            raise QueryError(f"filter: unsupported temporal predicate {predicate.__name__}")
        if isinstance(rhs, _Period):
            return interval_condition(lhs, self._kind(first), rhs.start, rhs.end, self.bind, predicate)
        op = _TEMPORAL[predicate][0]
        if op is None:
            raise QueryError(f"filter: {predicate.__name__} needs an interval")
        timed = self._time_operands(first, second, lhs, rhs)
        if timed is not None:
            column, kind, value, swapped = timed
            return time_condition(column, kind, _SWAPPED[op] if swapped else op, value, self.bind)
        return _compare(lhs, op, rhs)


def _children(node: Any) -> list[Any]:
    if isinstance(node, values.Interval):
        return [node.start, node.end]
    subnodes = node.get_sub_nodes() if hasattr(node, "get_sub_nodes") else None
    if subnodes is None:
        return []
    return list(subnodes) if isinstance(subnodes, list) else [subnodes]


def check_filter(node: Any, columns: Mapping[str, str], geom_column: str = "geom") -> None:
    """Refuse a filter naming an unknown property, with more than :data:`MAX_NODES` terms or nested deeper than
    :data:`MAX_DEPTH` (walked without recursion, so any tree a parser returns can be checked).

    Raises
    ------
    QueryError
        Naming the property or the limit.
    """
    stack, count = [(node, 1)], 0
    while stack:
        current, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise QueryError(f"filter: more than {MAX_NODES} terms")
        if depth > MAX_DEPTH:
            raise QueryError(f"filter: nested more than {MAX_DEPTH} levels deep; write long OR lists as IN (...)")
        if isinstance(current, ast.Attribute) and current.name not in columns and current.name != geom_column:
            raise QueryError(f"filter: unknown property {current.name[:60]!r}")
        stack.extend((child, depth + 1) for child in _children(current))


def to_sql(node: Any, columns: Mapping[str, str], geom_column: str = "geom", srid: int = 2326,
           filter_crs: str = CRS84_URI) -> tuple[sql.Composable, dict[str, Any]]:
    """Translate a pygeofilter tree into a boolean SQL expression over the table alias ``t``.

    Returns
    -------
    tuple[sql.Composable, dict[str, Any]]
        The expression with named placeholders ``cql0``, ``cql1``, ... and their values.

    Raises
    ------
    QueryError
        For unknown properties, unsupported expressions, an unknown ``filter_crs`` or a tree that is too big
        (:func:`check_filter`).
    """
    check_filter(node, columns, geom_column)
    evaluator = SqlEvaluator(columns, geom_column, srid, filter_crs)
    try:
        clause = evaluator.evaluate(node)
    except RecursionError as exc:
        raise QueryError("filter: nested too deeply") from exc
    if not isinstance(clause, sql.Composable):
        raise QueryError("filter: not a condition")
    return clause, evaluator.params
