"""How the ``dask`` engine's tasks read layers from PostGIS themselves: connection, snapshot, rows.

A task gets a :class:`Database` (the URL, shown with its password masked) and opens its own
connection. It locks the layers it reads (``ACCESS SHARE``, waiting out a reload's swap) before its
read-only, repeatable-read snapshot is taken, and reads each layer's load id in that snapshot; the
client compares the load ids with the ones it planned with, so a layer reloaded while a job runs is
an error, never a mix of two versions. Rows come back as Python values (the client builds the
result's columns from them, as the ``postgis`` engine does) with the geometries decoded by shapely,
and travel between processes as WKB (:class:`WkbGeometry`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import psycopg
import shapely
from psycopg import sql

from sdi.errors import PlanningError
from sdi.planning.engines.partitions import INF, Rect, centre
from sdi.planning.sources import HK_GRID, LayerTable
from sdi.settings import Settings

#: Metres added to every search box: the boxes are a superset, so a margin only adds candidates.
MARGIN_M = 0.01
#: Rows each process has read as partitions, by layer id (see :func:`partition_rows_read`).
_PARTITION_ROWS: Counter[str] = Counter()
_SORTABLE = (int, float, Decimal, date, datetime)
_NONE_RANK = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Database:
    """The database a task connects to; its ``repr`` masks the password (task arguments can show in dask's logs)."""

    url: str = field(repr=False)
    connect_timeout: int = 5

    @classmethod
    def of(cls, settings: Settings) -> Database:
        """The database of ``settings``."""
        return cls(settings.database_url, settings.connect_timeout)

    def __repr__(self) -> str:
        from sdi.db import redact

        return f"Database({redact(self.url)!r})"

    def connect(self) -> psycopg.Connection:
        """A new connection, named ``sdi dask <pid>`` in ``pg_stat_activity`` (the client's and each task's).

        Raises
        ------
        DatabaseUnavailableError, ConfigError
            As :func:`sdi.db.connect`, with the password masked.
        """
        from sdi.db import connect

        conn = connect(Settings.model_construct(database_url=self.url, connect_timeout=self.connect_timeout))
        conn.execute("select set_config('application_name', %s, false)", (f"sdi dask {os.getpid()}",))
        conn.commit()
        return conn


@contextmanager
def snapshot(db: Database, tables: Sequence[LayerTable]) -> Iterator[tuple[psycopg.Connection, dict[str, int]]]:
    """A read-only, repeatable-read transaction on ``tables``, locked before the snapshot; yields the load ids.

    ``LOCK TABLE`` takes no snapshot, so the snapshot the first query takes sees the tables the
    locks hold (a reload's swap in progress is waited for, and cannot start until the end).
    """
    conn = db.connect()
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            names = sorted({t.id for t in tables if t.schema is not None})
            if names:
                conn.execute(sql.SQL("lock table {} in access share mode").format(
                    sql.SQL(", ").join(sql.Identifier("layers", n) for n in names)))
            rows = conn.execute("select id, load_id from sdi.layer where id = any(%s)", (names,)).fetchall()
            yield conn, {str(r[0]): int(r[1]) for r in rows}
    finally:
        conn.close()


def check_loads(planned: dict[str, int], seen: dict[str, int]) -> None:
    """Raise when a task read another load of a layer than the client planned with.

    Raises
    ------
    PlanningError
        Naming the layer that was reloaded (or dropped) while the job ran.
    """
    for layer, load_id in planned.items():
        if seen.get(layer) != load_id:
            raise PlanningError(f"layer {layer!r} was reloaded or dropped while the dask engine read it; run again")


class WkbGeometry:
    """Pickles the ``geometry`` array of its subclass as WKB: 10x faster than shapely objects one by one."""

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "geometry": shapely.to_wkb(self.__dict__["geometry"])}

    def __setstate__(self, state: dict[str, object]) -> None:
        state["geometry"] = np.asarray(shapely.from_wkb(state["geometry"]), dtype=object)
        self.__dict__.update(state)


@dataclass
class Rows(WkbGeometry):
    """Rows of a layer: keys (primary key values, in key order), attribute tuples, shapely geometries."""

    keys: list[object]
    values: list[tuple[object, ...]]
    geometry: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def bounds(self) -> tuple[float, float, float, float]:
        """The bounding box of every geometry."""
        xmin, ymin, xmax, ymax = shapely.total_bounds(self.geometry)
        return float(xmin), float(ymin), float(xmax), float(ymax)


