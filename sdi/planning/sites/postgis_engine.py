"""Site screening in PostGIS: one SQL statement from the candidate table to the raw frame of passing sites.

The statement is a chain of materialised CTEs, so the constraints run in a fixed order on fewer and
fewer sites:

1. the *driver*, the first constraint made only of ``in_zone``/``contains`` tests: the matching
   features (polygons cut with ``ST_Subdivide``) look up the candidates through the candidates'
   GiST index, so only candidates near a matching zone or point are ever read;
2. ``base``: those candidates (all of them if there is no driver) with the cheap filters: minimum
   area and district (the district polygon tested against each centroid: PostGIS caches it);
3. one CTE per other constraint, in the order of the criteria: ``LATERAL`` lookups for zones and
   contained points, ``NOT EXISTS`` with ``ST_Intersects`` / ``ST_DWithin`` for exclusions (GiST);
4. the district of each survivor (district by district, so each polygon is prepared once) and the
   nearest matching features (KNN ``<->`` ``LATERAL`` on the GiST index, ties to the lowest key).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.planning.criteria import Constraint, Contains, DistanceTo, ExcludeWithin, InZone, MinArea
from sdi.planning.sites.plan import Plan, is_area_only, member_key, min_areas, score_key, where_sql
from sdi.planning.sources import LayerTable

_RAW = ["_pk", "site", "area_m2", "cx", "cy", "wkb", "district"]


class _Params(dict[str, object]):
    """Bound parameters by name, so the order of composition does not matter."""

    def add(self, value: object) -> sql.Placeholder:
        name = f"p{len(self)}"
        self[name] = value
        return sql.Placeholder(name)


def _where(test: InZone | Contains | ExcludeWithin | DistanceTo, params: _Params) -> sql.Composable:
    return where_sql(test.where, "f", params.add)[0]


def _ident(table: LayerTable, column: str | None) -> sql.Composable:
    return sql.SQL("f.{}").format(sql.Identifier(column or table.primary_key))


def _lookup(test: InZone | Contains, table: LayerTable, params: _Params) -> sql.Composable:
    """LATERAL subquery: the lowest-key matching feature holding the site's centroid / inside the site."""
    target = "p.ctr" if isinstance(test, InZone) else "p.geom"
    value = _ident(table, test.where.column) if test.where else sql.SQL("null")
    return sql.SQL("(select f.{pk} as _pk, {value} as _v, {label} as _l from {t} f "
                   "where st_intersects(f.geom, {target}) and {where} order by f.{pk} limit 1)").format(
        pk=sql.Identifier(table.primary_key), value=value, label=_ident(table, test.label), t=table.ident,
        target=sql.SQL(target), where=_where(test, params))


def _excluded(test: ExcludeWithin, table: LayerTable, params: _Params) -> sql.Composable:
    near = (sql.SQL("st_intersects(f.geom, p.geom)") if test.distance_m == 0 else
            sql.SQL("st_dwithin(f.geom, p.geom, {})").format(params.add(float(test.distance_m))))
    return sql.SQL("exists (select 1 from {t} f where {near} and {where})").format(
        t=table.ident, near=near, where=_where(test, params))


def _stage(con: Constraint, plan: Plan, params: _Params, source: str) -> sql.Composable:
    """One CTE body: the sites of ``source`` that pass ``con``, with the raw columns explaining it."""
    cols: list[sql.Composable] = [sql.SQL("p.*")]
    joins: list[sql.Composable] = []
    oks: list[sql.Composable] = []
    single = len(con.any_of) == 1
    for k, test in enumerate(con.any_of):
        alias = sql.Identifier(f"m{k}")
        if isinstance(test, InZone | Contains):
            join = sql.SQL("join lateral" if single else "left join lateral")
            joins.append(sql.SQL("{} {} {} on true").format(join, _lookup(test, plan.tables[test.layer], params),
                                                          alias))
            cols += _explaining(con, k, alias)
            ok: sql.Composable = sql.SQL("({}._pk is not null)").format(alias)
        elif isinstance(test, ExcludeWithin):
            ok = sql.SQL("(not {})").format(_excluded(test, plan.tables[test.layer], params))
        else:
            assert isinstance(test, MinArea)
            ok = sql.SQL("(p.area_m2 >= {})").format(params.add(float(test.min_m2)))
        oks.append(ok)
        if not single:
            cols.append(sql.SQL("{} as {}").format(ok, sql.Identifier(member_key(con.id, k, "ok"))))
    where = sql.SQL("true") if single and isinstance(con.any_of[0], InZone | Contains) else \
        sql.SQL(" or ").join(oks)
    return sql.SQL("select {cols} from {source} p {joins} where {where}").format(
        cols=sql.SQL(", ").join(cols), source=sql.Identifier(source), joins=sql.SQL(" ").join(joins), where=where)


def _explaining(con: Constraint, k: int, alias: sql.Identifier) -> list[sql.Composable]:
    return [sql.SQL("{}._v as {}").format(alias, sql.Identifier(member_key(con.id, k, "value"))),
            sql.SQL("{}._l as {}").format(alias, sql.Identifier(member_key(con.id, k, "label")))]


