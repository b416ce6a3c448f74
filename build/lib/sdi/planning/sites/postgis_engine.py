"""Site screening in PostGIS: a few statements in one transaction, from the candidate table to the raw passing sites.

The constraints run in a fixed order on fewer and fewer sites, each step using a GiST index:

1. the *driver*, the first constraint made only of ``in_zone``/``contains`` tests: the matching
   features (large polygons cut with ``ST_Subdivide``) look up the candidates through the
   candidates' GiST index, so only candidates near a matching zone or point are ever read;
2. those candidates (all of them if there is no driver) with the cheap filters (minimum area,
   district) and the driver's explaining columns go into a temporary table of *sites*, indexed;
3. each lone ``exclude_within`` constraint deletes its sites feature-first: the matching features
   (large polygons cut) look up the sites within the distance through the sites' GiST index;
4. the other constraints run as ``LATERAL`` lookups / ``EXISTS`` tests, in the order of the
   criteria, and the survivors are fetched (binary);
5. each survivor's district and nearest matching features are found in memory with the code of the
   in-memory engines (:func:`_placed`), from the small layers they need.

The temporary table is dropped when the transaction commits. Deleting sites that fail an
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
from sdi.planning.sites.frame_engine import first_hit, nearest_feature, read_features, take
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
#: Polygons with more vertices than this are cut into pieces; cutting the others costs more than it saves.
CUT_ABOVE = 1024


def _pieces(table: LayerTable) -> sql.Composable:
    """The geometry of feature ``f`` of ``table`` (a set): large polygons are cut into pieces.

    A feature tested against many sites in a row is prepared once by PostGIS, but each test still
    compares the whole polygon with the cached one, which is slow for a polygon of thousands of
    vertices; the pieces also have smaller boxes, so fewer sites are tested.
    """
    if "polygon" not in (table.geometry_type or "").lower():
        return sql.SQL("f.geom")
    return sql.SQL("unnest(case when st_npoints(f.geom) > {cut} then array(select st_subdivide(f.geom, {n})) "
                   "else array[f.geom] end)").format(cut=sql.Literal(CUT_ABOVE), n=sql.Literal(PIECE_VERTICES))


def _big_enough(plan: Plan, params: _Params) -> list[sql.Composable]:
    """The minimum-area conditions on candidate ``c``."""
    return [sql.SQL("st_area(c.geom) >= {}").format(params.add(float(m))) for m in min_areas(plan.criteria)]


def _matches(test: InZone | Contains, plan: Plan, params: _Params) -> sql.Composable:
    """CTE body: each large enough candidate matching ``test`` (label, geometry) with its lowest-key matching
    feature, found feature-first."""
    table, cand = plan.tables[test.layer], plan.candidates
    geom = _pieces(table)
    target = sql.SQL("st_centroid(c.geom)" if isinstance(test, InZone) else "c.geom")
    value = _ident(table, test.where.column) if test.where else sql.SQL("null")
    return sql.SQL(
        "select distinct on (c.{cpk}) c.{cpk} as _pk, c.{site} as site, c.geom, f._fpk, f._v, f._l from "
        "(select f.{pk} as _fpk, {value} as _v, {label} as _l, {geom} as geom from {t} f where {where}) f "
        "join {cand} c on c.geom && f.geom and st_intersects(f.geom, {target}){area} "
        "order by c.{cpk}, f._fpk").format(
        cpk=sql.Identifier(cand.primary_key), site=sql.Identifier(plan.criteria.candidates.label),
        pk=sql.Identifier(table.primary_key), value=value, label=_ident(table, test.label), geom=geom,
        t=table.ident, where=_where(test, params), cand=cand.ident, target=target,
        area=sql.SQL("").join(sql.SQL(" and ") + c for c in _big_enough(plan, params)))


def _base(plan: Plan, params: _Params, driver: list[str]) -> sql.Composable:
    """The candidates (those the driver found, if any) with the cheap filters: minimum areas, then the district."""
    cand = plan.candidates
    pk: sql.Composable
    label: sql.Composable
    if driver:  # the driver's candidates, each once (the driver applied the minimum areas)
        union = sql.SQL(" union all ").join(sql.SQL("select _pk, site, geom from {}").format(sql.Identifier(d))
                                            for d in driver)
        source = sql.SQL("(select distinct on (_pk) _pk, site, geom from ({}) u order by _pk) c").format(union)
        pk, label, conds = sql.SQL("c._pk"), sql.SQL("c.site"), []
    else:
        source = sql.SQL("{} c").format(cand.ident)
        pk = sql.SQL("c.{}").format(sql.Identifier(cand.primary_key))
        label, conds = sql.SQL("c.{}").format(sql.Identifier(plan.criteria.candidates.label)), \
            _big_enough(plan, params)
    if plan.district_pks and plan.districts is not None:
        conds.append(sql.SQL("exists (select 1 from {d} d where d.{pk} = any({pks}) and d.geom && c.geom "
                             "and st_intersects(d.geom, st_centroid(c.geom)))").format(
            d=plan.districts.ident, pk=sql.Identifier(plan.districts.primary_key),
            pks=params.add(list(plan.district_pks))))
    return sql.SQL("select {pk} as _pk, {label} as site, c.geom, st_area(c.geom) as area_m2, "
                   "st_centroid(c.geom) as ctr from {source} where {conds}").format(
        pk=pk, label=label, source=source, conds=sql.SQL(" and ").join(conds) if conds else sql.SQL("true"))


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

    query: sql.SQL | sql.Composed
    params: dict[str, object]
    explainable: bool = False


SITES = "_sdi_sites"


def _temp_table(name: str, body: sql.Composable, params: _Params) -> list[Statement]:
    """Statements creating temporary table ``name`` (dropped at commit) from ``body``, GiST-indexed and analysed."""
    ident = sql.Identifier(name)
    return [Statement(sql.SQL("drop table if exists {}").format(ident), {}),
            Statement(sql.SQL("create temp table {} on commit drop as {}").format(ident, body), dict(params), True),
            Statement(sql.SQL("create index on {} using gist (geom)").format(ident), {}),
            _analyze(name)]


def _analyze(name: str) -> Statement:
    """Analyse a temporary table's ``_pk`` only: row counts for the planner, no costly geometry statistics."""
    return Statement(sql.SQL("analyze {} (_pk)").format(sql.Identifier(name)), {})


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


