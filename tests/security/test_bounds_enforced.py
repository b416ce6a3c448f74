"""Bounded work, enforced over HTTP (issue: hardening): jobs expire after ``SDI_JOB_TTL_HOURS``, a worker runs at
most ``SDI_HEAVY_REQUESTS`` heavy requests and turns the next away with a prompt 503, and the process's queries
end at ``SDI_PROCESS_TIMEOUT_S``. Each test runs a live ``sdi serve`` (one worker, so every request meets the
same limits) over the planning layers in a temporary database, and makes requests wait by locking a layer's
table from an admin connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from sdi.publishing.process import PROCESS_ID
from sdi.settings import Settings
from tests.live_server import LiveFolder, sdi_server, wait_for_job
from tests.planning.sites_db import planning_database

pytestmark = pytest.mark.db
TTL_HOURS = 1  #: SDI_JOB_TTL_HOURS of the servers here
HEAVY_WAIT_S = 0.3  #: SDI_HEAVY_WAIT_S of the server of the heavy-request test
PROMPT_S = 1.5  #: a request turned away answers within this long
#: A page over the whole territory: heavy (its box is wider than HEAVY_BOX_DEG2), and it reads synthetic_lots.
HEAVY = "/collections/synthetic_lots/items?f=json&limit=5&bbox=113.8,22.1,114.5,22.6"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with planning_database(tmp_path_factory.mktemp("bounds_store")) as found:
        yield found


@pytest.fixture(scope="module")
def live(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFolder]:
    """`sdi serve` with one worker, one heavy slot waited for 0.3 s, and jobs kept an hour."""
    folder = tmp_path_factory.mktemp("bounds_serve")
    env = {"SDI_HEAVY_REQUESTS": "1", "SDI_HEAVY_WAIT_S": f"{HEAVY_WAIT_S:g}", "SDI_JOB_TTL_HOURS": str(TTL_HOURS)}
    with sdi_server(settings, folder, workers=1, extra_env=env) as base:
        yield LiveFolder(base, settings, folder)


def _execute(base: str, inputs: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(f"{base}/processes/{PROCESS_ID}/execution", data=json.dumps({"inputs": inputs}),
                         headers=headers, timeout=120)


def _finished_job(base: str) -> str:
    """The id of an asynchronous job that ran to success."""
    created = _execute(base, {"limit": 2}, Prefer="respond-async")
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    status = wait_for_job(location)
    assert status["status"] == "successful", status
    return str(location.rsplit("/", 1)[1])


def _waiting_on_locks(settings: Settings) -> int:
    """How many of the API's queries wait for a lock."""
    with psycopg.connect(settings.database_url, autocommit=True) as probe:
        row = probe.execute("select count(*) from pg_stat_activity where datname = current_database() and "
                            "usename = %s and wait_event_type = 'Lock'", (settings.reader_role,)).fetchone()
    return int(row[0]) if row else 0


