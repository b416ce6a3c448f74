"""A running ``sdi serve`` as an SDI client: OGC API – Records for the catalogue, OGC API – Features for reads.

>>> from sdi import remote
>>> api = remote.connect("http://127.0.0.1:5000")          # doctest: +SKIP
>>> api.read("districts_18", where="name_en = 'EASTERN'")  # doctest: +SKIP

Reads follow the ``next`` links page by page (``limit`` per page) with ``bbox`` + ``bbox-crs``, ``crs``
(OGC API – Features Part 2 URIs), ``properties`` and the ``filter`` text passed through (the server reads
CQL2 text or ECQL when no ``filter-lang`` is sent).
The server writes coordinates in the axis order of the requested CRS (EPSG:2326 northing first, EPSG:4326
latitude first); the client puts them back in x/y order. The server rounds coordinates to about 1 cm
(2 decimals in metres, 7 in degrees); attributes, dtypes, column order and index equal those of
:func:`sdi.connect`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from sdi.catalogue.models import CatalogueRecord, SearchResult
from sdi.client.base import (
    DEFAULT_CRS,
    Client,
    LayerInfo,
    Layers,
    check_bbox,
    check_columns,
    check_limit,
    output_epsg,
    progress_bar,
    typed_frame,
)
from sdi.errors import AuthenticationError, ConfigError, LayerNotFoundError, SdiError

if TYPE_CHECKING:
    import geopandas as gpd

CATALOGUE_ID = "catalogue"  #: the OGC API – Records collection of ``sdi serve``
PAGE_SIZE = 1000  #: features per request (the server's ``limits.max_items``)
TIMEOUT_S = 60
_ACCEPT = "application/geo+json, application/json;q=0.9"


class RemoteUnavailableError(SdiError, ConnectionError):
    """The API cannot be reached, or answered with a server error or something that is not JSON."""


def crs_uri(epsg: int) -> str:
    """The OGC CRS URI of an EPSG code (``http://www.opengis.net/def/crs/EPSG/0/<code>``)."""
    return f"http://www.opengis.net/def/crs/EPSG/0/{epsg}"


def _north_first(epsg: int) -> bool:
    from pyproj import CRS

    info = CRS.from_epsg(epsg).axis_info
    return bool(info) and info[0].direction.lower() in ("north", "south")


class _Http:
    """A ``requests`` session that turns HTTP errors into one-line SDI errors."""

    def __init__(self, base_url: str, timeout: float, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = _ACCEPT
        if token:
            self.session.headers["Authorization"] = f"Bearer {token.strip()}"

    def get(self, path_or_url: str, params: dict[str, Any] | None = None, *, layer: str | None = None) -> Any:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RemoteUnavailableError(f"{self.base_url} is unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("description") or response.reason)
            except ValueError:
                detail = response.reason or "no detail"
            detail = " ".join(detail.split())
            if response.status_code == 401:
                raise AuthenticationError(f"{self.base_url} refused the credentials: {detail}")
            if response.status_code == 404 and layer is not None:
                raise LayerNotFoundError(f"layer: no layer {layer!r} at {self.base_url} ({detail})")
            if response.status_code < 500:
                raise ConfigError(f"{response.url.split('?')[0]}: HTTP {response.status_code}: {detail}")
            raise RemoteUnavailableError(f"{response.url.split('?')[0]}: HTTP {response.status_code}: {detail}")
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteUnavailableError(f"{response.url.split('?')[0]}: the answer is not JSON") from exc


def _datetime(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text and text != ".." else None


def to_catalogue_record(en: dict[str, Any], zh: dict[str, Any] | None) -> CatalogueRecord:
    """A :class:`CatalogueRecord` from the English and (optional) Chinese OGC API – Records record of a layer."""
    p, pz = en["properties"], (zh or {}).get("properties", {})
    has_zh = {"code": "zh-HK"} in (p.get("languages") or [])
    ring = ((en.get("geometry") or {}).get("coordinates") or [[]])[0]
    bbox = (min(c[0] for c in ring), min(c[1] for c in ring), max(c[0] for c in ring), max(c[1] for c in ring)) \
        if ring else None
    interval = ((en.get("time") or {}).get("interval") or [None, None])
    extent = p.get("extent_hk1980") or {}
    zh_abstract = pz.get("description")
    return CatalogueRecord(
        id=str(en["id"]), kind=p.get("kind") or "vector", title_en=p["title"],
        title_zh=pz.get("title") if has_zh else None, abstract_en=p.get("description"),
        abstract_zh=zh_abstract if zh_abstract != p.get("description") else None,
        keywords_en=list(p.get("keywords") or []),
        keywords_zh=list(pz.get("keywords") or []) if pz.get("keywords") != p.get("keywords") else [],
        custodian=p.get("custodian") or "", licence=p.get("license") or "",
        attribution=p.get("rights"), theme=p.get("theme"),
        update_frequency=p.get("updateFrequency") or "notPlanned", geometry_type=p.get("geometry_type"),
        feature_count=int(p.get("feature_count") or 0), bbox_crs84=bbox,
        bbox_2326=tuple(extent["bbox"]) if extent.get("bbox") else None,
        temporal_start=_datetime(interval[0]), temporal_end=_datetime(interval[1]),
        synthetic=bool(p.get("synthetic")), loaded_at=_datetime(p.get("loaded_at")) or dt.datetime.now(dt.UTC),
        links=[{k: str(v) for k, v in link.items()} for link in en.get("links") or []])


class RemoteCatalogue:
    """The catalogue of a remote SDI, searched through its ``catalogue`` Records collection."""

    def __init__(self, http: _Http) -> None:
        self._http = http

    def _features(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page: Any = self._http.get(f"/collections/{CATALOGUE_ID}/items", {**params, "limit": PAGE_SIZE})
        while True:
            out.extend(page.get("features") or [])
            link = next((ln["href"] for ln in page.get("links") or [] if ln.get("rel") == "next"), None)
            if not link or not page.get("features"):
                return out
            page = self._http.get(link)

    def search(self, q: str | None = None, bbox: str | Sequence[float] | None = None, custodian: str | None = None,
               theme: str | None = None, lang: str | None = None, limit: int = 10, offset: int = 0,
               kind: str | None = None, synthetic: bool | None = None) -> SearchResult:
        """Find layers, best match first; the same parameters and result as :meth:`sdi.catalogue.Catalogue.search`.

        All matches are fetched (in English and in Chinese) to count the facets; records carry no ``score``.
        """
        from sdi.catalogue.search import parse_bbox

        if limit < 1 or limit > 1000:
            raise ConfigError(f"limit: must be between 1 and 1000, got {limit}")
        if offset < 0:
            raise ConfigError(f"offset: must be 0 or more, got {offset}")
        params: dict[str, Any] = {"f": "json"}
        if q and q.strip():
            params["q"] = q.strip()
        if bbox is not None:
            params["bbox"] = ",".join(repr(v) for v in parse_bbox(bbox))  # type: ignore[arg-type]
        for name, value in (("custodian", custodian), ("theme", theme), ("kind", kind)):
            if value is not None:
                params[name] = value
        if synthetic is not None:
            params["synthetic"] = "true" if synthetic else "false"
        english = self._features({**params, "lang": "en"})
        chinese = {str(f["id"]): f for f in self._features({**params, "lang": "zh-HK"})}
        records = [to_catalogue_record(f, chinese.get(str(f["id"]))) for f in english]
        facets: dict[str, dict[str, int]] = {"custodian": {}, "theme": {}}
        for record in records:
            facets["custodian"][record.custodian] = facets["custodian"].get(record.custodian, 0) + 1
            theme_key = record.theme or "unspecified"
            facets["theme"][theme_key] = facets["theme"].get(theme_key, 0) + 1
        return SearchResult(records=records[offset:offset + limit], matched=len(records), facets=facets)

    def get(self, record_id: str) -> CatalogueRecord:
        """One record by layer id; :class:`LayerNotFoundError` when there is none."""
        path = f"/collections/{CATALOGUE_ID}/items/{quote(record_id, safe='')}"
        en = self._http.get(path, {"f": "json", "lang": "en"}, layer=record_id)
        zh = self._http.get(path, {"f": "json", "lang": "zh-HK"}, layer=record_id)
        return to_catalogue_record(en, zh)


class RemoteClient(Client):
    """An SDI behind OGC API – Features and Records (use :func:`sdi.remote.connect`).

    Parameters
    ----------
    url
        Base URL of the API (the landing page), e.g. ``"http://127.0.0.1:5000"``.
    page_size
        Features per request (at most the server's limit, 1000 for ``sdi serve``).
    timeout
        Seconds to wait for each answer.
    token
        An API key or an OpenID Connect access token, sent as ``Authorization: Bearer``: the layers of its groups
        are read too.
    """

    def __init__(self, url: str, *, page_size: int = PAGE_SIZE, timeout: float = TIMEOUT_S,
                 token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.page_size = page_size
        self._http = _Http(self.url, timeout, token)
        self.catalogue = RemoteCatalogue(self._http)

    def __repr__(self) -> str:
        return f"<sdi.remote.connect {self.url}>"

    @property
    def layers(self) -> Layers:
        """The published layers (``/collections``), described by their catalogue records."""
        collections = self._http.get("/collections", {"f": "json"}).get("collections") or []
        published = {str(c["id"]) for c in collections if c.get("id") != CATALOGUE_ID}
        records = self.catalogue.search(limit=1000).records
        return Layers([LayerInfo.from_record(r) for r in records if r.id in published])

    def _schema(self, layer: str) -> dict[str, dict[str, str]]:
        """The layer's properties and their JSON Schema (from ``/queryables``), geometry excluded, in table order."""
        path = f"/collections/{quote(layer, safe='')}"
        # OGC API – Common: only item collections have an itemType; a coverage (raster) collection has none
        item_type = self._http.get(path, {"f": "json"}, layer=layer).get("itemType") or "coverage (raster)"
        if item_type != "feature":
            raise ConfigError(f"layer: {layer!r} is a {item_type} collection; read() reads vector layers")
        doc = self._http.get(f"{path}/queryables", {"f": "json"}, layer=layer)
        return {name: spec for name, spec in (doc.get("properties") or {}).items()
                if not str(spec.get("format", "")).startswith("geometry") and "$ref" not in spec}

    def read(self, layer: str, bbox: Sequence[float] | None = None, where: str | None = None,
             columns: Sequence[str] | None = None, crs: str | int = DEFAULT_CRS, limit: int | None = None,
             *, progress: bool | None = None) -> gpd.GeoDataFrame:
        """Read features of ``layer`` from ``/collections/{layer}/items``; see :meth:`sdi.client.base.Client.read`.

        Raises
        ------
        LayerNotFoundError
            When the API has no collection ``layer``.
        ConfigError, CrsError
            For a malformed ``bbox``, unknown ``columns``, an unknown ``crs`` or a request the server refuses
            (HTTP 4xx, with the server's message).
        RemoteUnavailableError
            When the API is unreachable or fails.
        """
        import shapely

        box, limit, epsg = check_bbox(bbox), check_limit(limit), output_epsg(crs)
        schema = self._schema(layer)
        names = check_columns(columns, schema, layer)
        flip = _north_first(epsg)
        params: dict[str, Any] = {"f": "json", "crs": crs_uri(epsg), "limit": min(self.page_size, limit or 2**31)}
        if box is not None:
            params["bbox"] = ",".join(repr(v) for v in ((box[1], box[0], box[3], box[2]) if flip else box))
            params["bbox-crs"] = crs_uri(epsg)
        if where is not None and where.strip():
            params["filter"] = where
        if columns is not None and names:
            params["properties"] = ",".join(names)
        rows: list[list[Any]] = []
        geometries: list[Any] = []
        for feature in self._features(layer, params, limit, progress):
            props = feature.get("properties") or {}
            rows.append([props.get(n) for n in names])
            geometries.append(feature.get("geometry"))
        shapes = shapely.from_geojson([_json(g) for g in geometries]) if geometries else []
        if flip and len(shapes):
            shapes = shapely.transform(shapes, lambda xy: xy[:, ::-1])
        return typed_frame(rows, names, schema, shapes, epsg)

    def _features(self, layer: str, params: dict[str, Any], limit: int | None,
                  progress: bool | None) -> Iterator[dict[str, Any]]:
        path = f"/collections/{quote(layer, safe='')}/items"
        page: Any = self._http.get(path, params, layer=layer)
        total = int(page.get("numberMatched", len(page.get("features") or [])))
        total = min(total, limit) if limit else total
        seen = 0
        with progress_bar(total, self.page_size, progress, layer) as bar:
            while True:
                features = page.get("features") or []
                yield from features[: total - seen]
                step = min(len(features), total - seen)
                seen += step
                bar.update(step)
                link = next((ln["href"] for ln in page.get("links") or [] if ln.get("rel") == "next"), None)
                if seen >= total or not features or not link:
                    return
                page = self._http.get(link, layer=layer)


def _json(geometry: dict[str, Any] | None) -> str | None:
    import json

    return json.dumps(geometry) if geometry else None


def connect(url: str, *, page_size: int = PAGE_SIZE, timeout: float = TIMEOUT_S,
            token: str | None = None) -> RemoteClient:
    """Connect to a running HK SDI API (``sdi serve``).

    Parameters
    ----------
    url
        Base URL of the API, e.g. ``"https://sdi.example.gov.hk"`` or ``"http://127.0.0.1:5000"``.
    page_size
        Features per request while reading (at most the server's limit).
    timeout
        Seconds to wait for each answer.
    token
        An API key (``sdi keys create``) or an OpenID Connect access token: restricted layers of its groups are
        listed and read too. Without it, public layers only.

    Returns
    -------
    RemoteClient
        A handle with ``.catalogue``, ``.layers`` and ``.read(...)``, like :func:`sdi.connect`.

    Raises
    ------
    RemoteUnavailableError
        When the API does not answer its conformance page.
    AuthenticationError
        When the API refuses ``token`` (unknown, revoked or expired).
    """
    client = RemoteClient(url, page_size=page_size, timeout=timeout, token=token)
    conformance = client._http.get("/conformance", {"f": "json"})
    if "conformsTo" not in conformance:
        raise RemoteUnavailableError(f"{client.url}/conformance: not an OGC API landing (no conformsTo)")
    return client
