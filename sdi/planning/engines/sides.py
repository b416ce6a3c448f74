"""The inputs of a ``postgis`` join as SQL sees them, and fast reading of large results.

A :class:`Side` is a loaded layer joined in place (``layers.<id>``) or a GeoDataFrame copied into a
temporary table (:func:`sdi.planning.sources.temp_table`) whose attributes are taken back from the frame
by row position. :func:`fetch_columns` reads a result column by column with Python's cyclic garbage
collector paused: building a million row tuples otherwise triggers collections that walk every object
already read, which costs more than the reading itself.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.errors import PlanningError
from sdi.planning.engines.frames import attributes, take
from sdi.planning.sources import LayerTable, layer_table, temp_table

#: Values as a result column holds them: a sequence, or an object array (:func:`fetch_columns`).
Values = Sequence[object] | np.ndarray
_KIND_IDS = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}
_KINDS = {kind.lower(): kind for kind in _KIND_IDS.values()}
#: Collations whose order is the order of Unicode code points, as Python sorts ``str``.
_CODEPOINT_COLLATIONS = {"c", "posix", "c.utf-8", "c.utf8", "ucs_basic"}


@dataclass(frozen=True)
class Side:
    """One input of a join: a loaded layer, or a temporary copy of ``frame``."""

    table: LayerTable
    frame: gpd.GeoDataFrame | None = None

    def key(self, alias: str) -> sql.Composable:
        """The row key (primary key, or frame position) qualified by ``alias``."""
        return sql.Identifier(alias, self.table.primary_key)

    def names(self) -> list[str]:
        """The columns :meth:`output` selects: every attribute of a layer, the position ``_row`` of a frame."""
        return ["_row"] if self.frame is not None else list(self.table.columns)

    def output(self, alias: str, prefix: str) -> list[sql.Composable]:
        """Select items for this side's result columns, named ``<prefix><n>``."""
        return [sql.SQL("{} as {}").format(sql.Identifier(alias, c), sql.Identifier(f"{prefix}{i}"))
                for i, c in enumerate(self.names())]

    def width(self) -> int:
        """How many result columns :meth:`output` selects."""
        return 1 if self.frame is not None else len(self.table.columns)

    def kind(self) -> str | None:
        """The one geometry type of this side (``Polygon``, ``MultiPolygon``, ``Point`` ...), ``None`` if mixed."""
        if self.frame is None:
            return _KINDS.get((self.table.geometry_type or "").lower())
        kinds = set(shapely.get_type_id(np.asarray(self.frame.geometry.values, dtype=object)).tolist()) - {-1}
        return _KIND_IDS.get(kinds.pop()) if len(kinds) == 1 else None

    def key_position(self) -> int:
        """Position of the row key among the columns :meth:`output` selects."""
        return self.names().index(self.table.primary_key)

    def attrs(self, rows: Sequence[Sequence[object]]) -> pd.DataFrame:
        """This side's attributes from its selected values (one sequence per result row)."""
        if self.frame is None:
            return pd.DataFrame([list(r) for r in rows], columns=list(self.table.columns))
        positions = np.array([-1 if r[0] is None else r[0] for r in rows], dtype=np.int64)
        return take(attributes(self.frame), positions)

    def attrs_from(self, columns: Sequence[Values]) -> pd.DataFrame:
        """This side's attributes from its selected values, column by column.

        Column types come out as pandas infers them from rows (integers with a missing value become floats),
        so the result matches :meth:`attrs` and :func:`sdi.planning.sources.read_layer`.
        """
        if self.frame is None:
            typed = {name: _typed(values) for name, values in zip(self.table.columns, columns, strict=True)}
            return pd.DataFrame(typed, columns=list(self.table.columns))
        positions = np.array([-1 if p is None else p for p in columns[0]], dtype=np.int64)
        return take(attributes(self.frame), positions)


#: What :func:`pandas.api.types.infer_dtype` calls a column of one Python type, and its numpy type.
_NUMPY_TYPES = {"integer": np.int64, "floating": np.float64, "boolean": np.bool_}


