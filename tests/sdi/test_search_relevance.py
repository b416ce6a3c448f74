"""Search relevance: the set in tests/data/search/relevance.yml, scored over a catalogue of every layer in layers/.

Each query must put its expected layer first and show no forbidden layer; the summary prints the share of
queries answered first (MRR) and the share of returned layers that were acceptable (precision).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from pygeoapi.provider.base import ProviderInvalidQueryError
from typer.testing import CliRunner

from sdi.catalogue import Catalogue, SearchResult
from sdi.catalogue import search as catalogue_search
from sdi.catalogue.ranking import Doc, Term, edit_distance, rank, read_lexemes
from sdi.catalogue.records_provider import CatalogueRecordsProvider
from sdi.cli import app
from sdi.errors import SearchError, http_status
from tests.conftest import DATA, LAYERS, loaded_database

ALL_LAYERS = sorted(p.stem for p in LAYERS.glob("*.yml"))
RELEVANCE = DATA / "search" / "relevance.yml"
PROVIDER = "sdi.catalogue.records_provider.CatalogueRecordsProvider"


@dataclass(frozen=True)
class Case:
    """One query of the relevance set."""

    q: str
    first: str | None
    forbidden: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    weaker: bool | None = None
    suggest: dict[str, str] | None = None
    unmatched: list[str] | None = None

    def allowed(self, layer_id: str) -> bool:
        """Whether ``layer_id`` may appear in this query's results."""
        return layer_id not in self.forbidden and (self.only is None or layer_id in self.only)


def read_cases(path: Path = RELEVANCE) -> list[Case]:
    """The relevance set."""
    doc = yaml.safe_load(path.read_text("utf-8"))
    return [Case(q=str(c["q"]), first=c["first"], forbidden=frozenset(c.get("forbidden") or ()),
                 only=frozenset(c["only"]) if "only" in c else None, weaker=c.get("weaker"),
                 suggest=c.get("suggest"), unmatched=[str(w) for w in c["unmatched"]] if "unmatched" in c else None)
            for c in doc["queries"]]


CASES = read_cases()


@pytest.fixture(scope="module")
def catalogue(database_url: str) -> Iterator[Catalogue]:
    """A catalogue of every layer in layers/, in a database of its own."""
    with loaded_database(ALL_LAYERS) as settings:
        yield Catalogue(settings)


@pytest.fixture(scope="module")
def results(catalogue: Catalogue) -> dict[str, SearchResult]:
    """Each query's first 50 results."""
    return {case.q: catalogue.search(case.q, limit=50) for case in CASES}


def problems(case: Case, result: SearchResult) -> list[str]:
    """What is wrong with ``result`` as the answer to ``case`` (empty when it is right)."""
    ids = result.ids()
    found: list[str] = []
    if case.first is None and ids:
        found.append(f"expected nothing, got {ids}")
    if case.first is not None and ids[:1] != [case.first]:
        found.append(f"expected {case.first} first, got {ids}")
    bad = [i for i in ids if not case.allowed(i)]
    if bad:
        found.append(f"unacceptable results {bad} (of {ids})")
    if result.matched != len(ids):
        found.append(f"matched {result.matched} but {len(ids)} records")
    if case.weaker is not None and result.weaker != case.weaker:
        found.append(f"weaker is {result.weaker}, expected {case.weaker}")
    if case.suggest is not None and result.suggestions != case.suggest:
        found.append(f"suggestions {result.suggestions}, expected {case.suggest}")
    if case.unmatched is not None and result.unmatched != case.unmatched:
        found.append(f"unmatched {result.unmatched}, expected {case.unmatched}")
    return found


def test_the_set_is_big_enough_and_names_real_layers() -> None:
    assert len(CASES) >= 30 and len({c.q for c in CASES}) == len(CASES)
    assert sum(1 for c in CASES if any("\u4e00" <= ch <= "\u9fff" for ch in c.q)) >= 10
    named = {c.first for c in CASES if c.first} | {i for c in CASES for i in c.forbidden | (c.only or set())}
    assert named <= set(ALL_LAYERS), named - set(ALL_LAYERS)
    assert all(c.first is None or c.only is None or c.first in c.only for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.q for c in CASES])
def test_query(case: Case, results: dict[str, SearchResult]) -> None:
    assert not problems(case, results[case.q])


