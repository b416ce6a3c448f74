"""What a load changed: the new version compared with the live one, in SQL, before the swap.

:func:`compare` runs inside the load's transaction once the staging table is complete and indexed, and
compares it with the live ``layers.<id>`` set-based in PostgreSQL:

* **By key**, when both versions have the same declared primary key: one full join of the two tables on
  the key (both sides are primary-key indexed). A key only in the new version is *added*, only in the old
  one *removed*; a key in both is *changed* when its geometry differs (exact equality of the stored
  geometries: coordinates and their order; a one-part Multi* promotion alone is not a change) or its
  attributes differ (see below), else *unchanged*. The ids added, removed and changed go to a temporary
  table, which the swap copies into ``sdi.load_changes`` (:func:`record_ids`).
* **By content**, when either version has no declared key (the generated ``fid`` numbers features in
  source order, so it is not stable across versions) or the key column changed: each feature is hashed
  (``hash_record_extended``, 64 bits, of its geometry's EWKB and its attribute values) and the two versions
  are compared as multisets of hashes in one pass over both tables (two features alike in everything count
  twice; two different features would have to share a 64-bit hash to be taken for one another). Without a
  key an edited feature cannot be told from a removal plus an addition, so ``changed`` is ``None`` and an
  edit counts as one removed and one added; no ids are recorded.

Attributes are compared as name → value over the union of both versions' columns (key and geometry
excluded); a column only one version has counts as NULL in the other, so a column added with values
changes every feature that has one, and a column added empty changes none. A column whose type changed is
compared by its text form. Added, removed and retyped columns are also listed.

The counts (``sdi.load_history.changes`` and :attr:`LoadReport.changes`)::

    {"added", "removed", "changed", "changed_geometry", "changed_attributes", "unchanged",
     "compared_by": "key" | "content", "key", "previous_load_id",
     "columns_added", "columns_removed", "columns_retyped",
     "ids": "recorded" | "over_limit" | "unkeyed" | "pruned", "seconds"}

``changed`` counts features whose geometry or attributes changed (the two detail counts may overlap);
``added + changed + unchanged`` is the new feature count and ``removed + changed + unchanged`` the old
one. A layer's first load (no live vector table to compare with) has no counts (``None``), as do rasters.
At most :data:`MAX_CHANGE_IDS` ids are recorded per load (more: none, ``ids = "over_limit"``: re-read the
layer), and only for the latest :data:`KEEP_IDS_LOADS` loads of each layer (older ones: ``"pruned"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from loaders.report import FieldInfo, LoadReport

SCHEMA = "layers"
GEOMETRY = "geom"
GENERATED = "(generated)"  #: ``original_name`` of the key the loader generates when a layer declares none
#: Most feature ids recorded per load; a load that changes more records none (an app should re-read the layer).
MAX_CHANGE_IDS = 100_000
#: The ids of this many latest loads of each layer are kept; older loads' ids are deleted (counts stay).
KEEP_IDS_LOADS = 30
#: Types compared with ``IS DISTINCT FROM`` as they are; any other type is compared by its text form.
COMPARABLE = frozenset({"text", "bigint", "integer", "smallint", "double precision", "real", "numeric", "boolean",
                        "date", "timestamp without time zone", "timestamp with time zone", "jsonb", "uuid"})
DIFF_TABLE = sql.Identifier("sdi_load_diff")  #: temporary, dropped at commit


@dataclass(frozen=True)
class Version:
    """One side of the comparison: a table's columns (name → type), its key, and whether the key is generated."""

    table: str
    columns: dict[str, str]
    key: str
    generated_key: bool

    @property
    def geometry_type(self) -> str:
        return self.columns.get(GEOMETRY, "")

    def attributes(self) -> dict[str, str]:
        """Columns compared as attributes: all but the geometry and a generated key."""
        return {n: t for n, t in self.columns.items() if n != GEOMETRY and not (self.generated_key and n == self.key)}


def _columns(conn: psycopg.Connection, table: str) -> dict[str, str] | None:
    """``layers.<table>``'s columns (name → type, in order), or ``None`` when there is no such table."""
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
        " join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum", (SCHEMA, table)).fetchall()
    return {str(name): str(kind) for name, kind in rows} or None


def previous_version(conn: psycopg.Connection, layer_id: str) -> tuple[Version, int] | None:
    """The live vector version of ``layer_id`` and its load id; ``None`` for a first load (or after a raster)."""
    row = conn.execute("select kind, primary_key, fields, load_id from sdi.layer where id = %s",
                       (layer_id,)).fetchone()
    if row is None or row[0] != "vector" or not row[1]:
        return None
    columns = _columns(conn, layer_id)
    if columns is None or row[1] not in columns or GEOMETRY not in columns:
        return None
    key = str(row[1])
    generated = any(f.get("name") == key and f.get("original_name") == GENERATED for f in row[2] or [])
    return Version(layer_id, columns, key, generated), int(row[3])


def new_version(conn: psycopg.Connection, stage: str, fields: list[FieldInfo], key: str) -> Version:
    """The staging table as the new side of the comparison."""
    columns = _columns(conn, stage) or {}
    generated = any(f.name == key and f.original_name == GENERATED for f in fields)
    return Version(stage, columns, key, generated)


