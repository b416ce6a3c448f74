"""Site screening in PostGIS: a few statements in one transaction, from the candidate table to the raw passing sites.

The constraints run in a fixed order on fewer and fewer sites, each step using a GiST index:

1. the *driver*, the first constraint made only of ``in_zone``/``contains`` tests: the matching
   features (polygons cut with ``ST_Subdivide``) look up the candidates through the candidates'
   GiST index, so only candidates near a matching zone or point are ever read;
2. those candidates (all of them if there is no driver) with the cheap filters (minimum area,
   district) and the driver's explaining columns go into a temporary table of *sites*, indexed;
3. each lone ``exclude_within`` constraint deletes its sites feature-first: the (subdivided,
   filtered) features look up the sites within the distance through the sites' GiST index;
4. the other constraints run as ``LATERAL`` lookups / ``EXISTS`` tests, in the order of the
   criteria, then each survivor gets its district (the district polygons cut into indexed pieces)
   and its nearest matching features (KNN ``<->`` ``LATERAL`` on a GiST index; a filtered layer is
   first copied into its own indexed table so the KNN walk skips no rows), ties to the lowest key.

The temporary tables are dropped when the transaction commits. Deleting sites that fail an
exclusion before the other constraints gives the same sites and explanations as the criteria's
order: a site must pass every constraint, and an exclusion explains a passing site the same way
("no X within d m") wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

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


#: Most vertices of a polygon piece (``ST_Subdivide``): small pieces have small boxes and cheap tests.
PIECE_VERTICES = 256


def _pieces(table: LayerTable) -> sql.Composable:
    """The geometry of feature ``f`` of ``table``, cut into pieces when it is a polygon layer."""
    polygons = "polygon" in (table.geometry_type or "").lower()
    return sql.SQL("st_subdivide(f.geom, {})").format(sql.Literal(PIECE_VERTICES)) if polygons else sql.SQL("f.geom")


def _matches(test: InZone | Contains, plan: Plan, params: _Params) -> sql.Composable:
    """CTE body: each candidate matching ``test`` with its lowest-key matching feature, found feature-first."""
    table, cand = plan.tables[test.layer], plan.candidates
    geom = _pieces(table)
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


def _is_lone_exclusion(con: Constraint) -> bool:
    return len(con.any_of) == 1 and isinstance(con.any_of[0], ExcludeWithin)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a screening, with its named parameters.

    ``explainable`` marks the statements ``EXPLAIN ANALYZE`` can run (the others set up or drop).
    """

    query: sql.Composable
    params: dict[str, object]
    explainable: bool = False


SITES = "_sdi_sites"
DISTRICTS = "_sdi_district_pieces"


def _temp_table(name: str, body: sql.Composable, params: _Params, *, index: bool = True) -> list[Statement]:
    """Statements creating temporary table ``name`` (dropped at commit) from ``body``, GiST-indexed and analysed."""
    ident = sql.Identifier(name)
    out = [Statement(sql.SQL("drop table if exists {}").format(ident), {}),
           Statement(sql.SQL("create temp table {} on commit drop as {}").format(ident, body), dict(params), True)]
    if index:
        out.append(Statement(sql.SQL("create index on {} using gist (geom)").format(ident), {}))
    return [*out, Statement(sql.SQL("analyze {}").format(ident), {})]


def _sites(plan: Plan) -> list[Statement]:
    """The sites table: the driver's candidates with the cheap filters and the driver's explaining columns."""
    params = _Params()
    ctes: list[sql.Composable] = []
    driver = _driver(plan)
    driver_ctes = [f"d{k}" for k in range(len(driver.any_of))] if driver else []
    if driver:
        for name, test in zip(driver_ctes, driver.any_of, strict=True):
            assert isinstance(test, InZone | Contains)
            ctes.append(sql.SQL("{} as materialized ({})").format(sql.Identifier(name), _matches(test, plan, params)))
    ctes.append(sql.SQL("base as materialized ({})").format(_base(plan, params, driver_ctes)))
    source = "base"
    if driver:
        ctes.append(sql.SQL("s as materialized ({})").format(_driver_stage(driver, source, driver_ctes)))
        source = "s"
    body = sql.SQL("with {} select * from {}").format(sql.SQL(", ").join(ctes), sql.Identifier(source))
    return _temp_table(SITES, body, params)


