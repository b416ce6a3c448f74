"""Where the ``dask`` engine runs: a ``dask.distributed`` cluster (by address or client), a local cluster, or threads.

:func:`dask_client` connects to a running scheduler (``tcp://host:8786``; a cluster started by
``dask scheduler`` / ``dask worker``, dask-kubernetes, Dask Gateway ...), uses a
:class:`distributed.Client` the caller already holds (``gateway_cluster.get_client()``), or starts
a local cluster of worker processes for the duration of the call. :func:`task_runner` wraps that
as a :class:`TaskRunner`, which also runs tasks on dask's in-process ``"threads"`` and
``"synchronous"`` schedulers (no cluster: each task is a plain call in a thread pool or in turn).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from sdi.errors import PlanningError

#: Scheduler names run in this process, without a ``distributed`` cluster.
LOCAL_SCHEDULERS = ("threads", "synchronous")
T = TypeVar("T")


@contextmanager
def dask_client(scheduler: Any = None, *, workers: int | None = None) -> Iterator[Any]:
    """Yield a :class:`distributed.Client` for the ``dask`` engine and close what this call opened.

    Parameters
    ----------
    scheduler
        Address of a running ``dask.distributed`` scheduler (``tcp://host:8786``), or a connected
        :class:`distributed.Client` (used as it is and left open). When ``None``, a local cluster of
        worker processes is started for the duration of the call, listening on the loopback
        interface only.
    workers
        Number of worker processes of the local cluster (default: one per CPU). Ignored with
        ``scheduler``.

    Raises
    ------
    PlanningError
        When the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s", set_as_default=False)
        except OSError as exc:
            raise PlanningError(f"dask scheduler {scheduler!r} is unreachable: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


class TaskRunner:
    """Runs the engine's tasks: on a ``distributed`` client, or in this process (``"threads"``/``"synchronous"``).

    Parameters
    ----------
    client
        A connected :class:`distributed.Client`, or ``None`` for a local scheduler.
    local
        ``"threads"`` or ``"synchronous"`` when ``client`` is ``None``.
    """

    def __init__(self, client: Any | None, local: str | None = None) -> None:
        self.client = client
        self.local = local

    @property
    def workers(self) -> int:
        """How many tasks can run at once: the cluster's worker threads, the CPUs, or 1 (synchronous)."""
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return 1 if self.local == "synchronous" else os.cpu_count() or 1

    def share(self, value: T) -> T | Any:
        """``value`` as every task should receive it: sent once to each worker of a cluster (a future), else itself."""
        if self.client is None:
            return value
        return self.client.scatter(value, broadcast=True, hash=False)

    def map(self, function: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
        """``[function(*args) for args in calls]``, run as tasks; results in the order of ``calls``.

        On a cluster each call is one task (named ``<function>-<uuid>-<i>``); arguments that came
        from :meth:`share` are resolved on the worker. A task's exception is raised here.
        """
        if self.client is not None:
            name = f"{function.__name__}-{uuid.uuid4().hex[:12]}"
            futures = [self.client.submit(function, *args, key=f"{name}-{i}", pure=False)
                       for i, args in enumerate(calls)]
            try:
                return list(self.client.gather(futures))
            finally:
                for future in futures:
                    future.release()
        if self.local == "synchronous" or len(calls) <= 1:
            return [function(*args) for args in calls]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda args: function(*args), calls))


@contextmanager
def task_runner(scheduler: Any = None) -> Iterator[TaskRunner]:
    """A :class:`TaskRunner` for ``scheduler``: ``"threads"``, ``"synchronous"``, an address, a client or ``None``.

    See :func:`dask_client` for the last three; a cluster this call started is closed afterwards.
    """
    if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
        yield TaskRunner(None, scheduler)
        return
    with dask_client(scheduler) as client:
        yield TaskRunner(client)
