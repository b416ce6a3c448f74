"""Write a normalised layer into PostGIS atomically.

One transaction does it all: create a staging table, COPY the rows in (binary, geometries as EWKB;
each chunk reprojected and encoded on a worker thread while the previous one is sent),
add the primary key and GiST index, ANALYZE, grant SELECT to the roles of the layer's access
(:mod:`sdi.access.roles`), compare with the live table (what was added, removed and
changed: :mod:`loaders.changes`), record the load-history and layer rows (and the changed ids), drop the
live table and rename the staging table into its place. Readers see the previous version until the
commit; a load that fails or is killed at any moment rolls back and leaves it intact.

The swap needs an ACCESS EXCLUSIVE lock on the live table, and a waiting lock request blocks every
reader that comes after it. So the swap (catalogue rows, drop, rename: milliseconds of work) runs in
a savepoint with a short ``lock_timeout`` (``SDI_SWAP_LOCK_TIMEOUT_MS``): if a long read holds the
table, the savepoint is rolled back (releasing every lock it took), the loader sleeps with backoff,
holding nothing a reader needs, and tries again, until ``SDI_SWAP_DEADLINE_S``; then the load fails
as busy. Readers are delayed by at most one lock timeout per try.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import shapely
from psycopg import sql

from loaders.changes import compare, prune_ids, record_ids
from loaders.layer import NormalisedLayer
from loaders.report import LoadReport
from loaders.rows import RestartLoad, RowSource, WholeLayer, fill_stage
from sdi.access.groups import access_groups
from sdi.access.roles import grant_layer
from sdi.catalogue.store import refresh_record, temporal_extent
from sdi.errors import LayerNotFoundError, LoadInterruptedError
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

SCHEMA = "layers"
Progress = Callable[[int, int], None]
#: Sleep between swap tries: starts at the first value, doubles up to the second (seconds), with jitter.
SWAP_BACKOFF = (0.1, 2.0)
T = TypeVar("T")


def _name(base: str, suffix: str) -> str:
    """An object name of at most 63 bytes: ``<base>_<suffix>``."""
    return f"{base[: 62 - len(suffix)]}_{suffix}"


def write_layer(conn: psycopg.Connection, definition: LayerDefinition, layer: NormalisedLayer | RowSource,
                report: LoadReport, settings: Settings, *, started_at: dt.datetime,
                loader_version: str, progress: Progress | None = None) -> int:
    """Replace ``layers.<id>`` with ``layer`` in one transaction; return the new load id.

    Parameters
    ----------
    conn
        An open connection, not in a transaction.
    layer
        A layer normalised in memory, or a streamed source (:class:`loaders.stream.StreamedLayer`),
        which may ask for the staging table to be filled again from the start (in a savepoint).
    progress
        Called as ``progress(rows_written, rows_total)`` after each COPY chunk; an exception it
        raises aborts the load (and rolls it back), which the tests use to inject failures.
    """
    table = definition.id
    stage = _name("_load", table)
    ident = sql.Identifier(SCHEMA, table)
    stage_ident = sql.Identifier(SCHEMA, stage)
    source: RowSource = WholeLayer(layer, settings.copy_chunk_rows) if isinstance(layer, NormalisedLayer) else layer
    with conn.transaction():
        owner = conn.execute("select 1 from pg_roles where rolname = %s", (settings.owner_role,)).fetchone()
        if owner:
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(settings.owner_role)))
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"sdi.load.{table}",))
        while True:
            try:
                with conn.transaction():  # a savepoint: a streamed source that must start again rolls back to it
                    written, extent = fill_stage(conn, stage_ident, source, report, progress)
                    break
            except RestartLoad:
                continue
        source.check_stage(conn, stage_ident)
        pk = source.primary_key
        conn.execute("set local maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL("alter table {} add constraint {} primary key ({})").format(
            stage_ident, sql.Identifier(_name(stage, "pkey")), sql.Identifier(pk)))
        conn.execute(sql.SQL("create index {} on {} using gist (geom)").format(
            sql.Identifier(_name(stage, "geom_idx")), stage_ident))
        conn.execute(sql.SQL("analyze {}").format(stage_ident))
        grant_layer(conn, SCHEMA, stage, access_groups(definition.access), settings.reader_role)  # kept by the rename
        conn.execute(sql.SQL("comment on table {} is {}").format(
            stage_ident, sql.Literal(f"{definition.title.en}{' (synthetic)' if definition.synthetic else ''}")))
        report.features_written = written
        dates = [f.name for f in source.fields if f.type in ("date", "timestamp", "timestamptz")]
        temporal = temporal_extent(conn, stage, dates)  # a scan: done before the swap, on the staging table
        # set-based comparisons with the live table (it is only read: readers go on), before the swap
        report.changes = compare(conn, table, stage, source.fields, pk, written, report)
        prune_ids(conn, table)

        def swap() -> int:
            """Catalogue rows, then drop the live table and rename the staging table into its place."""
            load_id = _record(conn, definition, source, report, started_at, loader_version, extent)
            record_ids(conn, load_id, report.changes)
            refresh_record(conn, definition, kind="vector", public_url=settings.public_url, bounds=extent,
                           lineage=lineage(report, load_id, loader_version, started_at), temporal=temporal)
            conn.execute(sql.SQL("drop table if exists {}").format(ident))
            conn.execute(sql.SQL("alter table {} rename to {}").format(stage_ident, sql.Identifier(table)))
            conn.execute(sql.SQL("alter index {} rename to {}").format(
                sql.Identifier(SCHEMA, _name(stage, "pkey")), sql.Identifier(_name(table, "pkey"))))
            conn.execute(sql.SQL("alter index {} rename to {}").format(
                sql.Identifier(SCHEMA, _name(stage, "geom_idx")), sql.Identifier(_name(table, "geom_idx"))))
            return load_id

        load_id = _swap_in(conn, table, settings, swap, report=report)
    return load_id


def _swap_in(conn: psycopg.Connection, table: str, settings: Settings, swap: Callable[[], T], *,
             report: LoadReport | None = None, outcome: str = "the reload was not swapped in") -> T:
    """Run ``swap`` in a savepoint with a short ``lock_timeout``, retrying until the swap deadline.

    Every lock ``swap`` takes (the live table's ACCESS EXCLUSIVE, ``sdi.layer`` row locks) waits at
    most ``settings.swap_lock_timeout_ms``; a timed-out try is rolled back to the savepoint, which
    releases all of them, so between tries nothing this transaction holds delays a reader of the
    layer. Call inside the transaction, after its heavy work. A wait is noted in ``report``.

    Raises
    ------
    LoadInterruptedError
        When readers held the layer past ``settings.swap_deadline_s`` (the message ends with
        ``outcome``); the transaction is then rolled back by the caller and the previous version stays.
    """
    conn.execute("select set_config('lock_timeout', %s, true)", (f"{settings.swap_lock_timeout_ms}ms",))
    began = time.monotonic()
    deadline = began + settings.swap_deadline_s
    pause, tries = SWAP_BACKOFF[0], 0
    while True:
        tries += 1
        note = None
        if tries > 1 and report is not None:  # say so in the report (and in the load-history row the swap writes)
            waited = time.monotonic() - began
            note = f"the swap waited {waited:.1f} s ({tries - 1} tries timed out) for readers of {SCHEMA}.{table}"
            report.note(note)
        try:
            with conn.transaction():
                return swap()
        except psycopg.errors.LockNotAvailable:
            if note and report is not None:
                report.notes.remove(note)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadInterruptedError(
                    f"layer {table!r} is busy: readers held {SCHEMA}.{table} for more than"
                    f" {settings.swap_deadline_s:g} s (SDI_SWAP_DEADLINE_S), so {outcome} ({tries} tries);"
                    " the layer is unchanged, retry later") from None
            time.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, SWAP_BACKOFF[1])


def lineage(report: LoadReport, load_id: int, loader_version: str, started_at: dt.datetime) -> dict[str, object]:
    """The lineage part of a catalogue record: where the data came from and what the load did to it."""
    return {
        "source_file": Path(report.source_path).name, "source_sha256": report.source_sha256,
        "source_crs": report.source_crs, "crs_origin": report.crs_origin, "transformation": report.transformation,
        "encoding": report.encoding, "loaded_at": started_at.isoformat(), "loader_version": loader_version,
        "load_id": load_id, "features_read": report.features_read, "features_written": report.features_written,
        "repaired": dict(report.repaired), "dropped": dict(report.dropped), "warnings": list(report.warnings),
    }


def _record(conn: psycopg.Connection, definition: LayerDefinition, layer: RowSource, report: LoadReport,
            started_at: dt.datetime, loader_version: str, bounds: tuple[float, float, float, float] | None) -> int:
    total = report.features_written
    row = conn.execute(
        "insert into sdi.load_history (layer_id, started_at, source_path, source_sha256, source_crs,"
        " transformation, loader_version, features_read, features_written, report, changes)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) returning load_id",
        (definition.id, started_at, str(definition.source_path), report.source_sha256, report.source_crs,
         report.transformation, loader_version, report.features_read, total,
         json.dumps(report.to_dict(), ensure_ascii=False, default=str),
         None if report.changes is None else json.dumps(report.changes, ensure_ascii=False)),
    ).fetchone()
    assert row is not None
    load_id = int(row[0])
    if bounds is not None:
        xmin, ymin, xmax, ymax = bounds
        pad = 0.5 if (xmax - xmin) == 0 or (ymax - ymin) == 0 else 0.0
        extent = shapely.box(xmin - pad, ymin - pad, xmax + pad, ymax + pad).wkt
    else:
        extent = None
    conn.execute(
        "insert into sdi.layer (id, table_name, title_en, title_zh, abstract_en, abstract_zh, custodian,"
        " licence, geometry_type, srid, primary_key, feature_count, extent, fields, synthetic, definition,"
        " load_id, loaded_at) values (%(id)s, %(table)s, %(ten)s, %(tzh)s, %(aen)s, %(azh)s, %(cust)s,"
        " %(lic)s, %(gt)s, 2326, %(pk)s, %(n)s, st_geomfromtext(%(ext)s, 2326), %(fields)s::jsonb,"
        " %(syn)s, %(def)s::jsonb, %(load)s, now())"
        " on conflict (id) do update set table_name = excluded.table_name, title_en = excluded.title_en,"
        " title_zh = excluded.title_zh, abstract_en = excluded.abstract_en, abstract_zh = excluded.abstract_zh,"
        " custodian = excluded.custodian, licence = excluded.licence, geometry_type = excluded.geometry_type,"
        " primary_key = excluded.primary_key, feature_count = excluded.feature_count,"
        " extent = excluded.extent, fields = excluded.fields, synthetic = excluded.synthetic,"
        " definition = excluded.definition, load_id = excluded.load_id, loaded_at = excluded.loaded_at,"
        " kind = 'vector', file_path = null, raster = null",
        {"id": definition.id, "table": f"{SCHEMA}.{definition.id}", "ten": definition.title.en,
         "tzh": definition.title.zh, "aen": definition.abstract.en, "azh": definition.abstract.zh,
         "cust": definition.custodian, "lic": definition.licence, "gt": layer.geometry_type,
         "pk": layer.primary_key, "n": total, "ext": extent,
         "fields": json.dumps([f.__dict__ for f in layer.fields], ensure_ascii=False),
         "syn": definition.synthetic, "def": definition.model_dump_json(), "load": load_id},
    )
    return load_id


def drop_layer(conn: psycopg.Connection, layer_id: str, settings: Settings) -> str:
    """Remove a published layer in one transaction: its table (or COG file) and its catalogue record.

    Load history is kept. Returns what was removed, for messages. The drop waits for long reads of
    the table like a reload's swap does (short lock timeouts, retried until ``SDI_SWAP_DEADLINE_S``).

    Raises
    ------
    LayerNotFoundError
        When no layer ``layer_id`` is loaded.
    LoadInterruptedError
        When readers held the table past the swap deadline; nothing is removed.
    """
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"sdi.load.{layer_id}",))
        row = conn.execute("select kind, file_path from sdi.layer where id = %s for update", (layer_id,)).fetchone()
        if row is None:
            raise LayerNotFoundError(f"no loaded layer {layer_id!r}")
        kind, file_path = row
        owner = conn.execute("select 1 from pg_roles where rolname = %s", (settings.owner_role,)).fetchone()
        if owner:
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(settings.owner_role)))

        def remove() -> None:
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, layer_id)))
            conn.execute("delete from sdi.layer where id = %s", (layer_id,))

        _swap_in(conn, layer_id, settings, remove, outcome="it was not dropped")
        if kind == "raster" and file_path:
            target = settings.data_dir / file_path
            target.unlink(missing_ok=True)
            return f"{target} and its catalogue record"
    return f"{SCHEMA}.{layer_id} and its catalogue record"
