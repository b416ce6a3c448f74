"""pygeoapi's PostgreSQL process manager, keeping jobs in ``sdi.jobs`` of the SDI database.

pygeoapi's :class:`~pygeoapi.process.manager.postgresql.PostgreSQLManager` connects through psycopg2
(not installed: HK SDI uses psycopg 3) with credentials written in the configuration file. This
subclass connects with :func:`sdi.db.connect` instead, so ``connection: env`` means the database of
``SDI_DATABASE_URL`` at serve time: the read-only role that ``sdi serve`` sets up, which may write
``sdi.jobs`` and nothing else (see :data:`sdi.db.WRITABLE_BY_READER`). Every execution, synchronous
or not, is recorded as a row; results are JSON files in ``output_dir`` (``SDI_DATA_DIR/jobs``).
A synchronous execution that fails on the server's side (the processor's ``failure`` has a 5xx
status) is answered with that status instead of pygeoapi's blanket 400.

Configuration (``server.manager`` in the pygeoapi configuration, written by ``sdi publish``)::

    manager:
      name: sdi.publishing.jobs.SdiJobManager
      connection: env          # or a libpq URL
      output_dir: /path/to/data/jobs
"""

from __future__ import annotations

import threading
from multiprocessing.dummy import DummyProcess
from pathlib import Path
from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.process.manager.postgresql import PostgreSQLManager
from pygeoapi.provider.sql import get_table_model
from pygeoapi.util import JobStatus, RequestedResponse, Subscriber
from sqlalchemy import create_engine

from sdi.db import connect
from sdi.errors import ConfigError
from sdi.settings import Settings

MANAGER = "sdi.publishing.jobs.SdiJobManager"
JOBS_SCHEMA, JOBS_TABLE = "sdi", "jobs"


def manager_config(settings: Settings) -> dict[str, Any]:
    """The ``server.manager`` block: jobs in ``sdi.jobs`` of the served database, results below the data dir."""
    return {"name": MANAGER, "connection": "env", "output_dir": str((Path(settings.data_dir) / "jobs").resolve())}


class SdiJobManager(PostgreSQLManager):
    """Jobs in ``sdi.jobs`` through psycopg 3; asynchronous execution (``Prefer: respond-async``) supported.

    Parameters
    ----------
    manager_def
        The ``server.manager`` block: ``connection`` is ``env`` (``SDI_DATABASE_URL``) or a libpq URL;
        ``output_dir`` is the folder for result files (created when missing; required, since the
        results endpoint reads them back).

    Raises
    ------
    ConfigError
        When ``output_dir`` is missing or cannot be created, or ``sdi.jobs`` cannot be read (the
        database is not migrated: run ``sdi db upgrade``).
    """

    def __init__(self, manager_def: dict[str, Any]) -> None:
        BaseManager.__init__(self, manager_def)  # PostgreSQLManager's own __init__ needs psycopg2
        self.is_async = True
        self.id_field = "identifier"
        self.supports_subscribing = True
        connection = manager_def.get("connection") or "env"
        settings = Settings() if connection == "env" else Settings(database_url=str(connection))
        if self.output_dir is None:
            raise ConfigError("server.manager.output_dir: a folder for job results is required")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"server.manager.output_dir: cannot create {self.output_dir}: {exc}") from exc
        self.db_search_path = (JOBS_SCHEMA,)
        self._engine = create_engine("postgresql+psycopg://", creator=lambda: connect(settings),
                                     pool_pre_ping=True)
        try:
            self.table_model = get_table_model(JOBS_TABLE, self.id_field, self.db_search_path, self._engine)
        except Exception as exc:  # pygeoapi raises its provider errors, SQLAlchemy its own
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"cannot read the process jobs table {JOBS_SCHEMA}.{JOBS_TABLE} ({detail}); "
                              "run `sdi db upgrade`") from exc

    def _execute_handler_sync(self, p: BaseProcessor, job_id: str, data_dict: dict[str, Any],
                              requested_outputs: dict[str, Any] | None = None, subscriber: Subscriber | None = None,
                              requested_response: str | None = RequestedResponse.raw.value,
                              ) -> tuple[str, Any, JobStatus]:
        """Run the process and record the job (pygeoapi's handler); then, for a synchronous request whose
        processor failed with a server-side error (its ``failure`` has a 5xx status), raise that error.

        pygeoapi answers every failed synchronous job with 400 ``InvalidParameterValue``; raised from
        here, :class:`~pygeoapi.process.base.ProcessorExecuteError` is answered with its own status
        (503 for an unreachable database, 500 for a bug). Background (asynchronous) jobs only record it.
        """
        result: tuple[str, Any, JobStatus] = super()._execute_handler_sync(
            p, job_id, data_dict, requested_outputs, subscriber, requested_response)
        failure = getattr(p, "failure", None)
        if (result[2] == JobStatus.failed and isinstance(failure, ProcessorExecuteError)
                and failure.http_status_code >= 500 and not isinstance(threading.current_thread(), DummyProcess)):
            raise failure
        return result

    def __repr__(self) -> str:
        return f"<SdiJobManager> {self.name}"
