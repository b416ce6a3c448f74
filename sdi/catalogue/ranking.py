"""Which catalogue records match a query, and in what order: relevance ranking in plain Python.

:mod:`sdi.catalogue.search` reads each candidate record's searchable text from PostgreSQL (the English
lexemes of ``search_en``, stemmed by PostgreSQL, and the raw titles, keywords, abstracts and field
names) and the stems of the query's words; this module decides.

A query is cut into *terms*: English words (stop words dropped, each with its PostgreSQL stem) and
overlapping bigrams of its Chinese runs (選區分界 → 選區, 區分, 分界). A term matches a record at one of
four :class:`Level`\\ s: *exact* (the stem or bigram is in the title, keywords, abstract or custodian),
*field* (only in the column names or descriptions), *fuzzy* (a typo or an unfinished word: one edit
away, two for words of 8 letters or more, or the start of a longer word; never for numbers) and
*fuzzy field*. Typos and prefixes are looked for only for a term that no record holds as typed (or by
its stem), so a query of known words costs no edit distances. A term that matches no record at all is
ignored (and reported as unmatched).

A record's level is its worst level over the terms; the results are the records at the best level
any record reaches, so one layer matched exactly hides every layer matched only by a typo or only
by a column name. When no record holds every term, the results are the records holding the most
(idf-weighted) terms, flagged as *weaker*; so are fuzzy results. Scores order the results: each
term adds its idf times the weight of the best part it matched (title 1, keywords 0.8, abstract and
custodian 0.3, fields 0.2; half that for a fuzzy match), plus bonuses for the share of the title the
query covers and for query words found next to each other; ties go to real (not synthetic) layers,
then to the id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import Any

from sdi.text import CJK_CHAR, CJK_CLASS

PART_WEIGHT = {"title": 1.0, "keywords": 0.8, "abstract": 0.3, "custodian": 0.3, "fields": 0.2}
"""What a term found in each part of a record is worth (``custodian`` includes the layer id)."""
FUZZY_FACTOR = 0.5  #: a fuzzy match is worth this share of an exact one
TITLE_BONUS = 0.5  #: times the share of the title's words (or Chinese characters) the query covers
PHRASE_BONUS = 0.5  #: per pair of consecutive query words found next to each other
MIN_FUZZY_LENGTH = 4  #: shorter words (and any word with a digit) must match exactly
MAX_TERMS = 32  #: words (and Chinese bigrams) beyond this many are not searched

_WEIGHT_PART = {"A": "title", "B": "keywords", "C": "abstract", "D": "custodian"}
_WORD = re.compile(f"[^\\W_{CJK_CLASS}]+")  #: letters and digits, not Chinese (:mod:`sdi.text`)


class Level(IntEnum):
    """How well a term matches a record; a record's level is the worst over the query's terms."""

    NONE = 0
    FUZZY_FIELD = 1  #: a typo or prefix of a word found only in the column names or descriptions
    FUZZY = 2  #: a typo or prefix of a word in the title, keywords, abstract or custodian
    FIELD = 3  #: found only in the column names or descriptions
    EXACT = 4  #: found in the title, keywords, abstract or custodian


@dataclass(frozen=True)
class Term:
    """One searchable piece of a query: an English word with its stem, or a Chinese bigram (``stem`` None)."""

    text: str  #: as typed, lower case (a Chinese bigram, or a lone character)
    stem: str | None = None  #: PostgreSQL's English lexeme; ``None`` for Chinese
    run: str = ""  #: the Chinese run the bigram was cut from (reported when none of its bigrams matched)

    @property
    def chinese(self) -> bool:
        """Whether the term is a Chinese bigram."""
        return self.stem is None


def read_lexemes(entries: Iterable[Sequence[Any]]) -> dict[str, dict[str, list[int]]]:
    """``[[lexeme, positions, weights], …]`` (``unnest(tsvector)`` rows) as ``{lexeme: {part: [positions]}}``."""
    out: dict[str, dict[str, list[int]]] = {}
    for lexeme, positions, weights in entries:
        parts = out.setdefault(str(lexeme), {})
        for position, weight in zip(positions or [], weights or [], strict=False):
            parts.setdefault(_WEIGHT_PART.get(weight, "custodian"), []).append(int(position))
        if not parts:
            parts["custodian"] = []
    return out


def words(text: str | None) -> list[str]:
    """Lower-case words of ``text`` (letters and digits; ``_`` and punctuation split)."""
    return _WORD.findall((text or "").lower())


@dataclass
class Doc:
    """What ranking needs of one record.

    ``lexemes``: English stems of the title, keywords, abstract and custodian/id, with the part and
    positions each was found at; ``field_lexemes``: stems of the column names and descriptions;
    ``vocabulary``: raw words and stems with the best part each occurs in (for typos); ``chinese``:
    Chinese text by part.
    """

    id: str
    synthetic: bool = False
    lexemes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    field_lexemes: frozenset[str] = frozenset()
    vocabulary: dict[str, str] = field(default_factory=dict)
    chinese: dict[str, str] = field(default_factory=dict)
    title_lexemes: frozenset[str] = frozenset()
    raw_words: frozenset[str] = frozenset()  #: words as written (what a suggestion may offer)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Doc:
        """A doc from the row :mod:`sdi.catalogue.search` fetches (``lexemes``: ``search_en`` unnested)."""
        lexemes = read_lexemes(row.get("lexemes") or [])
        field_lexemes = frozenset(row.get("field_lexemes") or [])
        vocabulary: dict[str, str] = {}
        raw: set[str] = set()
        texts = [("title", row.get("title_en")), ("keywords", " ".join(row.get("keywords_en") or [])),
                 ("abstract", row.get("abstract_en")), ("custodian", f"{row.get('custodian') or ''} {row['id']}"),
                 ("fields", row.get("field_text"))]
        for part, text in reversed(texts):  # the best part wins: written last
            written = words(text)
            raw.update(written)
            vocabulary.update(dict.fromkeys(written, part))
        for lexeme in field_lexemes:
            vocabulary.setdefault(lexeme, "fields")
        for lexeme, parts in lexemes.items():
            best = max(parts, key=PART_WEIGHT.__getitem__)
            if PART_WEIGHT[best] >= PART_WEIGHT.get(vocabulary.get(lexeme, "fields"), 0.0):
                vocabulary[lexeme] = best
        chinese = {"title": row.get("title_zh") or "", "keywords": " ".join(row.get("keywords_zh") or []),
                   "abstract": row.get("abstract_zh") or "", "fields": row.get("field_text") or ""}
        title = frozenset(lx for lx, parts in lexemes.items() if "title" in parts)
        return cls(id=str(row["id"]), synthetic=bool(row.get("synthetic")), lexemes=lexemes,
                   field_lexemes=field_lexemes, vocabulary=vocabulary, chinese=chinese, title_lexemes=title,
                   raw_words=frozenset(raw))


@dataclass(frozen=True)
class Ranking:
    """The outcome of :func:`rank`: matching ids best first, their scores, and how the query was read."""

    ids: list[str]
    scores: dict[str, float]
    weaker: bool = False  #: no record matched every word exactly: these are the closest (typos, some words)
    suggestions: dict[str, str] = field(default_factory=dict)  #: word as typed → catalogue word it was read as
    unmatched: list[str] = field(default_factory=list)  #: query words found in no record (ignored)


def edit_distance(a: str, b: str, bound: int) -> int:
    """Optimal-string-alignment distance (a swap of neighbours is one edit), or ``bound + 1`` if more."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > bound:
            return bound + 1
        previous2, previous = previous, current
    return previous[-1]


