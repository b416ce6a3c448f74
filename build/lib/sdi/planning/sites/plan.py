"""What every site-selection engine starts from: checked layers, filters as SQL, the district asked for.

:func:`make_plan` checks the criteria against the database once (layers loaded, columns present,
raster available, district name known) so the engines only compute. The names of the raw columns
an engine returns are defined here too (:func:`member_key`, :func:`score_key`), so the engines and
the scoring module agree on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from sdi.errors import PlanningError
from sdi.planning.criteria import Constraint, Criteria, LayerTest, MinArea, SlopeScore, Where
from sdi.planning.sources import LayerTable, layer_table
from sdi.settings import Settings


@dataclass(frozen=True)
class Plan:
    """A site selection ready to run.

    Attributes
    ----------
    criteria
        The validated criteria (weights already overridden).
    tables
        Every vector layer the criteria read, by id.
    district
        The district asked for (its English name), or ``None`` for the whole territory.
    district_pks
        Primary keys of the district layer's features with that name (empty when ``district`` is ``None``).
    rasters
        The COG of each slope score's raster, by score id; ``None`` when the raster is not loaded.
    """

    criteria: Criteria
    tables: dict[str, LayerTable]
    district: str | None
    district_pks: tuple[int, ...]
    rasters: dict[str, Path | None]

    @property
    def candidates(self) -> LayerTable:
        """The candidate layer."""
        return self.tables[self.criteria.candidates.layer]

    @property
    def districts(self) -> LayerTable | None:
        """The districts layer, if the criteria name one."""
        return self.tables[self.criteria.districts.layer] if self.criteria.districts else None


def is_area_only(con: Constraint) -> bool:
    """Whether ``con`` is a lone ``min_area`` test (a cheap filter every engine applies first)."""
    return len(con.any_of) == 1 and isinstance(con.any_of[0], MinArea)


def min_areas(criteria: Criteria) -> list[float]:
    """The thresholds of the lone ``min_area`` constraints (a site must reach all of them)."""
    return [t.min_m2 for con in criteria.constraints if is_area_only(con) for t in con.any_of
            if isinstance(t, MinArea)]


def member_key(constraint_id: str, index: int, field: str) -> str:
    """Raw column of a constraint member: ``<id>.<index>.ok`` / ``.value`` / ``.label``."""
    return f"{constraint_id}.{index}.{field}"


def score_key(score_id: str, field: str) -> str:
    """Raw column of a distance score: ``<id>.dist`` / ``<id>.label``."""
    return f"{score_id}.{field}"


def where_sql(where: Where | None, alias: str,
              bind: Callable[[object], sql.Composable] | None = None) -> tuple[sql.Composable, list[object]]:
    """The SQL condition on table alias ``alias`` for a ``where`` filter (``true`` if none), and its values.

    Values are bound as ``%s`` placeholders, or through ``bind`` (which returns the placeholder to use).
    """
    values: list[object] = []

    def ph(value: object) -> sql.Composable:
        values.append(value)
        return bind(value) if bind else sql.Placeholder()

    if where is None:
        return sql.SQL("true"), values
    col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(where.column))
    if where.in_ is not None:
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in where.in_):
            return sql.SQL("{} = any({}::float8[])").format(col, ph([float(v) for v in where.in_])), values
        return sql.SQL("{}::text = any({}::text[])").format(col, ph([str(v) for v in where.in_])), values
    if where.contains is not None:
        return sql.SQL("strpos(lower({}::text), lower({})) > 0").format(col, ph(where.contains)), values
    parts = [sql.SQL("{} {} {}::float8").format(col, sql.SQL(op), ph(float(bound)))
             for op, bound in ((">=", where.min), ("<=", where.max)) if bound is not None]
    return sql.SQL(" and ").join(parts), values


def _check_columns(table: LayerTable, columns: dict[str, str | None]) -> None:
    for what, column in columns.items():
        if column is not None and column not in table.columns:
            raise PlanningError(f"{what}: layer {table.id!r} has no column {column!r} "
                                f"(columns: {', '.join(table.columns)})")


def _district_pks(conn: psycopg.Connection, criteria: Criteria, table: LayerTable | None,
                  district: str) -> tuple[str, tuple[int, ...]]:
    if criteria.districts is None or table is None:
        raise PlanningError(f"district: the criteria {criteria.id!r} name no districts layer")
    name_zh = criteria.districts.name_zh
    rows = conn.execute(sql.SQL("select {pk}, {en}::text, {zh} from {t} order by {pk}").format(
        pk=sql.Identifier(table.primary_key), en=sql.Identifier(criteria.districts.name),
        zh=sql.SQL("{}::text").format(sql.Identifier(name_zh)) if name_zh else sql.SQL("null::text"),
        t=table.ident)).fetchall()
    names = list(dict.fromkeys(r[1] for r in rows if r[1]))
    wanted = " ".join(str(district).split()).casefold()

    def same(name: str | None) -> bool:
        if not name:
            return False
        folded = name.casefold()
        return wanted in (folded, folded.removesuffix("區")) or wanted.removesuffix("區") == folded

    match = [r for r in rows if same(r[1]) or same(r[2])]
    if not wanted or not match:
        problem = "is empty" if not wanted else f"{district!r} is not a district"
        raise PlanningError(f"district: {problem} (valid: {', '.join(sorted(names))}; Chinese names work too)")
    return match[0][1], tuple(int(r[0]) for r in match)


def _raster_path(conn: psycopg.Connection, score: SlopeScore, settings: Settings) -> Path | None:
    from loaders.raster import cog_path

    row = conn.execute("select kind from sdi.layer where id = %s", (score.raster,)).fetchone()
    if row is None:
        return None  # explained as "not scored", and the weights renormalised
    if row[0] != "raster":
        raise PlanningError(f"scores.{score.id}.raster: layer {score.raster!r} is a {row[0]} layer, not a raster")
    path = cog_path(score.raster, settings)
    if not path.exists():
        raise PlanningError(f"scores.{score.id}.raster: raster {score.raster!r} is catalogued but {path} is missing "
                            "(is SDI_DATA_DIR the one it was loaded with?)")
    return path


def make_plan(conn: psycopg.Connection, criteria: Criteria, settings: Settings, *, district: str | None) -> Plan:
    """Check the criteria against the database and resolve the district.

    Raises
    ------
    LayerNotFoundError
        When a layer the criteria name is not loaded.
    PlanningError
        When a column is missing, a slope raster is a vector layer or its file is missing, or the
        district is empty or unknown (the message lists the valid names).
    """
    tables = {layer: layer_table(conn, layer) for layer in criteria.vector_layers()}
    c = criteria
    _check_columns(tables[c.candidates.layer], {"candidates.label": c.candidates.label})
    if c.districts:
        _check_columns(tables[c.districts.layer], {"districts.name": c.districts.name,
                                                   "districts.name_zh": c.districts.name_zh})
    tests: list[tuple[str, object]] = [(f"constraints.{con.id}", t) for con in c.constraints for t in con.any_of]
    tests += [(f"scores.{s.id}", s) for s in c.scores]
    for where, test in tests:
        if isinstance(test, LayerTest):
            _check_columns(tables[test.layer], {f"{where}.label": test.label,
                                                f"{where}.where": test.where.column if test.where else None})
    rasters = {s.id: _raster_path(conn, s, settings) for s in c.scores if isinstance(s, SlopeScore)}
    name, pks = (None, ()) if district is None else _district_pks(conn, c, tables.get(c.districts.layer)
                                                                  if c.districts else None, district)
    return Plan(c, tables, name, pks, rasters)

