"""Walking a JSON document (from :func:`json.loads`), for tests that change one value of it at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def leaves(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Each value of ``node`` that is neither an object nor an array, with its location (keys and indices)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*at, index))
    else:
        yield at, node
