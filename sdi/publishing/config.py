"""The pygeoapi configuration and OpenAPI document of HK SDI, generated from the catalogue.

The packaged ``sdi/web/base.yml`` or a copy of it (hand-edited: server, logging, metadata) plus one collection
per loaded
layer (vector: OGC API – Features and Tiles; raster: Coverages) and the ``catalogue`` records
collection become ``pygeoapi-config.yml``; pygeoapi's generator then writes ``pygeoapi-openapi.yml``.
Output is deterministic: collections are sorted by id and nothing depends on the clock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdi.catalogue import Catalogue
from sdi.catalogue.models import CatalogueRecord
from sdi.crs import CRS84_URI, SERVED_CRS, STORAGE_CRS_URI
from sdi.db import connect
from sdi.errors import ConfigError, SdiError
from sdi.publishing.basemap import PRESETS, resolve_base_map
from sdi.publishing.jobs import manager_config
from sdi.publishing.metadata_check import check_server_metadata
from sdi.publishing.tiles import coverage_provider, tile_provider
from sdi.settings import PROJECT_ROOT, Settings
from sdi.web.assets import default_base, package_templates

CONFIG_DIR = PROJECT_ROOT / "pygeoapi_config"  #: default output folder of `sdi publish` in a checkout
DEFAULT_PUBLIC_URL = "http://127.0.0.1:5000"
BASE_FILE = "base.yml"
CONFIG_FILE = "pygeoapi-config.yml"
OPENAPI_FILE = "pygeoapi-openapi.yml"

CRS84 = CRS84_URI
STORAGE_CRS = STORAGE_CRS_URI
#: Output CRSs of every feature collection, CRS84 (the GeoJSON default) first.
CRS_LIST = list(SERVED_CRS)
FEATURE_PROVIDER = "sdi.publishing.features.SdiFeatureProvider"
RECORDS_PROVIDER = "sdi.catalogue.records_provider.CatalogueRecordsProvider"
CATALOGUE_ID = "catalogue"
LANGUAGES = ["en-US", "zh-HK"]
HK_BBOX = [113.8, 22.1, 114.5, 22.6]  #: extent of the catalogue when nothing is loaded
_URL = re.compile(r"https?://[^\s;,)]+")


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote: the two files and the ids of the collections (processes not included)."""

    config: Path
    openapi: Path
    collections: list[str]


def read_base(path: Path, basemap: str | None = None) -> dict[str, Any]:
    """Read the hand-edited base configuration: ``server.map`` resolved (:func:`resolve_base_map`), or replaced
    by the preset ``basemap`` (``SDI_BASEMAP``) when given, and the metadata checked for placeholders
    (:func:`check_server_metadata`); :class:`ConfigError` when missing, not a mapping, or either check fails."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the pygeoapi base configuration: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("server"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'server' section")
    check_server_metadata(doc, str(path))
    if basemap is not None:
        if not basemap.strip() or basemap.strip().lower() not in PRESETS:
            raise ConfigError(f"SDI_BASEMAP: {basemap!r} is no base map preset; use one of {sorted(PRESETS)} (or a "
                              f"server.map block with url and attribution in {path})")
        return {**doc, "server": resolve_base_map({**doc["server"], "map": basemap}, "SDI_BASEMAP")}
    return {**doc, "server": resolve_base_map(doc["server"], str(path))}


def resolve_templates(base: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """``base`` with ``server.templates.path`` / ``.static`` made absolute, relative ones read from ``base_dir``.

    pygeoapi resolves them against the server's working directory, which is not the configuration's folder.
    """
    templates = base["server"].get("templates")
    if not isinstance(templates, dict):
        return base
    resolved = {k: str((base_dir / v).resolve()) if k in ("path", "static") and isinstance(v, str) and v else v
                for k, v in templates.items()}
    return {**base, "server": {**base["server"], "templates": resolved}}


def primary_keys(settings: Settings) -> dict[str, str]:
    """Primary-key column of each loaded vector layer, by layer id."""
    with connect(settings) as conn:
        rows = conn.execute("select id, primary_key from sdi.layer where primary_key is not null").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _bilingual(en: str | None, zh: str | None) -> dict[str, str]:
    return {"en": en or "", "zh": zh or en or ""}


def collection_description(record: CatalogueRecord) -> dict[str, str]:
    en, zh = record.abstract_en or record.title_en, record.abstract_zh or record.title_zh or ""
    if record.synthetic:
        if "synthetic" not in en.lower():
            en = f"{en.rstrip()} (synthetic data)".strip()
        if "合成" not in zh:
            zh = f"{zh.rstrip()}（合成數據）"
    return _bilingual(en, zh)


def _licence_link(record: CatalogueRecord, public_url: str) -> dict[str, str]:
    """A ``license`` link: a URL quoted in the licence or attribution, else the layer's catalogue record."""
    found = _URL.search(f"{record.licence} {record.attribution or ''}")
    href = found.group(0) if found else f"{public_url}/collections/{CATALOGUE_ID}/items/{record.id}"
    return {"type": "text/html", "rel": "license", "title": f"Licence: {record.licence}", "href": href}


