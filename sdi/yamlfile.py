"""Read a YAML file with one-line errors that name the file (layer definitions, criteria files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sdi.errors import SdiError


def read_yaml(path: Path, *, where: str, error: type[SdiError], missing: type[SdiError], what: str) -> Any:
    """Parse the YAML file ``path``.

    Parameters
    ----------
    path
        The file to read (UTF-8).
    where
        How messages name the file.
    error
        Error class raised when the file cannot be read or is not valid YAML.
    missing
        Error class raised when the file does not exist.
    what
        What the file is, for the "no such ..." message (``"layer file"``, ``"criteria file"``).

    Returns
    -------
    Any
        The parsed document (``None`` for an empty file).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise missing(f"{where}: no such {what}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{where}: cannot read: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{where}: not valid YAML{at}") from exc
    except RecursionError as exc:  # PyYAML recurses once per nesting level
        raise error(f"{where}: not valid YAML: nested too deeply") from exc
