"""Downloads of every vector layer: GeoPackage, zipped Shapefile, CSV with WKT, GeoJSON and GeoParquet.

* :mod:`~sdi.distribution.formats` — the formats (id, media type, extension, title) and the ``rel="enclosure"``
  links that announce them.
* :mod:`~sdi.distribution.source` — a layer read from PostGIS in keyset pages, each checked against its load id.
* :mod:`~sdi.distribution.writers` — one writer per format, and :func:`export_layer` (``sdi export``).
* :mod:`~sdi.distribution.shapefile` — the zipped Shapefile: short field names, cut text, families, size.
* :mod:`~sdi.distribution.cache` — each (layer, load, format) made once under ``SDI_DATA_DIR/downloads``, with its
  size and SHA-256 (the API's ``/collections/{id}/download/{format}``).

>>> from sdi.distribution import export_layer
>>> export_layer(Settings(), "districts_18", "gpkg", Path("districts_18.gpkg"))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from sdi.distribution.formats import FORMATS, Format, download_links, get_format

__all__ = ["FORMATS", "Download", "DownloadCache", "Format", "Written", "download_links", "export_layer",
           "get_format"]
_LAZY = {"Download": "cache", "DownloadCache": "cache", "Written": "writers", "export_layer": "writers"}


def __getattr__(name: str) -> Any:
    """The writers and the cache, imported on first use (the catalogue needs only the formats and links)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sdi.distribution.{_LAZY[name]}"), name)
    raise AttributeError(name)