def _final(source: str, member_cols: list[str]) -> sql.Composable:
    """The survivors' raw columns (district and nearest features are added by :func:`_placed`)."""
    cols = [sql.SQL("p._pk, p.site, p.area_m2, st_x(p.ctr), st_y(p.ctr), st_asbinary(p.geom), null::text"),
            *(sql.SQL("p.{}").format(sql.Identifier(c)) for c in member_cols)]
    return sql.SQL("select {cols} from {source} p order by p._pk").format(cols=sql.SQL(", ").join(cols),
                                                                           source=sql.Identifier(source))


def _select(plan: Plan) -> tuple[Statement, list[str]]:
    """The last statement: the remaining constraints of the sites, with their explaining columns."""
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
    final = _final(source, member_cols)
    query = sql.SQL("with {} {}").format(sql.SQL(", ").join(ctes), final) if ctes else sql.Composed([final])
    return Statement(query, dict(params), True), [*_RAW, *member_cols]


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
        statements.append(_analyze(SITES))
    select, names = _select(plan)
    return [*statements, select], names


def screen(conn: psycopg.Connection, plan: Plan) -> pd.DataFrame:
    """Run the screening statements; return the raw frame of passing sites (see :mod:`.scoring`)."""
    statements, names = screening_statements(plan)
    with conn.transaction():
        for statement in statements[:-1]:
            conn.execute(statement.query, statement.params)
        with conn.cursor(binary=True) as cur:  # binary: no text parsing of ~10^5 geometries and numbers
            rows = cur.execute(statements[-1].query, statements[-1].params).fetchall()
    frame = pd.DataFrame(rows, columns=names) if rows else pd.DataFrame({n: [] for n in names})
    frame["geometry"] = shapely.from_wkb(np.array([bytes(b) for b in frame.pop("wkb")], dtype=object))
    return _placed(conn, plan, frame)


def _placed(conn: psycopg.Connection, plan: Plan, frame: pd.DataFrame) -> pd.DataFrame:
    """Each site's district and nearest features, with the in-memory engines' own code.

    The district is the lowest key holding the site's centroid (only the district asked for is
    kept); the nearest feature of each distance score is the lowest key among the nearest. Both
    query an STRtree in GEOS: at 20,000 sites that takes tens of milliseconds, where the same
    lookups in SQL take half a second (a district polygon of thousands of vertices tested per site,
    one KNN index walk per site and score), and the layers read here are small (districts, points).
    """
    c = plan.criteria
    if c.districts is not None and plan.districts is not None:
        districts = read_features(conn, plan, c.districts.layer, None, {"_pk": None, "_n": c.districts.name})
        pos = first_hit(districts, shapely.points(frame["cx"].to_numpy(dtype="float64"),
                                                   frame["cy"].to_numpy(dtype="float64")), "intersects")
        frame["district"] = take(districts, "_n", pos)
        if plan.district_pks:  # the site's own district must be the one asked for
            frame = frame[np.isin(take(districts, "_pk", pos).astype("float64"), plan.district_pks)]
            frame = frame.reset_index(drop=True)
    geoms = np.asarray(frame["geometry"].to_numpy(), dtype=object)
    for score in c.scores:
        if isinstance(score, DistanceTo):
            features = read_features(conn, plan, score.layer, score.where, {"_pk": None, "_l": score.label})
            pos, dist = nearest_feature(features, geoms)
            frame[score_key(score.id, "dist")] = dist
            frame[score_key(score.id, "label")] = take(features, "_l", pos)
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
