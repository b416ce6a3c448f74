"""Request parameters of OGC API – Features (Parts 1, 2, 3) parsed into typed values, each error naming its parameter.

:func:`parse_items` turns a query string into an :class:`ItemsQuery`; every value is checked here, so the SQL
builders in :mod:`sdi.query.statements` only ever see valid input. The web routes, the pygeoapi adapters and
:func:`sdi.connect` all build their queries from these types.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdi.crs import CRS84_URI, SERVED_CRS, UriCrs, uri_crs
from sdi.errors import QueryError
from sdi.numerals import ASCII_SPACE, decimal_integer
from sdi.query.boxes import check_geographic
from sdi.query.cql import check_filter, check_filter_lang, parse_filter, time_kind
from sdi.query.layer import INTEGER_TYPES, NUMBER_TYPES, LayerMeta

MAX_OFFSET = 10_000_000  #: deeper pages are refused (use a filter instead)
MAX_Q_CHARS = 200
#: Parameters every items request may carry (beyond the layer's property names).
ITEMS_PARAMETERS = frozenset({
    "f", "lang", "limit", "offset", "bbox", "bbox-crs", "crs", "datetime", "properties", "sortby", "skipGeometry",
    "filter", "filter-lang", "filter-crs", "q", "resulttype"})
ITEM_PARAMETERS = frozenset({"f", "lang", "crs", "properties", "skipGeometry"})


@dataclass(frozen=True)
class Limits:
    """Page sizes: ``default`` when ``limit`` is absent, ``maximum`` the most one page may hold (larger: clamped)."""

    default: int = 1000
    maximum: int = 10_000


@dataclass(frozen=True)
class Box:
    """A bounding box in x/y order (easting or longitude first) in ``crs``, whatever the CRS's axis order."""

    x0: float
    y0: float
    x1: float
    y1: float
    crs: UriCrs


@dataclass(frozen=True)
class Interval:
    """A closed time interval; ``None`` is open. An instant has ``start == end``."""

    start: dt.datetime | None
    end: dt.datetime | None


@dataclass(frozen=True)
class SortKey:
    """One ``sortby`` item."""

    name: str
    descending: bool = False


@dataclass(frozen=True)
class ItemsQuery:
    """A checked items request (see :func:`parse_items`)."""

    limit: int
    offset: int = 0
    bbox: Box | None = None
    crs: UriCrs = field(default_factory=lambda: uri_crs(CRS84_URI))
    datetime: Interval | None = None
    filter: Any = None  #: a pygeofilter syntax tree
    filter_crs: str = CRS84_URI
    sortby: tuple[SortKey, ...] = ()
    properties: tuple[str, ...] | None = None  #: ``None``: all
    skip_geometry: bool = False
    equals: tuple[tuple[str, Any], ...] = ()  #: ``property=value`` filters, values typed for their column
    q: str | None = None
    hits: bool = False  #: ``resulttype=hits``: count only

    @property
    def filtered(self) -> bool:
        """Whether anything narrows the layer (else ``numberMatched`` is the layer's feature count)."""
        return bool(self.bbox or self.filter is not None or self.equals or self.q or self.datetime)


def single(params: Mapping[str, Any], name: str) -> str | None:
    """The value of ``name`` (``None`` when absent); a NUL byte is refused."""
    value = params.get(name)
    if value is None:
        return None
    text = str(value)
    if "\x00" in text:
        raise QueryError(f"{name}: contains a NUL character")
    return text


