"""HK SDI: a Spatial Data Infrastructure for Hong Kong government geodata (PostGIS, EPSG:2326).

``sdi.connect()`` opens the local SDI database for analysis (imported on first use, so ``import sdi`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdi.errors import SdiError
from sdi.settings import Settings

if TYPE_CHECKING:
    from sdi.client.local import LocalClient

__version__ = "0.1.0"

__all__ = ["SdiError", "Settings", "__version__", "connect"]


def connect(url: str | None = None, *, settings: Settings | None = None) -> LocalClient:
    """Connect to an SDI PostGIS database; see :func:`sdi.client.local.connect`.

    Parameters
    ----------
    url
        libpq URL; ``None`` uses ``Settings().database_url`` (``SDI_DATABASE_URL``, default ``postgresql:///sdi``).
    settings
        Settings to use instead of reading the environment.

    Returns
    -------
    sdi.client.local.LocalClient
        A handle with ``.catalogue``, ``.layers`` and ``.read(...)``.
    """
    from sdi.client.local import connect as _connect

    return _connect(url, settings=settings)


_LAZY_MODULES = ("remote", "maps", "planning", "catalogue")  #: ``sdi.remote.connect(...)`` without an import line


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:  # imported on first use, so ``import sdi`` stays light
        import importlib

        return importlib.import_module(f"sdi.{name}")
    raise AttributeError(f"module 'sdi' has no attribute {name!r}")