def _fuzzy_bound(term: Term) -> int:
    """How many edits a term forgives (0: none)."""
    if term.chinese or len(term.text) < MIN_FUZZY_LENGTH or any(c.isdigit() for c in term.text):
        return 0
    return 1 if len(term.text) < 8 else 2


def _close_words(term: Term, vocabulary: Iterable[str]) -> dict[str, float]:
    """Words of the catalogue a term may be a typo or the start of, with their distance (prefixes: 0.5 + tail)."""
    bound = _fuzzy_bound(term)
    if not bound:
        return {}
    close: dict[str, float] = {}
    for word in vocabulary:
        if word == term.text or word == term.stem or any(c.isdigit() for c in word):
            continue
        distance = edit_distance(term.text, word, bound)
        if distance <= bound:
            close[word] = distance
        elif len(word) > len(term.text) and word.startswith(term.text):
            close[word] = 0.5 + (len(word) - len(term.text)) / 100
    return close


def _match(term: Term, doc: Doc, close: Mapping[str, float]) -> tuple[Level, float]:
    """The level and weight of ``term``'s best match in ``doc``."""
    if term.chinese:
        parts = [p for p, text in doc.chinese.items() if term.text in text]
    else:
        parts = list(doc.lexemes.get(term.stem or "", {}))
        if not parts and term.stem in doc.field_lexemes:
            parts = ["fields"]
    if parts:
        best = max(parts, key=PART_WEIGHT.__getitem__)
        return (Level.FIELD if best == "fields" else Level.EXACT), PART_WEIGHT[best]
    fuzzy = [doc.vocabulary[w] for w in close if w in doc.vocabulary]
    if not fuzzy:
        return Level.NONE, 0.0
    best = max(fuzzy, key=PART_WEIGHT.__getitem__)
    return (Level.FUZZY_FIELD if best == "fields" else Level.FUZZY), PART_WEIGHT[best] * FUZZY_FACTOR