def _until_waiting(settings: Settings, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _waiting_on_locks(settings) < count:
        assert time.monotonic() < deadline, "the request never reached the database"
        time.sleep(0.05)


# --- jobs expire ------------------------------------------------------------------------------------------------

def test_jobs_and_their_results_expire_after_the_configured_age(live: LiveFolder, tmp_path: Path) -> None:
    """Two finished jobs, one aged past SDI_JOB_TTL_HOURS (1 h) and one younger; a fresh worker's first use of
    the jobs removes the old one (row and result file) and keeps the young one. The default TTL (24 h) would keep
    both, so this also shows that the setting is read."""
    old, young = _finished_job(live.url), _finished_job(live.url)
    with psycopg.connect(live.settings.database_url, autocommit=True) as admin:
        found = admin.execute("select identifier::text, location from sdi.jobs where identifier = any(%s)",
                              ([old, young],)).fetchall()
        files = {str(job_id): str(location) for job_id, location in found}
        for job_id, age in ((old, "2 hours"), (young, "30 minutes")):
            admin.execute("update sdi.jobs set created = now() - %(age)s::interval - interval '1 minute', "
                          "started = now() - %(age)s::interval, finished = now() - %(age)s::interval, "
                          "updated = now() - %(age)s::interval where identifier = %(id)s", {"age": age, "id": job_id})
    assert all(Path(files[j]).is_file() for j in (old, young)), files
    # a worker checks for expired jobs at most once a minute: a fresh one (same database) checks on first use
    with sdi_server(live.settings, tmp_path, workers=1, extra_env={"SDI_JOB_TTL_HOURS": str(TTL_HOURS)}) as fresh:
        gone = requests.get(f"{fresh}/jobs/{old}", params={"f": "json"}, timeout=30)
        assert gone.status_code == 404, gone.text
        assert requests.get(f"{fresh}/jobs/{old}/results", params={"f": "json"}, timeout=30).status_code == 404
        kept = requests.get(f"{fresh}/jobs/{young}/results", params={"f": "json"}, timeout=30)
        assert kept.status_code == 200 and kept.json()["type"] == "FeatureCollection", kept.text[:300]
    with psycopg.connect(live.settings.database_url) as admin:
        rows = {r[0] for r in admin.execute("select identifier::text from sdi.jobs where identifier = any(%s)",
                                            ([old, young],)).fetchall()}
    assert rows == {young}, "the expired job's row must be deleted and the young one's kept"
    assert not Path(files[old]).exists(), "the expired job's result file must be deleted"
    assert Path(files[young]).is_file()


# --- a per-worker limit on heavy requests ---------------------------------------------------------------------------

def test_heavy_requests_past_the_limit_get_a_prompt_503_while_light_ones_are_served(live: LiveFolder) -> None:
    """The one heavy slot is held by a page waiting for a locked table; a second heavy request is turned away with
    503 and Retry-After after SDI_HEAVY_WAIT_S, while /conformance and a feature by id answer 200; once the lock is
    released the held page and new heavy requests answer 200."""
    held: dict[str, Any] = {}

    def hold() -> None:
        started = time.monotonic()
        try:
            held["response"] = requests.get(live.url + HEAVY, timeout=60)
        finally:
            held["seconds"] = time.monotonic() - started

    with psycopg.connect(live.settings.database_url) as admin:
        admin.execute("lock table layers.synthetic_lots in access exclusive mode")
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        try:
            _until_waiting(live.settings)
            started = time.monotonic()
            turned_away = requests.get(live.url + HEAVY.replace("limit=5", "limit=6"), timeout=30)
            took = time.monotonic() - started
            assert turned_away.status_code == 503, turned_away.text[:300]
            assert turned_away.headers.get("Retry-After"), turned_away.headers
            assert "busy" in turned_away.json()["description"]
            assert HEAVY_WAIT_S * 0.9 <= took < PROMPT_S, f"turned away after {took:.2f} s"
            for light in ("/conformance?f=json", "/collections/synthetic_ozp_zones/items/1?f=json",
                          "/collections?f=json"):
                started = time.monotonic()
                answer = requests.get(live.url + light, timeout=30)
                took = time.monotonic() - started
                assert answer.status_code == 200, (light, answer.status_code, answer.text[:300])
                assert took < PROMPT_S, f"{light} took {took:.2f} s while the heavy slot was held"
            assert "response" not in held, "the held request must still wait for the lock"
        finally:
            admin.rollback()
            holder.join(timeout=60)
    assert held["response"].status_code == 200, held["response"].text[:300]
    assert held["response"].json()["numberReturned"] == 5
    again = requests.get(live.url + HEAVY.replace("limit=5", "limit=7"), timeout=30)
    assert again.status_code == 200 and again.json()["numberReturned"] == 7


# --- the process's statement timeout -----------------------------------------------------------------------------

def test_the_process_statement_timeout_answers_promptly(settings: Settings, tmp_path: Path) -> None:
    """With SDI_PROCESS_TIMEOUT_S=1 and the candidate table locked, a synchronous execution is answered 503 with
    Retry-After and a one-line message naming the timeout within a few seconds (the API's own statement timeout is
    20 s, so it is the process's that ends it), an asynchronous job ends "failed" with that message, and no
    traceback reaches the log; once the lock is gone the same execution succeeds."""
    with sdi_server(settings, tmp_path, workers=1, extra_env={"SDI_PROCESS_TIMEOUT_S": "1"}) as base, \
            psycopg.connect(settings.database_url) as admin:
        admin.execute("lock table layers.synthetic_lots in access exclusive mode")
        started = time.monotonic()
        try:
            answer = _execute(base, {"limit": 1})
            took = time.monotonic() - started
            created = _execute(base, {"limit": 1}, Prefer="respond-async")
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 15
            while (job := requests.get(created.headers["Location"], params={"f": "json"}, timeout=30).json())[
                    "status"] in ("accepted", "running") and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            admin.rollback()
        assert answer.status_code == 503, (answer.status_code, answer.text[:500])
        assert answer.headers.get("Retry-After")
        message = answer.json()["description"]
        assert "\n" not in message and "1 s" in message and "took longer" in message, message
        assert took < 1 + 3, f"the execution took {took:.1f} s"
        assert job["status"] == "failed" and job["message"] == message, job
        assert _execute(base, {"limit": 1}).status_code == 200
    log = (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-3000:]