def _typed(values: Values) -> pd.Series:
    """One result column as pandas types it from rows; integers, floats, booleans and strings without a missing
    value (the common cases: one Python type per column) are recognised in one pass and converted directly.

    A column already typed by :func:`fetch_parts` is taken as it is.
    """
    if isinstance(values, np.ndarray) and values.dtype != object:
        return pd.Series(values)
    values = objects(values)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string":
        return pd.Series(values, dtype=object)
    if kind in _NUMPY_TYPES:
        try:
            return pd.Series(values.astype(_NUMPY_TYPES[kind]))
        except OverflowError:  # integers beyond 64 bits
            pass
    return pd.Series(values, dtype=object).infer_objects()


def side(conn: psycopg.Connection, source: str | gpd.GeoDataFrame, name: str,
         columns: Sequence[str] = ()) -> Side:
    """The :class:`Side` of a layer id, or of a frame copied (geometry, ``columns``) into temp table ``_sdi_<name>``."""
    if isinstance(source, str):
        return Side(layer_table(conn, source))
    copy = source[[*columns, source.geometry.name]]
    return Side(temp_table(conn, copy, f"_sdi_{name}"), source)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees memory) for a bulk read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fetch_columns(conn: psycopg.Connection, query: sql.Composed, params: Sequence[object] = ()) -> list[np.ndarray]:
    """Run ``query`` and return its result column by column, as object arrays (binary transfer, collector paused)."""
    with paused_gc():
        return _columns(_executed(conn, query, params))


def _executed(conn: psycopg.Connection, query: sql.Composed, params: Sequence[object] = ()) -> psycopg.Cursor:
    """A binary cursor holding the whole result of ``query`` (not yet converted to Python values)."""
    cur = conn.cursor(binary=True)
    try:
        cur.execute(query, params)
    except BaseException:
        cur.close()
        raise
    return cur


def _columns(cur: psycopg.Cursor) -> list[np.ndarray]:
    """The result held by ``cur``, column by column as object arrays; the cursor is closed.

    Converting rows needs only the cursor's own result, never the connection, so it may run on another
    thread while the connection runs the next statement.
    """
    with cur:
        width = len(cur.description or ())
        rows = cur.fetchall()
    if not rows:
        return [np.empty(0, dtype=object) for _ in range(width)]
    table = np.empty((len(rows), width), dtype=object)
    try:
        table[:] = rows  # one pass in C, twice as fast as transposing with zip
    except ValueError:  # a value numpy takes for a sequence (an array column): column by column
        return [objects(column) for column in zip(*rows, strict=True)]
    return [table[:, i] for i in range(width)]


