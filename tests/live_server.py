"""Live servers for tests: pygeoapi or ``sdi serve`` on a free loopback port, always stopped (bounded waits)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sdi.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 120  #: the longest a test waits for an asynchronous job to end


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server (uvicorn stops its workers), then SIGKILL its process group if anything is left."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group this helper started (start_new_session=True)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextmanager
def running(command: list[str], *, env: dict[str, str], cwd: Path, ready_url: str, log: Path,
            timeout: float = START_TIMEOUT_S) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the ``with`` block ends; fail the test if ``ready_url`` never answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
                try:
                    if requests.get(ready_url, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not answer {ready_url} within {timeout:.0f} s: {log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield proc
        finally:
            _stop(proc)


@contextmanager
def pygeoapi_server(config_for_port: Callable[[int], str], folder: Path, database_url: str) -> Iterator[str]:
    """pygeoapi's Starlette app under uvicorn with the configuration text made for its port; yields its URL.

    The OpenAPI document is generated first, with ``SDI_DATABASE_URL`` set (sdi's providers read their
    fields from the database).
    """
    from pygeoapi.openapi import generate_openapi_document

    port = free_port()
    config = folder / "pygeoapi-config.yml"
    config.write_text(config_for_port(port), encoding="utf-8")
    openapi = folder / "openapi.yml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDI_DATABASE_URL", database_url)
        openapi.write_text(generate_openapi_document(config, "yaml"), encoding="utf-8")
    env = {**os.environ, "PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi),
           "SDI_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "pygeoapi.starlette_app:APP", "--host", "127.0.0.1",
               "--port", str(port)]
    with running(command, env=env, cwd=folder, ready_url=f"{base}/conformance?f=json", log=folder / "server.log"):
        yield base


@contextmanager
def sdi_server(settings: Settings, folder: Path, *, workers: int = 2, extra_env: dict[str, str] | None = None,
               port: int | None = None) -> Iterator[str]:
    """``sdi serve`` (``workers`` workers) on a free port, publishing the database's layers live; yields its URL."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SDI_DATABASE_URL": settings.database_url, "SDI_DATA_DIR": str(settings.data_dir),
           "PYTHONPATH": str(ROOT), **(extra_env or {})}
    for name in ("PYGEOAPI_CONFIG", "PYGEOAPI_OPENAPI", "SDI_PUBLIC_URL", "SDI_SERVER_CONFIG", "SDI_PYGEOAPI_CONFIG"):
        if name not in (extra_env or {}):
            env.pop(name, None)
    command = [sys.executable, "-m", "sdi.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning"]
    with running(command, env=env, cwd=folder, ready_url=f"{base}/conformance?f=json", log=folder / "server.log"):
        yield base


@dataclass(frozen=True)
class Live:
    """A running ``sdi serve``: its base URL, the settings of its database and its log file."""

    url: str
    settings: Settings
    log: Path


@dataclass(frozen=True)
class LiveFolder:
    """A running ``sdi serve`` of a test module's own making: its base URL, the settings of its database and the
    folder it keeps its files in."""

    url: str
    settings: Settings
    folder: Path


@contextmanager
def live_layers(folder: Path, layer_ids: Iterable[str] = (), *, definitions: Iterable[Path] = (), workers: int = 2,
                extra_env: dict[str, str] | None = None) -> Iterator[Live]:
    """``sdi serve`` over a fresh database with ``definitions`` and the layers ``layer_ids`` loaded (see
    :func:`tests.conftest.loaded_database`), its data directory and log in ``folder``."""
    from tests.conftest import loaded_database

    with loaded_database(layer_ids, definitions=definitions, data_dir=folder / "store") as settings, \
            sdi_server(settings, folder, workers=workers, extra_env=extra_env) as url:
        yield Live(url, settings, folder / "server.log")


def wait_for_job(location: str, headers: dict[str, str] | None = None, timeout: float = JOB_TIMEOUT_S,
                 poll_s: float = 0.2) -> dict[str, Any]:
    """The status document of the job at ``location`` once it ended (``successful`` or ``failed``), or the last
    one seen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = requests.get(location, params={"f": "json"}, headers=headers, timeout=30).json()
        if status["status"] in ("successful", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(poll_s)
