"""`sdi serve` on a port it cannot have: one clear line, exit code 1, and nothing said about serving.

No database is reached: the port is checked before the read-only role is prepared. A port another server listens
on is refused, and so is one another `sdi serve` has bound but not yet listens on (uvicorn's workers listen only
once the application is imported; two servers would otherwise share the port). A port whose last connections are
still closing (TIME_WAIT) is free, unless a socket is also bound there. The probe binds what uvicorn binds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdi.cli import ports
from sdi.cli.publish import check_port
from sdi.errors import ConfigError
from tests.conftest import ROOT


def _serve(port: int, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "SDI_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/never_reached"}  # the check comes first
    return subprocess.run([sys.executable, "-m", "sdi.cli", "serve", "--port", str(port), *extra], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def _occupied(*, listen: bool, host: str = "127.0.0.1") -> Iterator[int]:
    """A port held by a socket on ``host`` (bound with SO_REUSEADDR as uvicorn binds; listening or not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((host, 0))
        if listen:
            busy.listen()
        yield int(busy.getsockname()[1])


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "bound-by-a-starting-server"])
def test_busy_port_is_one_clear_line(tmp_path: Path, listen: bool) -> None:
    with _occupied(listen=listen) as port:
        run = _serve(port, tmp_path)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith("error: ") and f"127.0.0.1:{port} is already in use" in line
    assert f"--port {port + 1}" in line and f"make demo PORT={port + 1}" in line
    assert "serving" not in run.stderr + run.stdout and "Errno" not in line and "Traceback" not in run.stderr


def test_a_server_on_all_addresses_holds_the_loopback_port(tmp_path: Path) -> None:
    with _occupied(listen=True, host="0.0.0.0") as port:
        run = _serve(port, tmp_path, "--host", "localhost")
    assert run.returncode == 1 and "already in use" in run.stderr and "serving" not in run.stderr


def test_unknown_host_is_one_line(tmp_path: Path) -> None:
    run = _serve(5000, tmp_path, "--host", "no-such-host.invalid")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert "--host no-such-host.invalid" in run.stderr and "serving" not in run.stderr


def test_free_port_and_closing_connections_pass() -> None:
    """A free port passes; so does one whose accepted connection the server closed first (TIME_WAIT on its
    side), which a bind without SO_REUSEADDR would refuse."""
    port = _time_wait_port()
    with socket.socket() as strict, pytest.raises(OSError):
        strict.bind(("127.0.0.1", port))  # the situation the test is about
    check_port("127.0.0.1", port)
    with pytest.raises(ConfigError, match="already in use"), _occupied(listen=True) as busy:
        check_port("127.0.0.1", busy)


def _time_wait_port() -> int:
    """A port whose last connection the server closed first: its end is in TIME_WAIT, nothing listens."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        time.sleep(0.2)
        client.close()
    return port


def _lists_bound_sockets() -> bool:
    """Whether this kernel's sock_diag lists bound, not listening sockets (TCP_BOUND_INACTIVE dumps)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        try:
            return ports._holders(int(bound.getsockname()[1])) == 1
        except OSError:
            return False


def test_a_starting_server_holds_a_port_with_closing_connections() -> None:
    """Bound but not yet listening (uvicorn before its workers start) is in use, TIME_WAIT or not."""
    if not _lists_bound_sockets():
        pytest.skip("this kernel does not list bound, not listening sockets")
    port = _time_wait_port()
    check_port("127.0.0.1", port)  # closing connections alone: free
    with socket.socket() as starting:
        starting.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        starting.bind(("127.0.0.1", port))
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)


def test_the_probe_binds_what_uvicorn_binds() -> None:
    """Several workers: uvicorn binds one IPv4 socket for a name (localhost → 127.0.0.1); one worker: asyncio
    binds every address of the name. A server on ::1 holds the port only for the second."""
    assert [a[0] for a in ports._addresses("localhost", 5000, 2)] == [socket.AF_INET]
    assert [a[0] for a in ports._addresses("::1", 5000, 2)] == [socket.AF_INET6]
    one = {(a[0], a[3][0]) for a in ports._addresses("localhost", 5000, 1)}
    assert (socket.AF_INET, "127.0.0.1") in one
    if (socket.AF_INET6, "::1") not in one:
        pytest.skip("localhost has no IPv6 address here")
    try:
        held = _occupied(listen=True, host="::1")
        port = held.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        check_port("localhost", port, workers=2)
        with pytest.raises(ConfigError, match="already in use"):
            check_port("localhost", port, workers=1)
    finally:
        held.__exit__(None, None, None)
