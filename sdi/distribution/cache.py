"""The download cache: each format of each load of a layer is made once and kept until the layer is reloaded.

Layout under ``SDI_DATA_DIR/downloads``::

    <layer>/<load id>/<layer>.<ext>         the file
    <layer>/<load id>/<layer>.<ext>.json    its size, SHA-256, feature count, load id, media type and time made
    <layer>/<load id>/.<format>.lock        held (``flock``) while the file is made

A file is written beside its final name and renamed into place, and its ``.json`` is written (the same way) after it:
a file with a ``.json`` is complete. Two threads or worker processes asking for the same file wait on the lock, and
the second finds the first's file. The load id a file is made for is the one the export read (which may be newer than
the one the caller knew); when it is made, the folders of older loads of that layer are removed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdi.distribution.formats import FORMATS, Format, get_format
from sdi.distribution.source import PAGE_ROWS, LoadChanged, open_connection, read_layer
from sdi.distribution.writers import ATTEMPTS, write_file
from sdi.errors import ConfigError, ServiceBusyError
from sdi.settings import Settings

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class Download:
    """One made download file and what is recorded beside it."""

    layer_id: str
    load_id: int
    format: Format
    path: Path
    size: int
    sha256: str  #: hex
    features: int
    created: str  #: ISO 8601, UTC

    @property
    def sha256_base64(self) -> str:
        """The SHA-256 in base 64 (as ``Repr-Digest`` and ``Digest`` headers carry it)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")

    def record(self) -> dict[str, Any]:
        """What the ``.json`` beside the file holds."""
        return {"layer": self.layer_id, "load_id": self.load_id, "format": self.format.id,
                "media_type": self.format.media_type, "file": self.path.name, "size": self.size,
                "sha256": self.sha256, "features": self.features, "created": self.created}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    temp.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(temp, path)


class DownloadCache:
    """The download files under ``root`` (``SDI_DATA_DIR/downloads``); see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[tuple[str, int, str], Download] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> DownloadCache:
        """The cache under ``settings.data_dir``."""
        return cls(settings.data_dir / "downloads")

    def folder(self, layer_id: str, load_id: int) -> Path:
        """Where the files of one load of a layer go."""
        if not _SAFE_ID.match(layer_id):
            raise ConfigError(f"layer id {layer_id[:80]!r} cannot name a download folder")
        return self.root / layer_id / str(int(load_id))

    def find(self, layer_id: str, load_id: int, fmt: Format) -> Download | None:
        """The made file of ``fmt`` for that load, or ``None`` (not made yet, or removed)."""
        key = (layer_id, int(load_id), fmt.id)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        path = self.folder(layer_id, load_id) / fmt.filename(layer_id)
        try:
            doc = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        if size != doc.get("size"):
            return None
        found = Download(layer_id, int(load_id), fmt, path, size, str(doc["sha256"]), int(doc.get("features", 0)),
                         str(doc.get("created", "")))
        with self._lock:
            self._known[key] = found
        return found

    def forget(self, download: Download) -> None:
        """Stop trusting the remembered ``download`` (its file went away)."""
        with self._lock:
            self._known.pop((download.layer_id, download.load_id, download.format.id), None)

    def lengths(self, layer_id: str, load_id: int) -> dict[str, int]:
        """Format id → size of the files of that load already made (none for an id that cannot name a folder)."""
        if not _SAFE_ID.match(layer_id):
            return {}
        found = {fid: self.find(layer_id, load_id, fmt) for fid, fmt in FORMATS.items()}
        return {fid: d.size for fid, d in found.items() if d is not None}

    def ensure(self, settings: Settings, layer_id: str, fmt: Format | str, *, page_rows: int = PAGE_ROWS,
               statement_timeout_ms: int | None = None) -> Download:
        """The file of ``fmt`` for the layer's current load, made now if it is not made yet.

        Parameters
        ----------
        settings
            The database to read (the API passes its read-only role's URL).
        layer_id, fmt
            The vector layer and the format (or its id).
        page_rows, statement_timeout_ms
            See :func:`sdi.distribution.writers.export_layer`.

        Raises
        ------
        LayerNotFoundError
            No such vector layer.
        ServiceBusyError
            The layer was reloaded during each of :data:`~sdi.distribution.writers.ATTEMPTS` tries.
        """
        fmt = fmt if isinstance(fmt, Format) else get_format(fmt)
        with open_connection(settings, statement_timeout_ms) as conn:
            for _ in range(ATTEMPTS):
                reader = read_layer(conn, layer_id, page_rows)
                load_id = reader.layer.load_id
                found = self.find(layer_id, load_id, fmt)
                if found is not None:
                    return found
                folder = self.folder(layer_id, load_id)
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    made = self._make(reader, fmt, folder)
                except LoadChanged:
                    continue
                except FileNotFoundError:
                    if folder.is_dir():
                        raise
                    continue  # a newer load's file was made meanwhile, and this folder removed
                self.prune(layer_id, load_id)
                return made
        raise ServiceBusyError(f"{layer_id}: the layer was reloaded while its download was being made; retry")

    def _make(self, reader: Any, fmt: Format, folder: Path) -> Download:
        layer_id, load_id = reader.layer.id, reader.layer.load_id
        with _locked(folder / f".{fmt.id}.lock"):
            found = self.find(layer_id, load_id, fmt)
            if found is not None:
                return found
            written = write_file(reader, fmt, folder / fmt.filename(layer_id))
            made = Download(layer_id, load_id, fmt, written.path, written.size, written.sha256, written.features,
                            dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
            _write_json(written.path.with_name(written.path.name + ".json"), made.record())
        with self._lock:
            self._known[(layer_id, load_id, fmt.id)] = made
        return made

    def prune(self, layer_id: str, keep_load_id: int) -> list[Path]:
        """Remove the folders of ``layer_id``'s loads older than ``keep_load_id``; returns them."""
        removed = []
        base = self.root / layer_id
        for folder in base.iterdir() if base.is_dir() else ():
            if folder.name.isdigit() and int(folder.name) < keep_load_id:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        if removed:
            with self._lock:
                self._known = {k: v for k, v in self._known.items() if k[0] != layer_id or k[1] >= keep_load_id}
        return removed