@dataclass(frozen=True)
class Column:
    """One attribute compared: its type in the new and the old version (``None``: that version lacks it)."""

    name: str
    new_type: str | None
    old_type: str | None

    @property
    def as_text(self) -> bool:
        """Compare text forms: the type changed, or it is not one :data:`COMPARABLE` handles as it is."""
        kinds = {k for k in (self.new_type, self.old_type) if k is not None}
        return len(kinds) > 1 or not kinds <= COMPARABLE

    def value(self, alias: str, typed: bool = False) -> sql.Composable:
        """The value on side ``alias`` (``s``: new, ``l``: old), as compared; NULL where that side lacks it
        (``typed``: of the other side's type, as a hashed row needs)."""
        kind = self.new_type if alias == "s" else self.old_type
        if kind is None:
            other = "text" if self.as_text else (self.old_type if alias == "s" else self.new_type)
            return sql.SQL("null::{}").format(sql.SQL(other or "text")) if typed else sql.SQL("null")
        column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(self.name))
        return column + sql.SQL("::text") if self.as_text else column


def _columns_compared(old: Version, new: Version, keyed: bool) -> tuple[list[Column], dict[str, list[str]]]:
    """The union of both versions' attribute columns (by name, sorted; without the key when joining on it), and
    the columns added, removed and retyped."""
    a, b = new.attributes(), old.attributes()
    if keyed:  # the key is compared by the join
        a.pop(new.key, None)
        b.pop(old.key, None)
    compared = [Column(n, a.get(n), b.get(n)) for n in sorted(set(a) | set(b))]
    changes = {"columns_added": sorted(set(a) - set(b)), "columns_removed": sorted(set(b) - set(a)),
               "columns_retyped": sorted(n for n in set(a) & set(b) if a[n] != b[n])}
    return compared, changes


def _attributes_differ(columns: list[Column]) -> sql.Composable:
    """Whether a matched pair's attributes differ: one row comparison of the common columns, and ``is not null``
    for a column only one version has."""
    common = [c for c in columns if c.new_type is not None and c.old_type is not None]
    terms: list[sql.Composable] = []
    if common:
        terms.append(sql.SQL("row({}) is distinct from row({})").format(
            sql.SQL(", ").join(c.value("s") for c in common), sql.SQL(", ").join(c.value("l") for c in common)))
    for c in columns:
        if c.new_type is None or c.old_type is None:
            terms.append(sql.SQL("{} is not null").format(c.value("s" if c.old_type is None else "l")))
    return sql.SQL("({})").format(sql.SQL(" or ").join(terms)) if terms else sql.SQL("false")


def _geometry(alias: str, old: Version, new: Version) -> sql.Composable:
    """The geometry as compared: as stored, or as Multi* when the versions' geometry types differ."""
    column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(GEOMETRY))
    return sql.SQL("st_multi({})").format(column) if old.geometry_type != new.geometry_type else column


def _by_key(conn: psycopg.Connection, old: Version, new: Version) -> dict[str, Any]:
    compared, columns = _columns_compared(old, new, keyed=True)
    key = sql.Identifier(new.key)
    same_type = old.columns[old.key] == new.columns[new.key]
    join = sql.SQL("s.{k} = l.{k}" if same_type else "s.{k}::text = l.{k}::text").format(k=key)
    feature_id = sql.SQL("coalesce(s.{k}, l.{k})::text" if same_type else "coalesce(s.{k}::text, l.{k}::text)"
                         ).format(k=key)
    geometry = sql.SQL("{} is distinct from {}").format(_geometry("s", old, new), _geometry("l", old, new))
    attributes = _attributes_differ(compared)
    conn.execute(sql.SQL("drop table if exists pg_temp.{}").format(DIFF_TABLE))
    conn.execute(sql.SQL(
        "create temp table {diff} on commit drop as"
        " select case when l.{k} is null then 'added' when s.{k} is null then 'removed' else 'changed' end"
        " as change, {fid} as feature_id,"
        " (s.{k} is not null and l.{k} is not null and {geometry}) as geometry,"
        " (s.{k} is not null and l.{k} is not null and {attributes}) as attributes"
        " from {new} s full join {old} l on {join}"
        " where s.{k} is null or l.{k} is null or {geometry} or {attributes}").format(
        diff=DIFF_TABLE, k=key, fid=feature_id, geometry=geometry, attributes=attributes, join=join,
        new=sql.Identifier(SCHEMA, new.table), old=sql.Identifier(SCHEMA, old.table)))
    row = conn.execute(sql.SQL(
        "select count(*) filter (where change = 'added'), count(*) filter (where change = 'removed'),"
        " count(*) filter (where change = 'changed'), count(*) filter (where geometry),"
        " count(*) filter (where attributes) from pg_temp.{}").format(DIFF_TABLE)).fetchone()
    assert row is not None
    added, removed, changed, geometry_n, attributes_n = (int(v) for v in row)
    return {"added": added, "removed": removed, "changed": changed, "changed_geometry": geometry_n,
            "changed_attributes": attributes_n, "compared_by": "key", "key": new.key, **columns,
            "ids": "recorded" if added + removed + changed <= MAX_CHANGE_IDS else "over_limit"}


