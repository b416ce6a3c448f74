"""Writing catalogue records: called inside each load's transaction, after the layer row is upserted."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
import shapely

from sdi.access.groups import access_groups
from sdi.crs import HK_GRID, reprojection
from sdi.layerdef import LayerDefinition
from sdi.text import has_cjk


def split_keywords(keywords: list[str]) -> tuple[list[str], list[str]]:
    """Split keywords into (English, Chinese) by script: any CJK ideograph makes a keyword Chinese."""
    en = [k for k in keywords if not has_cjk(k)]
    zh = [k for k in keywords if has_cjk(k)]
    return en, zh


def extent_crs84(bounds: tuple[float, float, float, float] | None) -> str | None:
    """WKT of an EPSG:2326 bounding box as a longitude/latitude box (edges densified, EPSG:1825)."""
    if bounds is None:
        return None
    transformer = reprojection(HK_GRID, 4326).transformer
    assert transformer is not None
    x0, y0, x1, y1 = bounds
    pad = 0.5 if x1 - x0 == 0 or y1 - y0 == 0 else 0.0  # a single point's extent is a 1 m box
    box = shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    ring = shapely.segmentize(box, max(x1 - x0, y1 - y0, 1.0) / 16)
    coords = shapely.get_coordinates(ring)
    lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
    return shapely.box(float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))).wkt


def links(definition: LayerDefinition, public_url: str | None, kind: str) -> list[dict[str, str]]:
    """Links of a record: the OGC API collection, its data, and the metadata exports.

    Root-relative (``/collections/<id>``) unless ``SDI_PUBLIC_URL`` is set; the server writes them under each
    request's base URL.
    """
    base = (public_url or "").rstrip("/")
    out = [
        {"rel": "collection", "type": "application/json", "title": definition.title.en,
         "href": f"{base}/collections/{definition.id}"},
        {"rel": "describedby", "type": "application/vnd.iso.19139+xml", "title": "ISO 19139 metadata",
         "href": f"{base}/metadata/{definition.id}.xml"},
        {"rel": "describedby", "type": "application/ld+json", "title": "DCAT metadata (JSON-LD)",
         "href": f"{base}/metadata/{definition.id}.jsonld"},
    ]
    if kind == "vector":
        out.insert(1, {"rel": "items", "type": "application/geo+json", "title": "Features (GeoJSON)",
                       "href": f"{base}/collections/{definition.id}/items?f=json"})
    else:
        out.insert(1, {"rel": "enclosure", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "title": "Coverage (Cloud Optimized GeoTIFF)",
                       "href": f"{base}/collections/{definition.id}/coverage?f=GTiff"})
    return out


def temporal_extent(conn: psycopg.Connection, table: str, date_columns: list[str]) -> tuple[Any, Any]:
    """(earliest, latest) over a loaded table's date and timestamp columns, or (None, None).

    Dates and ``timestamp without time zone`` values are read as UTC (as the API's ``datetime`` reads them), so
    the extent does not depend on the session's ``TimeZone``.
    """
    if not date_columns:
        return None, None
    types: dict[str, str] = dict(conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid = %s::regclass"
        " and attname = any(%s) and not attisdropped",
        (psycopg.sql.Identifier("layers", table).as_string(conn), date_columns)).fetchall())

    def utc(fn: str, column: str) -> psycopg.sql.Composable:
        agg = psycopg.sql.SQL(fn + "({})").format(psycopg.sql.Identifier(column))
        if str(types.get(column, "")).startswith("timestamp with time zone"):
            return agg
        return psycopg.sql.SQL("timezone('UTC', {}::timestamp)").format(agg)

    mins = psycopg.sql.SQL(", ").join(utc("min", c) for c in date_columns)
    maxs = psycopg.sql.SQL(", ").join(utc("max", c) for c in date_columns)
    query = psycopg.sql.SQL("select least({}), greatest({}) from layers.{}").format(
        mins, maxs, psycopg.sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return (row[0], row[1]) if row else (None, None)


def rebase(href: str, base: str) -> str:
    """A stored link to one of the API's own paths (``/collections/...``, ``/metadata/...``) under ``base``.

    Records keep the links written at load time: root-relative, or absolute with the ``SDI_PUBLIC_URL`` of
    that time. Other links (licences, departments' pages) are left alone.
    """
    if href.startswith("/"):
        return base.rstrip("/") + href
    if href.startswith(("http://", "https://")):
        for marker in ("/collections/", "/metadata/"):
            if marker in href:
                return base.rstrip("/") + marker + href.split(marker, 1)[1]
    return href


def refresh_record(conn: psycopg.Connection, definition: LayerDefinition, *, kind: str, public_url: str | None,
                   bounds: tuple[float, float, float, float] | None, lineage: dict[str, Any],
                   temporal: tuple[Any, Any] = (None, None)) -> None:
    """Fill the catalogue columns of ``sdi.layer`` for a layer just written (same transaction)."""
    en, zh = split_keywords(definition.keywords)
    conn.execute(
        "update sdi.layer set keywords_en = %(en)s, keywords_zh = %(zh)s, theme = %(theme)s,"
        " attribution = %(attr)s, update_frequency = %(freq)s,"
        " extent_crs84 = st_geomfromtext(%(crs84)s, 4326), temporal_start = %(t0)s, temporal_end = %(t1)s,"
        " lineage = %(lineage)s::jsonb, links = %(links)s::jsonb, access_groups = %(access)s where id = %(id)s",
        {"en": en, "zh": zh, "theme": definition.theme, "attr": definition.attribution or definition.licence,
         "freq": definition.update_frequency, "crs84": extent_crs84(bounds), "t0": temporal[0], "t1": temporal[1],
         "lineage": json.dumps(lineage, ensure_ascii=False, default=str),
         "links": json.dumps(links(definition, public_url, kind), ensure_ascii=False), "id": definition.id,
         "access": None if (groups := access_groups(definition.access)) is None else list(groups)},
    )
