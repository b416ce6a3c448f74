"""The load report: everything a load did to the data, counted, never silent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FieldInfo:
    """One published column: its name in PostGIS, its name in the source, and its PostgreSQL type."""

    name: str
    original_name: str
    type: str
    description_en: str | None = None
    description_zh: str | None = None


@dataclass
class LoadReport:
    """What a load read, changed, dropped and wrote.

    ``repaired`` and ``dropped`` count features by reason; ``notes`` say what was detected or
    converted (encoding, CRS, types); ``warnings`` say what a data steward should look at.
    """

    layer_id: str
    source_path: str
    source_sha256: str = ""
    driver: str = ""
    encoding: str | None = None
    source_crs: str = ""
    crs_origin: str = ""  #: "file", "declared" or "inferred"
    transformation: str = ""
    geometry_type: str = ""
    features_read: int = 0
    features_written: int = 0
    repaired: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fields: list[FieldInfo] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per step (read, normalise, write)
    dry_run: bool = False
    load_id: int | None = None
    #: What the load changed against the previous version (see :mod:`loaders.changes`): ``added``, ``removed``,
    #: ``changed`` (``changed_geometry``, ``changed_attributes``), ``unchanged`` and how they were counted;
    #: ``None`` for a dry run, a layer's first load and a raster.
    changes: dict[str, Any] | None = None

    def repair(self, reason: str, count: int = 1) -> None:
        """Count ``count`` features repaired for ``reason``."""
        if count:
            self.repaired[reason] += int(count)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` features dropped for ``reason``."""
        if count:
            self.dropped[reason] += int(count)

    def note(self, text: str) -> None:
        """Record something detected or converted."""
        self.notes.append(text)

    def warn(self, text: str) -> None:
        """Record something a data steward should check."""
        self.warnings.append(text)

    @property
    def features_repaired(self) -> int:
        """Total features repaired, over all reasons."""
        return sum(self.repaired.values())

    @property
    def features_dropped(self) -> int:
        """Total features dropped, over all reasons."""
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (stored in ``sdi.load_history.report``)."""
        data = asdict(self)
        data["repaired"] = dict(self.repaired)
        data["dropped"] = dict(self.dropped)
        return data


def changes_summary(changes: Mapping[str, Any] | None, *, short: bool = False) -> str:
    """One line for a load's change counts (``sdi load``, ``sdi sync``, ``sdi layers history``).

    ``added 3, removed 2, changed 1 (geometry 1, attributes 0), unchanged 994 (since load 12)``; a layer compared by
    content (no primary key) has no ``changed`` and says so; ``short`` leaves out the previous load and the
    explanation. ``None`` (nothing to compare with) gives ``none: first load of this layer``.
    """
    if changes is None:
        return "none: first load of this layer"
    text = f"added {changes['added']:,}, removed {changes['removed']:,}, "
    if changes.get("changed") is not None:
        text += (f"changed {changes['changed']:,} (geometry {changes.get('changed_geometry') or 0:,}, "
                 f"attributes {changes.get('changed_attributes') or 0:,}), ")
    text += f"unchanged {changes['unchanged']:,}"
    notes = [] if short or changes.get("previous_load_id") is None else [f"since load {changes['previous_load_id']}"]
    if changes.get("compared_by") == "content":
        notes.append("by content" if short else
                     "by content: without a primary key an edit counts as one removed and one added")
    if notes:
        text += f" ({'; '.join(notes)})"
    columns = [f"{what} {', '.join(changes[f'columns_{what}'])}" for what in ("added", "removed", "retyped")
               if changes.get(f"columns_{what}")]
    if columns:
        text += "; columns " + "; ".join(columns)
    return text
