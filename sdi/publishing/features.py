"""OGC API – Features over ``layers.<id>``: a pygeoapi ``feature`` provider that does the work in PostGIS.

Configure it per collection::

    providers:
      - type: feature
        name: sdi.publishing.features.SdiFeatureProvider
        data: env                    # SDI_DATABASE_URL; or a libpq URL
        table: public_libraries_2013 # the layer id
        id_field: fid
        geom_field: geom
        storage_crs: http://www.opengis.net/def/crs/EPSG/0/2326
        crs: [http://www.opengis.net/def/crs/OGC/1.3/CRS84, http://www.opengis.net/def/crs/EPSG/0/2326,
              http://www.opengis.net/def/crs/EPSG/0/4326, http://www.opengis.net/def/crs/EPSG/0/3857]

Each page is ONE SQL statement: filter, order, page, ``ST_Transform``, axis order and ``ST_AsGeoJSON`` run in
PostGIS, which returns the whole FeatureCollection as one JSON string. Coordinates follow the axis order of
the requested CRS (CRS84 lon/lat, EPSG:4326 lat/lon, EPSG:2326 northing/easting, EPSG:3857 x/y), decided
from pyproj's ``axis_info``, with about 1 cm precision (2 decimals in metres, 7 in degrees).

``bbox`` arrives already transformed by pygeoapi to the storage CRS, *in the storage CRS's axis order*
(``util.transform_bbox`` uses no ``always_xy``): for EPSG:2326 that is ``[N_min, E_min, N_max, E_max]``,
whatever ``bbox-crs`` was. Only two corners are transformed, so a CRS84 box becomes the grid rectangle
through its corners (edges off by metres, ~140 m for all of Hong Kong). The web layer can set :data:`RAW_BBOX`
to the client's ``bbox``/``bbox-crs``; the provider then transforms the densified box in PostGIS instead.

Layer metadata (fields, primary key type, load id) is cached per process; every page statement also returns
the layer's current ``load_id`` and the cache is refreshed (and the page re-run) after a reload.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderConnectionError,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
)
from pygeoapi.util import CrsTransformSpec, get_crs_from_uri

from sdi.publishing.cql import crs_facts, crs_srid, north_first, to_sql

STORAGE_CRS = "http://www.opengis.net/def/crs/EPSG/0/2326"
TABLE_SRID = 2326
_INT_TYPES = ("smallint", "integer", "bigint")
_NUM_TYPES = ("double precision", "real", "numeric")
_POOL_SIZE = 4

#: ``bbox`` and ``bbox-crs`` as the client sent them (``bbox-crs`` defaulting to CRS84), set per request by the
#: web layer. When set, the provider uses it instead of pygeoapi's two-corner transform of the box, and
#: transforms the densified box in PostGIS, so a lon/lat box selects exactly what lies inside it.
RAW_BBOX: ContextVar[tuple[tuple[float, ...], str] | None] = ContextVar("sdi_raw_bbox", default=None)


def json_schema_type(pg_type: str) -> dict[str, str]:
    """The JSON Schema of a column type as stored in ``sdi.layer.fields``."""
    pg_type = pg_type.lower()
    if pg_type in _INT_TYPES:
        return {"type": "integer"}
    if pg_type in _NUM_TYPES or pg_type.startswith("numeric"):
        return {"type": "number"}
    if pg_type == "boolean":
        return {"type": "boolean"}
    if pg_type == "date":
        return {"type": "string", "format": "date"}
    if pg_type.startswith("timestamp"):
        return {"type": "string", "format": "date-time"}
    if pg_type in ("json", "jsonb"):
        return {"type": "object"}
    return {"type": "string"}


def typed_value(pg_type: str, value: Any, what: str) -> Any:
    """``value`` (usually query-string text) as the Python type bound for a column of ``pg_type``."""
    text = str(value).strip()
    try:
        if pg_type in _INT_TYPES:
            return int(text)
        if pg_type in _NUM_TYPES:
            return float(text)
    except ValueError as exc:
        raise ProviderInvalidQueryError(user_msg=f"{what}: {value!r} is not a number") from exc
    if pg_type == "boolean":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ProviderInvalidQueryError(user_msg=f"{what}: {value!r} is not true or false")
        return text.lower() in ("true", "1")
    return str(value)


# --- connections ------------------------------------------------------------------------------------------

class _Pool:
    """A few idle autocommit connections to one database, reused across requests (created lazily)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.idle: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                raise ProviderConnectionError(user_msg="the feature database is unreachable") from exc
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        keep = not (conn.closed or conn.broken)
        with self.lock:
            if keep and len(self.idle) < _POOL_SIZE:
                self.idle.append(conn)
                return
        conn.close()


