"""Where the web assets shipped inside the package are: templates, static files and the default server metadata.

They are package data (``importlib.resources``), so a non-editable install serves the same pages as a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_ROOT = Path(str(resources.files("sdi.web")))
TEMPLATES_DIR = _ROOT / "templates"  #: sdi's copies of pygeoapi templates, looked up before pygeoapi's own
STATIC_DIR = _ROOT / "static"  #: served at ``/static``: css, images, vendored Leaflet, Bootstrap, Swagger UI...


def default_base() -> Path:
    """The packaged ``base.yml``: server, metadata and processes when no ``SDI_SERVER_CONFIG`` is given."""
    return _ROOT / "base.yml"
