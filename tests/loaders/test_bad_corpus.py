"""The bad-input corpus (tests/data/bad/cases.yml): each input ends in a clear error or a reported repair.

Never a crash, a hang or a half-written table: errors are one line naming the file, exit code 1,
and leave the database exactly as it was; repairs load and say what they did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from loaders import load
from sdi.layerdef import read_definition
from tests.conftest import DATA, LAYERS, ROOT, db_snapshot
from tests.data.bad.make_corpus import huge_attribute, ten_thousand_columns

BAD = DATA / "bad"
CASES: list[dict[str, Any]] = yaml.safe_load((BAD / "cases.yml").read_text(encoding="utf-8"))
GENERATED = {"huge_attribute.geojson": huge_attribute, "ten_thousand_columns.csv": ten_thousand_columns}


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for case in CASES:
        stem = Path(case["source"]).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    missing = [c["source"] for c in CASES if c["source"] not in GENERATED and not (BAD / c["source"]).exists()]
    assert missing == []


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_bad_input(case: dict[str, Any], settings: Any, db: psycopg.Connection, layer_yaml: Callable[..., Path],
                   tmp_path: Path) -> None:
    source = GENERATED[case["source"]](tmp_path) if case["source"] in GENERATED else BAD / case["source"]
    layer_id = "bad_" + Path(case["source"]).stem.lower()
    path = layer_yaml(layer_id, source, **case.get("keys", {}))
    load(read_definition(LAYERS / "oil_storage_installations.yml"), settings)  # so "unchanged" means something
    before = db_snapshot(db)
    result = subprocess.run([sys.executable, "-m", "sdi.cli", "load", "--json", str(path)],
                            env={"SDI_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"},
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    if case["expect"] == "error":
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ") and case["message"] in lines[0], lines[0]
        assert str(path) in lines[0] or source.stem in lines[0], lines[0]
        assert db_snapshot(db) == before
        return
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["features_written"] == case["rows"]
    if "report" in case:
        assert case["report"] in json.dumps(report, ensure_ascii=False)
    rows = db.execute(f'select count(*) from layers."{layer_id}"').fetchone()
    assert rows == (case["rows"],)
    assert db.execute(f'select count(*) from layers."{layer_id}" where not st_isvalid(geom)').fetchone() == (0,)
    if "value" in case:
        column = case["value"]["column"]
        (value,) = db.execute(f'select "{column}" from layers."{layer_id}"').fetchone()  # type: ignore[misc]
        if "equals" in case["value"]:
            assert value == case["value"]["equals"]
        if "length" in case["value"]:
            assert len(value) == case["value"]["length"]