_POOLS: dict[str, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(url: str) -> _Pool:
    with _POOLS_LOCK:
        return _POOLS.setdefault(url, _Pool(url))


# --- layer metadata ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layer:
    load_id: int
    primary_key: str
    columns: dict[str, str]  # name -> PostgreSQL type, in table order (geometry excluded)


_LAYERS: dict[tuple[str, str], _Layer] = {}


@dataclass(frozen=True)
class _OutputCrs:
    srid: int
    flip: bool
    digits: int


def output_crs(spec: CrsTransformSpec | None, storage_crs: str) -> _OutputCrs:
    """SRID, axis flip and GeoJSON precision for the requested CRS (``None``: the storage CRS)."""
    return _output_crs(spec.target_crs_uri if spec else storage_crs)


@lru_cache(maxsize=64)
def _output_crs(uri: str) -> _OutputCrs:
    """:func:`output_crs` for one CRS URI, cached: pyproj's ``to_epsg`` costs ~10 ms, a page ~1 ms."""
    try:
        crs = get_crs_from_uri(uri)
    except Exception as exc:  # CRSError
        raise ProviderInvalidQueryError(user_msg="unknown output CRS") from exc
    degrees = bool(crs.axis_info) and crs.axis_info[0].unit_name.startswith("deg")
    return _OutputCrs(crs_srid(crs), north_first(crs), 7 if degrees else 2)


class SdiFeatureProvider(BaseProvider):
    """pygeoapi feature provider for one HK SDI layer (``layers.<table>``)."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        """Read the provider definition; no database work happens here.

        Parameters
        ----------
        provider_def
            pygeoapi provider configuration (``data``, ``table``, ``id_field``, ``geom_field``, ``storage_crs``,
            optional ``time_field``).
        """
        super().__init__(provider_def)
        if self.data == "env":
            from sdi.settings import Settings

            self.url = os.environ.get("SDI_DATABASE_URL") or Settings().database_url
        else:
            self.url = str(self.data)
        self.table = str(provider_def["table"])
        self.geom_field = str(provider_def.get("geom_field", "geom"))
        self.storage_crs = str(provider_def.get("storage_crs", STORAGE_CRS))


    # --- metadata -------------------------------------------------------------------------------------

    def _layer(self, refresh: bool = False) -> _Layer:
        key = (self.url, self.table)
        if refresh or key not in _LAYERS:
            with _pool(self.url).connection() as conn:
                row = conn.execute("select load_id, primary_key, fields from sdi.layer"
                                   " where id = %s and kind = 'vector'", (self.table,)).fetchone()
            if row is None:
                raise ProviderConnectionError(user_msg=f"layer {self.table!r} is not loaded")
            columns = {f["name"]: str(f["type"]) for f in row[2] if f["name"] != self.geom_field}
            _LAYERS[key] = _Layer(int(row[0]), str(row[1]), columns)
        return _LAYERS[key]

    @property
    def fields(self) -> dict[str, dict[str, str]]:
        """Queryable properties and their JSON Schema types (from ``sdi.layer.fields``, cached)."""
        return self.get_fields()

    def get_fields(self) -> dict[str, dict[str, str]]:
        """Return the layer's properties mapped to JSON Schema types."""
        return {name: json_schema_type(pg) for name, pg in self._layer().columns.items()}

    # --- SQL building ---------------------------------------------------------------------------------

    def _geometry(self, out: _OutputCrs, params: dict[str, Any]) -> sql.Composable:
        expr: sql.Composable = sql.SQL("t.{}").format(sql.Identifier(self.geom_field))
        if out.srid != TABLE_SRID:
            expr = sql.SQL("st_transform({}, {})").format(expr, sql.Literal(out.srid))
        if out.flip:
            expr = sql.SQL("st_flipcoordinates({})").format(expr)
        params["digits"] = out.digits
        return sql.SQL("st_asgeojson({}, %(digits)s, 0)::json").format(expr)  # 0: no "crs" member (RFC 7946)

    def _feature(self, layer: _Layer, names: list[str], out: _OutputCrs | None,
                 params: dict[str, Any]) -> sql.Composed:
        props = sql.SQL(", ").join([sql.SQL("t.{}").format(sql.Identifier(n)) for n in names])
        properties = (sql.SQL("(select row_to_json(r) from (select {}) as r)").format(props) if names
                      else sql.SQL("'{}'::json"))
        geometry = self._geometry(out, params) if out else sql.SQL("null::json")
        return sql.SQL("json_build_object('type', 'Feature', 'id', t.{}, 'geometry', {}, 'properties', {})").format(
            sql.Identifier(layer.primary_key), geometry, properties)

    def _bbox(self, bbox: list[float], params: dict[str, Any]) -> sql.Composable:
        raw = RAW_BBOX.get()
        coords, crs_uri = (list(raw[0]), raw[1]) if raw else (bbox, self.storage_crs)
        if len(coords) not in (4, 6):
            raise ProviderInvalidQueryError(user_msg="bbox: expected 4 or 6 numbers")
        dims = len(coords) // 2
        a0, a1, b0, b1 = (float(coords[i]) for i in (0, 1, dims, dims + 1))
        srid, flip, geographic = crs_facts(crs_uri)
        if flip:  # pygeoapi hands over the storage CRS's axis order; a raw bbox is in its CRS's
            a0, a1, b0, b1 = a1, a0, b1, b0
        params.update(x0=min(a0, b0), y0=min(a1, b1), x1=max(a0, b0), y1=max(a1, b1))
        env: sql.Composable = sql.SQL("st_makeenvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {})").format(sql.Literal(srid))
        if srid != TABLE_SRID:  # densify so that the box's edges stay edges of the same area after transforming
            step = 0.0005 if geographic else 50.0
            env = sql.SQL("st_transform(st_segmentize({}, {}), {})").format(env, sql.Literal(step),
                                                                           sql.Literal(TABLE_SRID))
        return sql.SQL("st_intersects(t.{}, {})").format(sql.Identifier(self.geom_field), env)

    def _where(self, layer: _Layer, params: dict[str, Any], bbox: list[float], datetime_: str | None,
               properties: list[tuple[str, Any]], q: str | None, filterq: Any) -> list[sql.Composable]:
        where: list[sql.Composable] = []
        if bbox:
            where.append(self._bbox(bbox, params))
        for i, (name, value) in enumerate(properties or []):
            if name not in layer.columns:
                raise ProviderInvalidQueryError(user_msg=f"unknown property {name!r}")
            params[f"prop{i}"] = typed_value(layer.columns[name], value, name)
            where.append(sql.SQL("t.{} = %(prop{})s").format(sql.Identifier(name), sql.SQL(str(i))))
        if datetime_ and self.time_field:
            start, _, end = datetime_.partition("/") if "/" in datetime_ else (datetime_, "", datetime_)
            column = sql.Identifier(self.time_field)
            if start not in ("", ".."):
                params["dt0"] = start
                where.append(sql.SQL("t.{} >= %(dt0)s::timestamptz").format(column))
            if end not in ("", ".."):
                params["dt1"] = end
                where.append(sql.SQL("t.{} <= %(dt1)s::timestamptz").format(column))
        if q:
            text_cols = [n for n, pg in layer.columns.items() if pg in ("text", "character varying")]
            if text_cols:
                params["q"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where.append(sql.SQL("({})").format(sql.SQL(" or ").join(
                    [sql.SQL("t.{} ilike %(q)s").format(sql.Identifier(n)) for n in text_cols])))
        if filterq is not None:
            clause, values = to_sql(filterq, layer.columns, self.geom_field, TABLE_SRID)
            params.update(values)
            where.append(clause)
        return where

    def _run(self, statement: sql.Composed, params: dict[str, Any]) -> Any:
        try:
            with _pool(self.url).connection() as conn:
                row = conn.execute(statement, params).fetchone()
        except (psycopg.DataError, psycopg.ProgrammingError, psycopg.InternalError) as exc:
            if isinstance(exc, psycopg.errors.UndefinedColumn | psycopg.errors.UndefinedTable):
                raise _Stale() from exc
            detail = (exc.diag.message_primary or type(exc).__name__).splitlines()[0]
            raise ProviderInvalidQueryError(user_msg=f"invalid query: {detail}") from exc
        except psycopg.OperationalError as exc:
            raise ProviderConnectionError(user_msg="the feature database is unreachable") from exc
        return json.loads(row[0]) if row and row[0] is not None else None

    # --- provider API ---------------------------------------------------------------------------------

    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results", bbox: list[float] | None = None,
              datetime_: str | None = None, properties: list[tuple[str, Any]] | None = None,
              sortby: list[dict[str, str]] | None = None, select_properties: list[str] | None = None,
              skip_geometry: bool = False, q: str | None = None, filterq: Any = None,
              crs_transform_spec: CrsTransformSpec | None = None, **kwargs: Any) -> dict[str, Any]:
        """Return one page of features (or only ``numberMatched`` for ``resulttype=hits``) as a dict.

        Parameters follow :meth:`pygeoapi.provider.base.BaseProvider.query`; ``bbox`` is in the storage CRS's
        axis order, as pygeoapi hands it over.

        Raises
        ------
        ProviderInvalidQueryError
            For unknown properties, values of the wrong type or an unsupported filter.
        """
        for attempt in (0, 1):
            layer = self._layer(refresh=attempt == 1)
            try:
                result = self._query(layer, offset, limit, resulttype, bbox or [], datetime_, properties or [],
                                     sortby or [], select_properties or [], skip_geometry, q, filterq,
                                     crs_transform_spec)
            except _Stale:
                continue
            if result.pop("loadId", layer.load_id) == layer.load_id or attempt == 1:
                return result
        raise ProviderConnectionError(user_msg=f"layer {self.table!r} changed during the query")

    def _query(self, layer: _Layer, offset: int, limit: int, resulttype: str, bbox: list[float],
               datetime_: str | None, properties: list[tuple[str, Any]], sortby: list[dict[str, str]],
               select_properties: list[str], skip_geometry: bool, q: str | None, filterq: Any,
               spec: CrsTransformSpec | None) -> dict[str, Any]:
        params: dict[str, Any] = {"layer": self.table, "limit": int(limit), "offset": int(offset)}
        where = self._where(layer, params, bbox, datetime_, properties, q, filterq)
        table = sql.Identifier("layers", self.table)
        condition = sql.SQL(" and ").join(where) if where else sql.SQL("true")
        count = (sql.SQL("(select count(*) from {} as t where {})").format(table, condition) if where
                 else sql.SQL("(select feature_count from sdi.layer where id = %(layer)s)"))
        load_id = sql.SQL("(select load_id from sdi.layer where id = %(layer)s)")
        if resulttype == "hits":
            statement = sql.SQL("select json_build_object('type', 'FeatureCollection', 'features', '[]'::json, "
                                "'numberMatched', {}, 'numberReturned', 0, 'loadId', {})::text").format(count, load_id)
            return self._run(statement, params)
        unknown = [p for p in select_properties if p not in layer.columns]
        if unknown:
            raise ProviderInvalidQueryError(user_msg=f"unknown properties {', '.join(unknown)}")
        names = [n for n in layer.columns if not select_properties or n in select_properties]
        order: list[sql.Composable] = []
        for item in sortby:
            if item["property"] not in layer.columns:
                raise ProviderInvalidQueryError(user_msg=f"sortby: unknown property {item['property']!r}")
            direction = sql.SQL("desc" if item.get("order") == "-" else "asc")
            order.append(sql.SQL("t.{} {}").format(sql.Identifier(item["property"]), direction))
        order.append(sql.SQL("t.{}").format(sql.Identifier(layer.primary_key)))
        out = None if skip_geometry else output_crs(spec, self.storage_crs)
        feature = self._feature(layer, names, out, params)
        statement = sql.SQL(
            "with page as (select {feature} as f, row_number() over (order by {order}) as n from {table} as t "
            "where {condition} order by {order} limit %(limit)s offset %(offset)s) "
            "select json_build_object('type', 'FeatureCollection', "
            "'features', coalesce(json_agg(f order by n), '[]'::json), 'numberMatched', {count}, "
            "'numberReturned', count(*), 'loadId', {load_id})::text from page"
        ).format(feature=feature, order=sql.SQL(", ").join(order), table=table, condition=condition, count=count,
                 load_id=load_id)
        return self._run(statement, params)

    def get(self, identifier: Any, crs_transform_spec: CrsTransformSpec | None = None,
            **kwargs: Any) -> dict[str, Any]:
        """Return one feature by primary key, in the requested CRS.

        Raises
        ------
        ProviderItemNotFoundError
            When no feature has that key (or the key cannot be of the key column's type).
        """
        for attempt in (0, 1):
            layer = self._layer(refresh=attempt == 1)
            pk_type = layer.columns.get(layer.primary_key, "text")
            try:
                key = typed_value(pk_type, identifier, "id")
            except ProviderInvalidQueryError as exc:
                raise ProviderItemNotFoundError(user_msg=f"no feature {identifier!r}") from exc
            params: dict[str, Any] = {"id": key}
            feature = self._feature(layer, list(layer.columns), output_crs(crs_transform_spec, self.storage_crs),
                                    params)
            statement = sql.SQL("select {}::text from {} as t where t.{} = %(id)s").format(
                feature, sql.Identifier("layers", self.table), sql.Identifier(layer.primary_key))
            try:
                result = self._run(statement, params)
            except _Stale:
                continue
            if result is None:
                raise ProviderItemNotFoundError(user_msg=f"no feature {identifier!r}")
            return dict(result)
        raise ProviderConnectionError(user_msg=f"layer {self.table!r} changed during the query")

    def __repr__(self) -> str:
        return f"<SdiFeatureProvider layers.{self.table}>"


class _Stale(Exception):
    """The cached layer metadata no longer matches the table (the layer was reloaded)."""