def parse_int(value: str, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an integer in ``[low, high]``: ASCII digits (:mod:`sdi.numerals`), at most 12, an optional sign,
    spaces around ignored; else a :class:`QueryError` (400) naming ``name``."""
    number = decimal_integer(value.strip(ASCII_SPACE), signed=True, max_digits=12)
    if number is None:
        raise QueryError(f"{name}: {value[:40]!r} is not an integer")
    if number < low or (high is not None and number > high):
        raise QueryError(f"{name}: {number} is out of range ({low}–{high if high is not None else '…'})")
    return number


def parse_bool(value: str, name: str) -> bool:
    """``true``/``false`` (also 1/0)."""
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise QueryError(f"{name}: {value[:40]!r} is not true or false")
    return text in ("true", "1")


def served_crs(value: str | None, name: str, default: str = CRS84_URI) -> UriCrs:
    """One of the collection CRSs (:data:`sdi.crs.SERVED_CRS`), else 400 listing them."""
    uri = (value or default).strip()
    crs = uri_crs(uri, what=name) if uri in SERVED_CRS else None
    if crs is None:
        raise QueryError(f"{name}: {value[:80]!r} is not supported; use one of {', '.join(SERVED_CRS)}"
                         if value else f"{name}: unsupported CRS")
    return crs


def parse_box(value: str, crs: UriCrs, name: str = "bbox") -> Box:
    """``minx,miny,maxx,maxy`` (or 6 numbers) in ``crs``'s axis order → a :class:`Box` in x/y order."""
    parts = value.split(",")
    if len(parts) not in (4, 6):
        raise QueryError(f"{name}: expected 4 or 6 comma-separated numbers, got {len(parts)}")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise QueryError(f"{name}: {value[:80]!r} is not a list of numbers") from None
    if not all(math.isfinite(n) for n in numbers):
        raise QueryError(f"{name}: numbers must be finite")
    dims = len(numbers) // 2
    a0, a1, b0, b1 = numbers[0], numbers[1], numbers[dims], numbers[dims + 1]
    if crs.north_first:
        a0, a1, b0, b1 = a1, a0, b1, b0
    if a0 > b0 or a1 > b1:
        raise QueryError(f"{name}: the lower corner must come first ({crs.axis_label} order in {crs.uri})")
    check_geographic((a0, a1, b0, b1), crs.geographic, name, crs.axis_label)
    return Box(a0, a1, b0, b1, crs)


def time_value(text: str, name: str) -> dt.date:
    """An RFC 3339 date (``2020-05-01``: a :class:`datetime.date`) or date-time (a :class:`datetime.datetime`,
    naive when it has no offset, which :mod:`sdi.query.cql` reads as UTC); else a :class:`QueryError` naming
    ``name``."""
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}: {text[:60]!r} is not an RFC 3339 date-time") from None


def _instant(text: str, name: str, end: bool) -> dt.datetime | None:
    if text.strip() in ("", ".."):
        return None
    value = time_value(text, name)
    if not isinstance(value, dt.datetime):  # a date: the whole day
        value = dt.datetime.combine(value, dt.time.max if end else dt.time.min)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_datetime(value: str, name: str = "datetime") -> Interval:
    """An RFC 3339 instant, or an interval ``start/end`` with ``..`` (or nothing) for an open end."""
    parts = value.split("/")
    if len(parts) > 2 or value.strip() in ("", "..", "/", "../.."):
        raise QueryError(f"{name}: {value[:60]!r} is not an RFC 3339 date-time or interval")
    if len(parts) == 1:
        return Interval(_instant(parts[0], name, False), _instant(parts[0], name, len(parts[0].strip()) == 10))
    start, end = _instant(parts[0], name, False), _instant(parts[1], name, True)
    if start and end and start > end:
        raise QueryError(f"{name}: the start is after the end in {value[:60]!r}")
    return Interval(start, end)


def typed_value(pg_type: str, value: str, name: str) -> Any:
    """A query-string value as the Python type bound for a column of ``pg_type`` (for a date or timestamp column a
    date or date-time, :func:`time_value`, which the statement binds in the column's own type)."""
    text = value.strip()
    if time_kind(pg_type) is not None:
        return time_value(value, name)
    try:
        if pg_type in INTEGER_TYPES:
            integer = decimal_integer(value.strip(ASCII_SPACE), signed=True, max_digits=19)
            if integer is None:
                raise ValueError(text)
            return integer
        if pg_type in NUMBER_TYPES:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError(text)
            return number
    except ValueError:
        raise QueryError(f"{name}: {value[:40]!r} is not a number") from None
    if pg_type == "boolean":
        return parse_bool(value, name)
    return value