def collection_links(record: CatalogueRecord, public_url: str) -> list[dict[str, str]]:
    links = [_licence_link(record, public_url)]
    for link in record.links:
        if link.get("rel") == "describedby" and link.get("href"):
            href = link["href"]
            if "/metadata/" in href:  # served by this API: the publish-time URL, not the load-time one
                href = f"{public_url.rstrip('/')}/metadata/{href.rsplit('/metadata/', 1)[1]}"
            links.append({"type": link.get("type", "application/octet-stream"), "rel": "describedby",
                          "title": link.get("title", "metadata"), "href": href})
    return links


def _extents(bbox: Sequence[float] | None, record: CatalogueRecord | None = None) -> dict[str, Any]:
    extents: dict[str, Any] = {"spatial": {"bbox": [float(v) for v in (bbox or HK_BBOX)], "crs": CRS84}}
    if record is not None and (record.temporal_start or record.temporal_end):
        extents["temporal"] = {"begin": record.temporal_start, "end": record.temporal_end}
    return extents


def collection(record: CatalogueRecord, settings: Settings, public_url: str,
               primary_key: str | None) -> dict[str, Any] | None:
    """The pygeoapi resource of one layer, or ``None`` when it cannot be published.

    Parameters
    ----------
    record
        The layer's catalogue record.
    settings
        Settings (passed to the tile and coverage block builders).
    public_url
        Base URL of the API, for links.
    primary_key
        The layer table's primary-key column (vector layers).

    Returns
    -------
    dict or None
        A ``type: collection`` resource; ``None`` for a raster without a coverage block or a vector layer
        without a primary key.
    """
    providers: list[dict[str, Any]] = []
    if record.kind == "raster":
        coverage = coverage_provider(record, settings)
        if coverage is None:
            return None
        providers.append(coverage)
    else:
        if not primary_key:
            return None
        providers.append({"type": "feature", "name": FEATURE_PROVIDER, "data": "env", "table": record.id,
                          "id_field": primary_key, "geom_field": "geom", "storage_crs": STORAGE_CRS,
                          "crs": list(CRS_LIST)})
        tiles = tile_provider(record, settings)
        if tiles is not None:
            providers.append(tiles)
    keywords = {k: v for k, v in (("en", record.keywords_en), ("zh", record.keywords_zh or record.keywords_en))
                if v}
    resource: dict[str, Any] = {
        "type": "collection",
        "title": _bilingual(record.title_en, record.title_zh),
        "description": collection_description(record),
        "keywords": keywords or {"en": [record.id]},
        "links": collection_links(record, public_url),
        "extents": _extents(record.bbox_crs84, record),
        "providers": providers,
    }
    if record.kind != "raster":
        resource["crs"] = list(CRS_LIST)
        resource["storage_crs"] = STORAGE_CRS
    return resource


def catalogue_collection(records: Sequence[CatalogueRecord]) -> dict[str, Any]:
    """The ``catalogue`` OGC API – Records collection; its extent covers every record's."""
    boxes = [r.bbox_crs84 for r in records if r.bbox_crs84]
    bbox = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
             max(b[3] for b in boxes)] if boxes else HK_BBOX)
    return {
        "type": "collection",
        "itemType": "record",
        "title": {"en": "HK SDI catalogue", "zh": "香港空間數據基礎設施目錄"},
        "description": {"en": "Metadata records of every layer loaded into HK SDI, searchable in English and Chinese",
                        "zh": "所有已載入香港空間數據基礎設施的圖層的元數據記錄，可以中英文搜尋"},
        "keywords": {"en": ["catalogue", "metadata", "Hong Kong"], "zh": ["目錄", "元數據", "香港"]},
        "links": [],
        "extents": _extents(bbox),
        "providers": [{"type": "record", "name": RECORDS_PROVIDER, "data": "env", "languages": list(LANGUAGES)}],
    }


