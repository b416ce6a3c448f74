"""Where the ``dask`` engine runs: a ``dask.distributed`` scheduler given by address, or a local cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sdi.errors import PlanningError


@contextmanager
def dask_client(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[object]:
    """Yield a :class:`distributed.Client` for the ``dask`` engine and close what this call opened.

    Parameters
    ----------
    scheduler
        Address of a running ``dask.distributed`` scheduler (``tcp://host:8786``). When ``None``,
        a local cluster of worker processes is started for the duration of the call.
    workers
        Number of worker processes of the local cluster (default: one per CPU). Ignored with
        ``scheduler``.

    Raises
    ------
    PlanningError
        When the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

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
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client
