"""What a fetch produced, and the streaming writers the paged services share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from loaders.fetch.http import Validators
from loaders.read import sha256_file


@dataclass(frozen=True)
class Fetched:
    """A URL source saved as one local file for the loader."""

    path: Path  #: the file the loader reads (named so that its suffix tells the format)
    sha256: str  #: SHA-256 of that file: what the load records, and what tells an unchanged source
    validators: Validators = field(default_factory=Validators)  #: for the next conditional GET (files only)
    features: int | None = None  #: features paged from a service
    pages: int = 0  #: pages (answers) fetched
    requests: int = 0  #: requests sent, retries included
    bytes: int = 0  #: bytes received
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """What the load history keeps of the fetch."""
        return {"file": self.path.name, "sha256": self.sha256, "etag": self.validators.etag,
                "last_modified": self.validators.last_modified, "features": self.features, "pages": self.pages,
                "requests": self.requests, "bytes": self.bytes, "notes": list(self.notes)}


def finished(path: Path, *, client: Any, features: int | None, pages: int, notes: list[str] | None = None,
             validators: Validators | None = None) -> Fetched:
    """A :class:`Fetched` for ``path`` (hashed here) with the client's counters."""
    return Fetched(path, sha256_file(path), validators or Validators(), features, pages, client.requests,
                   client.used, tuple(notes or ()))


def _swap(coords: Any) -> Any:
    """Coordinates with the first two axes exchanged, at any depth of nesting."""
    if coords and isinstance(coords[0], int | float):
        return [coords[1], coords[0], *coords[2:]]
    return [_swap(c) for c in coords]


def _swap_geometry(geometry: Any) -> Any:
    if not isinstance(geometry, dict):
        return geometry
    if geometry.get("type") == "GeometryCollection":
        return {**geometry, "geometries": [_swap_geometry(g) for g in geometry.get("geometries") or []]}
    if isinstance(geometry.get("coordinates"), list):
        return {**geometry, "coordinates": _swap(geometry["coordinates"])}
    return geometry


def plain_feature(raw: Any, *, swap: bool = False) -> dict[str, Any]:
    """A GeoJSON feature reduced to its properties and geometry, as the loader reads it.

    The feature's ``id`` becomes the property ``id`` unless the properties already have one (GDAL would take an
    integer id as the feature id and drop it); ``swap`` exchanges the first two axes (a north-first CRS).

    Raises
    ------
    ValueError
        When ``raw`` is not a JSON object or its properties are not one.
    """
    if not isinstance(raw, dict):
        raise ValueError("a feature is not a JSON object")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError("a feature's properties are not a JSON object")
    if raw.get("id") is not None and "id" not in properties:
        properties = {"id": raw["id"], **properties}
    geometry = _swap_geometry(raw.get("geometry")) if swap else raw.get("geometry")
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def geojson_head(crs_name: str | None = None) -> dict[str, Any]:
    """The members of a GeoJSON FeatureCollection before its features.

    ``crs_name`` (``"EPSG:2326"``) adds the legacy ``crs`` member, which the loader reads; without it the file is
    RFC 7946 GeoJSON (CRS84).
    """
    head: dict[str, Any] = {"type": "FeatureCollection"}
    if crs_name:
        head["crs"] = {"type": "name", "properties": {"name": crs_name}}
    return head


class FeatureCollectionWriter:
    """Write a JSON document of features (GeoJSON, or Esri JSON) one feature at a time, one page in memory at
    most: the members of ``head`` first, then ``"features"``.

    Only what describes the data is written (no time stamps, no links), so the same features give the same
    bytes, and so the same SHA-256.
    """

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.count = path, 0
        self._out: IO[str] = path.open("w", encoding="utf-8")
        opening = json.dumps(head, ensure_ascii=False)[:-1] + (", " if head else "")
        self._out.write(opening + '"features": [\n')

    def write(self, feature: dict[str, Any]) -> None:
        """Append one feature."""
        self._out.write((",\n" if self.count else "") + json.dumps(feature, ensure_ascii=False,
                                                                     separators=(",", ":")))
        self.count += 1

    def close(self) -> None:
        """Finish the document."""
        if not self._out.closed:
            self._out.write("\n]}\n")
            self._out.close()

    def __enter__(self) -> FeatureCollectionWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
