"""A loaded layer read from PostGIS in bounded memory: keyset pages, each checked against the layer's load id.

Each page is one statement (``... where key > last order by key limit n``) in its own snapshot, so a download never
holds a lock on the layer's table between pages and a reload is never kept waiting by it. Every page also reads the
layer's load id from ``sdi.layer`` in the same snapshot; when it differs from the one the export started with (the
layer was reloaded or dropped in between), :class:`LoadChanged` is raised and the partial file is thrown away, so a
file never mixes two loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import errors as pg_errors
from psycopg import sql

from sdi.db import connect
from sdi.errors import DataError, LayerNotFoundError, ServiceBusyError, database_failure
from sdi.query.layer import GEOMETRY_COLUMN, INTEGER_TYPES, NUMBER_TYPES, LayerMeta
from sdi.settings import Settings

PAGE_ROWS = 5_000  #: features per page (one statement, one Arrow table or text block)


class LoadChanged(Exception):  # a signal to start again, not an error shown to anyone
    """The layer was reloaded or dropped while it was being read."""


def arrow_type(pg_type: str) -> pa.DataType:
    """The Arrow type a column of ``pg_type`` is read as (JSON, text and anything unusual: strings)."""
    pg_type = pg_type.lower()
    if pg_type == "bigint":
        return pa.int64()
    if pg_type in INTEGER_TYPES:
        return pa.int32()
    if pg_type in NUMBER_TYPES or pg_type.startswith("numeric"):
        return pa.float64()
    if pg_type == "boolean":
        return pa.bool_()
    if pg_type == "date":
        return pa.date32()
    if pg_type in ("timestamp with time zone", "timestamptz"):
        return pa.timestamp("us", tz="UTC")
    if pg_type.startswith("timestamp"):
        return pa.timestamp("us")
    return pa.string()


def _select(name: str, kind: pa.DataType) -> sql.Composable:
    column = sql.SQL("t.{}").format(sql.Identifier(name))
    if kind == pa.float64():
        return sql.SQL("{}::float8").format(column)
    if kind == pa.string():
        return sql.SQL("{}::text").format(column)
    return column


@contextlib.contextmanager
def database_errors(layer_id: str) -> Iterator[None]:
    """PostgreSQL's failures while reading ``layer_id`` as sdi errors (or :class:`LoadChanged`)."""
    try:
        yield
    except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn) as exc:
        raise LoadChanged(layer_id) from exc
    except pg_errors.QueryCanceled as exc:
        raise ServiceBusyError(f"{layer_id}: reading the layer took longer than the statement timeout") from exc
    except psycopg.OperationalError as exc:
        raise database_failure(exc.sqlstate) from exc
    except psycopg.Error as exc:
        raise DataError(f"{layer_id}: the layer cannot be read (SQLSTATE {exc.sqlstate})") from exc


