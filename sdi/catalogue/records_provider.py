"""OGC API – Records over the catalogue: a pygeoapi ``record`` provider reading ``sdi.layer``.

Configure it in pygeoapi as a collection of ``itemType: record``::

    catalogue:
      type: collection
      itemType: record
      ...
      providers:
        - type: record
          name: sdi.catalogue.records_provider.CatalogueRecordsProvider
          data: env                 # SDI_DATABASE_URL; or a libpq URL
          languages: [en-US, zh-HK] # lang=zh-HK returns Chinese titles, descriptions and keywords

pygeoapi builds a provider per request; each query opens one short connection and closes it. Searching
reuses :mod:`sdi.catalogue.search` (English full text, Chinese bigrams, typos, bbox, custodian/theme/kind/
synthetic filters). ``datetime``, ``sortby`` and filters on other properties are applied here, over all
matches, so ``numberMatched`` and paging stay exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import psycopg
from dateutil.parser import ParserError
from dateutil.parser import parse as parse_date
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderConnectionError,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
    ProviderQueryError,
)

from sdi.access.roles import as_public
from sdi.catalogue import search as _search
from sdi.catalogue.models import CatalogueRecord, SearchResult
from sdi.catalogue.store import rebase
from sdi.db import connect
from sdi.distribution.formats import FORMATS, with_downloads
from sdi.errors import ConfigError, DatabaseUnavailableError, SdiError, ServiceBusyError, http_status
from sdi.numerals import ASCII_SPACE, decimal_integer
from sdi.settings import Settings

TOPIC_SCHEME = "https://standards.iso.org/iso/19115/resources/Codelists/cat/codelists.xml#MD_TopicCategoryCode"
RECORD_CORE = "http://www.opengis.net/spec/ogcapi-records-1/1.0/req/record-core"
_PAGE = 1000  #: page size when all matches are needed (search.search caps limit at 1000)
_UTC = dt.UTC
_MIN = dt.datetime(1, 1, 1, tzinfo=_UTC)
_MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC)

#: Queryable/sortable properties (pygeoapi ignores query parameters that are not listed here).
FIELDS: dict[str, dict[str, str]] = {
    **{name: {"type": "string"} for name in ("id", "title", "description", "custodian", "theme", "kind",
                                            "geometry_type", "q")},
    "synthetic": {"type": "boolean"}, "feature_count": {"type": "integer"},
    "updated": {"type": "string", "format": "date-time"}, "loaded_at": {"type": "string", "format": "date-time"},
}
_PUSHED_DOWN = ("custodian", "theme", "kind", "synthetic")  # filters search.search applies in SQL
_SORT_KEYS: dict[str, Callable[[CatalogueRecord, bool], Any]] = {
    "id": lambda r, zh: r.id,
    "title": lambda r, zh: r.title("zh" if zh else "en").casefold(),
    "description": lambda r, zh: (r.abstract("zh" if zh else "en") or "").casefold(),
    "custodian": lambda r, zh: r.custodian.casefold(),
    "theme": lambda r, zh: r.theme or "",
    "kind": lambda r, zh: r.kind,
    "geometry_type": lambda r, zh: r.geometry_type or "",
    "synthetic": lambda r, zh: r.synthetic,
    "feature_count": lambda r, zh: r.feature_count,
    "updated": lambda r, zh: r.loaded_at,
    "loaded_at": lambda r, zh: r.loaded_at,
}


def is_chinese(language: Any) -> bool:
    """Whether a pygeoapi language (a babel ``Locale``, a tag such as ``"zh-HK"``, or ``None``) is Chinese."""
    if language is None:
        return False
    code = getattr(language, "language", None) or str(language)
    return str(code).lower().startswith("zh")


def parse_interval(value: str) -> tuple[dt.datetime, dt.datetime]:
    """A ``datetime`` parameter (instant, ``a/b``, ``../b``, ``a/..``) as an inclusive UTC interval.

    A partial date covers its whole period: ``2010`` is all of 2010, ``2010-05`` all of May.
    """
    parts = value.split("/") if "/" in value else [value, value]
    if len(parts) != 2:
        raise ProviderInvalidQueryError(user_msg=f"datetime: expected an instant or start/end, got {value!r}")

    def bound(text: str, default: dt.datetime, open_end: dt.datetime) -> dt.datetime:
        text = text.strip()
        if text in ("", ".."):
            return open_end
        try:
            parsed = parse_date(text, default=default.replace(tzinfo=None))
        except (ParserError, ValueError, OverflowError) as exc:
            raise ProviderInvalidQueryError(user_msg=f"datetime: cannot read {text!r} as a date or time") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC)

    start, end = bound(parts[0], _MIN, _MIN), bound(parts[1], _MAX, _MAX)
    if start > end:
        raise ProviderInvalidQueryError(user_msg=f"datetime: start is after end in {value!r}")
    return start, end


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(_UTC).isoformat().replace("+00:00", "Z") if value else None


def _polygon(bbox: tuple[float, float, float, float] | None) -> dict[str, Any] | None:
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _formats(record: CatalogueRecord) -> list[dict[str, str]]:
    if record.kind == "raster":
        return [{"name": "Cloud Optimized GeoTIFF",
                 "mediaType": "image/tiff; application=geotiff; profile=cloud-optimized"}]
    return [{"name": "GeoJSON", "mediaType": "application/geo+json"},
            *({"name": f.name, "mediaType": f.media_type} for f in FORMATS.values() if f.id != "geojson")]


def _links(record: CatalogueRecord) -> list[dict[str, Any]]:
    """The record's own links, plus the downloads of a vector layer (``rel="enclosure"``, one per format) and the
    metadata exports (ISO 19139, DCAT, MCF) when not already there."""
    links = with_downloads(record.links, record.kind)
    collection = next((link["href"] for link in links if link.get("rel") == "collection"), None)
    if collection:
        base = collection.rsplit("/collections/", 1)[0]
        for suffix, media, title in ((".xml", "application/vnd.iso.19139+xml", "ISO 19139 metadata"),
                                     (".jsonld", "application/ld+json", "DCAT metadata (JSON-LD)"),
                                     (".yml", "application/x-yaml", "pygeometa MCF metadata (YAML)")):
            href = f"{base}/metadata/{record.id}{suffix}"
            if all(link.get("href") != href for link in links):
                links.append({"rel": "describedby", "type": media, "title": title, "href": href})
    return links


def to_record(record: CatalogueRecord, language: Any = None) -> dict[str, Any]:
    """A catalogue record as an OGC API – Records record (a GeoJSON Feature), in English or Chinese.

    Parameters
    ----------
    record
        The catalogue record.
    language
        ``None``/English, or Chinese (``"zh-HK"`` or a babel ``Locale``): Chinese returns the Chinese
        title, description and keywords (falling back to English where a record has none).

    Returns
    -------
    dict
        ``{"type": "Feature", "id", "geometry", "time", "conformsTo", "properties", "links"}``.
    """
    zh = is_chinese(language)
    lang = "zh" if zh else "en"
    keywords = (record.keywords_zh or record.keywords_en) if zh else record.keywords_en
    properties: dict[str, Any] = {
        "type": "dataset",
        "title": record.title(lang),
        "description": record.abstract(lang),
        "keywords": list(keywords),
        "language": {"code": "zh-HK" if zh else "en"},
        "languages": [{"code": "en"}] + ([{"code": "zh-HK"}] if record.title_zh else []),
        "resourceLanguages": [{"code": "en"}] + ([{"code": "zh-HK"}] if record.title_zh else []),
        "themes": [{"concepts": [{"id": record.theme}], "scheme": TOPIC_SCHEME}] if record.theme else [],
        "contacts": [{"organization": record.custodian, "roles": ["custodian"]}],
        "license": record.licence,
        "rights": record.attribution or record.licence,
        "formats": _formats(record),
        "created": _iso(record.loaded_at),
        "updated": _iso(record.loaded_at),
        "custodian": record.custodian,
        "theme": record.theme,
        "kind": record.kind,
        "geometry_type": record.geometry_type,
        "feature_count": record.feature_count,
        "synthetic": record.synthetic,
        "loaded_at": _iso(record.loaded_at),
        "updateFrequency": record.update_frequency,
        "extent_hk1980": {"bbox": list(record.bbox_2326), "crs": "http://www.opengis.net/def/crs/EPSG/0/2326"}
        if record.bbox_2326 else None,
    }
    time = None
    if record.temporal_start or record.temporal_end:
        time = {"interval": [_iso(record.temporal_start) or "..", _iso(record.temporal_end) or ".."]}
    return {"type": "Feature", "id": record.id, "conformsTo": [RECORD_CORE], "geometry": _polygon(record.bbox_crs84),
            "time": time, "properties": properties, "links": _links(record)}


def search_reading(result: SearchResult, language: Any = None) -> dict[str, Any] | None:
    """The records' ``search`` member (shown apart on the catalogue page): ``weaker``, ``suggestions`` and
    ``unmatched`` of :class:`SearchResult`, and its ``notice`` in the request's language; ``None`` when the
    query was read as written."""
    if not (result.weaker or result.suggestions or result.unmatched):
        return None
    return {"weaker": result.weaker, "suggestions": dict(result.suggestions), "unmatched": list(result.unmatched),
            "notice": result.notice("zh-HK" if is_chinese(language) else "en")}


def _sort_key(name: str, zh: bool) -> Callable[[CatalogueRecord], Any]:
    key = _SORT_KEYS[name]
    return lambda record: key(record, zh)


@contextmanager
def _provider_errors() -> Iterator[None]:
    """Turn HK SDI errors into pygeoapi provider errors (status from :func:`sdi.errors.http_status`)."""
    try:
        yield
    except (DatabaseUnavailableError, ServiceBusyError) as exc:
        err = ProviderConnectionError(user_msg="catalogue database is unavailable")
        err.http_status_code = HTTPStatus(http_status(exc))
        raise err from exc
    except ConfigError as exc:
        raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
    except (SdiError, psycopg.Error) as exc:
        raise ProviderQueryError(user_msg="catalogue query failed") from exc


class CatalogueRecordsProvider(BaseProvider):
    """pygeoapi ``record`` provider over the HK SDI catalogue (``sdi.layer``).

    Parameters
    ----------
    provider_def
        pygeoapi provider definition: ``data`` is a libpq URL or ``"env"`` (use ``SDI_DATABASE_URL``);
        ``languages`` (e.g. ``[en-US, zh-HK]``) lets pygeoapi pass the requested language.
    """

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        self.runtime = provider_def.get("runtime")  #: the web worker's runtime (its pool), when served by sdi
        self.base_url = str(provider_def.get("base_url") or "")  #: links to the API's own paths go under it
        self.id_field = provider_def.get("id_field") or "id"
        self.title_field = provider_def.get("title_field") or "title"
        self.time_field = provider_def.get("time_field") or "updated"
        self._fields = {name: dict(schema) for name, schema in FIELDS.items()}

    def get_fields(self) -> dict[str, dict[str, str]]:
        """Queryable properties and their JSON Schema types."""
        return self._fields

    def _settings(self) -> Settings:
        data = str(self.data or "env")
        # Built per request (pygeoapi builds a provider per request), never at import.
        return Settings() if data == "env" else Settings(database_url=data)

    @contextmanager
    def _connection(self) -> Iterator[_search.Fetch]:
        """What runs the catalogue's SQL: the web worker's pool when served by sdi, else a connection of its own."""
        if self.runtime is not None:
            with _provider_errors():
                yield self.runtime.fetcher()
            return
        with _provider_errors():
            conn = connect(self._settings())
            as_public(conn)  # pygeoapi serving a snapshot knows no identities: public records only
        try:
            with _provider_errors():
                yield _search.fetcher(conn)
        finally:
            conn.close()

    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results",
              bbox: list[float] | None = None, datetime_: str | None = None,
              properties: list[tuple[str, Any]] | None = None, sortby: list[dict[str, str]] | None = None,
              select_properties: list[str] | None = None, skip_geometry: bool = False, q: str | None = None,
              language: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Search the catalogue; returns a GeoJSON FeatureCollection with ``numberMatched``/``numberReturned``.

        Parameters
        ----------
        offset, limit
            Paging.
        resulttype
            ``"results"`` or ``"hits"`` (count only).
        bbox
            ``[minx, miny, maxx, maxy]`` in CRS84: records whose extent intersects it.
        datetime_
            Instant or interval (``a/b``, ``../b``, ``a/..``): records whose temporal extent intersects it.
        properties
            ``[(name, value)]`` equality filters on :data:`FIELDS` (custodian, theme, kind, synthetic, ...).
        sortby
            ``[{"property": name, "order": "+"|"-"}]``; default is relevance (with ``q``), then id.
        select_properties, skip_geometry
            Properties to keep, and whether to drop geometries.
        q
            Free text, English and/or Chinese.
        language
            Requested language (from pygeoapi's ``lang``): Chinese returns Chinese titles and keywords.
        """
        offset, limit = max(int(offset or 0), 0), max(int(limit or 0), 0)
        filters = self._filters(properties or [])
        pushed = {k: v for k, v in filters.items() if k in _PUSHED_DOWN}
        rest = {k: v for k, v in filters.items() if k not in _PUSHED_DOWN}
        with _provider_errors():
            box = _search.parse_bbox(list(bbox), what="bbox") if bbox else None
        interval = parse_interval(datetime_) if datetime_ else None
        for sort in sortby or []:
            if sort.get("property") not in _SORT_KEYS:
                raise ProviderInvalidQueryError(user_msg=f"sortby: cannot sort by {sort.get('property')!r}")
        with self._connection() as conn:
            if not (rest or interval or sortby):  # one page straight from SQL
                result = _search.search(conn, q=q, bbox=box, limit=min(max(limit, 1), 1000),
                                        offset=offset, **pushed)
                matched, page = result.matched, (result.records[:limit] if resulttype != "hits" else [])
            else:
                records, result = self._all(conn, q, box, pushed)
                records = [r for r in records if self._keep(r, rest, interval)]
                zh = is_chinese(language)
                for sort in reversed(sortby or []):  # stable sorts, last key first
                    records.sort(key=_sort_key(sort["property"], zh), reverse=sort.get("order") == "-")
                matched, page = len(records), records[offset:offset + limit] if resulttype != "hits" else []
        features = [self._feature(self._rebased(r), language, select_properties or [], skip_geometry) for r in page]
        reading = search_reading(result, language) if q else None  # "search": how q was read, when not as typed
        return {"type": "FeatureCollection", "features": features, "numberMatched": matched,
                "numberReturned": len(features), **({"search": reading} if reading else {})}

    def get(self, identifier: str, language: Any = None, **kwargs: Any) -> dict[str, Any]:
        """One record by layer id; :class:`ProviderItemNotFoundError` when there is none."""
        with self._connection() as conn:
            record = _search.get(conn, str(identifier))
        if record is None:
            raise ProviderItemNotFoundError(user_msg=f"no catalogue record {identifier!r}")
        return to_record(self._rebased(record), language)

    def _rebased(self, record: CatalogueRecord) -> CatalogueRecord:
        """``record`` with its links to the API under the server's base URL (when known)."""
        if not self.base_url:
            return record
        return record.model_copy(update={"links": [{**link, "href": rebase(link.get("href", ""), self.base_url)}
                                                   for link in record.links]})

    def _filters(self, properties: list[tuple[str, Any]]) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        for name, value in properties:
            if name not in self._fields or name == "q":
                raise ProviderInvalidQueryError(user_msg=f"{name}: not a queryable property of the catalogue")
            if self._fields[name]["type"] == "boolean":
                text = str(value).strip().lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ProviderInvalidQueryError(user_msg=f"{name}: expected true or false, got {value!r}")
                value = text in ("true", "1", "yes")
            elif self._fields[name]["type"] == "integer":
                number = decimal_integer(str(value).strip(ASCII_SPACE), signed=True)
                if number is None:
                    raise ProviderInvalidQueryError(user_msg=f"{name}: expected an integer, got {value!r}")
                value = number
            filters[name] = value
        return filters

    @staticmethod
    def _all(conn: _search.Fetch, q: str | None, box: tuple[float, float, float, float] | None,
             pushed: dict[str, Any]) -> tuple[list[CatalogueRecord], SearchResult]:
        records: list[CatalogueRecord] = []
        while True:
            result = _search.search(conn, q=q, bbox=box, limit=_PAGE, offset=len(records), **pushed)
            records.extend(result.records)
            if not result.records or len(records) >= result.matched:
                return records, result  # how the query was read: the same on every page

    @staticmethod
    def _keep(record: CatalogueRecord, filters: dict[str, Any],
              interval: tuple[dt.datetime, dt.datetime] | None) -> bool:
        if interval is not None:
            if record.temporal_start is None and record.temporal_end is None:
                return False
            start, end = record.temporal_start or _MIN, record.temporal_end or _MAX
            if start > interval[1] or end < interval[0]:
                return False
        for name, wanted in filters.items():
            if name in ("title", "description"):
                values: list[Any] = ([record.title_en, record.title_zh] if name == "title"
                                     else [record.abstract_en, record.abstract_zh])
            else:
                value = _SORT_KEYS[name](record, False)
                values = [_iso(value)] if isinstance(value, dt.datetime) else [value]
            if not any(v.casefold() == str(wanted).casefold() if isinstance(v, str) else v == wanted
                       for v in values):
                return False
        return True

    @staticmethod
    def _feature(record: CatalogueRecord, language: Any, select: list[str], skip_geometry: bool) -> dict[str, Any]:
        feature = to_record(record, language)
        if skip_geometry:
            feature["geometry"] = None
        if select:
            feature["properties"] = {k: v for k, v in feature["properties"].items() if k in select}
        return feature