def _exclusion(test: ExcludeWithin, plan: Plan) -> Statement:
    """Delete the sites within the distance of a matching feature, found feature-first through the sites' index."""
    params = _Params()
    table = plan.tables[test.layer]
    near = (sql.SQL("st_intersects(f.geom, s.geom)") if test.distance_m == 0 else
            sql.SQL("st_dwithin(f.geom, s.geom, {})").format(params.add(float(test.distance_m))))
    query = sql.SQL("delete from {sites} x using (select distinct s._pk from (select {pieces} as geom from {t} f "
                    "where {where}) f join {sites} s on {near}) n where x._pk = n._pk").format(
        sites=sql.Identifier(SITES), pieces=_pieces(table), t=table.ident, where=_where(test, params), near=near)
    return Statement(query, dict(params), True)


def _district_pieces(plan: Plan) -> list[Statement]:
    """The district polygons cut into pieces (key, name, piece) in an indexed table."""
    dist, names = plan.districts, plan.criteria.districts
    assert dist is not None and names is not None
    body = sql.SQL("select f.{pk} as _dpk, f.{name} as _n, {pieces} as geom from {d} f").format(
        pk=sql.Identifier(dist.primary_key), name=sql.Identifier(names.name), pieces=_pieces(dist), d=dist.ident)
    return _temp_table(DISTRICTS, body, _Params())


def _districts(source: str) -> sql.Composable:
    """CTE body: each survivor's district (the lowest key holding its centroid), via the pieces' index."""
    return sql.SQL("select distinct on (p._pk) p._pk, d._dpk, d._n from {source} p join {d} d "
                   "on d.geom && p.ctr and st_intersects(d.geom, p.ctr) order by p._pk, d._dpk").format(
        source=sql.Identifier(source), d=sql.Identifier(DISTRICTS))


def _near_table(index: int) -> str:
    return f"_sdi_near_{index}"


def _nearest_features(plan: Plan) -> list[Statement]:
    """A filtered, indexed copy of the features of each distance score with a ``where``: KNN then skips nothing."""
    out: list[Statement] = []
    for j, s in enumerate(plan.criteria.scores):
        if isinstance(s, DistanceTo) and s.where is not None:
            params, table = _Params(), plan.tables[s.layer]
            body = sql.SQL("select f.{pk} as _pk, {label} as _l, f.geom from {t} f where {where}").format(
                pk=sql.Identifier(table.primary_key), label=_ident(table, s.label), t=table.ident,
                where=_where(s, params))
            out += _temp_table(_near_table(j), body, params)
    return out


#: Nearest features fetched by KNN before the exact tie-break on (distance, key).
KNN_CANDIDATES = 8


def _nearest(j: int, s: DistanceTo, plan: Plan, params: _Params) -> sql.Composable:
    """LATERAL subquery: the nearest matching feature's distance and label (ties to the lowest key)."""
    if s.where is not None:  # its filtered copy
        features = sql.SQL("select f.geom, f._pk, f._l from {} f").format(sql.Identifier(_near_table(j)))
    else:
        table = plan.tables[s.layer]
        features = sql.SQL("select f.geom, f.{pk} as _pk, {label} as _l from {t} f").format(
            pk=sql.Identifier(table.primary_key), label=_ident(table, s.label), t=table.ident)
    return sql.SQL("(select st_distance(k.geom, p.geom) as _d, k._l from ({features} order by f.geom <-> p.geom "
                   "limit {n}) k order by 1, k._pk limit 1)").format(features=features, n=sql.Literal(KNN_CANDIDATES))


def _final(plan: Plan, params: _Params, source: str, member_cols: list[str], districts: bool) -> sql.Composable:
    """The survivors with their district and nearest-feature distances."""
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
        if isinstance(s, DistanceTo):
            alias = sql.Identifier(f"n{j}")
            joins.append(sql.SQL("left join lateral {} {} on true").format(_nearest(j, s, plan, params), alias))
            cols += [sql.SQL("{}._d").format(alias), sql.SQL("{}._l").format(alias)]
    return sql.SQL("select {cols} from {source} p {joins} where {where} order by p._pk").format(
        cols=sql.SQL(", ").join(cols), source=sql.Identifier(source), joins=sql.SQL(" ").join(joins), where=where)


