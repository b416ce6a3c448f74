"""Rows on their way into the staging table: binary COPY chunks from a whole layer or a streamed source.

The writer (:mod:`loaders.write`) fills its staging table from a :class:`RowSource`: an iterator of
:class:`Encoded` chunks, each carrying the column types it was encoded with and the changes to the
staging table it needs first (a streamed load can only learn a column's type, or that single parts
must become Multi*, from a later chunk: :mod:`loaders.stream`). A whole layer in memory
(:class:`WholeLayer`) never needs one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
import shapely
from psycopg import sql

from loaders.copy_binary import HEADER, TRAILER, encode_rows
from loaders.copy_writer import BackgroundWriter
from loaders.layer import NormalisedLayer
from loaders.report import FieldInfo, LoadReport
from sdi.crs import HK_GRID

Bounds = tuple[float, float, float, float]


@dataclass
class Encoded:
    """One chunk of rows in PostgreSQL's binary COPY format."""

    done: int  #: source features consumed so far (for progress)
    kept: int  #: rows in ``data``
    data: bytes
    box: Bounds | None  #: bounds of the chunk's geometries (EPSG:2326)
    fields: list[FieldInfo]  #: the attribute columns, with the types ``data`` is encoded in
    geometry_type: str
    #: Column → new PostgreSQL type to apply to the staging table before these rows (``geom``: a geometry type).
    retype: dict[str, str] = field(default_factory=dict)


class RestartLoad(Exception):
    """A streamed source must be read again from the start (the writer rolls its staging table back)."""


class RowSource(Protocol):
    """What the writer loads: rows in chunks, and the layer's schema once they are all read."""

    fields: list[FieldInfo]
    geometry_type: str
    primary_key: str

    @property
    def total(self) -> int:
        """Source features expected (for progress)."""

    def encoded(self, report: LoadReport) -> Iterator[Encoded]:
        """The rows, chunk by chunk; may raise :class:`RestartLoad` before the last one."""

    def check_stage(self, conn: psycopg.Connection, stage: sql.Identifier) -> None:
        """Checks of the whole staging table before its primary key is added (raise ``DataError``)."""


class WholeLayer:
    """A :class:`RowSource` over a normalised layer held in memory.

    Each chunk is reprojected, re-validated and encoded on a worker thread while the caller sends
    the previous one, so client work overlaps the server's COPY.
    """

    def __init__(self, layer: NormalisedLayer, chunk_rows: int) -> None:
        self.layer = layer
        self.chunk_rows = chunk_rows
        self.fields = layer.fields
        self.geometry_type = layer.geometry_type
        self.primary_key = layer.primary_key

    @property
    def total(self) -> int:
        """Rows of the layer."""
        return len(self.layer)

    def encoded(self, report: LoadReport) -> Iterator[Encoded]:
        """The layer in chunks of ``chunk_rows`` rows."""
        layer, total, chunk_rows = self.layer, len(self.layer), self.chunk_rows
        starts = list(range(0, total, chunk_rows))

        def encode(start: int) -> Encoded:
            attrs, geoms = layer.chunk(start, min(start + chunk_rows, total))
            box = tuple(float(v) for v in shapely.total_bounds(geoms)) if len(geoms) else None
            return Encoded(min(start + chunk_rows, total), len(geoms),
                           encode_rows(attrs, layer.fields, geoms, layer.promote), box,  # type: ignore[arg-type]
                           layer.fields, layer.geometry_type)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdi-copy") as pool:
            pending: Future[Encoded] | None = pool.submit(encode, starts[0]) if starts else None
            for i in range(len(starts)):
                assert pending is not None
                item = pending.result()
                pending = pool.submit(encode, starts[i + 1]) if i + 1 < len(starts) else None
                yield item

    def check_stage(self, conn: psycopg.Connection, stage: sql.Identifier) -> None:
        """Nothing to check: the key was checked in memory."""


def union(a: Bounds | None, b: Bounds | None) -> Bounds | None:
    """The bounds covering ``a`` and ``b`` (either may be ``None``)."""
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def create_stage(conn: psycopg.Connection, stage: sql.Identifier, fields: list[FieldInfo], geometry_type: str) -> None:
    """(Re)create the staging table with ``fields`` and a ``geom`` column of ``geometry_type``."""
    columns = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.type)) for f in fields]
    conn.execute(sql.SQL("drop table if exists {}").format(stage))
    conn.execute(sql.SQL("create table {} ({}, geom {} not null)").format(
        stage, sql.SQL(", ").join(columns), sql.SQL(f"geometry({geometry_type}, {HK_GRID})")))


def _retype(stage: sql.Identifier, retype: dict[str, str]) -> sql.Composed:
    """One ALTER TABLE (one rewrite) applying ``retype`` to the staging table."""
    parts = []
    for column, new in retype.items():
        col = sql.Identifier(column)
        if column == "geom":
            using = sql.SQL("st_multi(geom)") if new.startswith("Multi") else sql.SQL("geom")
            parts.append(sql.SQL("alter column geom type {} using {}").format(
                sql.SQL(f"geometry({new}, {HK_GRID})"), using))
        else:
            parts.append(sql.SQL("alter column {} type {} using {}::{}").format(col, sql.SQL(new), col, sql.SQL(new)))
    return sql.SQL("alter table {} ").format(stage) + sql.SQL(", ").join(parts)


def fill_stage(conn: psycopg.Connection, stage: sql.Identifier, source: RowSource, report: LoadReport,
               progress: Callable[[int, int], None] | None = None) -> tuple[int, Bounds | None]:
    """Create the staging table and COPY every row of ``source`` into it; return (rows, bounds).

    The rows are sent by a background thread (:class:`loaders.copy_writer.BackgroundWriter`) while the
    next chunk is made. A chunk that needs the table changed ends the running COPY; the change is made
    (in SQL, on the rows already in) and a new COPY goes on. ``progress`` is called as ``progress(done, total)``.
    """
    written, extent = 0, None
    items = source.encoded(report)
    item = next(items, None)
    create_stage(conn, stage, item.fields if item else source.fields,
                 item.geometry_type if item else source.geometry_type)
    while item is not None:
        if item.retype and written:
            conn.execute(_retype(stage, item.retype))
        elif item.retype:  # nothing in yet: recreate rather than rewrite
            create_stage(conn, stage, item.fields, item.geometry_type)
        copy_sql = sql.SQL("copy {} ({}, geom) from stdin (format binary)").format(
            stage, sql.SQL(", ").join(sql.Identifier(f.name) for f in item.fields))
        with conn.cursor() as cur, cur.copy(copy_sql, writer=BackgroundWriter(cur)) as copy:
            copy.write(HEADER)
            while item is not None:
                copy.write(item.data)
                written, extent = written + item.kept, union(extent, item.box)
                if progress:
                    progress(item.done, source.total)
                item = next(items, None)
                if item is not None and item.retype:
                    break
            copy.write(TRAILER)
    if progress and source.total == 0:
        progress(0, 0)
    return written, extent
