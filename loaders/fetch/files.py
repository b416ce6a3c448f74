"""``service: file``: a file or zip over HTTP(S), fetched by conditional GET.

The body is streamed to the scratch folder under a name whose suffix tells the loader the format: the URL's last
path segment when it has a known suffix, else the ``Content-Disposition`` file name, else one from the
``Content-Type`` or the first bytes (a zip, JSON). A shapefile needs its ``.shx``/``.dbf``/``.prj``: serve it zipped.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from loaders.fetch.http import Client, Validators
from loaders.fetch.result import Fetched
from loaders.formats import RASTER_SUFFIXES
from loaders.formats import SUFFIXES as OTHER_SUFFIXES
from loaders.tables import SPREADSHEET_SUFFIXES, TABLE_SUFFIXES
from sdi.layerdef import LayerDefinition

#: Suffixes the loader reads from a single file.
KNOWN_SUFFIXES = frozenset({".geojson", ".json", ".gpkg", ".fgb", ".gml", ".sqlite", ".shp", ".esrijson"}
                           | OTHER_SUFFIXES | TABLE_SUFFIXES | SPREADSHEET_SUFFIXES | RASTER_SUFFIXES)
#: Content types (without parameters) and the suffix a body of that type is saved with.
CONTENT_TYPES = {
    "application/zip": ".zip", "application/x-zip-compressed": ".zip", "application/geo+json": ".geojson",
    "application/vnd.geo+json": ".geojson", "application/json": ".json", "application/geopackage+sqlite3": ".gpkg",
    "application/vnd.google-earth.kml+xml": ".kml", "application/vnd.google-earth.kmz": ".kmz",
    "text/csv": ".csv", "text/tab-separated-values": ".tsv", "application/gml+xml": ".gml",
    "application/gpx+xml": ".gpx", "image/tiff": ".tif", "image/geo+tiff": ".tif",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}
_MAGIC = ((b"PK\x03\x04", ".zip"), (b"SQLite format 3\x00", ".gpkg"), (b"{", ".json"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"))


def _name_from_url(url: str) -> str | None:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name if PurePosixPath(name).suffix.lower() in KNOWN_SUFFIXES else None


def _safe(name: str) -> str:
    """``name`` as a plain file name (no folders, no leading dots, printable)."""
    cleaned = "".join(c if c.isalnum() or c in "-_.()" else "_" for c in Path(name).name).lstrip(".")
    return cleaned[:120] or "source"


def local_name(url: str, content_type: str, disposition: str | None, head: bytes) -> str | None:
    """The file name to save a download as, so that its suffix tells the format; ``None`` when nothing tells."""
    for name in (_name_from_url(url), disposition):
        if name and PurePosixPath(name).suffix.lower() in KNOWN_SUFFIXES:
            return _safe(name)
    stem = _safe(PurePosixPath(unquote(urlsplit(url).path)).stem or "source")
    suffix = CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
    if suffix is None:
        stripped = head.lstrip()
        suffix = next((s for magic, s in _MAGIC if stripped.startswith(magic)), None)
    return f"{stem}{suffix}" if suffix else None


def fetch_file(definition: LayerDefinition, client: Client, folder: Path,
               previous: Validators | None) -> Fetched | None:
    """Download ``source.url`` into ``folder``; ``None`` when the server answers ``304 Not Modified``.

    Raises
    ------
    FetchError
        The download failed, or nothing tells what format the file is in.
    """
    url = definition.source.url
    assert url is not None
    download = client.download(url, folder, previous)
    if download is None:
        return None
    with download.path.open("rb") as fh:
        head = fh.read(64)
    name = local_name(url, download.content_type, download.disposition_name, head)
    if name is None:
        kind = download.content_type.split(";")[0] or "no content type"
        raise client.fail(url, f"cannot tell the format of the file ({kind}, no known suffix in the URL or "
                               f"Content-Disposition); serve it with a file name such as data.zip")
    path = folder / name
    download.path.rename(path)
    return Fetched(path, download.sha256, download.validators, None, 1, client.requests, client.used)