def _names(value: str, layer: LayerMeta, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if any(not v for v in items):
        raise QueryError(f"{name}: empty property name in {value[:80]!r}")
    unknown = [v for v in items if v not in layer.columns]
    if unknown:
        raise QueryError(f"{name}: unknown property {unknown[0][:60]!r}; the properties are "
                         f"{', '.join(layer.columns)}")
    return items


def parse_sortby(value: str, layer: LayerMeta) -> tuple[SortKey, ...]:
    """``sortby=+name,-code`` (``+`` ascending, the default; ``-`` descending)."""
    keys = []
    for item in value.split(","):
        text = item.strip()
        descending = text.startswith("-")
        text = text.lstrip("+-").strip()
        if not text:
            raise QueryError(f"sortby: empty sort property in {value[:80]!r}")
        keys.append(SortKey(_names(text, layer, "sortby")[0], descending))
    return tuple(keys)


def check_parameters(params: Mapping[str, Any], allowed: frozenset[str] | set[str], extra: Any = ()) -> None:
    """Refuse unknown parameters (a typo such as ``limt=5`` must not look like a working request)."""
    unknown = sorted(n for n in params if n not in allowed and n not in extra)
    if unknown:
        expected = ", ".join(sorted({*allowed, *extra}))
        more = f" (and {', '.join(repr(u) for u in unknown[1:])})" if unknown[1:] else ""
        raise QueryError(f"unknown query parameter {unknown[0][:60]!r}{more}; expected one of: {expected}")


def parse_items(params: Mapping[str, Any], layer: LayerMeta, limits: Limits = Limits()) -> ItemsQuery:
    """Check an items request's query parameters.

    Parameters
    ----------
    params
        The query string as a mapping of name → value (one value each).
    layer
        The layer asked for; its properties are queryable (``name=value``) and sortable.
    limits
        Default and maximum page size; a ``limit`` above the maximum is clamped to it.

    Returns
    -------
    ItemsQuery

    Raises
    ------
    QueryError
        Naming the first bad parameter: unknown, malformed, out of range, or a CRS that is not offered.
    """
    check_parameters(params, ITEMS_PARAMETERS, layer.columns)
    get = params.get
    limit = limits.default if get("limit") is None else min(parse_int(str(get("limit")), "limit", 1),
                                                            limits.maximum)
    offset = 0 if get("offset") is None else parse_int(str(get("offset")), "offset", 0, MAX_OFFSET)
    bbox_crs = served_crs(single(params, "bbox-crs"), "bbox-crs")
    bbox_text = single(params, "bbox")
    if bbox_text is None and get("bbox-crs") is not None:
        raise QueryError("bbox-crs: given without bbox")
    filter_text, lang = single(params, "filter"), single(params, "filter-lang")
    check_filter_lang(lang)  # also without a filter: a misspelt language is a mistake worth saying
    filter_crs = served_crs(single(params, "filter-crs"), "filter-crs").uri
    resulttype = single(params, "resulttype") or "results"
    if resulttype not in ("results", "hits"):
        raise QueryError(f"resulttype: {resulttype[:40]!r} is not results or hits")
    q = single(params, "q")
    if q is not None and len(q) > MAX_Q_CHARS:
        raise QueryError(f"q: longer than {MAX_Q_CHARS} characters")
    properties = single(params, "properties")
    tree = parse_filter(filter_text, lang) if filter_text not in (None, "") else None
    if tree is not None:
        check_filter(tree, layer.columns)
    equals = tuple((name, typed_value(layer.columns[name], str(single(params, name)), name))
                   for name in params if name in layer.columns and name not in ITEMS_PARAMETERS)
    return ItemsQuery(
        limit=limit, offset=offset,
        bbox=parse_box(bbox_text, bbox_crs) if bbox_text is not None else None,
        crs=served_crs(single(params, "crs"), "crs"),
        datetime=parse_datetime(str(get("datetime"))) if get("datetime") is not None else None,
        filter=tree,
        filter_crs=filter_crs,
        sortby=parse_sortby(str(get("sortby")), layer) if get("sortby") is not None else (),
        properties=tuple(_names(properties, layer, "properties")) if properties else (() if properties == ""
                                                                                     else None),
        skip_geometry=parse_bool(str(get("skipGeometry")), "skipGeometry") if get("skipGeometry") else False,
        equals=equals, q=q.strip() or None if q is not None else None, hits=resulttype == "hits")


@dataclass(frozen=True)
class ItemQuery:
    """A checked single-feature request."""

    crs: UriCrs
    properties: tuple[str, ...] | None = None
    skip_geometry: bool = False


def parse_item(params: Mapping[str, Any], layer: LayerMeta) -> ItemQuery:
    """Check the query parameters of ``items/{id}`` (``crs``, ``properties``, ``skipGeometry``)."""
    check_parameters(params, ITEM_PARAMETERS)
    properties = single(params, "properties")
    return ItemQuery(served_crs(single(params, "crs"), "crs"),
                     tuple(_names(properties, layer, "properties")) if properties else None,
                     parse_bool(str(params["skipGeometry"]), "skipGeometry") if params.get("skipGeometry")
                     else False)


def feature_key(layer: LayerMeta, fid: str) -> Any:
    """A feature id from the URL as a value of the key column; ``None`` when it cannot be one (so: 404)."""
    if "\x00" in fid or len(fid) > 200:
        return None
    try:
        return typed_value(layer.key_type, fid, "id")
    except QueryError:
        return None
