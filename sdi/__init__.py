"""HK SDI: a Spatial Data Infrastructure for Hong Kong government geodata (PostGIS, EPSG:2326)."""

from sdi.errors import SdiError
from sdi.settings import Settings

__version__ = "0.1.0"

__all__ = ["SdiError", "Settings", "__version__"]
