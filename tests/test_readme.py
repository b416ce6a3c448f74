"""README.md's code blocks run: each one is executed here, or marked ``<!-- illustrative -->`` on the line before.

Python, shell, YAML and SQL blocks run against a temporary database with the sample layers the README names, a
scratch data folder and home folder, and (for blocks that use ``http://127.0.0.1:5000``) a live ``sdi serve``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from sdi.access import keys
from sdi.settings import Settings
from tests import readme_support as rs
from tests.conftest import LAYERS, loaded_database
from tests.live_server import free_port, running, sdi_server

#: Layers the README's blocks read: the catalogue examples, the clients, and the data-centre screening.
README_LAYERS = ("districts_18", "district_council_2001", "landslide_incidents", "public_hospitals_2013",
                 "industrial_special_waivers", "oil_storage_installations", "country_parks", "synthetic_ozp_zones",
                 "synthetic_lots", "synthetic_substations", "synthetic_mtr_stations", "synthetic_flood_prone_areas",
                 "synthetic_country_park_areas", "synthetic_dem")
#: The key id the README's ``sdi keys revoke`` example names; the stack creates a key with that id.
EXAMPLE_KEY_ID = "k3x9q2m7ab"

TEXT = rs.README.read_text(encoding="utf-8")
BLOCKS = rs.parse_blocks(TEXT)
UNITS = rs.units(BLOCKS)


@dataclass(frozen=True)
class ReadmeStack:
    """The database, folders and environment the README's blocks run in."""

    settings: Settings
    cwd: Path
    env: dict[str, str]


def _restricted_layer(folder: Path) -> Path:
    """``secret_layer``: the weather stations, readable by group ``planning`` only (the README's example)."""
    doc = yaml.safe_load((LAYERS / "weather_stations.yml").read_text(encoding="utf-8"))
    doc.update(id="secret_layer", access={"groups": ["planning"]})
    doc["source"]["path"] = str((LAYERS / doc["source"]["path"]).resolve())
    path = folder / "secret_layer.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _real_config_dirs() -> dict[str, str]:
    """Where the real home's configuration lives, pinned so that a scratch ``HOME`` changes nothing else
    (``sdi serve`` keeps the read-only role's password there; libpq its password file)."""
    home = Path.home()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return {"XDG_CONFIG_HOME": str(config), "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(home / ".cache"),
            "SDI_READER_PASSWORD_FILE": str(config / "hk-sdi" / "reader-password"),
            "PGPASSFILE": os.environ.get("PGPASSFILE") or str(home / ".pgpass"),
            "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or str(config / "matplotlib")}


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeStack]:
    """A database with :data:`README_LAYERS` and ``secret_layer`` loaded, a key of group ``planning`` in
    ``SDI_KEY``, the example key id, and a scratch folder laid out like the repository as working directory."""
    scratch = tmp_path_factory.mktemp("readme")
    definitions = (_restricted_layer(scratch),)
    with loaded_database(README_LAYERS, definitions=definitions, data_dir=scratch / "store") as settings:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            _, key = keys.create(conn, "README examples", ["planning"])
            conn.execute("insert into sdi.api_key (id, name, groups, secret_sha256) values (%s, %s, %s, %s)",
                         (EXAMPLE_KEY_ID, "README example key", ["planning"],
                          hashlib.sha256(secrets.token_bytes(32)).digest()))
        home = scratch / "home"
        home.mkdir()
        env = {name: value for name, value in os.environ.items()
               if name not in ("SDI_PUBLIC_URL", "SDI_SERVER_CONFIG", "SDI_PYGEOAPI_CONFIG", "PYGEOAPI_CONFIG",
                               "PYGEOAPI_OPENAPI", "SDI_LAYERS_DIR")}
        env.update(_real_config_dirs(), HOME=str(home), SDI_DATABASE_URL=settings.database_url,
                   SDI_DATA_DIR=str(settings.data_dir), SDI_KEY=key, PYTHONPATH=str(rs.ROOT), MPLBACKEND="Agg")
        yield ReadmeStack(settings, rs.workdir(scratch / "repo"), env)