def _title_share(terms: Sequence[Term], doc: Doc, close: Mapping[Term, Mapping[str, float]]) -> float:
    """The share of the title's stems, or of its Chinese characters, that the query's terms cover."""
    english = sum(1 for t in terms if not t.chinese and (
        t.stem in doc.title_lexemes or any(doc.vocabulary.get(w) == "title" for w in close[t])))
    share = min(english / len(doc.title_lexemes), 1.0) if doc.title_lexemes else 0.0
    title_zh = doc.chinese.get("title", "")
    covered: set[int] = set()
    for term in (t for t in terms if t.chinese):
        start = title_zh.find(term.text)
        while start >= 0:
            covered.update(range(start, start + len(term.text)))
            start = title_zh.find(term.text, start + 1)
    cjk = sum(1 for c in title_zh if CJK_CHAR.match(c))
    return max(share, len(covered) / cjk if cjk else 0.0)


def _phrases(terms: Sequence[Term], doc: Doc) -> int:
    """Pairs of consecutive English query words whose stems stand next to each other in the record."""
    english = [t for t in terms if not t.chinese]
    count = 0
    for first, second in pairwise(english):
        at = {p for ps in doc.lexemes.get(first.stem or "", {}).values() for p in ps}
        if any(p - 1 in at for ps in doc.lexemes.get(second.stem or "", {}).values() for p in ps):
            count += 1
    return count


def rank(terms: Sequence[Term], docs: Sequence[Doc]) -> Ranking:
    """The records among ``docs`` that match ``terms``, best first; see the module docstring for the rules."""
    firsts: dict[tuple[str, bool], Term] = {}
    for term in terms:  # one term per stem (park, parks) or bigram, in query order
        firsts.setdefault((term.stem or term.text, term.chinese), term)
    terms = list(firsts.values())[:MAX_TERMS]
    close: dict[Term, dict[str, float]] = {t: {} for t in terms}
    levels = {t: {d.id: _match(t, d, close[t]) for d in docs} for t in terms}
    inexact = [t for t in terms if _fuzzy_bound(t) and not any(level for level, _ in levels[t].values())]
    if inexact:  # typos and prefixes only for words no record holds as typed: the costly part, so rare
        vocabulary = {w for d in docs for w in d.vocabulary}
        for term in inexact:
            close[term] = _close_words(term, vocabulary)
            if close[term]:
                levels[term] = {d.id: _match(term, d, close[term]) for d in docs}
    live = [t for t in terms if any(level for level, _ in levels[t].values())]
    unmatched = [t.text for t in terms if not t.chinese and t not in live]
    unmatched += list(dict.fromkeys(t.run for t in terms if t.chinese and not any(
        u.run == t.run for u in live if u.chinese)))
    if not live:
        return Ranking(ids=[], scores={}, unmatched=unmatched)
    idf = {t: math.log(1 + len(docs) / sum(1 for level, _ in levels[t].values() if level)) for t in live}
    worst = {d.id: min(levels[t][d.id][0] for t in live) for d in docs}
    best = max(worst.values())
    if best > Level.NONE:
        chosen = [d for d in docs if worst[d.id] == best]
        weaker = best <= Level.FUZZY
    else:  # no record holds every word: the ones holding the most
        cover = {d.id: sum(idf[t] for t in live if levels[t][d.id][0]) for d in docs}
        top = max(cover.values())
        chosen = [d for d in docs if cover[d.id] >= top - 1e-9]
        weaker = True
    scores: dict[str, float] = {}
    for doc in chosen:
        score = sum(idf[t] * levels[t][doc.id][1] for t in live)
        score += TITLE_BONUS * _title_share(live, doc, close) + PHRASE_BONUS * _phrases(live, doc)
        scores[doc.id] = round(score, 6)
    chosen.sort(key=lambda d: (-scores[d.id], d.synthetic, d.id))
    suggestions: dict[str, str] = {}
    for term in live:
        fuzzy = [d for d in chosen if levels[term][d.id][0] in (Level.FUZZY, Level.FUZZY_FIELD)]
        if fuzzy and len(fuzzy) == sum(1 for d in chosen if levels[term][d.id][0]):
            found = [w for w in close[term] if any(w in d.raw_words for d in fuzzy)]
            if found:
                suggestions[term.text] = min(found, key=lambda w: (close[term][w], w))
    return Ranking(ids=[d.id for d in chosen], scores=scores, weaker=weaker, suggestions=suggestions,
                   unmatched=unmatched)
