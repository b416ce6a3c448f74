"""Streamed loads: a large file read, normalised, reprojected and copied chunk by chunk, in bounded memory.

A source with more than ``SDI_LOAD_CHUNK_ROWS`` features in a streamable format
(:mod:`loaders.batches`) is never held whole: each chunk goes through the same steps as a whole
file (drop what cannot be published, repair, type the attributes, reproject, re-validate) on a worker
thread while the previous chunk is sent with COPY (by a thread of its own: :mod:`loaders.copy_writer`),
and what a load must know about the whole file is settled as the chunks arrive, so the result equals a
whole-file load. Geometries whose coordinates prove them valid (convex one-ring polygons, points, lines)
are reprojected inside their WKB and never become GEOS objects (:mod:`loaders.chunk_geometry`).
What is settled across chunks:

* **Geometry type**: the counts of each geometry type (after repair) are added up chunk by chunk; when
  a later chunk brings Multi* parts, the staging table's column is changed to Multi* in SQL
  (``ST_Multi`` on the rows already in) and later single parts are promoted.
* **Column types**: each chunk's types are detected as in a whole-file load. A column NULL so far
  takes the first type a chunk gives it; integers and decimals widen to ``double precision``, dates
  and timestamps to ``timestamp`` (``ALTER TABLE … USING``: exact). Any other disagreement (numbers
  then text, Excel serials then written dates) means the whole column is text: the staging table is
  rolled back to a savepoint and the file read again with that column kept as text.
* **Primary key**: NULLs and duplicates of a declared key are found in the staging table (the same
  error a whole-file load gives); generated ids continue from chunk to chunk.
* **Counts, extent, report**: added up; notes said once.

Memory holds about two chunks; the load stays one transaction (atomic swap, history and catalogue
rows), so a load killed at any chunk leaves the previous version serving.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyogrio
from psycopg import sql

from loaders import geometry
from loaders.attributes import GENERATED_KEY, Attributes, key_error, normalise_attributes
from loaders.batches import RawBatch, read_batches, to_frame
from loaders.chunk_geometry import storage_geometry
from loaders.copy_binary import column_values, encode_columns, join_rows, prefixed, promoted
from loaders.memory import Trimmer
from loaders.read import resolve_crs
from loaders.report import FieldInfo, LoadReport
from loaders.rows import Encoded, RestartLoad
from sdi.crs import reprojection
from sdi.errors import CrsError, DataError
from sdi.layerdef import LayerDefinition

#: Pairs of detected types a column may take in different chunks, and the type that holds both exactly.
WIDER = {frozenset({"bigint", "double precision"}): "double precision",
         frozenset({"date", "timestamp"}): "timestamp"}
_SERIAL_NOTE = re.compile(r"^column '(.*)': text converted to dates \(Excel serial number\)$")
_DATES_NOTE = re.compile(r"^(column '.*': text converted to dates) \((.*)\)$")
_NULLED_NOTE = re.compile(r"^(\d+) (text values 'nan'/'NaN'/'' set to NULL)$")
#: Threads normalising chunks while the calling thread reads, settles, encodes and copies.
WORKERS = max(1, min(2, os.cpu_count() or 1))
_NUMBERS_NOTE = re.compile(r"^(column '.*': text converted to) (integers|numbers)$")


def _digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            sha.update(block)
    return sha.hexdigest()


def merge_report(report: LoadReport, chunk: LoadReport) -> None:
    """Add what one chunk's normalisation recorded to the load's report (counts summed, notes said once)."""
    report.repaired.update(chunk.repaired)
    report.dropped.update(chunk.dropped)
    for text in chunk.notes:
        nulled, dates, numbers = _NULLED_NOTE.match(text), _DATES_NOTE.match(text), _NUMBERS_NOTE.match(text)
        if numbers:  # integers in one chunk and decimals in another are numbers (double precision)
            previous = next((i for i, n in enumerate(report.notes) if n.startswith(numbers.group(1) + " ")), None)
            if previous is None:
                report.notes.append(text)
            elif numbers.group(2) == "numbers":
                report.notes[previous] = text
        elif nulled:
            previous = next((i for i, n in enumerate(report.notes) if _NULLED_NOTE.match(n)), None)
            if previous is None:
                report.notes.append(text)
            else:
                total = int(_NULLED_NOTE.match(report.notes[previous]).group(1)) + int(nulled.group(1))  # type: ignore[union-attr]
                report.notes[previous] = f"{total} {nulled.group(2)}"
        elif dates:
            previous = next((i for i, n in enumerate(report.notes) if n.startswith(dates.group(1) + " (")), None)
            if previous is None:
                report.notes.append(text)
            else:
                used = _DATES_NOTE.match(report.notes[previous]).group(2).split(", ")  # type: ignore[union-attr]
                used += [f for f in dates.group(2).split(", ") if f not in used]
                report.notes[previous] = f"{dates.group(1)} ({', '.join(used)})"
        elif text not in report.notes:
            report.notes.append(text)
    for text in chunk.warnings:
        if text not in report.warnings:
            report.warnings.append(text)


class StreamedLayer:
    """A :class:`loaders.rows.RowSource` reading a large file chunk by chunk (see the module docstring).

    Parameters
    ----------
    definition
        The layer definition; its source is a streamable file (:func:`loaders.batches.streamed_count`).
    count
        The features in the source (for progress).
    report
        The load's report, as reading left it; a restart goes back to this state.
    chunk_rows
        Features per chunk (``SDI_LOAD_CHUNK_ROWS``).
    """

    def __init__(self, definition: LayerDefinition, count: int, report: LoadReport, chunk_rows: int) -> None:
        self.definition = definition
        self.count = count
        self.chunk_rows = chunk_rows
        self._initial = copy.deepcopy(report)
        self.text_columns: frozenset[str] = frozenset()  #: source columns found to be text only in a late chunk
        self.fields: list[FieldInfo] = []
        self.geometry_type: str = definition.geometry_type or "Geometry"
        self.primary_key = GENERATED_KEY
        self.restarts = 0

    @property
    def total(self) -> int:
        """Features in the source."""
        return self.count

    # -- the row source ------------------------------------------------------------------------------------------
    def encoded(self, report: LoadReport) -> Iterator[Encoded]:
        """Read, normalise and encode the source chunk by chunk.

        GDAL reads on the calling thread; :data:`WORKERS` threads normalise the next chunks (reprojection,
        repair and typing release the GIL for most of their work) while this thread settles each chunk in
        order, encodes it and hands it to the COPY.
        """
        state = _State(self, report)
        frames = read_batches(self.definition.source_path, self.definition, self.chunk_rows)
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="sdi-stream") as pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdi-sha256") as hasher:
            digest = hasher.submit(_digest, str(self.definition.source_path)) if not report.source_sha256 else None
            window: deque[Future[_Prepared]] = deque()
            trimmer = Trimmer()
            try:
                frame = next(frames, None)
                while frame is not None or window:
                    while frame is not None and len(window) < WORKERS + 1:  # a chunk queued for each worker
                        window.append(pool.submit(state.prepare, frame))
                        frame = next(frames, None)
                    item = state.settle(window.popleft().result())
                    yield item
                    del item
                    trimmer.chunk_done()
            except RestartLoad:
                self._restart(report)
                raise
            finally:
                for pending in window:
                    pending.cancel()
                frames.close()
            if digest is not None:
                report.source_sha256 = digest.result()
        state.finish()

    def _restart(self, report: LoadReport) -> None:
        """Put the report back as reading left it, for another pass over the file."""
        self.restarts += 1
        restored = copy.deepcopy(self._initial)
        report.__dict__.update(restored.__dict__)

    def check_stage(self, conn: psycopg.Connection, stage: sql.Identifier) -> None:
        """Raise the whole-file load's error when the declared primary key is NULL or duplicated."""
        original = self.definition.primary_key
        if original is None:
            return
        key = sql.Identifier(self.primary_key)
        empty = conn.execute(sql.SQL("select count(*) from {} where {} is null").format(stage, key)).fetchone()
        if empty and empty[0]:
            raise key_error(self.definition, original, empty=int(empty[0]))
        rows = conn.execute(sql.SQL(
            "select {k}::text from {t} group by {k} having count(*) > 1 order by {k}::text collate \"C\"").format(
            k=key, t=stage)).fetchall()
        if rows:
            raise key_error(self.definition, original, duplicates=[str(r[0]) for r in rows])


