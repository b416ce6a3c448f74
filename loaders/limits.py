"""Limits on what reading one source may cost, and refusal of special files.

Hostile inputs are refused with one line naming the file and the limit, before the expensive step:

- **Archives** (zips and KMZ): each member's uncompressed size is capped (``SDI_MAX_MEMBER_BYTES``), and so
  are the total unpacked across every nested archive of one source (``SDI_MAX_UNZIPPED_BYTES``) and the
  nesting depth (``SDI_MAX_ARCHIVE_DEPTH``). Sizes are checked from the zip's directory first and counted
  again while the bytes are decompressed, so a directory that lies does not help. One :class:`Budget` is
  shared by every level of a nested source.
- **Tables**: the number of columns is capped (``SDI_MAX_TABLE_COLUMNS``) before a table is parsed.
- **Special files**: FIFOs, devices and sockets block or never end when opened, so none is opened: a single
  file's sidecars (``<stem>.*``), every file in a dataset folder (a ``.gdb``), and every zip member are
  checked with ``stat`` first, and files are opened non-blocking and checked again.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sdi.errors import SourceFormatError, SourceNotFoundError
from sdi.settings import Settings

_CHUNK = 1 << 20
_SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _default(name: str) -> int:
    return int(Settings.model_fields[name].default)


@dataclass(frozen=True)
class Limits:
    """Caps on reading one source; the defaults are :class:`~sdi.settings.Settings`' defaults."""

    member_bytes: int = field(default_factory=lambda: _default("max_member_bytes"))
    unzipped_bytes: int = field(default_factory=lambda: _default("max_unzipped_bytes"))
    archive_depth: int = field(default_factory=lambda: _default("max_archive_depth"))
    table_columns: int = field(default_factory=lambda: _default("max_table_columns"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits set by ``SDI_MAX_MEMBER_BYTES``, ``SDI_MAX_UNZIPPED_BYTES``, ``SDI_MAX_ARCHIVE_DEPTH`` and
        ``SDI_MAX_TABLE_COLUMNS``."""
        return cls(settings.max_member_bytes, settings.max_unzipped_bytes, settings.max_archive_depth,
                   settings.max_table_columns)


@dataclass
class Budget:
    """What reading one source has used of its :class:`Limits`, across every archive level."""

    limits: Limits = field(default_factory=Limits)
    depth: int = 0  #: archives currently open, one inside the other
    unpacked: int = 0  #: bytes decompressed so far, all archives together

    @contextmanager
    def archive(self, path: Path) -> Iterator[None]:
        """Open one more level of archive (``path``); refused past ``SDI_MAX_ARCHIVE_DEPTH``."""
        if self.depth >= self.limits.archive_depth:
            raise SourceFormatError(f"{path}: archives nested more than {self.limits.archive_depth} deep "
                                    f"(SDI_MAX_ARCHIVE_DEPTH); unpack them and load the dataset")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def check_listing(self, path: Path, infos: list[zipfile.ZipInfo]) -> None:
        """Refuse, from the zip's directory alone, a special-file member, an oversized member, or a total
        over what is left of the budget."""
        refuse_special_members(path, infos)
        for info in infos:
            self._check_member(path, info.filename, info.file_size)
        self._check_total(path, sum(info.file_size for info in infos))

    def _check_member(self, path: Path, name: str, size: int) -> None:
        if size > self.limits.member_bytes:
            raise SourceFormatError(f"{path}: member {name} unpacks to more than {self.limits.member_bytes:,} "
                                    f"bytes, the limit for one archive member (SDI_MAX_MEMBER_BYTES)")

    def _check_total(self, path: Path, more: int) -> None:
        if self.unpacked + more > self.limits.unzipped_bytes:
            raise SourceFormatError(f"{path}: unpacks to more than {self.limits.unzipped_bytes:,} bytes in all "
                                    f"(SDI_MAX_UNZIPPED_BYTES, counted across nested archives)")

    def _chunks(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> Iterator[bytes]:
        """The member's bytes, counted against both caps as they are decompressed."""
        size = 0
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                size += len(chunk)
                self._check_member(path, info.filename, size)
                self._check_total(path, len(chunk))
                self.unpacked += len(chunk)
                yield chunk

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
        """Read one member into memory within the budget."""
        self.check_listing(path, [info])
        return b"".join(self._chunks(archive, info, path))

    def extract(self, archive: zipfile.ZipFile, dest: Path, path: Path) -> None:
        """Extract every member of ``archive`` (the file ``path``) under ``dest`` within the budget.

        Names are made safe (no absolute paths, no ``..``); members are written as regular files.
        """
        infos = archive.infolist()
        self.check_listing(path, infos)
        for info in infos:
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("/", ".", "..")]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for chunk in self._chunks(archive, info, path):
                    out.write(chunk)


def refuse_special_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose directory records a member as a FIFO, device or socket (Unix mode bits)."""
    for info in infos:
        kind = _SPECIAL.get(stat.S_IFMT(info.external_attr >> 16))
        if kind is not None:
            raise SourceFormatError(f"{path}: member {info.filename} is {kind}; refused: only regular files are read")


def _refuse_special(path: Path, mode: int, where: str) -> None:
    kind = _SPECIAL.get(stat.S_IFMT(mode))
    if kind is not None:
        raise SourceFormatError(f"{path}: {where or 'it '}is {kind}; refused: only regular files are read")


def check_sidecars(path: Path) -> None:
    """Refuse when a file that readers may open beside ``path`` (``<stem>.*``: .shx, .dbf, .prj, .cpg,
    .aux.xml, ...) is a FIFO, device or socket."""
    prefix = path.stem.lower() + "."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return  # the source's own check names the problem
    for entry in entries:
        if entry.name.lower().startswith(prefix) and entry.name != path.name:
            try:
                mode = entry.stat().st_mode  # follows links: a link to /dev/zero is a device
            except OSError:
                continue
            _refuse_special(path, mode, f"{entry.name} beside it ")


def dataset_files(folder: Path) -> list[Path]:
    """The regular files in a dataset folder (such as a ``.gdb``), recursively, sorted.

    Raises
    ------
    SourceFormatError
        When anything inside is a FIFO, device or socket (checked with ``stat``, so links are followed
        to what they name; links to folders are not entered).
    """
    found: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise SourceNotFoundError(f"{current}: cannot list the dataset folder: {exc.strerror}") from exc
        for entry in entries:
            try:
                mode = entry.stat().st_mode
            except OSError:
                continue  # a dangling link: nothing to read
            rel = Path(entry.path).relative_to(folder).as_posix()
            _refuse_special(folder, mode, f"{rel} inside the dataset folder ")
            if stat.S_ISDIR(mode):
                if not entry.is_symlink():
                    pending.append(Path(entry.path))
            elif stat.S_ISREG(mode):
                found.append(Path(entry.path))
    return sorted(found)


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading without blocking, and refuse it unless it is a regular file.

    Opening a FIFO normally waits for a writer; with ``O_NONBLOCK`` it returns at once, and ``fstat`` then
    tells what was opened (the answer cannot change between the check and the read).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            _refuse_special(path, mode, "")
            raise SourceNotFoundError(f"{path}: is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path) -> bytes:
    """All of a regular file's bytes (see :func:`open_regular`)."""
    with open_regular(path) as fh:
        return fh.read()