def _select(plan: Plan) -> tuple[Statement, list[str]]:
    """The last statement: the remaining constraints, districts and nearest features of the sites."""
    params = _Params()
    ctes: list[sql.Composable] = []
    driver = _driver(plan)
    source, member_cols = SITES, []
    for i, con in enumerate(c for c in plan.criteria.constraints if not is_area_only(c)):
        for k, test in enumerate(con.any_of):
            if isinstance(test, InZone | Contains):
                member_cols += [member_key(con.id, k, "value"), member_key(con.id, k, "label")]
            if len(con.any_of) > 1:
                member_cols.append(member_key(con.id, k, "ok"))
        if con is driver or _is_lone_exclusion(con):
            continue  # already applied to the sites table
        name = f"s{i}"
        ctes.append(sql.SQL("{} as materialized ({})").format(sql.Identifier(name),
                                                             _stage(con, plan, params, source)))
        source = name
    districts = plan.districts is not None and plan.criteria.districts is not None
    if districts:
        ctes.append(sql.SQL("dist as materialized ({})").format(_districts(source)))
    final = _final(plan, params, source, member_cols, districts)
    query = sql.SQL("with {} {}").format(sql.SQL(", ").join(ctes), final) if ctes else final
    score_cols = [score_key(s.id, f) for s in plan.criteria.scores if isinstance(s, DistanceTo)
                  for f in ("dist", "label")]
    return Statement(query, dict(params), True), [*_RAW, *member_cols, *score_cols]


def screening_statements(plan: Plan) -> tuple[list[Statement], list[str]]:
    """The statements of a screening (to run in one transaction) and the output columns of the last one."""
    statements = [Statement(sql.SQL("set local jit = off"), {}),  # compiling the plan costs seconds, saves nothing
                  Statement(sql.SQL("set local work_mem = '64MB'"), {}),  # the sorts of ~10^5 sites stay in memory
                  *_sites(plan)]
    deleted = False
    for con in plan.criteria.constraints:
        if _is_lone_exclusion(con):
            test = con.any_of[0]
            assert isinstance(test, ExcludeWithin)
            statements.append(_exclusion(test, plan))
            deleted = True
    if deleted:
        statements.append(Statement(sql.SQL("analyze {}").format(sql.Identifier(SITES)), {}))
    if plan.districts is not None and plan.criteria.districts is not None:
        statements += _district_pieces(plan)
    statements += _nearest_features(plan)
    select, names = _select(plan)
    return [*statements, select], names


def screen(conn: psycopg.Connection, plan: Plan) -> pd.DataFrame:
    """Run the screening statements; return the raw frame of passing sites (see :mod:`.scoring`)."""
    statements, names = screening_statements(plan)
    with conn.transaction():
        for statement in statements[:-1]:
            conn.execute(statement.query, statement.params)
        rows = conn.execute(statements[-1].query, statements[-1].params).fetchall()
    frame = pd.DataFrame(rows, columns=names) if rows else pd.DataFrame({n: [] for n in names})
    frame["geometry"] = shapely.from_wkb(np.array([bytes(b) for b in frame.pop("wkb")], dtype=object))
    return frame


def explain(conn: psycopg.Connection, plan: Plan, *, analyze: bool = True) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of each statement that reads or writes sites, for tuning.

    The statements run (``EXPLAIN ANALYZE`` executes them) in a transaction that is rolled back.
    Without ``analyze`` only the set-up statements run, and the last one is explained, not executed.
    """
    statements, _ = screening_statements(plan)
    out: list[str] = []
    with conn.transaction(force_rollback=True):
        for st in statements:
            if not st.explainable or (not analyze and st is not statements[-1]):
                conn.execute(st.query, st.params)
                continue
            prefix = sql.SQL("explain (analyze, buffers) " if analyze else "explain ")
            out.append(f"-- {st.query.as_string(conn)}")
            out += [r[0] for r in conn.execute(prefix + st.query, st.params).fetchall()]
    return "\n".join(out)
