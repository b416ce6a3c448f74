"""Metadata export: a catalogue record as a pygeometa MCF, ISO 19139 XML or DCAT JSON-LD.

The record is first described as a pygeometa Metadata Control File (MCF) with English as the metadata
language and Chinese as the alternate (``title: {en: ..., zh: ...}``); pygeometa's own output schemas
then render ISO 19139 (``gmd:PT_FreeText`` for the Chinese) and DCAT.

pygeometa's DCAT writer (0.19) only knows English and French language tags and keeps MCF sections it
does not map as opaque objects, so :func:`to_dcat` completes its JSON-LD: titles, abstracts and keywords
become JSON-LD language maps (``{"en": ..., "zh": ...}`` with ``@container: @language``) and the
distribution sections become a list of ``dcat:Distribution``. A vector layer's downloads (one per format of
:mod:`sdi.distribution.formats`, under its collection's URL) are distributions too: ISO 19139 online resources with
the ``WWW:DOWNLOAD-1.0-http--download`` protocol and the format's media type, DCAT distributions with
``dcat:downloadURL``, ``dcat:mediaType`` and ``dct:format``.

>>> from sdi.catalogue.export import export
>>> xml = export(record, "iso19139")   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import yaml
from pygeometa.schemas.dcat import DCATOutputSchema
from pygeometa.schemas.iso19139 import ISO19139OutputSchema

from sdi.catalogue.models import CatalogueRecord
from sdi.crs import HK_LONLAT_BOUNDS
from sdi.distribution.formats import format_of_href, with_downloads
from sdi.errors import ConfigError

FORMATS = ("iso19139", "dcat", "mcf")
#: ISO 19115 MD_GeometricObjectTypeCode for each PostGIS geometry type family.
_GEOMTYPE = {"point": "point", "linestring": "curve", "polygon": "surface"}
_LINK_TYPE = {"items": "OGCFeat", "collection": "OGCFeat", "enclosure": "WWW:DOWNLOAD-1.0-http--download"}
_LINK_FUNCTION = {"items": "download", "enclosure": "download", "collection": "information"}


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _i18n(en: str | None, zh: str | None) -> str | dict[str, str]:
    """An MCF i18n string: ``{en, zh}`` when there is Chinese, else the English string."""
    return {"en": en or "", "zh": zh} if zh else (en or "")


def _geomtype(geometry_type: str | None) -> str:
    family = (geometry_type or "").lower().removeprefix("multi")
    return _GEOMTYPE.get(family, "complex")


def lineage_statement(record: CatalogueRecord) -> str:
    """One paragraph of lineage from ``record.lineage``: source file and SHA-256, CRS, repairs and drops."""
    lin = record.lineage
    parts = []
    if lin.get("source_file"):
        parts.append(f"Loaded from {lin['source_file']}" + (f" (SHA-256 {lin['source_sha256']})"
                                                            if lin.get("source_sha256") else "") + ".")
    if lin.get("source_crs"):
        how = f", {lin['crs_origin']}" if lin.get("crs_origin") else ""
        via = f", transformed with {lin['transformation']}" if lin.get("transformation") else ""
        parts.append(f"Source CRS {lin['source_crs']}{how}{via}; stored in EPSG:2326 (Hong Kong 1980 Grid).")
    if lin.get("encoding"):
        parts.append(f"Text encoding {lin['encoding']}.")
    if lin.get("features_read") is not None:
        parts.append(f"{lin['features_read']} features read, {lin.get('features_written', record.feature_count)} "
                     "written.")
    for key, verb in (("repaired", "Repaired"), ("dropped", "Dropped")):
        counts = {k: v for k, v in (lin.get(key) or {}).items() if v}
        if counts:
            parts.append(f"{verb}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()) + ".")
    if lin.get("loader_version"):
        parts.append(f"HK SDI loader {lin['loader_version']}, load {lin.get('load_id', '?')} "
                     f"at {lin.get('loaded_at') or _iso(record.loaded_at)}.")
    if record.synthetic:
        parts.append("Synthetic data, not an official dataset.")
    return " ".join(parts) or "Loaded by HK SDI."


def _contact(record: CatalogueRecord) -> dict[str, Any]:
    return {"organization": record.custodian, "url": "", "individualname": "", "positionname": "",
            "phone": "", "fax": "", "address": "", "city": "Hong Kong", "administrativearea": "",
            "postalcode": "", "country": "Hong Kong", "email": ""}


def _distribution(record: CatalogueRecord) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, link in enumerate(with_downloads(record.links, record.kind)):
        rel = link.get("rel", "related")
        key = rel if rel not in out else f"{rel}_{i}"
        out[key] = {"url": link.get("href", ""), "type": _LINK_TYPE.get(rel, "WWW:LINK"), "rel": rel,
                    "name": link.get("title") or rel, "description": link.get("title") or rel,
                    "function": _LINK_FUNCTION.get(rel, "information"), "format": link.get("type", "")}
    return out


def to_mcf(record: CatalogueRecord) -> dict[str, Any]:
    """Describe a catalogue record as a pygeometa MCF dict (MCF 1.0, English with Chinese alternate).

    Parameters
    ----------
    record
        The catalogue record.

    Returns
    -------
    dict
        The MCF: ``mcf``, ``metadata``, ``spatial``, ``identification`` (bilingual title, abstract and
        keywords, topic category, CRS84 and EPSG:2326 extents, temporal extent, dates, licence, rights),
        ``contact`` (the custodian), ``distribution`` (the record's links) and ``dataquality`` (lineage).
    """
    collection = next((link["href"] for link in record.links if link.get("rel") == "collection"), None)
    extents: dict[str, Any] = {"spatial": []}
    if record.bbox_2326:  # first: pygeometa names the first extent's CRS as the reference system
        extents["spatial"].append({"bbox": [round(v, 3) for v in record.bbox_2326], "crs": 2326,
                                   "description": "Hong Kong 1980 Grid (EPSG:2326)"})
    if record.bbox_crs84:
        extents["spatial"].append({"bbox": [round(v, 7) for v in record.bbox_crs84], "crs": 4326})
    if not extents["spatial"]:  # no geometry (an empty layer): pygeometa needs an extent, so say Hong Kong
        extents["spatial"].append({"bbox": list(HK_LONLAT_BOUNDS), "crs": 4326, "description": "Hong Kong"})
    if record.temporal_start or record.temporal_end:
        start, end = record.temporal_start or record.temporal_end, record.temporal_end or record.temporal_start
        extents["temporal"] = [{"begin": _iso(start), "end": _iso(end)}]
    keywords: dict[str, Any] = {}
    if record.keywords_en:
        keywords["theme_en"] = {"keywords_type": "theme", "keywords": list(record.keywords_en)}
    if record.keywords_zh:
        keywords["theme_zh"] = {"keywords_type": "theme", "keywords": list(record.keywords_zh)}
    loaded = _iso(record.loaded_at)
    metadata: dict[str, Any] = {"identifier": record.id, "language": "en", "charset": "utf8",
                                "hierarchylevel": "dataset", "datestamp": loaded,
                                "dataseturi": collection or f"urn:hk-sdi:layer:{record.id}"}
    if record.title_zh or record.abstract_zh:
        metadata["language_alternate"] = "zh"
    rights = record.attribution or record.licence
    return {
        "mcf": {"version": 1.0},
        "metadata": metadata,
        "spatial": {"datatype": "grid" if record.kind == "raster" else "vector",
                    "geomtype": _geomtype(record.geometry_type)},
        "identification": {
            "language": "en",
            "charset": "utf8",
            "title": _i18n(record.title_en, record.title_zh),
            "abstract": _i18n(record.abstract_en, record.abstract_zh),
            "dates": {"revision": loaded},
            "keywords": keywords,
            "topiccategory": [record.theme] if record.theme else [],
            "extents": extents,
            "fees": "None",
            "accessconstraints": "otherRestrictions",
            "rights": rights,
            "license": {"name": record.licence, "url": ""},
            "url": collection or "",
            "status": "completed",
            "maintenancefrequency": record.update_frequency,
        },
        "contact": {"custodian": _contact(record), "pointOfContact": _contact(record)},
        "distribution": _distribution(record),
        "dataquality": {"scope": {"level": "dataset"}, "lineage": {"statement": lineage_statement(record)}},
    }


def to_iso19139(record: CatalogueRecord) -> str:
    """ISO 19139 XML (``gmd:MD_Metadata``) rendered by pygeometa from :func:`to_mcf`."""
    return str(ISO19139OutputSchema().write(to_mcf(record)))


def to_dcat(record: CatalogueRecord) -> dict[str, Any]:
    """DCAT JSON-LD (a ``dcat:Dataset``) rendered by pygeometa from :func:`to_mcf`, with language maps."""
    mcf = to_mcf(record)
    dcat: dict[str, Any] = DCATOutputSchema().write(copy.deepcopy(mcf), stringify=False)
    context = dcat["@context"]
    for term, iri in (("title", "dct:title"), ("abstract", "dct:description"), ("keywords", "dct:keyword")):
        context[term] = {"@id": iri, "@container": "@language"}
    dcat["title"] = {"en": record.title_en, **({"zh": record.title_zh} if record.title_zh else {})}
    if record.abstract_en or record.abstract_zh:
        dcat["abstract"] = {k: v for k, v in (("en", record.abstract_en), ("zh", record.abstract_zh)) if v}
    for unused in ("keywords_en", "keywords_fr"):  # pygeometa's per-language lists, unused here
        if not dcat.get(unused):
            dcat.pop(unused, None)
    dcat["keywords"] = {k: v for k, v in (("en", record.keywords_en), ("zh", record.keywords_zh)) if v}
    dcat["distribution"] = [_dcat_distribution(section) for section in mcf["distribution"].values()]
    context.update({"downloadURL": {"@id": "dcat:downloadURL", "@type": "@id"}, "format": "dct:format"})
    dcat["modified"] = mcf["identification"]["dates"]["revision"]
    dcat["@id"] = mcf["metadata"]["dataseturi"]
    dcat.pop("dataseturi", None)
    return dcat


def _dcat_distribution(section: dict[str, Any]) -> dict[str, Any]:
    """An MCF distribution section as a ``dcat:Distribution``; a download also gets ``downloadURL``, its media type
    as ``type`` (``dcat:mediaType``) and its format's name as ``format`` (``dct:format``)."""
    out = {**section, "@type": "dcat:Distribution"}
    fmt = format_of_href(str(section.get("url", ""))) if section.get("rel") == "enclosure" else None
    if fmt is not None:
        out.update(downloadURL=section["url"], type=fmt.media_type, format=fmt.name)
    return out


def export(record: CatalogueRecord, fmt: str) -> str:
    """A record's metadata as text: ``"iso19139"`` (XML), ``"dcat"`` (JSON-LD) or ``"mcf"`` (YAML).

    Raises
    ------
    ConfigError
        When ``fmt`` is not one of :data:`FORMATS`.
    """
    fmt = (fmt or "").strip().lower()
    if fmt == "iso19139":
        return to_iso19139(record)
    if fmt == "dcat":
        return json.dumps(to_dcat(record), ensure_ascii=False, indent=2)
    if fmt == "mcf":
        return yaml.safe_dump(to_mcf(record), allow_unicode=True, sort_keys=False)
    raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
