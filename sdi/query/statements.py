"""The SQL of OGC API – Features: one statement per page (count included), one per feature.

PostgreSQL writes every byte of a feature: ``ST_Transform`` to the requested CRS, axis order
(``ST_FlipCoordinates`` where the CRS's first axis is northing or latitude), ``ST_AsGeoJSON`` at about 1 cm
and the properties with ``json_build_object``, concatenated as text so no JSON is parsed twice. A page
statement returns rows of ``(matched, returned, chunk)``: ``chunk`` is up to :data:`CHUNK_FEATURES`
features joined with commas, ready to be written between ``[`` and ``]``.

For a filtered page the matching keys are collected once (a ``MATERIALIZED`` CTE: the spatial test runs once
per candidate), counted for ``numberMatched`` and sorted for the page; only the page's rows are read again
to build their GeoJSON. Unfiltered pages walk the primary key index and take ``numberMatched`` from the
catalogue.

The same statement writes CSV (``fmt="csv"``): each row one line of :func:`csv_row` (properties, then the
geometry as WKT in the requested CRS and axis order), ``chunk`` lines joined without a separator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from sdi.crs import UriCrs
from sdi.errors import QueryError
from sdi.query.boxes import box_sql
from sdi.query.cql import Binder, interval_condition, time_condition, time_kind, to_sql
from sdi.query.layer import GEOMETRY_COLUMN, INTEGER_TYPES, NUMBER_TYPES, TABLE_SRID, TEXT_TYPES, LayerMeta
from sdi.query.params import ItemQuery, ItemsQuery, time_value

CHUNK_FEATURES = 500  #: features per result row of a page statement
WKT_COLUMN = "wkt"  #: the geometry column of CSV output


@dataclass(frozen=True)
class Statement:
    """One SQL statement and its bound values."""

    query: sql.SQL | sql.Composed
    params: dict[str, Any]


def _table(layer: LayerMeta) -> sql.Composable:
    return sql.Identifier("layers", layer.id)


def _col(name: str, alias: str = "t") -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))


def geometry_in(crs: UriCrs, alias: str = "t", *, right_hand: bool = False) -> sql.Composable:
    """The geometry of row ``alias`` in ``crs`` and its axis order (``right_hand``: exterior rings
    counter-clockwise, as RFC 7946 asks)."""
    expr: sql.Composable = _col(GEOMETRY_COLUMN, alias)
    if crs.srid != TABLE_SRID:
        expr = sql.SQL("st_transform({}, {})").format(expr, sql.Literal(crs.srid))
    if right_hand:
        expr = sql.SQL("st_forcepolygonccw({})").format(expr)
    if crs.north_first:
        expr = sql.SQL("st_flipcoordinates({})").format(expr)
    return expr


def geometry_json(crs: UriCrs, alias: str = "t", *, right_hand: bool = False) -> sql.Composable:
    """``ST_AsGeoJSON`` text of the geometry in ``crs`` and its axis order (``'null'`` for none)."""
    return sql.SQL("coalesce(st_asgeojson({}, {}, 0), 'null')").format(
        geometry_in(crs, alias, right_hand=right_hand), sql.Literal(crs.digits))


def feature_json(layer: LayerMeta, names: list[str], crs: UriCrs | None, alias: str = "t", *,
                 right_hand: bool = False) -> sql.Composable:
    """A text expression: one GeoJSON Feature of the row ``alias`` (``crs`` ``None``: no geometry)."""
    pairs = [sql.SQL("{}, {}").format(sql.Literal(n), _col(n, alias)) for n in names]
    properties = (sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(pairs)) if pairs
                  else sql.SQL("'{}'"))
    geometry = geometry_json(crs, alias, right_hand=right_hand) if crs is not None else sql.SQL("'null'")
    return sql.SQL("""'{{"type":"Feature","id":' || to_json({key})::text || ',"geometry":' || {geometry} """
                   """|| ',"properties":' || {properties} || '}}'""").format(
        key=_col(layer.primary_key, alias), geometry=geometry, properties=properties)


#: CSV types written unquoted (their text never holds a comma, quote or line break).
_CSV_BARE = (*INTEGER_TYPES, *NUMBER_TYPES, "boolean", "date")


def csv_row(layer: LayerMeta, names: list[str], crs: UriCrs | None, alias: str = "t") -> sql.Composable:
    """A text expression: one CSV line (RFC 4180, ``CRLF``-terminated) of the row ``alias``: the properties
    ``names`` as PostgreSQL writes them as text, then (unless ``crs`` is ``None``) the geometry as WKT in ``crs``
    and its axis order, to :attr:`UriCrs.digits` decimals. NULL is an empty field, an empty text ``""``."""
    cells: list[sql.Composable] = []
    for name in names:
        text = sql.SQL("{}::text").format(_col(name, alias))
        if layer.columns.get(name, "text") not in _CSV_BARE:
            text = sql.SQL("""'"' || replace({}, '"', '""') || '"'""").format(text)
        cells.append(sql.SQL("coalesce({}, '')").format(text))
    if crs is not None:
        cells.append(sql.SQL("""coalesce('"' || st_astext({}, {}) || '"', '')""").format(
            geometry_in(crs, alias), sql.Literal(crs.digits)))
    line = sql.SQL(" || ',' || ").join(cells) if cells else sql.SQL("''")
    return sql.SQL("({} || E'\\r\\n')").format(line)


def csv_header(names: list[str], geometry: bool) -> str:
    """The header line that goes with :func:`csv_row` (``wkt`` last when there is a geometry)."""
    cells = [*names, WKT_COLUMN] if geometry else names
    return ",".join('"' + n.replace('"', '""') + '"' for n in cells) + "\r\n"


def conditions(layer: LayerMeta, query: ItemsQuery, params: dict[str, Any]) -> list[sql.Composable]:
    """The ``WHERE`` terms of ``query`` over alias ``t`` (bbox, property equality, datetime, q, filter).

    ``datetime`` selects the rows of the layer's time column that intersect the interval, and a property filter
    on a date or timestamp column (``day=2020-05-01``) the rows equal to its value, both compared in the
    column's own type (see :func:`sdi.query.cql.time_condition`): a ``date`` column by UTC calendar day, so
    ``datetime=2020-05-01T10:00:00Z`` finds a row dated 2020-05-01, a timestamp column with a date by its whole
    UTC day, date-times without an offset as UTC, whatever the session's ``TimeZone``.

    Raises
    ------
    QueryError
        Naming the parameter, for a time value outside the calendar or (from pygeoapi) one that is not a date.
    """
    where: list[sql.Composable] = []
    if query.bbox is not None:
        b = query.bbox
        box = box_sql((b.x0, b.y0, b.x1, b.y1), b.crs.srid, params, "bbox")
        where.append(sql.SQL("false") if box is None
                     else sql.SQL("st_intersects({}, {})").format(_col(GEOMETRY_COLUMN), box))
    equal = Binder(params, "eq")
    for name, value in query.equals:
        kind = time_kind(layer.columns.get(name))
        if kind is None:
            where.append(sql.SQL("{} = {}").format(_col(name), equal(value)))
        else:  # typed for the column, as datetime is (pygeoapi passes the text as sent)
            moment = value if isinstance(value, dt.date) else time_value(str(value), name)
            where.append(time_condition(_col(name), kind, "=", moment, equal, what=name))
    if query.datetime is not None and layer.time_field is not None:
        kind = time_kind(layer.columns.get(layer.time_field)) or "timestamptz"
        where.append(interval_condition(_col(layer.time_field), kind, query.datetime.start, query.datetime.end,
                                        Binder(params, "dt"), what="datetime"))
    if query.q:
        text_columns = [n for n, t in layer.columns.items() if t in TEXT_TYPES]
        params["q"] = "%" + query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(sql.SQL("({})").format(sql.SQL(" or ").join(
            [sql.SQL("{} ilike %(q)s").format(_col(n)) for n in text_columns] or [sql.SQL("false").format()])))
    if query.filter is not None:
        clause, values = to_sql(query.filter, layer.columns, GEOMETRY_COLUMN, TABLE_SRID, query.filter_crs)
        params.update(values)
        where.append(clause)
    return where


def _order(layer: LayerMeta, query: ItemsQuery, alias: str, names: list[str] | None = None) -> sql.Composable:
    """``ORDER BY`` terms: the sortby keys, then the primary key (so pages never overlap)."""
    keys = [*query.sortby]
    terms: list[sql.Composable] = []
    for i, key in enumerate(keys):
        column = _col(names[i] if names is not None else key.name, alias)
        terms.append(sql.SQL("{} desc" if key.descending else "{} asc").format(column))
    terms.append(_col("__k" if names is not None else layer.primary_key, alias))
    return sql.SQL(", ").join(terms)


def output_names(layer: LayerMeta, properties: tuple[str, ...] | None) -> list[str]:
    """The properties a feature carries, in table order."""
    if properties is None:
        return list(layer.columns)
    wanted = set(properties)
    return [n for n in layer.columns if n in wanted]


def page_statement(layer: LayerMeta, query: ItemsQuery, fmt: str = "json") -> Statement:
    """One page of ``query``: rows ``(matched, returned, chunk)``; one row with ``chunk`` NULL when empty.

    ``fmt`` ``"json"``: ``chunk`` is GeoJSON features joined with commas; ``"csv"``: CSV lines (:func:`csv_row`).

    Raises
    ------
    QueryError
        When the filter cannot be translated.
    """
    params: dict[str, Any] = {"layer": layer.id, "limit": query.limit, "offset": query.offset}
    where = conditions(layer, query, params)
    names = output_names(layer, query.properties)
    crs = None if query.skip_geometry else query.crs
    feature = csv_row(layer, names, crs) if fmt == "csv" else feature_json(layer, names, crs)
    separator = sql.Literal("" if fmt == "csv" else ",")
    table = _table(layer)
    chunk = sql.Literal(CHUNK_FEATURES)
    if where:
        sort_names = [f"__s{i}" for i in range(len(query.sortby))]
        sort_cols = sql.SQL("").join(sql.SQL(", {} as {}").format(_col(k.name), sql.Identifier(n))
                                     for k, n in zip(query.sortby, sort_names, strict=True))
        body = sql.SQL("""
            with m as materialized (
                select {key} as __k{sort_cols} from {table} as t where {where}
            ), p as (
                select m.__k, row_number() over (order by {m_order}) as __n
                from (select * from m order by {m_order} limit %(limit)s offset %(offset)s) as m
            )
            select (select count(*) from m) as matched, q.returned, q.chunk
            from (select 1) as one left join (
                select count(*) as returned, string_agg(q.f, {separator} order by q.__n) as chunk, min(q.__n) as first
                from (select {feature} as f, p.__n from p join {table} as t on {key} = p.__k) as q
                group by (q.__n - 1) / {chunk}
            ) as q on true
            order by q.first""").format(
            key=_col(layer.primary_key), sort_cols=sort_cols, table=table,
            where=sql.SQL(" and ").join(where), m_order=_order(layer, query, "m", sort_names),
            feature=feature, chunk=chunk, separator=separator)
    else:
        body = sql.SQL("""
            with p as (
                select t.*, row_number() over (order by {order}) as __n
                from (select * from {table} as t order by {order} limit %(limit)s offset %(offset)s) as t
            )
            select (select feature_count from sdi.layer where id = %(layer)s) as matched, q.returned, q.chunk
            from (select 1) as one left join (
                select count(*) as returned, string_agg(q.f, {separator} order by q.__n) as chunk, min(q.__n) as first
                from (select {feature} as f, t.__n from p as t) as q
                group by (q.__n - 1) / {chunk}
            ) as q on true
            order by q.first""").format(order=_order(layer, query, "t"), table=table, feature=feature,
                                        chunk=chunk, separator=separator)
    return Statement(body, params)


def hits_statement(layer: LayerMeta, query: ItemsQuery) -> Statement:
    """``numberMatched`` of ``query`` alone (``resulttype=hits``): one row, one bigint."""
    params: dict[str, Any] = {"layer": layer.id}
    where = conditions(layer, query, params)
    if not where:
        return Statement(sql.SQL("select feature_count from sdi.layer where id = %(layer)s"), params)
    return Statement(sql.SQL("select count(*) from {} as t where {}").format(
        _table(layer), sql.SQL(" and ").join(where)), params)


def item_statement(layer: LayerMeta, key: Any, query: ItemQuery) -> Statement:
    """One feature by primary key: one row with its GeoJSON text, or no row."""
    names = output_names(layer, query.properties)
    feature = feature_json(layer, names, None if query.skip_geometry else query.crs)
    return Statement(sql.SQL("select {} from {} as t where {} = %(id)s").format(
        feature, _table(layer), _col(layer.primary_key)), {"id": key})


def check_sortable(layer: LayerMeta, query: ItemsQuery) -> None:
    """Refuse sorting on JSON columns, which PostgreSQL cannot order."""
    for key in query.sortby:
        if layer.columns.get(key.name) in ("json",):
            raise QueryError(f"sortby: {key.name!r} is a JSON property and cannot be sorted")
