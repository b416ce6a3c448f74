"""The load report: everything a load did to the data, counted, never silent."""

from __future__ import annotations

from collections import Counter
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