def objects(values: Values) -> np.ndarray:
    """``values`` as a one-dimensional object array (never split into a 2-D array, as ``np.asarray`` may)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def fetch_parts(conns: Sequence[psycopg.Connection], queries: Sequence[sql.Composed], shape: int,
                setups: Sequence[Callable[[], None] | None] = ()) -> list[np.ndarray]:
    """Run ``queries`` on the connections ``conns`` (in turn) and return their results, concatenated column by column
    in the order of ``queries``; each connection takes the next query as soon as it is free. ``setups[i]``,
    when given, prepares connection ``i`` before its first query (on the thread that drives it, so the other
    connections start at once).

    Column ``shape`` (WKB) comes back as shapely geometries, and a column of one Python type (integers,
    floats, booleans, no missing value) as a numpy array of that type (other columns stay object arrays; a
    column typed differently in two parts is returned as objects). Each part's rows are converted on a
    worker thread while PostgreSQL computes the next part (psycopg releases the GIL while it waits for the
    server, and GEOS while it parses), so the client and the server work at the same time; with two
    connections, two server processes compute parts at the same time.
    """
    def converted(cur: psycopg.Cursor) -> list[np.ndarray]:
        columns = _columns(cur)
        for i, column in enumerate(columns):
            columns[i] = geometry(column) if i == shape else _numbers(column)
        return columns

    parts: list[Future[list[np.ndarray]]] = []

    following = iter(range(len(queries)))
    taking = threading.Lock()

    def run(pool: ThreadPoolExecutor, k: int) -> list[tuple[int, Future]]:
        """Prepare connection ``k``, then run the next query not yet taken until none is left."""
        setup = setups[k] if k < len(setups) else None
        if setup is not None:
            setup()
        done: list[tuple[int, Future]] = []
        while True:
            with taking:
                i = next(following, None)
            if i is None:
                return done
            done.append((i, pool.submit(converted, _executed(conns[k], queries[i]))))

    with paused_gc(), ThreadPoolExecutor(max_workers=1) as pool:
        if len(conns) == 1:
            parts = [pool.submit(converted, _executed(conns[0], query)) for query in queries]
        else:
            with ThreadPoolExecutor(max_workers=len(conns)) as runners:
                runs = [runners.submit(run, pool, k) for k in range(len(conns))]
                submitted = sorted(pair for r in runs for pair in r.result())
            parts = [future for _, future in submitted]
        results = [part.result() for part in parts]
    if len(results) == 1:
        return results[0]
    return [np.concatenate(parts if len({p.dtype for p in parts}) == 1 else [p.astype(object) for p in parts])
            for parts in zip(*results, strict=True)]


def _numbers(values: np.ndarray) -> np.ndarray:
    """An object column as int64, float64 or bool when every value is of that one Python type, else as it is."""
    if not len(values):
        return values
    kind = _NUMPY_TYPES.get(pd.api.types.infer_dtype(values, skipna=False))
    if kind is None:
        return values
    try:
        return values.astype(kind)
    except OverflowError:  # integers beyond 64 bits
        return values


def geometry(values: Values) -> np.ndarray:
    """Shapely geometries from WKB values (``bytes`` or buffers; ``None`` stays missing)."""
    wkb = objects(values)
    with paused_gc():
        try:
            return np.asarray(shapely.from_wkb(wkb), dtype=object)
        except TypeError:  # buffers rather than bytes
            wkb[:] = [None if v is None else bytes(v) for v in wkb]
            return np.asarray(shapely.from_wkb(wkb), dtype=object)


def integers(values: Values) -> np.ndarray | None:
    """``values`` as int64 when every one is a Python integer (the usual keys), else ``None``."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    array = objects(values)
    if len(array) and pd.api.types.infer_dtype(array, skipna=False) == "integer":
        try:
            return array.astype(np.int64)
        except OverflowError:  # beyond 64 bits (a numeric key)
            return None
    return None


def ranks(values: Values, presorted: bool = False) -> np.ndarray:
    """Integers that order ``values`` as Python sorts them (integers as they are); in given order when ``presorted``.

    ``None`` ranks last, as PostgreSQL sorts NULL last.
    """
    if not presorted:
        numbers = integers(values)
        if numbers is not None:
            return numbers
    codes = pd.factorize(objects(values), sort=not presorted, use_na_sentinel=True)[0].astype(np.int64)
    codes[codes < 0] = np.iinfo(np.int64).max
    return codes


def estimated_rows(conn: psycopg.Connection, source: Side) -> int:
    """The planner's estimate of the rows of a layer's table (``pg_class.reltuples``; 0 when never analysed)."""
    row = conn.execute("select reltuples from pg_class where oid = to_regclass(%s)",
                       (source.table.ident.as_string(conn),)).fetchone()
    return max(0, int(row[0])) if row is not None and row[0] is not None else 0


def python_sortable(conn: psycopg.Connection, table: LayerTable, column: str) -> bool:
    """Whether Python orders ``column``'s values as PostgreSQL's ``order by`` does (numbers, or text by code point)."""
    row = conn.execute(
        "select t.typcategory, case when a.attcollation = 0 then null when c.collname = 'default' then "
        "(select datcollate from pg_database where datname = current_database()) else c.collcollate end "
        "from pg_attribute a join pg_type t on t.oid = a.atttypid left join pg_collation c on c.oid = a.attcollation "
        "where a.attrelid = to_regclass(%s) and a.attname = %s", (table.ident.as_string(conn), column)).fetchone()
    if row is None:
        return False
    category, collation = row
    if category == "N":
        return True
    return category == "S" and collation is not None and str(collation).lower() in _CODEPOINT_COLLATIONS


def column_type(conn: psycopg.Connection, table: sql.Composable, column: str) -> str:
    """The SQL type of ``column`` of ``table`` (e.g. ``bigint``, ``text``), for declaring a column like it."""
    row = conn.execute("select format_type(atttypid, atttypmod) from pg_attribute "
                       "where attrelid = to_regclass(%s) and attname = %s", (table.as_string(conn), column)).fetchone()
    if row is None:
        raise PlanningError(f"no column {column!r} in {table.as_string(conn)}")
    return str(row[0])
