"""Catalogue search in PostgreSQL: ranked English full text, Chinese n-grams, trigram typo tolerance.

PostgreSQL's text parser does not segment Chinese, so a Chinese query is cut into overlapping
character bigrams (選區分界 → 選區, 區分, 分界) and a record scores by the share of bigrams its
text contains. English goes through ``websearch_to_tsquery('english', …)`` (stemming: "zones"
finds "zoning"), and ``word_similarity`` from pg_trgm forgives a typo ("distrct" finds "district").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sdi.catalogue.models import CatalogueRecord, SearchResult
from sdi.errors import ConfigError

_CJK_RUN = re.compile(r"[\u3400-\u9fff\U00020000-\U0003134f\uf900-\ufaff]+")
MAX_OFFSET = 1_000_000  #: deeper catalogue pages are refused
TYPO_THRESHOLD = 0.5  #: minimum pg_trgm word_similarity for a fuzzy English match

RECORD_COLUMNS = """id, kind, title_en, title_zh, abstract_en, abstract_zh, keywords_en, keywords_zh, custodian,
 licence, attribution, theme, update_frequency, geometry_type, feature_count, fields, lineage, links, synthetic,
 access_groups, loaded_at, temporal_start, temporal_end,
 case when extent_crs84 is null then null else array[st_xmin(extent_crs84), st_ymin(extent_crs84),
   st_xmax(extent_crs84), st_ymax(extent_crs84)] end as bbox_crs84,
 case when extent is null then null else array[st_xmin(extent), st_ymin(extent), st_xmax(extent),
   st_ymax(extent)] end as bbox_2326"""


def cjk_bigrams(text: str) -> list[str]:
    """Overlapping character bigrams of the Chinese runs in ``text`` (a lone character is its own gram)."""
    grams: list[str] = []
    for run in _CJK_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
    return list(dict.fromkeys(grams))


def latin_part(text: str) -> str:
    """``text`` without its Chinese runs."""
    return " ".join(_CJK_RUN.sub(" ", text).split())


def parse_box(values: Iterable[object], *, what: str = "bbox",
              shown: object = None) -> tuple[float, float, float, float]:
    """Four numbers ``minx, miny, maxx, maxy`` with min <= max, in any CRS; :class:`ConfigError` naming ``what``."""
    shown = values if shown is None else shown
    try:
        box = tuple(float(p) for p in values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected four numbers minx,miny,maxx,maxy, got {shown!r}") from exc
    if len(box) != 4:
        raise ConfigError(f"{what}: expected four numbers minx,miny,maxx,maxy, got {shown!r}")
    if box[0] > box[2] or box[1] > box[3]:
        raise ConfigError(f"{what}: expected minx,miny,maxx,maxy with min <= max, got {shown!r}")
    return box[0], box[1], box[2], box[3]


def parse_bbox(value: str | tuple[float, ...] | list[float], *,
               what: str = "bbox") -> tuple[float, float, float, float]:
    """A longitude/latitude box from ``"minx,miny,maxx,maxy"`` or a sequence; :class:`ConfigError` if malformed."""
    box = parse_box(value.split(",") if isinstance(value, str) else list(value), what=what, shown=value)
    if not (-180 <= box[0] <= 180 and -180 <= box[2] <= 180 and -90 <= box[1] <= 90 and -90 <= box[3] <= 90):
        raise ConfigError(f"{what}: longitude/latitude out of range in {value!r}")
    return box


def _score_and_filter(q: str | None, params: dict[str, Any]) -> tuple[sql.Composable, sql.Composable]:
    if not q or not q.strip():
        return sql.SQL("0.0"), sql.SQL("true")
    text = q.strip().lower()
    latin = latin_part(text)
    grams = cjk_bigrams(text)
    score_parts: list[sql.Composable] = []
    match_parts: list[sql.Composable] = []
    if latin:
        params["q_latin"] = latin
        score_parts.append(sql.SQL(
            "2.0 * ts_rank_cd(search_en, websearch_to_tsquery('english', %(q_latin)s))"
            " + word_similarity(%(q_latin)s, search_text)"))
        match_parts.append(sql.SQL(
            "(search_en @@ websearch_to_tsquery('english', %(q_latin)s)"
            " or word_similarity(%(q_latin)s, search_text) >= %(typo)s"
            " or search_text like '%%' || %(q_latin)s || '%%')"))
        params["typo"] = TYPO_THRESHOLD
    if grams:
        params["grams"] = grams
        share = sql.SQL("((select count(*) from unnest(%(grams)s::text[]) g where search_text like '%%' || g || '%%')"
                        "::float / cardinality(%(grams)s::text[]))")
        score_parts.append(sql.SQL("2.0 * {} + case when coalesce(title_zh, '') like '%%' || %(q_cjk)s || '%%' "
                                   "then 1.0 else 0.0 end").format(share))
        params["q_cjk"] = "".join(_CJK_RUN.findall(text))
        match_parts.append(sql.SQL("{} >= 0.5").format(share))
    score = sql.SQL(" + ").join(score_parts)
    match = sql.SQL("(") + sql.SQL(" and ").join(match_parts) + sql.SQL(")")
    return score, match


Fetch = Callable[[sql.SQL | sql.Composed, dict[str, Any]], list[dict[str, Any]]]
"""Runs one statement and returns its rows as dicts: a sync connection's (:func:`fetcher`) or the web pool's."""


def fetcher(conn: psycopg.Connection) -> Fetch:
    """A :data:`Fetch` over a synchronous connection."""

    def fetch(query: sql.SQL | sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, params).fetchall())

    return fetch


def search(conn: psycopg.Connection | Fetch, *, q: str | None = None,
           bbox: tuple[float, float, float, float] | None = None, custodian: str | None = None,
           theme: str | None = None, kind: str | None = None, synthetic: bool | None = None, limit: int = 10,
           offset: int = 0) -> SearchResult:
    """Run a catalogue search on a connection or a :data:`Fetch`; see :meth:`sdi.catalogue.Catalogue.search`."""
    fetch = fetcher(conn) if isinstance(conn, psycopg.Connection) else conn
    if limit < 1 or limit > 1000:
        raise ConfigError(f"limit: must be between 1 and 1000, got {limit}")
    if offset < 0 or offset > MAX_OFFSET:
        raise ConfigError(f"offset: must be between 0 and {MAX_OFFSET}, got {offset}")
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    score, match = _score_and_filter(q, params)
    filters: list[sql.Composable] = [match]
    if bbox is not None:
        params.update(zip(("x0", "y0", "x1", "y1"), bbox, strict=True))
        filters.append(sql.SQL("extent_crs84 && st_makeenvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"))
    for column, value in (("custodian", custodian), ("theme", theme), ("kind", kind)):
        if value is not None:
            params[column] = value
            filters.append(sql.SQL("lower({}) = lower(%({})s)").format(sql.Identifier(column), sql.SQL(column)))
    if synthetic is not None:
        params["synthetic"] = synthetic
        filters.append(sql.SQL("synthetic = %(synthetic)s"))
    where = sql.SQL(" and ").join(filters)
    query = sql.SQL("with hits as (select {cols}, {score} as score from sdi.layer where {where}) "
                    "select *, count(*) over () as matched, "
                    "(select jsonb_object_agg(custodian, n) from (select custodian, count(*) n from hits "
                    " group by custodian) c) as by_custodian, "
                    "(select jsonb_object_agg(coalesce(theme, 'unspecified'), n) from (select theme, count(*) n "
                    " from hits group by theme) t) as by_theme "
                    "from hits order by score desc, id limit %(limit)s offset %(offset)s").format(
        cols=sql.SQL(RECORD_COLUMNS), score=score, where=where)
    rows = fetch(query, params)
    if not rows and offset:
        count = fetch(sql.SQL("select count(*) as n from sdi.layer where {}").format(where), params)
        return SearchResult(records=[], matched=int(count[0]["n"]) if count else 0, facets={})
    facets = {"custodian": dict(rows[0]["by_custodian"] or {}), "theme": dict(rows[0]["by_theme"] or {})} if rows \
        else {"custodian": {}, "theme": {}}
    records = [CatalogueRecord.model_validate({k: v for k, v in r.items()
                                               if k not in ("matched", "by_custodian", "by_theme")}) for r in rows]
    return SearchResult(records=records, matched=int(rows[0]["matched"]) if rows else 0, facets=facets)


def get(conn: psycopg.Connection | Fetch, record_id: str) -> CatalogueRecord | None:
    """One record by id, or ``None``."""
    fetch = fetcher(conn) if isinstance(conn, psycopg.Connection) else conn
    rows = fetch(sql.SQL("select {} from sdi.layer where id = %(id)s").format(sql.SQL(RECORD_COLUMNS)),
                 {"id": record_id})
    return CatalogueRecord.model_validate(rows[0]) if rows else None