@dataclass
class _Prepared:
    """One chunk normalised on its own (generated ids from 1), before it is settled against the others."""

    read: int  #: features read
    attrs: Attributes
    counts: Counter[int]  #: geometry type ids
    scratch: LoadReport  #: what normalising it recorded
    text_sources: set[str]  #: source columns read as text
    columns: list[pa.Array]  #: its attribute columns encoded for COPY, in its own types
    wkb: pa.Array  #: its geometries as plain WKB
    codes: np.ndarray  #: their GEOS type ids (for promotion to Multi*)
    box: tuple[float, float, float, float] | None  #: their bounds


class _State:
    """What one pass over the file has settled so far (types, geometry type, ids, counts)."""

    def __init__(self, layer: StreamedLayer, report: LoadReport) -> None:
        self.layer = layer
        self.definition = layer.definition
        self.report = report
        self.source_epsg: int | None = None
        self.type_counts: Counter[int] = Counter()
        self.geometry_type: str | None = None
        self.promote = False
        self.fields: list[FieldInfo] | None = None
        self.text_sources: set[str] = set()
        self.nulls: set[str] = set()  #: columns NULL in every row so far
        self.serial: dict[str, bool] = {}  #: text columns read as dates: from Excel serial numbers or not
        self.next_fid = 1
        self.read = 0
        self._lock = threading.Lock()


    def prepare(self, raw: RawBatch) -> _Prepared:
        """Normalise one chunk as far as it can be alone, and encode it (a worker thread; changes no state).

        Its geometries are made ready to store by :func:`loaders.chunk_geometry.storage_geometry`
        (without GEOS for those whose coordinates prove them valid), its attributes typed as in a
        whole-file load.
        """
        scratch = LoadReport(layer_id=self.report.layer_id, source_path=self.report.source_path)
        if self.source_epsg is None:
            with self._lock:
                if self.source_epsg is None:
                    self._settle_crs(to_frame(raw, LoadReport(layer_id="", source_path="")))
        assert self.source_epsg is not None
        attrs = raw.attrs
        text_sources = {str(c) for c in attrs.columns
                        if attrs[c].dtype == object or pd.api.types.is_string_dtype(attrs[c].dtype)}
        stored = storage_geometry(raw, self.source_epsg, scratch, where=self.definition.label)
        if len(stored.kept) < len(attrs):
            attrs = attrs.iloc[stored.kept]
        # the attributes only (geometries stay WKB): the frame's geometry column is a placeholder
        frame = gpd.GeoDataFrame(attrs, geometry=gpd.array.GeometryArray(np.full(len(attrs), None, dtype=object)))
        normalised = normalise_attributes(frame, self.definition, scratch, text_columns=self.layer.text_columns,
                                          check_key=False)
        ids, counts = np.unique(stored.codes, return_counts=True)
        return _Prepared(len(raw.attrs), normalised, Counter(dict(zip(ids.tolist(), counts.tolist(), strict=True))),
                         scratch, text_sources, encode_columns(normalised.frame, normalised.fields), stored.wkb,
                         stored.codes, stored.box)

    def settle(self, chunk: _Prepared) -> Encoded:
        """Settle a prepared chunk against the chunks before it, in file order, and finish its COPY tuples."""
        self.read += chunk.read
        self.report.features_read = self.read
        if self.fields is None:
            self.text_sources = chunk.text_sources
        self.type_counts += chunk.counts
        retype = self._settle_geometry()
        attrs, scratch, columns = chunk.attrs, chunk.scratch, list(chunk.columns)
        if self.definition.primary_key is None:  # generated ids go on from the chunks before
            attrs.frame[GENERATED_KEY] += self.next_fid - 1
            columns[0] = prefixed(column_values(attrs.frame[GENERATED_KEY], "bigint"))
        self.next_fid += len(attrs.frame)
        self.layer.primary_key = attrs.primary_key
        retype.update(self._merge_fields(attrs.fields, attrs.frame, scratch))
        assert self.fields is not None and self.geometry_type is not None
        for i, (field, mine) in enumerate(zip(self.fields, attrs.fields, strict=True)):
            if field.type != mine.type:  # encoded in the chunk's own type: again in the layer's
                columns[i] = prefixed(column_values(attrs.frame[field.name], field.type))
        merge_report(self.report, scratch)
        wkb = promoted(chunk.wkb, chunk.codes) if self.promote else chunk.wkb
        data = join_rows([*columns, prefixed(wkb)])
        return Encoded(self.read, len(chunk.wkb), data, chunk.box, list(self.fields), self.geometry_type, retype)

    def _settle_crs(self, frame: gpd.GeoDataFrame) -> None:
        info = pyogrio.read_info(self.definition.source_path, layer=self.definition.source.layer)
        self.report.driver = str(info.get("driver", "unknown"))
        self.source_epsg = resolve_crs(frame, self.definition, self.report).source_epsg
        try:  # the transformation is checked (EPSG:1825, no ballpark) before any work is done
            self.report.transformation = reprojection(self.source_epsg).description
        except CrsError as exc:
            raise CrsError(f"{self.definition.label}: {exc}") from exc

    def _settle_geometry(self) -> dict[str, str]:
        """Settle the geometry type on the counts so far; the staging change it needs, if any."""
        seen = f" in the first {self.read:,} features" if self.read < self.layer.count else ""
        if not +self.type_counts and self.definition.geometry_type is None:
            target, promote = "Geometry", False  # nothing to publish yet: decided by a later chunk
        else:
            target, promote = geometry.settle_type(self.type_counts, self.definition, None, seen=seen)
        previous, self.geometry_type, self.promote = self.geometry_type, target, promote
        self.layer.geometry_type = target
        return {"geom": target} if previous is not None and previous != target else {}

    def _merge_fields(self, fields: list[FieldInfo], frame: pd.DataFrame, scratch: LoadReport) -> dict[str, str]:
        """Reconcile a chunk's column types with those so far; the staging changes they need."""
        serial = {m.group(1) for m in map(_SERIAL_NOTE.match, scratch.notes) if m}
        if self.fields is None:
            self.fields = list(fields)
            self.layer.fields = self.fields
            self.nulls = {f.name for f in fields if f.original_name != "(generated)" and frame[f.name].isna().all()}
            self.serial = {f.original_name: f.original_name in serial for f in fields
                           if f.type in ("date", "timestamp")}
            return {}
        retype: dict[str, str] = {}
        for i, (old, new) in enumerate(zip(self.fields, fields, strict=True)):
            if old.name in self.nulls and frame[new.name].isna().all():
                continue
            if frame[new.name].isna().all():
                continue  # NULLs fit any type
            if new.type in ("date", "timestamp"):
                was = self.serial.setdefault(old.original_name, old.original_name in serial)
                if was != (old.original_name in serial) and old.name not in self.nulls:
                    self._text_after_all(old.original_name, "Excel serial numbers and written dates")
            if old.name in self.nulls:
                self.nulls.discard(old.name)
                merged = new.type
            elif old.type == new.type:
                continue
            else:
                merged = WIDER.get(frozenset({old.type, new.type}), "")
                if not merged:
                    self._text_after_all(old.original_name, f"{old.type} then {new.type}")
            if merged != old.type:
                retype[old.name] = merged
                self.fields[i] = replace(old, type=merged)
        return retype

    def _text_after_all(self, original: str, why: str) -> None:
        """A column whose chunks disagree is text in a whole-file load: read the file again keeping it so."""
        if original not in self.text_sources or original in self.layer.text_columns:
            raise DataError(f"{self.definition.label}: column {original!r} changes type within the file ({why}, "
                            f"by feature {self.read:,}); declare fields.{original}.type")
        self.layer.text_columns = self.layer.text_columns | {original}
        raise RestartLoad(original)

    def finish(self) -> None:
        """Say once what only the whole file shows (single parts promoted); fail on nothing to publish."""
        geometry.settle_type(self.type_counts, self.definition, self.report)

