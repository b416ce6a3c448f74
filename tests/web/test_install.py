"""A non-editable install (the wheel, not the checkout) serves the same pages: templates, static files and the
server metadata ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lxml.html
import pytest
import requests

from tests.conftest import ROOT, loaded_database
from tests.live_server import free_port, running

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed (without dependencies) into a folder of its own."""
    wheels, site = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "hk-sdi"  # a copy: building writes build/ and *.egg-info
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "data", "benchmarks", "notebooks", "tests", ".*cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("hk_sdi-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


@pytest.fixture(scope="module")
def server(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sdi serve` run from the installed wheel, in a folder outside the checkout."""
    folder = tmp_path_factory.mktemp("installed_serve")
    with loaded_database(("districts_18",), data_dir=folder / "store") as settings:
        env = {**os.environ, "PYTHONPATH": str(installed), "SDI_DATABASE_URL": settings.database_url,
               "SDI_DATA_DIR": str(settings.data_dir)}
        for name in ("SDI_SERVER_CONFIG", "SDI_PYGEOAPI_CONFIG", "SDI_PUBLIC_URL"):
            env.pop(name, None)
        where = subprocess.run([sys.executable, "-c", "import sdi.web.assets as a; print(a.TEMPLATES_DIR)"],
                               env=env, cwd=folder, capture_output=True, text=True, timeout=60)
        assert where.stdout.strip().startswith(str(installed)), (where.stdout, where.stderr[-500:])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "sdi.cli", "serve", "--port", str(port), "--workers", "1",
                   "--log-level", "warning"]
        with running(command, env=env, cwd=folder, ready_url=f"{base}/conformance?f=json", log=folder / "log"):
            yield base


@pytest.mark.parametrize("path", ["/", "/collections", "/collections/districts_18",
                                  "/collections/districts_18/items", "/collections/districts_18/tiles",
                                  "/openapi"])
def test_pages_and_their_assets_come_from_the_installed_package(server: str, path: str) -> None:
    page = requests.get(f"{server}{path}", params={"f": "html"}, timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert page.headers["content-type"].startswith("text/html")
    doc = lxml.html.fromstring(page.content)
    assets = [*doc.xpath("//script/@src"), *doc.xpath("//link[@rel='stylesheet']/@href")]
    assert assets, "the page loads its scripts and stylesheets"
    for url in assets:
        assert url.startswith(f"{server}/static/"), url
        assert requests.get(url, timeout=30).status_code == 200, url


def test_the_installed_server_metadata_is_the_packaged_one(server: str) -> None:
    landing = requests.get(f"{server}/", params={"f": "json"}, timeout=30).json()
    assert landing["title"].startswith("HK SDI")
