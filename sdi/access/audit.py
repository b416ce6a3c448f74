"""What a request read of restricted layers, noted as it goes, for the audit log (``sdi.access_log``).

The API starts a :class:`Reads` for each request (:func:`reading`); the registry notes each restricted layer
the request reaches (:func:`note_layer`) and the routes note how many features they sent
(:func:`note_features`). At the end of the request the API writes one row per layer noted.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, field

#: The action of a request, from its path (the first match wins).
ACTIONS = ((re.compile(r"^/collections/[^/]+/items/"), "item"), (re.compile(r"^/collections/[^/]+/items$"), "items"),
           (re.compile(r"^/collections/[^/]+/tiles/[^/]+/\d+/"), "tile"), (re.compile(r"^/collections/[^/]+/tiles"),
                                                                           "tileset"),
           (re.compile(r"^/collections/[^/]+/coverage"), "coverage"),
           (re.compile(r"^/collections/[^/]+/download/"), "download"),
           (re.compile(r"^/collections/[^/]+/(queryables|schema)$"), "schema"),
           (re.compile(r"^/collections/[^/]+/(history|changes)$"), "history"),
           (re.compile(r"^/collections/catalogue/items"), "record"),
           (re.compile(r"^/collections/[^/]+$"), "collection"), (re.compile(r"^/metadata/"), "metadata"),
           (re.compile(r"^/processes/[^/]+/execution$"), "process"), (re.compile(r"^/jobs/"), "job"))


@dataclass
class Reads:
    """The restricted layers one request reached, and the features it sent (``None``: not counted)."""

    layers: list[str] = field(default_factory=list)
    features: int | None = None


_READS: contextvars.ContextVar[Reads | None] = contextvars.ContextVar("sdi_reads", default=None)


def reading() -> tuple[Reads, contextvars.Token[Reads | None]]:
    """Start noting the reads of this request; reset the returned token when it ends."""
    reads = Reads()
    return reads, _READS.set(reads)


def stop(token: contextvars.Token[Reads | None]) -> None:
    """Stop noting (the token :func:`reading` returned)."""
    _READS.reset(token)


def note_layer(layer_id: str) -> None:
    """The request reached the restricted layer ``layer_id`` (once per layer)."""
    reads = _READS.get()
    if reads is not None and layer_id not in reads.layers:
        reads.layers.append(layer_id)


def note_features(count: int) -> None:
    """The request sent ``count`` features (added up over its pages or tiles)."""
    reads = _READS.get()
    if reads is not None:
        reads.features = (reads.features or 0) + int(count)


def action_of(path: str) -> str:
    """What a request to ``path`` does (``items``, ``tile``, ``download``, ...; ``other`` when none fits)."""
    return next((name for pattern, name in ACTIONS if pattern.search(path)), "other")
