"""Catalogue search in PostgreSQL: filters in SQL, text matching and ranking in :mod:`sdi.catalogue.ranking`.

English words are stemmed by PostgreSQL's English configuration ("zones" finds "zoning"; the
records' stems are the ``search_en`` column), Chinese is cut into overlapping character bigrams
(選區分界 → 選區, 區分, 分界: PostgreSQL's parser does not segment Chinese), and a typo or an
unfinished word ("distrct", "hosp") is forgiven only when no record holds the word as typed.
A record is a result only if it holds every word of the query that the catalogue knows.

A query reads the candidates' ids and row versions; each record's searchable texts are read (and
stemmed) once per version of the record and kept in the process. Queries longer than
:data:`MAX_QUERY_LENGTH` characters are refused (:class:`sdi.errors.SearchError`, HTTP 400).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sdi.catalogue.models import CatalogueRecord, SearchResult
from sdi.catalogue.ranking import MAX_TERMS, Doc, Term, rank, words
from sdi.errors import ConfigError, SearchError
from sdi.text import CJK_RUN

MAX_OFFSET = 1_000_000  #: deeper catalogue pages are refused
MAX_QUERY_LENGTH = 200  #: longer ``q`` is refused (the search box allows as many characters)
MAX_CACHED_DOCS = 20_000  #: records' search texts kept per process (dropped all at once beyond)

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
    for run in CJK_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
    return list(dict.fromkeys(grams))


def latin_part(text: str) -> str:
    """``text`` without its Chinese runs."""
    return " ".join(CJK_RUN.sub(" ", text).split())


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


Fetch = Callable[[sql.SQL | sql.Composed, dict[str, Any]], list[dict[str, Any]]]
"""Runs one statement and returns its rows as dicts: a sync connection's (:func:`fetcher`) or the web pool's."""


def fetcher(conn: psycopg.Connection) -> Fetch:
    """A :data:`Fetch` over a synchronous connection."""

    def fetch(query: sql.SQL | sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, params).fetchall())

    return fetch


def query_terms(fetch: Fetch, q: str) -> list[Term]:
    """The terms of a query: English words with PostgreSQL's English stems (stop words dropped), Chinese bigrams."""
    text = q.strip().lower()
    tokens = words(latin_part(text))[:MAX_TERMS]
    terms: list[Term] = []
    if tokens:
        rows = fetch(sql.SQL("select t, (select min(lexeme) from unnest(to_tsvector('english', t))) as stem "
                             "from unnest(%(tokens)s::text[]) with ordinality as u(t, n) order by n"),
                     {"tokens": tokens})
        terms.extend(Term(text=r["t"], stem=r["stem"]) for r in rows if r["stem"])
    for run in CJK_RUN.findall(text):
        terms.extend(Term(text=gram, run=run) for gram in cjk_bigrams(run))
    return terms


_DOCS = """select id, synthetic, custodian, theme, title_en, title_zh, keywords_en, keywords_zh, abstract_en,
 abstract_zh, f.field_text,
 (select coalesce(json_agg(json_build_array(lexeme, positions, weights)), '[]') from unnest(search_en)) as lexemes,
 array(select lexeme from unnest(to_tsvector('english', f.field_text))) as field_lexemes
 from sdi.layer cross join lateral (select coalesce(string_agg(concat_ws(' ', e->>'name',
   nullif(e->>'original_name', '(generated)'), e->>'description_en', e->>'description_zh'), ' '), '') as field_text
   from jsonb_array_elements(case when jsonb_typeof(fields) = 'array' then fields else '[]'::jsonb end) e) f
 where {where}"""
"""Each candidate's searchable texts: ``search_en``'s stems with parts and positions, raw texts, fields' text."""


_VERSIONS = """select id, custodian, theme, load_id, loaded_at, xmin::text as row_version from sdi.layer
 where {where}"""
"""The candidates with what their texts depend on: a record's texts change only with a new row version."""

DocKey = tuple[str, int, str, str]
_DOC_CACHE: dict[DocKey, Doc] = {}
"""Each record's :class:`Doc` by (id, load id, load time, row version): built once per version of the record."""


def _doc_key(row: dict[str, Any]) -> DocKey:
    return str(row["id"]), int(row["load_id"]), str(row["loaded_at"]), str(row["row_version"])


def _docs(fetch: Fetch, rows: list[dict[str, Any]]) -> list[Doc]:
    """The :class:`Doc` of each candidate row (of :data:`_VERSIONS`), reading from PostgreSQL only the new ones."""
    keys = [_doc_key(r) for r in rows]
    found = {k: doc for k in keys if (doc := _DOC_CACHE.get(k)) is not None}
    missing = [k for k in keys if k not in found]
    if missing:
        fresh = fetch(sql.SQL(_DOCS).format(where=sql.SQL("id = any(%(ids)s)")), {"ids": [k[0] for k in missing]})
        by_id = {str(r["id"]): Doc.from_row(r) for r in fresh}
        if len(_DOC_CACHE) + len(missing) > MAX_CACHED_DOCS:
            _DOC_CACHE.clear()
        for key in missing:
            if key[0] in by_id:
                found[key] = _DOC_CACHE[key] = by_id[key[0]]
    return [found[k] for k in keys if k in found]


