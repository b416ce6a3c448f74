"""Jobs of the OGC API – Processes endpoint in ``sdi.jobs``, on the worker's pool: private, bounded, expiring.

* A job belongs to the identity that started it (``sdi.jobs.owner``): another identity gets 404 for it, whatever
  it knows. An anonymous caller's jobs are shared by every anonymous caller, so for them the id is the capability:
  a random UUID (version 4), and knowing one tells nothing of another. ``GET /jobs`` lists an API key's or a
  token's own jobs, and none to an anonymous caller.
* What a job stores of its inputs is capped (:data:`MAX_STORED_INPUT_BYTES`); results are files in
  ``SDI_DATA_DIR/jobs`` named by the id.
* Jobs and their result files are removed :attr:`~sdi.web.settings.WebSettings.job_ttl_hours` after they
  finished (checked at most once a minute, when jobs are used).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from sdi.access.identity import SYSTEM, acting_as, current
from sdi.web.runtime import Runtime

MAX_STORED_INPUT_BYTES = 16_384
EXPIRY_CHECK_S = 60.0
STATUS_FIELDS = ("identifier", "process_id", "status", "message", "progress", "created", "started", "finished",
                 "updated")


def new_job_id() -> str:
    """A random (version 4) UUID."""
    return str(uuid.uuid4())


def is_job_id(text: str) -> bool:
    """Whether ``text`` is a UUID as :func:`new_job_id` writes them (anything else is a 404 without a query)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stored_inputs(inputs: Any) -> Jsonb:
    """The inputs kept with a job: as given when small, else only a note of their size."""
    text = json.dumps(inputs, ensure_ascii=False, default=str)
    if len(text.encode("utf-8")) <= MAX_STORED_INPUT_BYTES:
        return Jsonb(inputs)
    return Jsonb({"note": f"inputs of {len(text.encode('utf-8')):,} bytes, not stored"})


class JobStore:
    """Rows of ``sdi.jobs`` and result files, through the runtime's pool."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.folder = Path(runtime.settings.data_dir) / "jobs"
        self._expired_at = float("-inf")

    def result_path(self, job_id: str) -> Path:
        """Where a job's result is written."""
        return self.folder / f"{job_id}.json"

    async def _run(self, query: sql.Composable, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.runtime.fetch_dicts(query, params)

    async def create(self, job_id: str, process_id: str, inputs: Any) -> None:
        """Record a new, accepted job."""
        now = _now()
        await self._run(sql.SQL("insert into sdi.jobs (identifier, type, process_id, created, updated, status, "
                                "message, progress, parameters, owner) values (%(id)s, 'process', %(process)s, "
                                "%(now)s, %(now)s, 'accepted', 'accepted', 0, %(inputs)s, %(owner)s) "
                                "returning identifier"),
                        {"id": job_id, "process": process_id, "now": now, "inputs": stored_inputs(inputs),
                         "owner": current().id})

    async def update(self, job_id: str, **fields: Any) -> bool:
        """Update a job's columns (``updated`` is set too); whether the job still exists."""
        fields["updated"] = _now()
        assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
                                         for k in fields)
        rows = await self._run(sql.SQL("update sdi.jobs set {} where identifier = %(__id)s returning identifier")
                               .format(assignments), {**fields, "__id": job_id})
        return bool(rows)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """One job of the current identity, or ``None`` (another identity's job is ``None`` too)."""
        if not is_job_id(job_id):
            return None
        await self.expire()
        rows = await self._run(sql.SQL("select {} from sdi.jobs where identifier = %(id)s and owner = %(owner)s")
                               .format(sql.SQL(", ").join(map(sql.Identifier, (*STATUS_FIELDS, "location")))),
                               {"id": job_id, "owner": current().id})
        return rows[0] if rows else None

    async def mine(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """The current identity's jobs, newest first (none for anonymous callers, who share one identity)."""
        if not current().authenticated:
            return []
        await self.expire()
        return await self._run(sql.SQL("select {} from sdi.jobs where owner = %(owner)s order by created desc, "
                                       "identifier limit %(limit)s offset %(offset)s").format(
            sql.SQL(", ").join(map(sql.Identifier, STATUS_FIELDS))),
            {"owner": current().id, "limit": limit, "offset": offset})

    async def delete(self, job_id: str) -> dict[str, Any] | None:
        """Remove a job of the current identity and its result file; the job as it was, or ``None``."""
        if not is_job_id(job_id):
            return None
        rows = await self._run(sql.SQL("delete from sdi.jobs where identifier = %(id)s and owner = %(owner)s "
                                       "returning {}").format(sql.SQL(", ").join(map(sql.Identifier, STATUS_FIELDS))),
                               {"id": job_id, "owner": current().id})
        if rows:
            with suppress(OSError):
                self.result_path(job_id).unlink()
        return rows[0] if rows else None

    async def expire(self, *, force: bool = False) -> int:
        """Remove jobs that finished (or were created) longer ago than the TTL, with their files."""
        if not force and time.monotonic() - self._expired_at < EXPIRY_CHECK_S:
            return 0
        self._expired_at = time.monotonic()
        hours = self.runtime.web.job_ttl_hours
        with acting_as(SYSTEM):
            rows = await self._run(sql.SQL("delete from sdi.jobs where coalesce(finished, updated, created) < "
                                           "now() - %(hours)s * interval '1 hour' returning identifier"),
                                   {"hours": hours})
        for row in rows:
            with suppress(OSError):
                self.result_path(str(row["identifier"])).unlink()
        return len(rows)


def status_document(job: dict[str, Any], base: str) -> dict[str, Any]:
    """The OGC API – Processes status info of a job."""
    job_id = str(job["identifier"])

    def iso(value: Any) -> str | None:
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None

    doc: dict[str, Any] = {
        "type": "process", "jobID": job_id, "processID": job["process_id"], "status": job["status"],
        "message": job.get("message") or "", "progress": int(job.get("progress") or 0),
        "created": iso(job.get("created")), "started": iso(job.get("started")),
        "finished": iso(job.get("finished")), "updated": iso(job.get("updated")),
        "links": [{"rel": "self", "type": "application/json", "title": "This job", "href": f"{base}/jobs/{job_id}"}],
    }
    if job["status"] == "successful":
        doc["links"].append({"rel": "http://www.opengis.net/def/rel/ogc/1.0/results", "type": "application/geo+json",
                             "title": "The results", "href": f"{base}/jobs/{job_id}/results"})
    return doc