def _fetch(conn: psycopg.Connection, table: LayerTable, columns: Sequence[str], source: sql.Composable,
           where: sql.Composable, params: Sequence[object]) -> Rows:
    query = sql.SQL("select t.{pk}, {cols}st_asbinary(t.geom) from {source} where {where} order by t.{pk}").format(
        pk=sql.Identifier(table.primary_key), source=source, where=where,
        cols=sql.SQL("").join(sql.SQL("t.{}, ").format(sql.Identifier(c)) for c in columns))
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, params).fetchall()
    wkb = np.empty(len(rows), dtype=object)
    wkb[:] = [bytes(r[-1]) for r in rows]
    return Rows([r[0] for r in rows], [r[1:-1] for r in rows], np.asarray(shapely.from_wkb(wkb), dtype=object))


def read_partition(conn: psycopg.Connection, table: LayerTable, columns: Sequence[str], rect: Rect,
                   where: sql.Composable | None = None, params: Sequence[object] = ()) -> Rows:
    """The rows of ``table`` placed in ``rect`` (:func:`~.partitions.centre`) and satisfying ``where`` (alias ``t``).

    The rows are found through the GiST index and ``where``; the bounding box of each is taken once
    (``offset 0`` keeps PostgreSQL from inlining it into every comparison).
    """
    box, box_params = rect.box(sql.SQL("t.geom"))
    inside, inside_params = rect.contains(*centre(sql.SQL("t._sdi_box")))
    source = sql.SQL("(select t.*, box2d(t.geom) as _sdi_box from {} t where {} and ({}) offset 0) t").format(
        table.ident, box, where if where is not None else sql.SQL("true"))
    rows = _fetch(conn, table, columns, source, inside, [*box_params, *params, *inside_params])
    _PARTITION_ROWS[table.id] += len(rows)
    return rows


def read_near(conn: psycopg.Connection, table: LayerTable, columns: Sequence[str],
              bounds: tuple[float, float, float, float], reach: float,
              where: sql.Composable | None = None, params: Sequence[object] = ()) -> Rows:
    """The rows of ``table`` whose bounding box comes within ``reach`` metres of ``bounds`` (``inf``: every row).

    Every row within ``reach`` of a geometry inside ``bounds`` is among them (a superset, by key).
    """
    grow = reach + MARGIN_M
    box = [bounds[0] - grow, bounds[1] - grow, bounds[2] + grow, bounds[3] + grow]
    condition: sql.Composable = sql.SQL("t.geom && st_makeenvelope(%s, %s, %s, %s, {})").format(sql.Literal(HK_GRID))
    if where is not None:
        condition = sql.SQL("{} and ({})").format(condition, where)
    return _fetch(conn, table, columns, sql.SQL("{} t").format(table.ident), condition, [*box, *params])


def next_radius(radius: float, needed: float) -> float:
    """The search radius to try after ``radius`` left a geometry ``needed`` metres from its nearest (inf: none).

    A finite ``needed`` is the exact radius that holds every geometry's nearest row; with none found
    the radius grows eightfold, and beyond 10,000 km every row is read.
    """
    if math.isfinite(needed):
        return needed
    grown = max(8.0 * radius, 1.0)
    return grown if grown < 1e7 else INF


def partition_rows_read() -> dict[str, int]:
    """Rows this process has read as partitions since it started, by layer id (for monitoring and tests).

    ``client.run(partition_rows_read)`` asks every worker of a cluster.
    """
    return dict(_PARTITION_ROWS)


def key_ranks(conn: psycopg.Connection | None, table: LayerTable | None, keys: Sequence[object]) -> np.ndarray:
    """Numbers that sort like ``keys`` in the order the database sorts the table's primary key (``None`` first).

    Whole-number keys are their own ranks; other numbers and dates sort alike everywhere and are
    ranked here; other keys (text, whose order depends on the column's collation) are sorted by the
    database, through the primary-key index.

    Raises
    ------
    PlanningError
        When a key is no longer in the table (reloaded meanwhile).
    """
    whole = np.asarray(keys)
    if whole.dtype.kind in "iu":
        return whole.astype(np.int64)
    present = {k for k in keys if k is not None}
    if all(type(k) is int for k in present):
        return np.array([_NONE_RANK if k is None else k for k in keys], dtype=np.int64)
    if all(isinstance(k, _SORTABLE) and not isinstance(k, bool) for k in present) or table is None:
        ordered: list[object] = sorted(present)  # type: ignore[type-var]
    else:
        assert conn is not None
        query = sql.SQL("select t.{pk} from {table} t where t.{pk} = any(%s) order by t.{pk}").format(
            pk=sql.Identifier(table.primary_key), table=table.ident)
        ordered = [r[0] for r in conn.execute(query, (list(present),)).fetchall()]
        if len(ordered) != len(present):
            raise PlanningError(f"layer {table.id!r} was reloaded or dropped while the dask engine read it; run again")
    rank = {k: i for i, k in enumerate(ordered)}
    return np.array([_NONE_RANK if k is None else rank[k] for k in keys], dtype=np.int64)