def build_config(base: dict[str, Any], records: Sequence[CatalogueRecord], settings: Settings, public_url: str,
                 keys: dict[str, str]) -> dict[str, Any]:
    """The whole pygeoapi configuration: ``base`` with server URL, languages, process manager and resources.

    The process manager keeps jobs in ``sdi.jobs`` of the served database (:func:`manager_config`) unless
    ``base`` names one; processes (``type: process`` resources) come from ``base``.
    """
    public_url = public_url.rstrip("/")
    config = {k: v for k, v in base.items() if k != "resources"}
    server = dict(config["server"])
    server["url"] = public_url
    server["languages"] = list(server.get("languages") or LANGUAGES)
    server["manager"] = dict(server.get("manager") or manager_config(settings))
    config["server"] = server
    resources: dict[str, Any] = {CATALOGUE_ID: catalogue_collection(records)}
    for record in sorted(records, key=lambda r: r.id):
        if record.id == CATALOGUE_ID:
            raise ConfigError(f"layer id {CATALOGUE_ID!r} clashes with the catalogue collection")
        resource = collection(record, settings, public_url, keys.get(record.id))
        if resource is not None:
            resources[record.id] = resource
    extra = {k: v for k, v in dict(base.get("resources") or {}).items() if k not in resources}
    config["resources"] = {**resources, **extra}  # collections first, then the base's processes
    return config


@contextmanager
def _database_env(url: str) -> Iterator[None]:
    """Point providers built in this process (``data: env``) at ``url`` for the duration."""
    old = os.environ.get("SDI_DATABASE_URL")
    os.environ["SDI_DATABASE_URL"] = url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SDI_DATABASE_URL", None)
        else:
            os.environ["SDI_DATABASE_URL"] = old


def write_openapi(config_path: Path, openapi_path: Path, database_url: str) -> None:
    """Generate the OpenAPI document of ``config_path`` with pygeoapi (providers read ``database_url``)."""
    from pygeoapi.openapi import generate_openapi_document

    try:
        with _database_env(database_url):
            text = generate_openapi_document(config_path, "yaml", fail_on_invalid_collection=True)
    except SdiError:
        raise
    except Exception as exc:  # pygeoapi raises bare exceptions for broken collections
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{config_path}: cannot generate the OpenAPI document: {detail}") from exc
    openapi_path.write_text(text, encoding="utf-8")


def publish(settings: Settings, output_dir: Path | None = None, public_url: str | None = None,
            base_file: Path | None = None, basemap: str | None = None) -> Published:
    """Write ``pygeoapi-config.yml`` and ``pygeoapi-openapi.yml`` from the catalogue.

    Parameters
    ----------
    settings
        Settings naming the database (read with the caller's role).
    output_dir
        Folder for the two files (default ``pygeoapi_config/``).
    public_url
        Base URL of the API (default ``SDI_PUBLIC_URL``, else :data:`DEFAULT_PUBLIC_URL`).
    base_file
        The hand-edited server metadata (default ``<output_dir>/base.yml`` when it exists, else the packaged
        ``sdi/web/base.yml``).
    basemap
        A base map preset (``SDI_BASEMAP``) in place of the base configuration's ``server.map``.

    Returns
    -------
    Published
        The paths written and the collection ids.
    """
    out = Path(output_dir or CONFIG_DIR)
    base_path = base_file or (out / BASE_FILE if (out / BASE_FILE).is_file() else default_base())
    base = resolve_templates(read_base(base_path, basemap), base_path.parent)
    base["server"]["templates"] = package_templates(base["server"].get("templates"))
    # a snapshot is served by pygeoapi, which knows no identities: restricted layers are left out
    records = [r for r in Catalogue(settings).search(limit=1000).records if r.access_groups is None]
    config = build_config(base, records, settings, public_url or settings.public_url or DEFAULT_PUBLIC_URL,
                          primary_keys(settings))
    out.mkdir(parents=True, exist_ok=True)
    config_path, openapi_path = out / CONFIG_FILE, out / OPENAPI_FILE
    header = f"# Generated by `sdi publish` from {base_path.name} and the catalogue; do not edit.\n"
    body = yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=120, default_flow_style=False)
    tmp = config_path.with_suffix(".yml.tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(config_path)
    write_openapi(config_path, openapi_path, settings.database_url)
    return Published(config_path, openapi_path,
                     [k for k, v in config["resources"].items() if v.get("type") == "collection"])
