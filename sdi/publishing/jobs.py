"""A pygeoapi process manager keeping jobs in ``sdi.jobs`` of the SDI database (psycopg 3, no SQLAlchemy).

Served by sdi, the manager definition carries the worker's ``runtime`` and every job query runs on its pool, as
the read-only role, which may write ``sdi.jobs`` and nothing else (see :data:`sdi.db.WRITABLE_BY_READER`).
Outside sdi (stock pygeoapi with a configuration from ``sdi publish``) ``connection: env`` means the database
of ``SDI_DATABASE_URL``. Every execution, synchronous or not, is recorded as a row; results are JSON files in
``output_dir`` (``SDI_DATA_DIR/jobs``). A synchronous execution that fails on the server's side (the
processor's ``failure`` has a 5xx status) is answered with that status instead of pygeoapi's blanket 400.
Callback subscribers are not supported: the server never requests a URL a client names.

Configuration (``server.manager`` in the pygeoapi configuration, written by ``sdi publish``)::

    manager:
      name: sdi.publishing.jobs.SdiJobManager
      connection: env          # or a libpq URL
      output_dir: /path/to/data/jobs
"""

from __future__ import annotations

import threading
from contextlib import suppress
from multiprocessing.dummy import DummyProcess
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError
from pygeoapi.process.manager.base import BaseManager
from pygeoapi.util import JobStatus, RequestedResponse, Subscriber

from sdi.catalogue.search import fetcher
from sdi.db import connect
from sdi.errors import ConfigError
from sdi.settings import Settings

MANAGER = "sdi.publishing.jobs.SdiJobManager"
COLUMNS = ("identifier", "type", "process_id", "created", "started", "updated", "finished", "status", "location",
           "mimetype", "message", "progress", "parameters")
TABLE = sql.Identifier("sdi", "jobs")


def manager_config(settings: Settings) -> dict[str, Any]:
    """The ``server.manager`` block: jobs in ``sdi.jobs`` of the served database, results below the data dir."""
    return {"name": MANAGER, "connection": "env", "output_dir": str((Path(settings.data_dir) / "jobs").resolve())}


class SdiJobManager(BaseManager):
    """Jobs in ``sdi.jobs``; asynchronous execution (``Prefer: respond-async``) supported.

    Raises
    ------
    ConfigError
        When ``output_dir`` is missing or cannot be created.
    """

    def __init__(self, manager_def: dict[str, Any]) -> None:
        super().__init__(manager_def)
        self.is_async = True
        self.id_field = "identifier"
        self.supports_subscribing = False
        self.runtime = manager_def.get("runtime")
        self.connection = str(manager_def.get("connection") or "env")
        if self.output_dir is None:
            raise ConfigError("server.manager.output_dir: a folder for job results is required")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"server.manager.output_dir: cannot create {self.output_dir}: {exc}") from exc

    def _run(self, query: sql.SQL | sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows of one statement: on the web worker's pool when served by sdi, else on a connection of its own."""
        if self.runtime is not None:
            return list(self.runtime.fetcher()(query, params))
        settings = Settings() if self.connection == "env" else Settings(database_url=self.connection)
        with connect(settings, autocommit=True) as conn:
            return fetcher(conn)(query, params)

    def get_jobs(self, status: JobStatus | None = None, limit: int | None = None,
                 offset: int | None = None) -> dict[str, Any]:
        """Jobs, newest first (``status`` filters); ``{"jobs": [...], "numberMatched": n}``."""
        where = sql.SQL("where status = %(status)s") if status is not None else sql.SQL("")
        rows = self._run(sql.SQL("select *, count(*) over () as __n from {} {} order by created desc nulls last "
                                 "limit %(limit)s offset %(offset)s").format(TABLE, where),
                         {"status": status.value if status is not None else None, "limit": limit or 1000,
                          "offset": offset or 0})
        matched = int(rows[0]["__n"]) if rows else 0
        return {"jobs": [{k: v for k, v in r.items() if k != "__n"} for r in rows], "numberMatched": matched}

    def add_job(self, job_metadata: dict[str, Any]) -> str:
        """Insert a job row; returns its identifier."""
        values = {k: v for k, v in job_metadata.items() if k in COLUMNS}
        if isinstance(values.get("parameters"), dict | list):
            values["parameters"] = Jsonb(values["parameters"])
        names = list(values)
        self._run(sql.SQL("insert into {} ({}) values ({}) returning identifier").format(
            TABLE, sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder(n) for n in names)), values)
        return str(job_metadata["identifier"])

    def update_job(self, job_id: str, update_dict: dict[str, Any]) -> bool:
        """Update a job's columns; whether a row changed."""
        values = {k: v for k, v in update_dict.items() if k in COLUMNS and k != "identifier"}
        if not values:
            return False
        rows = self._run(sql.SQL("update {} set {} where identifier = %(__id)s returning identifier").format(
            TABLE, sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
                                      for k in values)), {**values, "__id": job_id})
        return len(rows) == 1

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job; pygeoapi's ``JobNotFoundError`` when there is none."""
        from pygeoapi.process.base import JobNotFoundError

        rows = self._run(sql.SQL("select * from {} where identifier = %(id)s").format(TABLE), {"id": job_id})
        if not rows:
            raise JobNotFoundError()
        return rows[0]

    def delete_job(self, job_id: str) -> bool:
        """Delete a job and its result file."""
        job = self.get_job(job_id)
        rows = self._run(sql.SQL("delete from {} where identifier = %(id)s returning identifier").format(TABLE),
                         {"id": job_id})
        location = job.get("location")
        if location and self.output_dir is not None:
            path = Path(location)
            if path.resolve().parent == Path(self.output_dir).resolve():
                with suppress(FileNotFoundError):
                    path.unlink()
        return len(rows) == 1

    def get_job_result(self, job_id: str) -> tuple[Any, ...]:
        """(mimetype, output) of a successful job; ``(None,)`` while it is not."""
        import json

        from pygeoapi.process.base import JobResultNotFoundError

        job = self.get_job(job_id)
        if JobStatus[job["status"]] != JobStatus.successful:
            return (None,)
        location, mimetype = job.get("location"), job.get("mimetype")
        if not location:
            raise JobResultNotFoundError()
        try:
            path = Path(location)
            if mimetype in (None, "application/json", "application/ld+json"):
                return mimetype, json.loads(path.read_text(encoding="utf-8"))
            return mimetype, path.read_bytes()
        except (OSError, ValueError) as exc:
            raise JobResultNotFoundError() from exc

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
            p, job_id, data_dict, requested_outputs, None, requested_response)
        failure = getattr(p, "failure", None)
        if (result[2] == JobStatus.failed and isinstance(failure, ProcessorExecuteError)
                and failure.http_status_code >= 500 and not isinstance(threading.current_thread(), DummyProcess)):
            raise failure
        return result

    def __repr__(self) -> str:
        return f"<SdiJobManager> {self.name}"
