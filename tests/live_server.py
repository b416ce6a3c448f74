"""Start a server process for a test, wait until it answers, and always stop it (bounded waits)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests


@contextmanager
def running(command: list[str], *, env: dict[str, str], cwd: Path, ready_url: str, log: Path,
            timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the ``with`` block ends; fail the test if ``ready_url`` never answers 200."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if requests.get(ready_url, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not answer {ready_url} within {timeout:.0f} s")
                time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
