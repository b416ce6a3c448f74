"""Typed catalogue records and search results, with readable HTML for Jupyter."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from sdi.maps import MapView


class CatalogueRecord(BaseModel):
    """One layer's catalogue record (what ``sdi.layer`` holds about it)."""

    id: str
    kind: str = "vector"
    title_en: str
    title_zh: str | None = None
    abstract_en: str | None = None
    abstract_zh: str | None = None
    keywords_en: list[str] = Field(default_factory=list)
    keywords_zh: list[str] = Field(default_factory=list)
    custodian: str
    licence: str
    attribution: str | None = None
    theme: str | None = None
    update_frequency: str = "notPlanned"
    geometry_type: str | None = None
    feature_count: int
    bbox_crs84: tuple[float, float, float, float] | None = None
    bbox_2326: tuple[float, float, float, float] | None = None
    temporal_start: dt.datetime | None = None
    temporal_end: dt.datetime | None = None
    fields: list[dict[str, Any]] = Field(default_factory=list)
    lineage: dict[str, Any] = Field(default_factory=dict)
    links: list[dict[str, str]] = Field(default_factory=list)
    synthetic: bool = False
    access_groups: tuple[str, ...] | None = None  #: ``None``: public; else the groups that may read it
    loaded_at: dt.datetime
    score: float | None = None

    def title(self, lang: str | None = None) -> str:
        """The title in ``lang`` ("zh", "zh-HK" or "en"), falling back to English."""
        return (self.title_zh or self.title_en) if (lang or "").startswith("zh") else self.title_en

    def abstract(self, lang: str | None = None) -> str | None:
        """The abstract in ``lang``, falling back to English."""
        return (self.abstract_zh or self.abstract_en) if (lang or "").startswith("zh") else self.abstract_en

    def _repr_html_(self) -> str:
        e = html.escape
        flag = ' <span style="color:#b45309">[synthetic]</span>' if self.synthetic else ""
        zh = f"<div>{e(self.title_zh)}</div>" if self.title_zh else ""
        bbox = ", ".join(f"{v:.4f}" for v in self.bbox_crs84) if self.bbox_crs84 else "–"
        return (f"<div style='margin:4px 0'><b>{e(self.title_en)}</b>{flag}{zh}"
                f"<div style='color:#555'>{e(self.id)} · {e(self.custodian)} · {e(self.geometry_type or self.kind)}"
                f" · {self.feature_count:,} features · bbox {bbox}</div>"
                f"<div>{e(self.abstract_en or '')}</div></div>")


class SearchResult(BaseModel):
    """Records matching a search, best first, with facet counts over all matches (not just this page).

    ``weaker`` is true when no record matched the query as written: the records are then the closest
    ones (read through a typo correction, listed in ``suggestions``, or holding only some of the
    words), to be shown apart, as "did you mean"; :meth:`notice` says so in words. ``unmatched`` lists
    the query's words that no record holds (they were ignored).
    """

    records: list[CatalogueRecord]
    matched: int
    facets: dict[str, dict[str, int]]
    weaker: bool = False
    suggestions: dict[str, str] = Field(default_factory=dict)
    unmatched: list[str] = Field(default_factory=list)

    def notice(self, lang: str | None = None) -> str | None:
        """One line on how the query was read (typos, ignored words, closest matches), or ``None``.

        Parameters
        ----------
        lang
            ``"en"`` (default) or ``"zh-HK"``.
        """
        zh = (lang or "").startswith("zh")
        said: list[str] = []
        if self.suggestions:
            pairs = ", ".join(f"{typed} → {word}" for typed, word in self.suggestions.items())
            said.append(f"你是否要找：{pairs}" if zh else f"did you mean: {pairs}")
        if self.unmatched:
            words = ", ".join(self.unmatched)
            said.append(f"沒有圖層含有：{words}" if zh else f"no layer mentions: {words}")
        if self.weaker and self.records and not self.suggestions:
            said.append("沒有圖層符合所有字詞，以下為最接近的結果" if zh
                        else "no layer matches every word; showing the closest")
        elif self.weaker and self.records:
            said.append("以下為最接近的結果" if zh else "showing the closest matches")
        return ("；" if zh else "; ").join(said) or None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CatalogueRecord]:  # type: ignore[override]  # records, not fields
        return iter(self.records)

    def __getitem__(self, index: int) -> CatalogueRecord:
        return self.records[index]

    def ids(self) -> list[str]:
        """Record ids in rank order."""
        return [r.id for r in self.records]

    def explore(self, **kwargs: Any) -> MapView:
        """An offline map of the records' extents (CRS84 boxes), coloured by layer; see :func:`sdi.maps.explore`."""
        import geopandas as gpd
        from shapely.geometry import box

        from sdi.maps import explore

        boxed = [r for r in self.records if r.bbox_crs84]
        frame = gpd.GeoDataFrame(
            {"id": [r.id for r in boxed], "title_en": [r.title_en for r in boxed],
             "title_zh": [r.title_zh for r in boxed], "custodian": [r.custodian for r in boxed],
             "features": [r.feature_count for r in boxed], "synthetic": [r.synthetic for r in boxed]},
            geometry=[box(*r.bbox_crs84) for r in boxed if r.bbox_crs84], crs="EPSG:4326")
        kwargs.setdefault("title", f"{self.matched} matching layer(s) / 個相符圖層")
        kwargs.setdefault("tooltip", "title_en")
        return explore(frame, column="id", **kwargs)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{i + 1}</td><td><b>{e(r.title_en)}</b>{' [synthetic]' if r.synthetic else ''}<br>"
            f"{e(r.title_zh or '')}</td><td>{e(r.custodian)}</td><td>{e(r.theme or '')}</td>"
            f"<td style='text-align:right'>{r.feature_count:,}</td><td><code>{e(r.id)}</code></td></tr>"
            for i, r in enumerate(self.records))
        facets = " · ".join(f"{e(k)}: " + ", ".join(f"{e(v)} ({n})" for v, n in counts.items())
                            for k, counts in self.facets.items())
        note = self.notice()
        notice = f"<div style='color:#b45309'>{e(note)}</div>" if note else ""
        return (f"<div><b>{self.matched} matching layer(s)</b>{notice}<div style='color:#555'>{facets}</div>"
                f"<table><tr><th>#</th><th>title / 標題</th><th>custodian</th><th>theme</th><th>features</th>"
                f"<th>id</th></tr>{rows}</table></div>")
