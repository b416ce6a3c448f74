"""Live publishing through the `sdi` commands while `sdi serve` runs: a reload that adds a column reaches the
OpenAPI document, the queryables and the HTML pages within seconds, and a dropped layer's HTML pages are 404.

`tests/web/test_http.py` covers a load (JSON, items, tiles) and a drop (JSON routes); this module covers what a
browser and an OpenAPI client see, with the loads and the drop made by the command line as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import requests

from tests.conftest import DATA, ROOT, loaded_database
from tests.live_server import Live, sdi_server

pytestmark = pytest.mark.db
REFRESH_S = 0.5  #: the test server's SDI_REFRESH_S
WITHIN_S = 5.0  #: how soon every worker must show a change ("within seconds")
LAYER = "live_more"
NEW_COLUMN = "height_m"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """An empty catalogue served by `sdi serve` (2 workers, checking the catalogue every 0.5 s)."""
    folder = tmp_path_factory.mktemp("live_more")
    with loaded_database((), data_dir=folder / "store") as settings, \
            sdi_server(settings, folder, extra_env={"SDI_REFRESH_S": str(REFRESH_S)}) as url:
        yield Live(url, settings, folder / "server.log")


def sdi(live: Live, *args: str) -> None:
    """Run the `sdi` command line on the served database (as its owner)."""
    env = {**os.environ, "SDI_DATABASE_URL": live.settings.database_url, "SDI_DATA_DIR": str(live.settings.data_dir),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "sdi.cli", *args], env=env, cwd=str(live.log.parent),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=30)


def _status_is(url: str, status: int) -> bool:
    return get(url).status_code == status


def settles(check: Callable[[], bool], timeout: float = WITHIN_S, agree: int = 6) -> bool:
    """Whether ``check`` holds ``agree`` times in a row (new connections, so both workers answer) before
    ``timeout``."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        streak = streak + 1 if check() else 0
        if streak >= agree:
            return True
        time.sleep(0.05)
    return False


def _definition(folder: Path, title: str, source: Path) -> Path:
    path = folder / f"{LAYER}.yml"
    path.write_text(f"id: {LAYER}\ntitle: {{en: {title}, zh: 即時發佈測試}}\n"
                    "abstract: {en: Points loaded while the server runs.}\ncustodian: Test Department\n"
                    f"licence: test data\nsource: {{path: {source}}}\n", encoding="utf-8")
    return path


def _source_with_a_new_column(folder: Path) -> Path:
    """The two reference points and a third, each with a numeric column the first load did not have."""
    doc = json.loads((DATA / "good" / "landsd_point.geojson").read_text(encoding="utf-8"))
    third = json.loads(json.dumps(doc["features"][1]))
    third["properties"].update(code="C", name="Wan Chai", name_zh="灣仔")
    third["geometry"]["coordinates"] = [114.1722, 22.2783]
    doc["features"].append(third)
    for n, feature in enumerate(doc["features"]):
        feature["properties"][NEW_COLUMN] = 10.5 * (n + 1)
    path = folder / "with_height.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def _openapi_has_column(live: Live) -> bool:
    doc = get(f"{live.url}/openapi?f=json").json()
    operation = doc["paths"].get(f"/collections/{LAYER}/items", {}).get("get", {})
    names = {p.get("name") for p in operation.get("parameters", [])}  # property=value filters
    enums = [p["schema"]["items"].get("enum", []) for p in operation.get("parameters", [])
             if p.get("name") == "properties"]
    return NEW_COLUMN in names and any(NEW_COLUMN in e for e in enums)


def test_a_reload_adding_a_column_reaches_openapi_queryables_and_html_then_a_drop_404s_the_html(
        live: Live) -> None:
    folder = live.log.parent
    first = _definition(folder, "Live points first", (DATA / "good" / "landsd_point.geojson").resolve())
    sdi(live, "load", str(first))
    assert settles(lambda: get(f"{live.url}/collections/{LAYER}?f=html").status_code == 200)
    assert NEW_COLUMN not in get(f"{live.url}/collections/{LAYER}/queryables?f=json").json()["properties"]
    assert not _openapi_has_column(live)
    assert "Showing 2 of 2 features" in get(f"{live.url}/collections/{LAYER}?f=html").text

    sdi(live, "load", str(_definition(folder, "Live points reloaded", _source_with_a_new_column(folder))))
    assert settles(lambda: NEW_COLUMN in get(f"{live.url}/collections/{LAYER}/queryables?f=json")
                   .json()["properties"]), "the queryables show the new column"
    assert settles(lambda: NEW_COLUMN in get(f"{live.url}/collections/{LAYER}/queryables?f=html").text)
    assert settles(lambda: _openapi_has_column(live)), "the OpenAPI document shows the new column"

    def collection_page_changed() -> bool:
        page = get(f"{live.url}/collections/{LAYER}?f=html").text
        return "Live points reloaded" in page and "Showing 3 of 3 features" in page

    assert settles(collection_page_changed), "the collection page shows the reload's title and count"
    assert settles(lambda: NEW_COLUMN in get(f"{live.url}/collections/{LAYER}/items?f=html").text)

    sdi(live, "layers", "drop", LAYER, "--yes")
    for path in ("", "/items", "/queryables", "/items/1"):
        url = f"{live.url}/collections/{LAYER}{path}?f=html"
        assert settles(partial(_status_is, url, 404)), f"{path or 'collection'} page after the drop"
    assert settles(lambda: f"/collections/{LAYER}/items" not in get(f"{live.url}/openapi?f=json").json()["paths"])
    assert LAYER not in get(f"{live.url}/collections?f=html").text