def test_summary(results: dict[str, SearchResult], capsys: pytest.CaptureFixture[str]) -> None:
    """Precision (acceptable share of what is shown) and MRR of the expected first result, printed."""
    ranks: list[float] = []
    precisions: list[float] = []
    for case in CASES:
        ids = results[case.q].ids()
        if case.first is not None:
            ranks.append(1 / (ids.index(case.first) + 1) if case.first in ids else 0.0)
        if ids:
            precisions.append(sum(1 for i in ids if case.allowed(i)) / len(ids))
    mrr, precision = sum(ranks) / len(ranks), sum(precisions) / len(precisions)
    failing = [c.q for c in CASES if problems(c, results[c.q])]
    with capsys.disabled():
        print(f"\nsearch relevance: {len(CASES)} queries, MRR {mrr:.3f}, precision {precision:.3f}, "
              f"failing {failing or 'none'}")
    assert mrr == 1.0 and precision == 1.0 and not failing


def test_problems_are_found() -> None:
    """The scorer itself: a wrong first result, a forbidden layer, a missing flag are each reported."""
    case = Case(q="landslide", first="landslide_incidents", forbidden=frozenset({"land_sale_records"}), weaker=False)
    right = SearchResult(records=[], matched=0, facets={})
    assert problems(case, right) == ["expected landslide_incidents first, got []"]
    assert problems(Case(q="x", first=None), right) == []
    assert problems(Case(q="x", first=None, weaker=True), right) == ["weaker is False, expected True"]


def test_landslide_everywhere(catalogue: Catalogue) -> None:
    """`landslide` is the landslide layer and nothing else: in Python, the CLI and the Records API (q=)."""
    assert catalogue.search("landslide").ids() == ["landslide_incidents"]
    env = {"SDI_DATABASE_URL": catalogue.settings.database_url}
    out = CliRunner().invoke(app, ["catalogue", "search", "landslide", "--json"], env=env)
    assert out.exit_code == 0, out.output
    data: dict[str, Any] = json.loads(out.stdout)
    assert [r["id"] for r in data["records"]] == ["landslide_incidents"] and data["matched"] == 1
    table = CliRunner().invoke(app, ["catalogue", "search", "landslide"], env=env)
    assert table.exit_code == 0 and "landslide_incidents" in table.stdout
    assert "land_sale_records" not in table.stdout and "synthetic_dem" not in table.stdout
    provider = CatalogueRecordsProvider({"name": PROVIDER, "type": "record", "data": catalogue.settings.database_url})
    collection = provider.query(q="landslide", limit=10)
    assert [f["id"] for f in collection["features"]] == ["landslide_incidents"]
    assert collection["numberMatched"] == 1
    closest = CliRunner().invoke(app, ["catalogue", "search", "landslde"], env=env)
    assert closest.exit_code == 0 and "no exact match: 1 closest layer(s)" in closest.stdout
    assert "did you mean: landslde → landslide" in closest.stdout
    typo = provider.query(q="distrct", limit=10, resulttype="hits")
    assert typo["numberMatched"] == catalogue.search("distrct").matched > 0


def test_paging_and_facets_follow_the_ranking(catalogue: Catalogue) -> None:
    everything = catalogue.search("land", limit=100)
    assert everything.matched == len(everything) > 4
    pages = [catalogue.search("land", limit=3, offset=o) for o in range(0, everything.matched, 3)]
    assert [i for p in pages for i in p.ids()] == everything.ids()
    assert all(p.matched == everything.matched and p.facets == everything.facets for p in pages)
    assert sum(everything.facets["custodian"].values()) == everything.matched
    scores = [r.score or 0.0 for r in everything]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_filters_apply_before_ranking(catalogue: Catalogue) -> None:
    assert catalogue.search("parks", synthetic=True).ids()[0] == "synthetic_country_park_areas"
    assert "country_parks" in catalogue.search("parks", synthetic=False).ids()
    assert catalogue.search("elevation", kind="raster").ids()[0] == "synthetic_mudflat_elevation"
    assert catalogue.search("landslide", custodian="Lands Department").matched == 0


def test_notice_says_how_the_query_was_read(catalogue: Catalogue) -> None:
    typo = catalogue.search("distrct")
    assert typo.notice() == "did you mean: distrct → district; showing the closest matches"
    assert typo.notice("zh-HK") == "你是否要找：distrct → district；以下為最接近的結果"
    assert catalogue.search("car parks kowloon").notice() == "no layer mentions: kowloon"
    assert catalogue.search("landslide").notice() is None
    assert "did you mean: distrct → district" in typo._repr_html_()