def _driver(plan: Plan) -> Constraint | None:
    """The first constraint whose members are all ``in_zone``/``contains``: it can pick the candidates."""
    return next((c for c in plan.criteria.constraints if all(isinstance(t, InZone | Contains) for t in c.any_of)),
                None)


def _matches(test: InZone | Contains, plan: Plan, params: _Params) -> sql.Composable:
    """CTE body: each candidate matching ``test`` with its lowest-key matching feature, found feature-first."""
    table, cand = plan.tables[test.layer], plan.candidates
    polygons = "polygon" in (table.geometry_type or "").lower()
    geom = sql.SQL("st_subdivide(f.geom, 256)" if polygons else "f.geom")
    target = sql.SQL("st_centroid(c.geom)" if isinstance(test, InZone) else "c.geom")
    value = _ident(table, test.where.column) if test.where else sql.SQL("null")
    return sql.SQL(
        "select distinct on (c.{cpk}) c.{cpk} as _pk, f._fpk, f._v, f._l from "
        "(select f.{pk} as _fpk, {value} as _v, {label} as _l, {geom} as geom from {t} f where {where}) f "
        "join {cand} c on c.geom && f.geom and st_intersects(f.geom, {target}) order by c.{cpk}, f._fpk").format(
        cpk=sql.Identifier(cand.primary_key), pk=sql.Identifier(table.primary_key), value=value,
        label=_ident(table, test.label), geom=geom, t=table.ident, where=_where(test, params), cand=cand.ident,
        target=target)


def _base(plan: Plan, params: _Params, driver: list[str]) -> sql.Composable:
    """The candidates (those the driver found, if any) with the cheap filters: minimum areas, then the district."""
    cand = plan.candidates
    conds: list[sql.Composable] = [sql.SQL("st_area(c.geom) >= {}").format(params.add(float(m)))
                                   for m in min_areas(plan.criteria)]
    if plan.district_pks and plan.districts is not None:
        conds.append(sql.SQL("exists (select 1 from {d} d where d.{pk} = any({pks}) and d.geom && c.geom "
                             "and st_intersects(d.geom, st_centroid(c.geom)))").format(
            d=plan.districts.ident, pk=sql.Identifier(plan.districts.primary_key),
            pks=params.add(list(plan.district_pks))))
    if driver:  # an array, so the candidates are fetched by primary key (not a scan of the whole table)
        union = sql.SQL(" union ").join(sql.SQL("select _pk from {}").format(sql.Identifier(d)) for d in driver)
        conds.insert(0, sql.SQL("c.{} = any(array({}))").format(sql.Identifier(cand.primary_key), union))
    return sql.SQL("select c.{pk} as _pk, c.{label} as site, c.geom, st_area(c.geom) as area_m2, "
                   "st_centroid(c.geom) as ctr from {t} c where {conds}").format(
        pk=sql.Identifier(cand.primary_key), label=sql.Identifier(plan.criteria.candidates.label), t=cand.ident,
        conds=sql.SQL(" and ").join(conds) if conds else sql.SQL("true"))


def _driver_stage(con: Constraint, source: str, driver: list[str]) -> sql.Composable:
    """CTE body: the driver's explaining columns joined to the base sites (which all pass it)."""
    cols: list[sql.Composable] = [sql.SQL("p.*")]
    joins: list[sql.Composable] = []
    for k, name in enumerate(driver):
        alias = sql.Identifier(f"m{k}")
        joins.append(sql.SQL("left join {} {} on {}._pk = p._pk").format(sql.Identifier(name), alias, alias))
        cols += _explaining(con, k, alias)
        if len(driver) > 1:
            cols.append(sql.SQL("({}._pk is not null) as {}").format(alias,
                                                                    sql.Identifier(member_key(con.id, k, "ok"))))
    return sql.SQL("select {} from {} p {}").format(sql.SQL(", ").join(cols), sql.Identifier(source),
                                                   sql.SQL(" ").join(joins))


def _districts(plan: Plan, source: str) -> sql.Composable | None:
    """CTE body: each survivor's district (lowest key holding its centroid), district by district.

    ``offset 0`` keeps the districts as the outer loop, so consecutive tests share one district
    polygon, which PostGIS then prepares once instead of once per site; ``st_setsrid`` copies each
    polygon out of TOAST storage once, not once per test.
    """
    dist, names = plan.districts, plan.criteria.districts
    if dist is None or names is None:
        return None
    return sql.SQL("select distinct on (x._pk) x._pk, d.{pk} as _dpk, d.{name} as _n from "
                   "(select d.{pk}, d.{name}, st_setsrid(d.geom, st_srid(d.geom)) as geom from {d} d offset 0) d "
                   "cross join lateral "
                   "(select p._pk from {source} p where d.geom && p.ctr and st_intersects(d.geom, p.ctr) offset 0) x "
                   "order by x._pk, d.{pk}").format(pk=sql.Identifier(dist.primary_key),
                                                    name=sql.Identifier(names.name), d=dist.ident,
                                                    source=sql.Identifier(source))


