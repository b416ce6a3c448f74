"""The geo-catalogue: bilingual search over every loaded layer.

Records live in ``sdi.layer`` and are written in the same transaction as each load, so the
catalogue always agrees with what is loaded.

>>> from sdi import Settings
>>> from sdi.catalogue import Catalogue
>>> cat = Catalogue(Settings())          # doctest: +SKIP
>>> cat.search("district boundaries")    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from sdi.catalogue import search as _search
from sdi.catalogue.models import CatalogueRecord, SearchResult
from sdi.db import connect
from sdi.errors import LayerNotFoundError
from sdi.settings import Settings

__all__ = ["Catalogue", "CatalogueRecord", "SearchResult"]


class Catalogue:
    """Search and read catalogue records.

    Parameters
    ----------
    settings
        Settings naming the database (``SDI_DATABASE_URL``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def search(self, q: str | None = None, bbox: str | Sequence[float] | None = None, custodian: str | None = None,
               theme: str | None = None, lang: str | None = None, limit: int = 10, offset: int = 0,
               kind: str | None = None, synthetic: bool | None = None) -> SearchResult:
        """Find layers, best match first.

        Parameters
        ----------
        q
            Free text in English and/or Chinese: English is stemmed ("zones" finds "zoning") and
            forgives a typo; Chinese matches by character bigrams ("選區" finds 選區分界).
        bbox
            ``minx,miny,maxx,maxy`` in longitude/latitude (CRS84): layers whose extent intersects it.
        custodian, theme
            Exact (case-insensitive) custodian department or ISO 19115 topic category.
        lang
            ``"en"`` or ``"zh-HK"``: which language :meth:`CatalogueRecord.title` returns by default
            in displays; the search itself always covers both languages.
        limit, offset
            Paging (limit 1–1000).
        kind, synthetic
            Only ``"vector"`` or ``"raster"`` layers; only (or no) synthetic layers.

        Returns
        -------
        SearchResult
            Records (with ``score``), the number matched, and facet counts by custodian and theme.
        """
        box = _search.parse_bbox(bbox) if bbox is not None else None  # type: ignore[arg-type]
        with connect(self.settings) as conn:
            return _search.search(conn, q=q, bbox=box, custodian=custodian, theme=theme, kind=kind,
                                  synthetic=synthetic, limit=limit, offset=offset)

    def get(self, record_id: str) -> CatalogueRecord:
        """One record by layer id; :class:`LayerNotFoundError` when there is none."""
        with connect(self.settings) as conn:
            record = _search.get(conn, record_id)
        if record is None:
            raise LayerNotFoundError(f"no catalogue record {record_id!r}")
        return record