def _filters(params: dict[str, Any], bbox: tuple[float, float, float, float] | None, custodian: str | None,
             theme: str | None, kind: str | None, synthetic: bool | None) -> sql.Composable:
    """The ``where`` clause of everything but the text query (parameters added to ``params``)."""
    filters: list[sql.Composable] = [sql.SQL("true")]
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
    return sql.SQL(" and ").join(filters)


def _facets(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    custodians: Counter[str] = Counter()
    themes: Counter[str] = Counter()
    for row in rows:
        custodians[row["custodian"]] += 1
        themes[row["theme"] or "unspecified"] += 1
    return {"custodian": dict(custodians), "theme": dict(themes)}


def search(conn: psycopg.Connection | Fetch, *, q: str | None = None,
           bbox: tuple[float, float, float, float] | None = None, custodian: str | None = None,
           theme: str | None = None, kind: str | None = None, synthetic: bool | None = None, limit: int = 10,
           offset: int = 0) -> SearchResult:
    """Run a catalogue search on a connection or a :data:`Fetch`; see :meth:`sdi.catalogue.Catalogue.search`.

    With ``q``, only records that match it are returned, ranked by :func:`sdi.catalogue.ranking.rank`;
    :attr:`SearchResult.weaker` says when they are only the closest matches (a typo, some of the words).
    Each record's searchable texts are read from PostgreSQL once per version of the record and kept
    (:data:`MAX_CACHED_DOCS`); a query then reads only the candidates' ids and versions.

    Raises
    ------
    SearchError
        When ``q`` is longer than :data:`MAX_QUERY_LENGTH` characters.
    ConfigError
        When ``limit`` or ``offset`` is out of range.
    """
    fetch = fetcher(conn) if isinstance(conn, psycopg.Connection) else conn
    if q is not None and len(q) > MAX_QUERY_LENGTH:
        raise SearchError(f"q: at most {MAX_QUERY_LENGTH} characters, got {len(q)}; shorten the query")
    if limit < 1 or limit > 1000:
        raise ConfigError(f"limit: must be between 1 and 1000, got {limit}")
    if offset < 0 or offset > MAX_OFFSET:
        raise ConfigError(f"offset: must be between 0 and {MAX_OFFSET}, got {offset}")
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    where = _filters(params, bbox, custodian, theme, kind, synthetic)
    if q and q.strip():
        return _ranked(fetch, q, where, params, limit, offset)
    query = sql.SQL("with hits as (select {cols}, 0.0 as score from sdi.layer where {where}) "
                    "select *, count(*) over () as matched, "
                    "(select jsonb_object_agg(custodian, n) from (select custodian, count(*) n from hits "
                    " group by custodian) c) as by_custodian, "
                    "(select jsonb_object_agg(coalesce(theme, 'unspecified'), n) from (select theme, count(*) n "
                    " from hits group by theme) t) as by_theme "
                    "from hits order by id limit %(limit)s offset %(offset)s").format(
        cols=sql.SQL(RECORD_COLUMNS), where=where)
    rows = fetch(query, params)
    if not rows and offset:
        count = fetch(sql.SQL("select count(*) as n from sdi.layer where {}").format(where), params)
        return SearchResult(records=[], matched=int(count[0]["n"]) if count else 0, facets={})
    facets = {"custodian": dict(rows[0]["by_custodian"] or {}), "theme": dict(rows[0]["by_theme"] or {})} if rows \
        else {"custodian": {}, "theme": {}}
    records = [CatalogueRecord.model_validate({k: v for k, v in r.items()
                                               if k not in ("matched", "by_custodian", "by_theme")}) for r in rows]
    return SearchResult(records=records, matched=int(rows[0]["matched"]) if rows else 0, facets=facets)


def _ranked(fetch: Fetch, q: str, where: sql.Composable, params: dict[str, Any], limit: int,
            offset: int) -> SearchResult:
    """A text search: candidates' texts from SQL, matching and ranking in :mod:`sdi.catalogue.ranking`."""
    terms = query_terms(fetch, q)
    rows = fetch(sql.SQL(_VERSIONS).format(where=where), params) if terms else []
    ranking = rank(terms, _docs(fetch, rows))
    chosen = set(ranking.ids)
    page = ranking.ids[offset:offset + limit]
    found = fetch(sql.SQL("select {} from sdi.layer where id = any(%(ids)s)").format(sql.SQL(RECORD_COLUMNS)),
                  {"ids": page}) if page else []
    by_id = {r["id"]: r for r in found}
    records = [CatalogueRecord.model_validate({**by_id[i], "score": ranking.scores[i]}) for i in page if i in by_id]
    return SearchResult(records=records, matched=len(ranking.ids), facets=_facets(r for r in rows if r["id"] in chosen),
                        weaker=ranking.weaker, suggestions=ranking.suggestions, unmatched=ranking.unmatched)


def get(conn: psycopg.Connection | Fetch, record_id: str) -> CatalogueRecord | None:
    """One record by id, or ``None``."""
    fetch = fetcher(conn) if isinstance(conn, psycopg.Connection) else conn
    rows = fetch(sql.SQL("select {} from sdi.layer where id = %(id)s").format(sql.SQL(RECORD_COLUMNS)),
                 {"id": record_id})
    return CatalogueRecord.model_validate(rows[0]) if rows else None