@pytest.fixture(scope="module")
def readme_server(readme_stack: ReadmeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sdi serve`` over the README database, for the blocks that use ``http://127.0.0.1:5000``."""
    with sdi_server(readme_stack.settings, tmp_path_factory.mktemp("readme_serve")) as base:
        yield base


def test_every_block_is_run_or_marked_illustrative() -> None:
    assert BLOCKS, "README.md has no code blocks?"
    assert not rs.problems(TEXT, BLOCKS), "\n".join(rs.problems(TEXT, BLOCKS))


def test_most_blocks_run() -> None:
    """The convention is not a way out: at least half the README's blocks are executed."""
    run = sum(len(u.blocks) for u in UNITS)
    assert run * 2 >= len(BLOCKS), f"only {run} of {len(BLOCKS)} blocks run"


@pytest.mark.parametrize("unit", UNITS, ids=[u.label for u in UNITS])
def test_readme_block_runs(unit: rs.Unit, readme_stack: ReadmeStack, request: pytest.FixtureRequest,
                           tmp_path: Path) -> None:
    base = request.getfixturevalue("readme_server") if rs.uses_server(unit) else None
    stack = readme_stack
    if unit.kind == "python":
        print(rs.run_python(unit, env=stack.env, cwd=stack.cwd, base=base))  # shown with -s, or on failure
        return
    (block,) = unit.blocks
    if unit.kind == "shell" and rs.is_serve(block):
        port = free_port()
        with running(rs.serve_command(block, port), env=stack.env, cwd=stack.cwd,
                     ready_url=f"http://127.0.0.1:{port}/collections?f=json", log=tmp_path / "serve.log"):
            pass
    elif unit.kind == "shell":
        print(rs.run_shell(block, env=stack.env, cwd=stack.cwd, base=base))
    elif unit.kind == "yaml":
        assert rs.validate_yaml(block, stack.cwd)
    else:
        rs.run_sql(block, stack.settings.database_url)


# The checker itself: it must catch what it is for.

SAMPLE = """# Title

<!-- illustrative: a diagram -->
```
a ──► b
```

## Code

```python
x = 1
```

```ini
[Unit]
```

<!-- illustrative -->
text, not a fence

```python
assert x == 1
raise ValueError("broken on purpose")
```
"""


def test_parser_finds_blocks_sections_and_markers() -> None:
    blocks = rs.parse_blocks(SAMPLE)
    assert [(b.line, b.lang, b.section, b.illustrative) for b in blocks] == [
        (4, "", "Title", True), (10, "python", "Code", False), (14, "ini", "Code", False),
        (21, "python", "Code", False)]
    found = rs.problems(SAMPLE, blocks)
    assert len(found) == 2
    assert found[0].startswith("line 14: a ```ini block is neither run")
    assert found[1] == "line 18: <!-- illustrative is not directly before a code fence"
    assert [u.label for u in rs.units(blocks)] == ["L10-python+L21-python"]


def test_unclosed_fence_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 1: code fence never closed"):
        rs.parse_blocks("```python\nx = 1\n")


def test_a_failing_python_block_fails_with_its_readme_line(tmp_path: Path) -> None:
    (unit,) = rs.units(rs.parse_blocks(SAMPLE))
    env = {**os.environ, "PYTHONPATH": str(rs.ROOT)}
    with pytest.raises(AssertionError) as caught:
        rs.run_python(unit, env=env, cwd=tmp_path, base=None)
    message = str(caught.value)
    assert "ValueError: broken on purpose" in message
    assert 'README.md", line 23' in message  # the raise, on line 23 of SAMPLE: blocks share one namespace


def test_a_failing_shell_block_fails(tmp_path: Path) -> None:
    (block,) = rs.parse_blocks("```sh\ntrue   # fine\nfalse | cat\necho never\n```\n")
    with pytest.raises(AssertionError, match="exit code 1"):
        rs.run_shell(block, env=dict(os.environ), cwd=tmp_path, base=None)


def test_yaml_fragments_are_validated(tmp_path: Path) -> None:
    from sdi.errors import LayerDefinitionError

    good, bad = rs.parse_blocks("```yaml\nsource: {url: https://example.org/a.zip}\naccess: {groups: [a]}\n"
                                "source:\n  url: https://example.org/b\n  service: ogcapi\n  collection: b\n```\n"
                                "```yaml\nsource: {url: https://example.org/w, service: wfs}\n```\n")
    found = rs.validate_yaml(good, tmp_path)
    assert [d.source.url for d in found] == ["https://example.org/a.zip", None, "https://example.org/b"]
    with pytest.raises(LayerDefinitionError, match="typename"):
        rs.validate_yaml(bad, tmp_path)


def test_server_address_and_port_are_substituted() -> None:
    (block,) = rs.parse_blocks("```sh\n.venv/bin/sdi serve --port 5000 --workers 2   # comment\n```\n")
    assert rs.is_serve(block)
    assert rs.serve_command(block, 6123) == [".venv/bin/sdi", "serve", "--port", "6123", "--workers", "2",
                                             "--log-level", "warning"]
    assert rs.with_server("see http://127.0.0.1:5000/collections", "http://127.0.0.1:7") == \
        "see http://127.0.0.1:7/collections"


def test_a_fence_inside_a_list_item_is_found_and_dedented() -> None:
    (block,) = rs.parse_blocks("- a step:\n\n  ```sh\n  sdi layers list\n  ```\n")
    assert (block.line, block.kind, block.text) == (3, "shell", "sdi layers list\n")


def test_server_metadata_blocks_are_read_as_sdi_serve_reads_them(tmp_path: Path) -> None:
    from sdi.errors import ConfigError

    good, bad = rs.parse_blocks("```yaml\nserver:\n  map: landsd\n```\n```yaml\nserver:\n  map: {urll: x}\n```\n")
    (config,) = rs.validate_yaml(good, tmp_path)
    assert config["server"]["map"]["url"].startswith("https://mapapi.geodata.gov.hk/")
    with pytest.raises(ConfigError, match="unknown key"):
        rs.validate_yaml(bad, tmp_path)