#: Nearest features fetched by KNN before the exact tie-break on (distance, key).
KNN_CANDIDATES = 8


def _final(plan: Plan, params: _Params, source: str, member_cols: list[str], districts: bool) -> sql.Composable:
    """The survivors with their district and nearest-feature distances (KNN on the GiST index)."""
    cols: list[sql.Composable] = [sql.SQL("p._pk, p.site, p.area_m2, st_x(p.ctr), st_y(p.ctr), st_asbinary(p.geom)")]
    joins: list[sql.Composable] = []
    where: sql.Composable = sql.SQL("true")
    if districts:
        cols.append(sql.SQL("dd._n"))
        joins.append(sql.SQL("left join dist dd on dd._pk = p._pk"))
        if plan.district_pks:  # the site's own district (lowest key holding its centroid) must be the one asked for
            where = sql.SQL("dd._dpk = any({})").format(params.add(list(plan.district_pks)))
    else:
        cols.append(sql.SQL("null::text"))
    cols += [sql.SQL("p.{}").format(sql.Identifier(c)) for c in member_cols]
    for j, s in enumerate(plan.criteria.scores):
        if not isinstance(s, DistanceTo):
            continue
        table, alias = plan.tables[s.layer], sql.Identifier(f"n{j}")
        joins.append(sql.SQL(
            "left join lateral (select st_distance(k.geom, p.geom) as _d, k._l from (select f.geom, f.{pk} as _pk, "
            "{label} as _l from {t} f where {where} order by f.geom <-> p.geom limit {n}) k "
            "order by 1, k._pk limit 1) {alias} on true").format(
            label=_ident(table, s.label), t=table.ident, where=_where(s, params), pk=sql.Identifier(table.primary_key),
            n=sql.Literal(KNN_CANDIDATES), alias=alias))
        cols += [sql.SQL("{}._d").format(alias), sql.SQL("{}._l").format(alias)]
    return sql.SQL("select {cols} from {source} p {joins} where {where} order by p._pk").format(
        cols=sql.SQL(", ").join(cols), source=sql.Identifier(source), joins=sql.SQL(" ").join(joins), where=where)


def screening_sql(plan: Plan) -> tuple[sql.Composed, dict[str, object], list[str]]:
    """The screening statement, its named parameters and the names of its output columns."""
    params = _Params()
    ctes: list[sql.Composable] = []
    driver = _driver(plan)
    driver_ctes = [f"d{k}" for k in range(len(driver.any_of))] if driver else []
    if driver:
        for name, test in zip(driver_ctes, driver.any_of, strict=True):
            assert isinstance(test, InZone | Contains)
            ctes.append(sql.SQL("{} as materialized ({})").format(sql.Identifier(name),
                                                                 _matches(test, plan, params)))
    ctes.append(sql.SQL("base as materialized ({})").format(_base(plan, params, driver_ctes)))
    source, member_cols = "base", []
    for i, con in enumerate(c for c in plan.criteria.constraints if not is_area_only(c)):
        name = f"s{i}"
        body = _driver_stage(con, source, driver_ctes) if con is driver else _stage(con, plan, params, source)
        ctes.append(sql.SQL("{} as materialized ({})").format(sql.Identifier(name), body))
        source = name
        for k, test in enumerate(con.any_of):
            if isinstance(test, InZone | Contains):
                member_cols += [member_key(con.id, k, "value"), member_key(con.id, k, "label")]
            if len(con.any_of) > 1:
                member_cols.append(member_key(con.id, k, "ok"))
    districts = _districts(plan, source)
    if districts is not None:
        ctes.append(sql.SQL("dist as materialized ({})").format(districts))
    query = sql.SQL("with {ctes} {final}").format(
        ctes=sql.SQL(", ").join(ctes), final=_final(plan, params, source, member_cols, districts is not None))
    score_cols = [score_key(s.id, f) for s in plan.criteria.scores if isinstance(s, DistanceTo)
                  for f in ("dist", "label")]
    return query, dict(params), [*_RAW, *member_cols, *score_cols]


def screen(conn: psycopg.Connection, plan: Plan) -> pd.DataFrame:
    """Run the screening statement; return the raw frame of passing sites (see :mod:`.scoring`)."""
    query, params, names = screening_sql(plan)
    with conn.transaction():
        conn.execute("set local jit = off")  # compiling the plan costs seconds and saves nothing here
        rows = conn.execute(query, params).fetchall()
    frame = pd.DataFrame(rows, columns=names) if rows else pd.DataFrame({n: [] for n in names})
    frame["geometry"] = shapely.from_wkb(np.array([bytes(b) for b in frame.pop("wkb")], dtype=object))
    return frame


def explain(conn: psycopg.Connection, plan: Plan, *, analyze: bool = True) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` (or plain ``EXPLAIN``) of the screening statement, for tuning."""
    query, params, _ = screening_sql(plan)
    prefix = sql.SQL("explain (analyze, buffers) " if analyze else "explain ")
    with conn.transaction():
        conn.execute("set local jit = off")
        return "\n".join(r[0] for r in conn.execute(prefix + query, params).fetchall())