def test_a_long_query_is_refused_naming_q(catalogue: Catalogue) -> None:
    limit = catalogue_search.MAX_QUERY_LENGTH
    assert catalogue.search("landslide " + "x" * (limit - 10)).matched >= 0  # at the limit: searched
    with pytest.raises(SearchError, match=r"^q: at most 200 characters, got 201") as caught:
        catalogue.search("x" * (limit + 1))
    assert http_status(caught.value) == 400
    provider = CatalogueRecordsProvider({"name": PROVIDER, "type": "record", "data": catalogue.settings.database_url})
    with pytest.raises(ProviderInvalidQueryError):
        provider.query(q="x" * (limit + 1), limit=10)


def test_records_texts_are_read_once_per_version(catalogue: Catalogue) -> None:
    """A second query reads no record's texts; a record changed since is read again (in a rolled-back update)."""
    with psycopg.connect(catalogue.settings.database_url) as conn:
        base = catalogue_search.fetcher(conn)
        statements: list[str] = []

        def counting(query: sql.SQL | sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
            statements.append(query.as_string(conn))
            return base(query, params)

        def texts_read() -> int:
            return sum("to_tsvector('english', f.field_text)" in s for s in statements)

        catalogue_search.search(counting, q="parks")
        statements.clear()
        assert catalogue_search.search(counting, q="landslide").ids() == ["landslide_incidents"]
        assert catalogue_search.search(counting, q="district boundaries").matched > 0
        assert texts_read() == 0
        conn.execute("update sdi.layer set title_en = 'Zyxwv incidents' where id = 'landslide_incidents'")
        assert catalogue_search.search(counting, q="zyxwv").ids() == ["landslide_incidents"]
        assert texts_read() == 1
        conn.rollback()
    assert catalogue.search("zyxwv").ids() == []


# --- the ranking rules on hand-made records (no database) ------------------------------------------------


def _doc(doc_id: str, title: str, *, fields: str = "", abstract: str = "", synthetic: bool = False) -> Doc:
    """A record whose stems are its lower-cased words (what PostgreSQL would give for these plain words)."""
    lexemes = [[w, [i], ["A"]] for i, w in enumerate(title.lower().split(), 1)]
    lexemes += [[w, [i], ["C"]] for i, w in enumerate(abstract.lower().split(), 50)]
    return Doc.from_row({"id": doc_id, "synthetic": synthetic, "lexemes": lexemes, "title_en": title,
                         "abstract_en": abstract, "field_text": fields, "field_lexemes": fields.split()})


def test_edit_distance_counts_a_swap_as_one_edit() -> None:
    assert edit_distance("distrct", "district", 1) == 1
    assert edit_distance("hosptial", "hospital", 2) == 1
    assert edit_distance("landslide", "lands", 2) == 3  # beyond the bound: bound + 1


def test_read_lexemes_reads_parts_and_positions() -> None:
    assert read_lexemes([["car", [5], ["A"]], ["park", [6, 9], ["A", "B"]], ["brien", [3], ["D"]], ["x", None, None]]) \
        == {"car": {"title": [5]}, "park": {"title": [6], "keywords": [9]}, "brien": {"custodian": [3]},
            "x": {"custodian": []}}


def test_rank_rules() -> None:
    landslides = _doc("landslides", "landslide incidents")
    lands = _doc("lands", "land sales", abstract="lands department")
    columns = _doc("columns", "hospitals", fields="slope district")
    docs = [landslides, lands, columns]
    assert rank([Term("landslide", "landslide")], docs).ids == ["landslides"]  # "lands" is not a typo of it
    # a column name counts only when no title, keyword or abstract holds the word
    assert rank([Term("slope", "slope")], docs).ids == ["columns"]
    assert rank([Term("district", "district")], [*docs, _doc("d", "district")]).ids == ["d"]
    typo = rank([Term("landslid", "landslid")], docs)
    assert typo.ids == ["landslides"] and typo.weaker and typo.suggestions == {"landslid": "landslide"}
    assert rank([Term("2031", "2031")], [_doc("y", "libraries 2013")]).ids == []  # numbers are never fuzzy
    # no record holds both words: the closest, flagged
    both = rank([Term("landslide", "landslide"), Term("hospitals", "hospitals")], docs)
    assert set(both.ids) == {"landslides", "columns"} and both.weaker
    # a word some record holds is never read as a typo or the start of another ("land" is not "landslide")
    land = rank([Term("land", "land"), Term("incidents", "incidents")], docs)
    assert land.suggestions == {} and set(land.ids) == {"landslides", "lands"} and land.weaker
    real, fake = _doc("b_real", "country parks"), _doc("a_fake", "country parks", synthetic=True)
    assert rank([Term("parks", "parks")], [fake, real]).ids == ["b_real", "a_fake"]  # ties: real data first