def _by_content(conn: psycopg.Connection, old: Version, new: Version) -> dict[str, Any]:
    compared, columns = _columns_compared(old, new, keyed=False)

    def digest(alias: str) -> sql.Composable:
        """A 64-bit hash of a feature: its geometry's EWKB and its attribute values (NULL where it lacks one)."""
        values = [sql.SQL("{}::bytea").format(_geometry(alias, old, new)), *(c.value(alias, typed=True)
                                                                           for c in compared)]
        return sql.SQL("hash_record_extended(row({}), 0)").format(sql.SQL(", ").join(values))

    # one pass over both tables: each distinct hash with its count in the new (n) and the old (o) version
    row = conn.execute(sql.SQL(
        "select coalesce(sum(greatest(n - o, 0)), 0), coalesce(sum(greatest(o - n, 0)), 0),"
        " coalesce(sum(least(n, o)), 0) from ("
        " select count(*) filter (where side) as n, count(*) filter (where not side) as o from ("
        " select {hn} as h, true as side from {new} s union all select {ho}, false from {old} l) x"
        " group by h) y").format(
        hn=digest("s"), ho=digest("l"), new=sql.Identifier(SCHEMA, new.table),
        old=sql.Identifier(SCHEMA, old.table))).fetchone()
    assert row is not None
    added, removed, unchanged = (int(v) for v in row)
    return {"added": added, "removed": removed, "changed": None, "changed_geometry": None,
            "changed_attributes": None, "unchanged": unchanged, "compared_by": "content", "key": None, **columns,
            "ids": "unkeyed"}


def compare(conn: psycopg.Connection, layer_id: str, stage: str, fields: list[FieldInfo], key: str,
            written: int, report: LoadReport) -> dict[str, Any] | None:
    """Compare the staging table ``layers.<stage>`` with the live ``layers.<layer_id>``; return the counts.

    Call inside the load's transaction, after the staging table is indexed and analysed and before the
    swap. Keyed comparisons leave the changed ids in a temporary table for :func:`record_ids`.

    Parameters
    ----------
    fields, key
        The new version's fields and key column (a generated key is recognised from its field).
    written
        Features in the staging table.
    report
        Gets a warning when the comparison fails; the load then goes on without counts.

    Returns
    -------
    dict or None
        The counts (see the module docstring); ``None`` for a first load or when the comparison failed.
    """
    found = previous_version(conn, layer_id)
    if found is None:
        return None
    old, previous_load = found
    new = new_version(conn, stage, fields, key)
    began = time.perf_counter()
    keyed = old.key == new.key and not old.generated_key and not new.generated_key
    try:
        with conn.transaction():  # a savepoint: a failed comparison must not fail the load
            for name, value in (("work_mem", "256MB"), ("jit", "off"), ("max_parallel_workers_per_gather", "0")):
                conn.execute("select set_config(%s, %s, true)", (name, value))  # one large hash, estimated badly
            counts = _by_key(conn, old, new) if keyed else _by_content(conn, old, new)
    except (psycopg.errors.DataError, psycopg.errors.ProgrammingError, psycopg.errors.InternalError) as exc:
        report.warn(f"not compared with the previous version (load {previous_load}): "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return None
    if keyed:
        counts["unchanged"] = written - counts["added"] - counts["changed"]
    counts["previous_load_id"] = previous_load
    counts["seconds"] = round(time.perf_counter() - began, 3)
    return counts


def record_ids(conn: psycopg.Connection, load_id: int, changes: dict[str, Any] | None) -> None:
    """Copy the ids :func:`compare` found into ``sdi.load_changes`` (when they were under the limit)."""
    if changes is None or changes.get("ids") != "recorded":
        return
    conn.execute(sql.SQL("insert into sdi.load_changes (load_id, change, feature_id)"
                         " select %s, change, feature_id from pg_temp.{}").format(DIFF_TABLE), (load_id,))


def prune_ids(conn: psycopg.Connection, layer_id: str, keep: int | None = None) -> None:
    """Delete the recorded ids of all but the latest ``keep - 1`` loads of ``layer_id`` (the load being written is
    the ``keep``-th; default :data:`KEEP_IDS_LOADS`) and mark those loads' counts ``ids = "pruned"``."""
    keep = KEEP_IDS_LOADS if keep is None else keep
    conn.execute(
        "with old as (update sdi.load_history h set changes = h.changes || '{\"ids\": \"pruned\"}'::jsonb"
        " where h.layer_id = %(id)s and h.changes ->> 'ids' = 'recorded' and h.load_id not in ("
        " select load_id from sdi.load_history where layer_id = %(id)s and status = 'loaded'"
        " order by load_id desc limit %(keep)s) returning h.load_id)"
        " delete from sdi.load_changes c using old where c.load_id = old.load_id",
        {"id": layer_id, "keep": max(keep - 1, 0)})
