"""``nearest`` against zones cut into pieces: zones a row touches first, then the nearest piece.

A row that intersects zones is at distance 0 from them, and the lowest of their keys wins; those pairs
come from the same pass over the pieces as an ``sjoin`` (exact, see :mod:`sdi.planning.engines.subdivided`).
Only the rows touching no zone look for the nearest piece through the pieces' GiST index (``<->``). The
zones whose pieces lie within a hair of that distance are the candidates; the nearest wins, the lowest key
among equals. A piece's distance is its zone's to the rounding of its cut (far below 1e-6 m), so when
several zones are that near (a tie) they are ranked by their distances to the zones' own polygons, and a
row within ``EPSILON_M`` of ``max_distance_m`` is checked against the zone's polygon too.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import psycopg
from psycopg import sql

from sdi.planning.engines import pieces
from sdi.planning.engines.frames import Join
from sdi.planning.engines.sides import fetch_parts
from sdi.planning.engines.subdivided import EPSILON, Plan, candidates, predicate, statement

#: Candidate zones lie within the nearest piece's distance plus this (metres): the ``postgis`` engine's
#: tie margin (1e-6 m) plus the rounding of two cuts.
TIE_MARGIN = sql.Literal(1e-6 + 4e-6)


def nearest_statement(join: Join, plan: Plan) -> sql.Composed:
    """The statement: the small side's columns, the nearest zone's key, the row's WKB and the distance."""
    small, zones = plan.small, plan.zones
    sk = sql.Identifier(small.table.primary_key)
    out = sql.SQL(", ").join(small.output("s", "s"))
    reach: sql.Composable = sql.SQL("")
    fits: sql.Composable = sql.SQL("true")
    if join.distance is not None:
        limit = sql.Literal(join.distance)
        reach = sql.SQL(" where st_dwithin(s.geom, p.geom, {} + {})").format(limit, EPSILON)
        fits = sql.SQL("(c.d < {m} - {e} or (c.d <= {m} + {e} and st_dwithin(s.geom, z.geom, {m})))").format(
            m=limit, e=EPSILON)
    body = sql.SQL(
        "select {out}, m.zk, st_asbinary(s.geom), 0::float8 from {S} s join m on m.sk = s.{sk} "
        "union all "
        "select {out}, n.k, st_asbinary(s.geom), n.d from {S} s "
        "left join lateral (select st_distance(s.geom, p.geom) as d from {P} p{reach} "
        "order by s.geom <-> p.geom limit 1) a on true "
        "left join lateral (select c.k, case when c.n > 1 then st_distance(s.geom, z.geom) else c.d end as d "
        "from (select q.k, min(st_distance(s.geom, q.geom)) as d, count(*) over () as n from {P} q "
        "where st_dwithin(s.geom, q.geom, a.d + {tie}) group by q.k) c join {Z} z on z.{zk} = c.k "
        "where {fits} order by 2, 1 limit 1) n on true "
        "where not exists (select from m where m.sk = s.{sk}){order}").format(
        out=out, S=small.table.ident, sk=sk, P=zones.pieces, reach=reach, tie=TIE_MARGIN, Z=zones.table,
        zk=sql.Identifier(zones.key), fits=fits, order=plan.order_by())
    touching = sql.SQL("m as materialized (select s.{sk} as sk, min(p.k) as zk {src} where {touch} group by s.{sk})"
                       ).format(sk=sk, src=candidates(small, zones), touch=predicate("intersects", small, zones, True))
    return statement(body, touching)


def run_nearest(conn: psycopg.Connection, join: Join, plan: Plan) -> gpd.GeoDataFrame:
    """Run ``nearest`` of the small side (left) against the zones (right) and assemble the result."""
    pieces.index(conn, plan.zones.pieces)  # the nearest piece by ``<->``, the pieces within a distance
    columns = fetch_parts([conn], [nearest_statement(join, plan)], plan.small.width() + 1)
    order, starts, positions = plan.groups(columns)
    width = plan.small.width()
    distance = np.array([np.nan if d is None else d for d in columns[width + 2]], dtype=float)
    rows = order[starts]
    return plan.result(join, columns, rows, positions, distance[rows])
