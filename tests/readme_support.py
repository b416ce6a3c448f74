"""Run README.md's code blocks: find them, tell runnable from illustrative ones, and run each kind.

A fenced block is *illustrative* when the line directly before its opening fence starts with
``<!-- illustrative`` (``<!-- illustrative -->``, or ``<!-- illustrative: why -->``); every other block must be of a
kind this module runs:

- ``python``: the python blocks of one section run in order, in one namespace, in a fresh interpreter (so nothing
  they do, such as OWSLib's module-wide headers, leaks into the test process); a traceback names README lines;
- ``sh``/``bash``/``shell``: run by ``bash -euo pipefail`` in a folder that looks like the repository (``.venv``,
  ``layers`` and ``data`` linked), so ``.venv/bin/sdi …`` works and written files stay out of the tree; a block
  whose one command is ``sdi serve`` is started, must answer, and is stopped;
- ``yaml``: a whole layer definition (it has an ``id``), or fragments of one (each top-level key, such as
  ``source:`` or ``access:``, put into a small valid definition), validated by :mod:`sdi.layerdef`; or server
  metadata (it has ``server:``), put into the packaged ``base.yml`` and read as ``sdi serve`` reads it;
- ``sql``: executed on the test database in a transaction that is rolled back.

The README's server address, :data:`DEMO_URL`, is replaced by the live test server's.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- illustrative"
DEMO_URL = "http://127.0.0.1:5000"
KINDS = {"python": "python", "py": "python", "sh": "shell", "bash": "shell", "shell": "shell", "yaml": "yaml",
         "yml": "yaml", "sql": "sql"}
TIMEOUT_S = 300

_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_HEADING = re.compile(r"^#{1,6}\s+(.*\S)")
_SERVE = re.compile(r"^(?:\.venv/bin/)?sdi serve\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    line: int  #: 1-based line of the opening fence (the code starts on the next line)
    lang: str  #: the info string's first word, lower case ("" when none)
    text: str  #: the code, without the fences
    section: str  #: the nearest heading above it
    marker: str | None = None  #: the ``<!-- illustrative … -->`` line before it, if any

    @property
    def kind(self) -> str | None:
        """``python``, ``shell``, ``yaml`` or ``sql`` when this module can run the block, else ``None``."""
        return KINDS.get(self.lang)

    @property
    def illustrative(self) -> bool:
        """Whether the block is marked as illustrative (and is therefore not run)."""
        return self.marker is not None

    @property
    def label(self) -> str:
        """How test ids and messages name the block: ``L<line>-<lang>``."""
        return f"L{self.line}-{self.lang or 'text'}"


@dataclass(frozen=True)
class Unit:
    """What one test runs: one block, or the python blocks of one section in order."""

    kind: str
    blocks: tuple[Block, ...]
    label: str = field(default="")


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of Markdown ``text``, in order.

    Raises
    ------
    ValueError
        For a fence that is never closed.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    section = "(top)"
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            heading = _HEADING.match(lines[i])
            if heading:
                section = heading.group(1)
            i += 1
            continue
        fence, lang = match.group(1), match.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[0] * len(fence))
                    and not lines[j].strip().strip(fence[0])), None)
        if end is None:
            raise ValueError(f"line {i + 1}: code fence never closed")
        before = lines[i - 1].strip() if i > 0 else ""
        marker = before if before.startswith(MARKER) else None
        body = textwrap.dedent("\n".join(lines[i + 1:end]))  # a fence inside a list item is indented
        blocks.append(Block(i + 1, lang, body + "\n", section, marker))
        i = end + 1
    return blocks


def problems(text: str, blocks: Sequence[Block]) -> list[str]:
    """Why the file breaks the convention: blocks neither illustrative nor runnable, markers on no block."""
    found = [f"line {b.line}: a ```{b.lang or '(no language)'} block is neither run by the tests (python, sh, "
             f"yaml, sql) nor preceded by {MARKER} -->" for b in blocks if not b.illustrative and b.kind is None]
    fence_lines = {b.line - 1 for b in blocks}  # 1-based line of each marker's expected place
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(MARKER):
            if number not in fence_lines:
                found.append(f"line {number}: {MARKER} is not directly before a code fence")
            if not line.strip().endswith("-->"):
                found.append(f"line {number}: the illustrative marker must be one line ending with -->")
    return found


def units(blocks: Iterable[Block]) -> list[Unit]:
    """The runnable blocks as test units, in file order: python blocks grouped by section."""
    result: list[Unit] = []
    python: dict[str, list[Block]] = {}
    for block in blocks:
        if block.illustrative or block.kind is None:
            continue
        if block.kind == "python":
            if block.section not in python:
                python[block.section] = []
                result.append(Unit("python", (), block.section))  # placeholder, filled below
            python[block.section].append(block)
        else:
            result.append(Unit(block.kind, (block,), block.label))
    filled = []
    for unit in result:
        if unit.kind == "python" and not unit.blocks:
            group = tuple(python[unit.label])
            unit = Unit("python", group, "+".join(b.label for b in group))
        filled.append(unit)
    return filled


def uses_server(unit: Unit) -> bool:
    """Whether the unit talks to the README's server address."""
    return any(DEMO_URL in b.text for b in unit.blocks)


