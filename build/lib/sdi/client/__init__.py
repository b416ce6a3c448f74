"""Clients for analysts: the same ``catalogue`` / ``layers`` / ``read`` over a local database or a remote SDI.

``sdi.connect(url)`` reads PostGIS (:mod:`sdi.client.local`); ``sdi.remote.connect(url)`` reads a running
``sdi serve`` over OGC API – Features and Records (:mod:`sdi.client.remote`). Both return equal GeoDataFrames.
"""

from __future__ import annotations

from sdi.client.base import Client, LayerInfo, Layers

__all__ = ["Client", "LayerInfo", "Layers"]
