"""Harvesting: fetch a layer's ``source.url`` into a scratch folder, for the normal loader to read.

One function, :func:`fetch`, turns a URL source into one local file, which :func:`loaders.load` then reads,
normalises and writes exactly as it does a file named by ``source.path``:

- ``service: file`` (:mod:`loaders.fetch.files`): the file or zip itself, by conditional GET;
- ``service: ogcapi`` (:mod:`loaders.fetch.ogcapi`): every page of an OGC API – Features collection → GeoJSON;
- ``service: wfs`` (:mod:`loaders.fetch.wfs`): every page of a WFS 2.0 feature type → GML or GeoJSON;
- ``service: arcgis`` (:mod:`loaders.fetch.arcgis`): every page of an ArcGIS REST layer's ``query`` → Esri JSON.

All requests of one fetch share one :class:`~loaders.fetch.http.Client` (timeouts, retries with back-off, the
byte cap). Nothing here touches the database.
"""

from __future__ import annotations

from pathlib import Path

from loaders.fetch.http import Client, FetchError, Validators, shown_url
from loaders.fetch.result import Fetched
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

__all__ = ["FetchError", "Fetched", "Validators", "fetch", "shown_url"]


def fetch(definition: LayerDefinition, settings: Settings, folder: Path,
          previous: Validators | None = None) -> Fetched | None:
    """Fetch the definition's ``source.url`` into ``folder``.

    Parameters
    ----------
    definition
        A layer whose source is a URL.
    settings
        The ``SDI_FETCH_*`` settings.
    folder
        An empty scratch folder; the fetched file is written here.
    previous
        Validators (``ETag``, ``Last-Modified``) of the fetch whose data is live, for a conditional GET
        (``service: file`` only).

    Returns
    -------
    Fetched or None
        The local file and what was fetched; ``None`` when the server says the file is not modified (``304``).

    Raises
    ------
    FetchError
        The source could not be fetched (unreachable, timed out, HTTP error, too large, malformed answer, paging
        that does not add up).
    """
    url = definition.source.url
    if url is None:
        raise FetchError(f"{definition.label}: source is a file (source.path), not a URL")
    service = definition.source.service
    with Client(settings, definition.label) as client:
        if service == "file":
            from loaders.fetch.files import fetch_file

            return fetch_file(definition, client, folder, previous)
        if service == "ogcapi":
            from loaders.fetch.ogcapi import fetch_collection

            return fetch_collection(definition, client, folder)
        if service == "wfs":
            from loaders.fetch.wfs import fetch_feature_type

            return fetch_feature_type(definition, client, folder)
        from loaders.fetch.arcgis import fetch_layer

        return fetch_layer(definition, client, folder)