def is_serve(block: Block) -> bool:
    """Whether the block's one command is ``sdi serve`` (started, checked and stopped rather than run)."""
    commands = [line for line in _commands(block.text)]
    return len(commands) == 1 and bool(_SERVE.match(commands[0]))


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def with_server(text: str, base: str | None) -> str:
    """``text`` with :data:`DEMO_URL` replaced by ``base`` (unchanged when ``base`` is ``None``)."""
    return text if base is None else text.replace(DEMO_URL, base)


def workdir(folder: Path) -> Path:
    """Make ``folder`` look like the repository for the README's relative paths; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (".venv", "layers", "data"):
        link = folder / name
        if not link.exists():
            link.symlink_to(ROOT / name, target_is_directory=True)
    return folder


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> None:
    raise AssertionError(f"{what} failed with exit code {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                         f"--- stderr\n{proc.stderr[-6000:]}")


def run_python(unit: Unit, *, env: Mapping[str, str], cwd: Path, base: str | None) -> str:
    """Run the unit's python blocks in order in one namespace in a new interpreter; return its output.

    Raises
    ------
    AssertionError
        When a block raises (the message holds the traceback, with README line numbers).
    """
    payload = [{"line": b.line, "text": with_server(b.text, base)} for b in unit.blocks]
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cwd, delete=False, encoding="utf-8") as handle:
        json.dump(payload, handle)
    code = "from tests.readme_support import exec_blocks; exec_blocks()"
    proc = subprocess.run([sys.executable, "-c", code, handle.name], env=dict(env), cwd=cwd, text=True,
                          capture_output=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode:
        _fail(f"README python blocks {unit.label}", proc)
    return proc.stdout


def exec_blocks(argv: Sequence[str] | None = None) -> None:
    """Entry point of :func:`run_python`'s interpreter: exec the blocks listed in the JSON file ``argv[1]``.

    Each block is compiled with README.md as its file name and its own line numbers, so a traceback points at
    the README line that failed.
    """
    path = Path((argv or sys.argv)[1])
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for block in json.loads(path.read_text(encoding="utf-8")):
        exec(compile("\n" * block["line"] + block["text"], str(README), "exec"), namespace)


def run_shell(block: Block, *, env: Mapping[str, str], cwd: Path, base: str | None) -> str:
    """Run a shell block with ``bash -euo pipefail``; return its standard output.

    Raises
    ------
    AssertionError
        When a command fails (its output and standard error are in the message).
    """
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", with_server(block.text, base)], env=dict(env),
                          cwd=cwd, text=True, capture_output=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode:
        _fail(f"README shell block {block.label}", proc)
    return proc.stdout


def serve_command(block: Block, port: int) -> list[str]:
    """The ``sdi serve`` command of a serve block, on ``port`` and logging warnings only, as an argument list."""
    words = shlex.split(_commands(block.text)[0], comments=True)
    if "--port" in words:
        words[words.index("--port") + 1] = str(port)
    else:
        words += ["--port", str(port)]
    return [*words, "--log-level", "warning"]


#: A small valid layer definition that YAML fragments are put into.
BASE_DEFINITION: dict[str, Any] = {
    "id": "readme_fragment",
    "title": {"en": "README fragment", "zh": "說明文件片段"},
    "abstract": {"en": "A layer definition made by the README tests.", "zh": "測試"},
    "custodian": "Test Department",
    "licence": "test data",
    "source": {"path": str(ROOT / "data" / "sample" / "geodatastore" / "weather_stations.geojson")},
}


def yaml_fragments(text: str) -> list[str]:
    """The top-level entries of a YAML text, each with its indented lines (a key may repeat between entries)."""
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            chunks.append([line])
        elif chunks:
            chunks[-1].append(line)
    return ["\n".join(chunk) + "\n" for chunk in chunks]


def validate_yaml(block: Block, folder: Path) -> list[Any]:
    """Validate a YAML block as a layer definition, each of its top-level entries as part of one, or (with a
    ``server:`` key) as server metadata (:func:`server_metadata`).

    A whole definition is written to ``folder/readme_layers/<id>.yml`` (``folder`` made by :func:`workdir`, so
    a ``source.path`` relative to ``layers/`` resolves the same) and read back with
    :func:`sdi.layerdef.read_definition`; its source file must exist. Returns the definitions.

    Raises
    ------
    sdi.errors.LayerDefinitionError, sdi.errors.ConfigError
        When the block is not a valid layer definition, or not valid server metadata.
    AssertionError
        When a whole definition's source file does not exist.
    """
    import yaml

    from sdi.layerdef import parse_definition, read_definition

    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "server" in data:
        return [server_metadata(data, folder)]
    if isinstance(data, dict) and "id" in data:
        target = folder / "readme_layers" / f"{data['id']}.yml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        definition = read_definition(target)
        if definition.source.path is not None:
            assert definition.source_path.exists(), f"{block.label}: no file {definition.source_path}"
        return [definition]
    found = []
    for chunk in yaml_fragments(block.text):
        part = yaml.safe_load(chunk)
        assert isinstance(part, dict), f"{block.label}: {chunk!r} is not a key of a layer definition"
        found.append(parse_definition({**BASE_DEFINITION, **part}, where=f"README.md:{block.line}"))
    return found


def server_metadata(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Put a YAML block's ``server`` keys (and other sections) into a copy of the packaged server metadata and
    read it as ``sdi serve`` does (:func:`sdi.publishing.config.read_base`: base map resolved, placeholders
    refused); return what it reads.

    Raises
    ------
    sdi.errors.ConfigError
        When the metadata is refused.
    """
    import yaml

    from sdi.publishing.config import read_base
    from sdi.web.assets import default_base

    base = yaml.safe_load(default_base().read_text(encoding="utf-8"))
    merged = {**base, **data, "server": {**base["server"], **data["server"]}}
    path = folder / "readme_base.yml"
    path.write_text(yaml.safe_dump(merged, allow_unicode=True), encoding="utf-8")
    return read_base(path)


def run_sql(block: Block, database_url: str) -> list[Any]:
    """Execute a SQL block on the database, in a transaction rolled back afterwards; return the last rows."""
    import psycopg

    rows: list[Any] = []
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(block.text.encode())  # the README's own text, several statements allowed
        rows = cur.fetchall() if cur.description else []
        conn.rollback()
    return rows
