"""A dask cluster of separate processes on this machine, started with the ``dask`` command-line tools.

:func:`cli_cluster` runs ``dask scheduler`` and ``dask worker`` exactly as an operator would on a real
cluster (every process on 127.0.0.1, dashboards on loopback), waits until the workers have registered and
stops every process on exit. The tests of the ``dask`` engine and ``benchmarks/planning_bench.py`` use it;
an analyst can use it to try ``scheduler="tcp://…"`` without a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sdi.errors import PlanningError

#: Seconds the cluster may take to start (scheduler file written, every worker registered).
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class CliCluster:
    """A running cluster started by :func:`cli_cluster`.

    Attributes
    ----------
    address
        The scheduler's address (``tcp://127.0.0.1:<port>``), for ``scheduler=``.
    worker_pids
        Process ids of the workers (``--no-nanny``: the ``dask worker`` processes themselves).
    logs
        The log file of each process (scheduler first).
    """

    address: str
    worker_pids: tuple[int, ...]
    logs: tuple[Path, ...]


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                     for log in logs if log.exists())


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate each process (workers first), then kill the ones still running after 15 s."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _commands(folder: Path, workers: int, memory_limit: str) -> list[list[str]]:
    dask = str(Path(sys.executable).with_name("dask"))
    loopback = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # the HTTP routes on loopback too
    scheduler_file = str(folder / "scheduler.json")
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", scheduler_file,
                 "--no-jupyter", "--idle-timeout", "900", *loopback]]
    commands += [[dask, "worker", "--scheduler-file", scheduler_file, "--nworkers", "1", "--nthreads", "1",
                  "--no-nanny", "--host", "127.0.0.1", "--name", f"sdi-worker-{i}", "--memory-limit", memory_limit,
                  "--local-directory", str(folder / f"worker-{i}"), "--death-timeout", "60", *loopback]
                 for i in range(workers)]
    return commands


@contextmanager
def cli_cluster(folder: Path, workers: int = 2, *, memory_limit: str = "4GB",
                timeout_s: float = START_TIMEOUT_S) -> Iterator[CliCluster]:
    """Run ``dask scheduler`` and ``workers`` ``dask worker`` processes (one thread each) for a ``with`` block.

    Parameters
    ----------
    folder
        Where the scheduler file, the workers' local directories and one log per process go (created if needed).
    workers
        How many worker processes.
    memory_limit
        Each worker's ``--memory-limit``.
    timeout_s
        How long the start may take; should the calling process die without stopping the cluster, the scheduler
        ends after 15 idle minutes and the workers a minute after it.

    Yields
    ------
    CliCluster
        The scheduler's address, the workers' process ids and the log files.

    Raises
    ------
    PlanningError
        The scheduler did not start, or the workers did not register, within ``timeout_s`` (with the last lines of
        each log).
    """
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    deadline = time.monotonic() + timeout_s
    try:
        for i, command in enumerate(_commands(folder, workers, memory_limit)):
            logs.append(folder / ("scheduler.log" if i == 0 else f"worker-{i - 1}.log"))
            with logs[-1].open("wb") as log:
                processes.append(subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL))
            if i == 0:  # the workers read the scheduler's address from its file
                while not scheduler_file.exists() or not scheduler_file.read_text().strip().endswith("}"):
                    if processes[0].poll() is not None or time.monotonic() > deadline:
                        raise PlanningError(f"dask scheduler did not start within {timeout_s:.0f} s:\n"
                                            f"{_tails(logs)}")
                    time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout="30s", set_as_default=False) as client:
            while True:  # in steps of a second, so that a worker that died at start-up ends the wait
                try:
                    client.wait_for_workers(workers, timeout=1.0)
                    break
                except TimeoutError:
                    exited = [i for i, p in enumerate(processes) if p.poll() is not None]
                    if exited or time.monotonic() > deadline:
                        role = "scheduler" if exited and exited[0] == 0 else "worker"
                        why = f"a dask {role} exited" if exited else f"not within {timeout_s:.0f} s"
                        raise PlanningError(f"{workers} dask workers did not register ({why}; registered: "
                                            f"{len(client.nthreads())}):\n{_tails(logs)}") from None
            pids = tuple(sorted(client.run(os.getpid).values()))
        if pids != tuple(sorted(p.pid for p in processes[1:])):
            raise PlanningError(f"the workers registered at {address} are not the processes started")
        yield CliCluster(address, pids, tuple(logs))
    finally:
        _stop(processes)
