"""The download formats of a vector layer, and the links that announce them.

Every vector layer is offered in each of :data:`FORMATS`; the API serves them at
``/collections/<id>/download/<format>`` (:func:`download_href`), and the collection document, its HTML page, the
catalogue record and the ISO 19139/DCAT exports link them with :func:`download_links` (``rel="enclosure"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdi.errors import ConfigError


@dataclass(frozen=True)
class Format:
    """One download format.

    Attributes
    ----------
    id
        The name in URLs and on the command line (``gpkg``, ``shp``, ``csv``, ``geojson``, ``parquet``).
    media_type
        The ``Content-Type`` it is served with (and the ``type`` of its links).
    extension
        The file name extension (``zip`` for the zipped Shapefile).
    title
        What links call it (format, CRS).
    name
        The format's name in metadata (DCAT ``dct:format``, ISO ``gmd:MD_Format``).
    """

    id: str
    media_type: str
    extension: str
    title: str
    name: str

    def filename(self, layer_id: str) -> str:
        """The file a download of ``layer_id`` is saved as: ``<layer>.<extension>``."""
        return f"{layer_id}.{self.extension}"


FORMATS: dict[str, Format] = {f.id: f for f in (
    Format("gpkg", "application/geopackage+sqlite3", "gpkg", "GeoPackage (EPSG:2326)", "GeoPackage"),
    Format("shp", "application/zip", "zip",
           "Shapefile, zipped (EPSG:2326; UTF-8 .dbf with .cpg; fields.csv maps the 10-byte field names)",
           "ESRI Shapefile"),
    Format("csv", "text/csv; charset=utf-8", "csv", "CSV, UTF-8 with BOM, geometry as WKT in EPSG:2326 (wkt)", "CSV"),
    Format("geojson", "application/geo+json", "geojson", "GeoJSON (RFC 7946, longitude/latitude)", "GeoJSON"),
    Format("parquet", "application/vnd.apache.parquet", "parquet", "GeoParquet (EPSG:2326)", "GeoParquet"),
)}


def get_format(name: str, what: str = "format") -> Format:
    """The format called ``name`` (any case).

    Raises
    ------
    ConfigError
        When there is none; the message lists the formats.
    """
    found = FORMATS.get((name or "").strip().lower())
    if found is None:
        raise ConfigError(f"{what}: expected one of {', '.join(FORMATS)}, got {name[:40]!r}")
    return found


def download_href(collection_href: str, fmt: Format) -> str:
    """The URL of ``fmt``'s download of the collection at ``collection_href``."""
    return f"{collection_href.rstrip('/')}/download/{fmt.id}"


def download_links(collection_href: str, lengths: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One ``rel="enclosure"`` link per format for the collection at ``collection_href``.

    Parameters
    ----------
    collection_href
        The collection's URL (absolute, or root-relative as catalogue records store it).
    lengths
        Format id → file size in bytes, for the files already made (their links get ``length``).
    """
    links: list[dict[str, Any]] = []
    for fmt in FORMATS.values():
        link: dict[str, Any] = {"rel": "enclosure", "type": fmt.media_type, "title": f"Download: {fmt.title}",
                                "href": download_href(collection_href, fmt)}
        if lengths and fmt.id in lengths:
            link["length"] = int(lengths[fmt.id])
        links.append(link)
    return links


def with_downloads(links: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """A catalogue record's ``links`` plus, for a vector layer (``kind``) with a ``collection`` link, one download
    link per format under that link's URL (those not already there)."""
    out = [dict(link) for link in links]
    collection = next((link["href"] for link in out if link.get("rel") == "collection"), None)
    if collection and kind == "vector":
        hrefs = {link.get("href") for link in out}
        out += [link for link in download_links(collection) if link["href"] not in hrefs]
    return out


def format_of_href(href: str) -> Format | None:
    """The format a download URL (from :func:`download_href`) names, else ``None``."""
    head, _, name = href.rstrip("/").rpartition("/")
    return FORMATS.get(name) if head.endswith("/download") else None
