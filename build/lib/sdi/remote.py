"""``sdi.remote.connect(url)``: the analyst client over a running ``sdi serve`` (see :mod:`sdi.client.remote`)."""

from __future__ import annotations

from sdi.client.remote import RemoteCatalogue, RemoteClient, RemoteUnavailableError, connect

__all__ = ["RemoteCatalogue", "RemoteClient", "RemoteUnavailableError", "connect"]