@dataclass
class LayerReader:
    """Pages of one load of a layer over ``conn`` (autocommit); see the module docstring.

    Attributes
    ----------
    layer
        The layer as ``sdi.layer`` described it when the export started (its ``load_id`` is the one checked).
    page_rows
        Features per page.
    """

    conn: psycopg.Connection[Any]
    layer: LayerMeta
    page_rows: int = PAGE_ROWS

    @property
    def schema(self) -> pa.Schema:
        """The properties (in table order) as Arrow fields, then ``geom`` (WKB, EPSG:2326)."""
        fields = [pa.field(n, arrow_type(t)) for n, t in self.layer.columns.items()]
        return pa.schema([*fields, pa.field(GEOMETRY_COLUMN, pa.binary())])

    def check(self) -> None:
        """Raise :class:`LoadChanged` unless the layer's load is still the one being read."""
        with database_errors(self.layer.id):
            row = self.conn.execute("select load_id from sdi.layer where id = %s", (self.layer.id,)).fetchone()
        if row is None or int(row[0]) != self.layer.load_id:
            raise LoadChanged(self.layer.id)

    def _pages(self, values: list[sql.Composable], where: sql.Composable | None = None,
               binary: bool = True) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of ``values`` (select expressions over alias ``t``) in key order, a page at a time."""
        key = sql.SQL("t.{}").format(sql.Identifier(self.layer.primary_key))
        head = sql.SQL("select (select load_id from sdi.layer where id = %(id)s), {key}, {values} "
                       "from {table} as t").format(key=key, values=sql.SQL(", ").join(values),
                                                  table=sql.Identifier("layers", self.layer.id))
        terms = [where] if where is not None else []
        last: Any = None
        while True:
            conditions = [*terms, sql.SQL("{} > %(last)s").format(key)] if last is not None else terms
            query = head + (sql.SQL(" where ") + sql.SQL(" and ").join(conditions) if conditions else sql.SQL("")) \
                + sql.SQL(" order by {} limit %(n)s").format(key)
            with database_errors(self.layer.id):
                cur = self.conn.cursor(binary=binary)
                rows = cur.execute(query, {"id": self.layer.id, "last": last, "n": self.page_rows}).fetchall()
            if any(r[0] != self.layer.load_id for r in rows):
                raise LoadChanged(self.layer.id)
            if rows:
                yield [r[2:] for r in rows]
                last = rows[-1][1]
            if len(rows) < self.page_rows:
                self.check()  # an empty last page read nothing to compare
                return

    def tables(self, where: sql.Composable | None = None,
               geometry: sql.Composable | None = None) -> Iterator[pa.Table]:
        """Arrow tables of :attr:`schema`, a page each; at least one (empty for an empty layer).

        Parameters
        ----------
        where
            A condition over alias ``t`` (e.g. one geometry family).
        geometry
            The geometry expression (default ``t.geom``), written as WKB.
        """
        schema = self.schema
        values = [_select(f.name, f.type) for f in schema if f.name != GEOMETRY_COLUMN]
        values.append(sql.SQL("st_asbinary({})").format(geometry if geometry is not None
                                                         else sql.SQL("t.{}").format(sql.Identifier(GEOMETRY_COLUMN))))
        empty = True
        for rows in self._pages(values, where):
            columns = list(zip(*rows, strict=True))
            yield pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                                       schema=schema)
            empty = False
        if empty:
            yield schema.empty_table()

    def texts(self, expression: sql.Composable) -> Iterator[list[str]]:
        """The text ``expression`` (over alias ``t``) of every row, a page at a time."""
        for rows in self._pages([expression], binary=False):
            yield [r[0] for r in rows]

    def geometry_types(self) -> set[str]:
        """The geometry types present (``POINT``, ``MULTIPOLYGON``, ...), for a layer whose column type is generic."""
        with database_errors(self.layer.id):
            rows = self.conn.execute(sql.SQL("select distinct geometrytype(geom) from {}").format(
                sql.Identifier("layers", self.layer.id))).fetchall()
        self.check()
        return {str(r[0]) for r in rows if r[0]}

    def extent(self) -> tuple[float, float, float, float] | None:
        """The layer's extent in EPSG:2326 (``None`` when empty)."""
        with database_errors(self.layer.id):
            row = self.conn.execute(sql.SQL(
                "select st_xmin(e), st_ymin(e), st_xmax(e), st_ymax(e) from (select st_extent(geom) as e from {}) s"
            ).format(sql.Identifier("layers", self.layer.id))).fetchone()
        self.check()
        return None if row is None or row[0] is None else (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


@contextlib.contextmanager
def open_connection(settings: Settings, statement_timeout_ms: int | None = None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``settings.database_url`` (with a statement timeout when given), closed after."""
    conn = connect(settings, autocommit=True)
    try:
        if statement_timeout_ms:
            conn.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))
        yield conn
    finally:
        conn.close()


def read_layer(conn: psycopg.Connection[Any], layer_id: str, page_rows: int = PAGE_ROWS) -> LayerReader:
    """A reader of the current load of vector layer ``layer_id``.

    Raises
    ------
    LayerNotFoundError
        When no vector layer ``layer_id`` is loaded.
    """
    with database_errors(layer_id):
        layer = LayerMeta.read(conn, layer_id)
    if layer is None:
        raise LayerNotFoundError(f"no vector layer {layer_id[:80]!r} is loaded")
    return LayerReader(conn, layer, page_rows)
