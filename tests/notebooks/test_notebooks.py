"""Every notebook in notebooks/ runs top to bottom against a test database and a live `sdi serve`.

Each notebook is its own test (a failing cell fails it, with the cell's traceback). The kernel is this venv's
interpreter; the notebooks read ``SDI_DATABASE_URL``, ``SDI_API_URL`` and ``SDI_DATA_DIR`` from the environment.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.notebooks.conftest import KERNEL_NAME, NotebookStack

pytestmark = pytest.mark.db

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def test_the_four_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_find_data.ipynb", "02_load_a_file.ipynb", "03_ogc_api_clients.ipynb",
                                           "04_data_centre_sites.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_outputs_are_committed(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, notebook_stack: NotebookStack, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    if path.stem.startswith("04") and notebook_stack.missing_layers:
        pytest.fail(f"{path.name} needs the planning layers; no YAML in layers/ for: "
                    f"{', '.join(notebook_stack.missing_layers)}")
    monkeypatch.setenv("SDI_DATABASE_URL", notebook_stack.settings.database_url)
    monkeypatch.setenv("SDI_API_URL", notebook_stack.api_url)
    monkeypatch.setenv("SDI_DATA_DIR", str(notebook_stack.settings.data_dir))
    monkeypatch.setenv("JUPYTER_PATH", str(notebook_stack.jupyter_path))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, when a cell fails
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
