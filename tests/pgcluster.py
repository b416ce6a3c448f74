"""Throwaway PostgreSQL clusters for fault tests: stop, start, freeze and thaw a database without touching the
shared one.

:func:`throwaway_cluster` runs ``initdb`` into a new temporary folder and starts the cluster on a free port of
127.0.0.1 (and a Unix socket in that folder); it is always stopped and removed afterwards. ``initdb`` and
``pg_ctl`` refuse to run as root, so when the tests run as root both run as the ``postgres`` OS user
(``runuser -u postgres --``) and the data directory belongs to it.

Authentication: ``trust`` on the Unix socket and for the superuser ``postgres`` over TCP; every other role
logs in over TCP with a password (``scram-sha-256``), as ``sdi serve``'s read-only role ``sdi_reader`` does
on a stock cluster, so its password is really checked.

:func:`sdi_database` initialises an SDI database in such a cluster and loads layers into it, and
:func:`sdi_on_cluster` starts ``sdi serve`` against it with short timeouts (:class:`Timeouts`), so that
a fault test is quick.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from sdi.settings import Settings
from tests.live_server import free_port, sdi_server


def _pg_bin() -> Path:
    """PostgreSQL's programs: ``SDI_TEST_PG_BIN``, else Debian's PostgreSQL 15, else ``pg_config --bindir``."""
    if os.environ.get("SDI_TEST_PG_BIN"):
        return Path(os.environ["SDI_TEST_PG_BIN"])
    debian = Path("/usr/lib/postgresql/15/bin")
    if debian.is_dir() or shutil.which("pg_config") is None:
        return debian
    found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=False)
    return Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else debian


PG_BIN = _pg_bin()  #: initdb, pg_ctl, postgres
OS_USER = "postgres"  #: the OS user that owns and runs the cluster when the tests run as root
SUPERUSER = "postgres"  #: the cluster's bootstrap superuser
COMMAND_TIMEOUT_S = 120.0  #: initdb, pg_ctl start/stop
PG_CTL_WAIT_S = 60  #: pg_ctl -t
#: Settings for speed and isolation: durability is not needed in a throwaway cluster.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}
HBA = """\
# throwaway test cluster (tests/pgcluster.py)
local   all   all                     trust
host    all   {superuser}   127.0.0.1/32   trust
host    all   all           127.0.0.1/32   scram-sha-256
host    all   all           ::1/128        scram-sha-256
"""


class ClusterError(RuntimeError):
    """A cluster command failed; the message holds its output and the end of the server log."""


def _as_owner(command: list[str]) -> list[str]:
    """``command`` run as the cluster's owner: ``runuser -u postgres --`` when we are root, else ourselves."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *command]
    return command


def pids_with_parent(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (from ``/proc``), in order."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class Cluster:
    """A running throwaway cluster (see :func:`throwaway_cluster`)."""

    folder: Path  #: the temporary folder: ``data/``, ``sockets/``, ``postgres.log``
    port: int
    frozen: list[int] = field(default_factory=list)  #: processes stopped by :meth:`freeze`

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.folder / "data"

    @property
    def sockets(self) -> Path:
        """The Unix socket directory."""
        return self.folder / "sockets"

    @property
    def log(self) -> Path:
        """The server log (``pg_ctl -l``)."""
        return self.folder / "postgres.log"

    @property
    def url(self) -> str:
        """A superuser libpq URL for database ``postgres`` (Unix socket, trust)."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """A superuser libpq URL for database ``dbname`` over the cluster's Unix socket."""
        return (f"postgresql://{SUPERUSER}@/{quote(dbname, safe='')}"
                f"?host={quote(str(self.sockets), safe='/')}&port={self.port}")

    def tcp_url_for(self, dbname: str, user: str = SUPERUSER, password: str | None = None) -> str:
        """A libpq URL for ``dbname`` over TCP (127.0.0.1) as ``user``."""
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    # --- life cycle ------------------------------------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        command = _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args])
        proc = subprocess.run(command, cwd=str(self.folder), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"pg_ctl {' '.join(args)} failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr).strip()[-2000:]}\n{self.log_tail()}")

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections (``pg_ctl start -w``)."""
        self._pg_ctl("-l", str(self.log), "-w", "-t", str(PG_CTL_WAIT_S), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``pg_ctl stop -m mode -w``: ``fast`` ends every session at once); thaws it first."""
        self.thaw()
        self._pg_ctl("-m", mode, "-w", "-t", str(PG_CTL_WAIT_S), "stop")

    @property
    def running(self) -> bool:
        """Whether the postmaster runs (``pg_ctl status``); a frozen cluster counts as running."""
        command = _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"])
        return subprocess.run(command, cwd=str(self.folder), capture_output=True, timeout=COMMAND_TIMEOUT_S,
                              check=False).returncode == 0

    def postmaster_pid(self) -> int | None:
        """The postmaster's process id (from ``postmaster.pid``), or ``None`` when it does not run."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then each of its children: the server accepts TCP connections (the kernel
        does) but answers nothing, as a hung host or a stalled disk would. Returns the stopped pids."""
        pid = self.postmaster_pid()
        if pid is None:
            raise ClusterError("freeze: the cluster does not run")
        os.kill(pid, signal.SIGSTOP)  # first, so that it forks no new child after the children are listed
        self.frozen.append(pid)
        for child in pids_with_parent(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                self.frozen.append(child)
        return list(self.frozen)

    def thaw(self) -> None:
        """SIGCONT every process :meth:`freeze` stopped (children first, then the postmaster)."""
        pids, self.frozen = self.frozen, []
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def _kill(self) -> None:
        """Last resort when ``pg_ctl stop`` failed: SIGKILL the postmaster this helper started, and its children."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = pids_with_parent(pid)
        for target in (pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)
                os.kill(target, signal.SIGKILL)


def _initdb(cluster: Cluster) -> None:
    """``initdb`` (owner: the postgres OS user when root), then the configuration of :data:`SERVER_SETTINGS`."""
    cluster.sockets.mkdir()
    if os.geteuid() == 0:
        os.chmod(cluster.folder, 0o755)  # mkdtemp makes 0700; the postgres user must reach data/ and sockets/
        shutil.chown(cluster.sockets, OS_USER, OS_USER)
        shutil.chown(cluster.folder, OS_USER, OS_USER)
    command = _as_owner([str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "-A", "trust",
                         "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"])
    proc = subprocess.run(command, cwd=str(cluster.folder), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"initdb failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}")
    settings = {**SERVER_SETTINGS, "port": str(cluster.port), "unix_socket_directories": f"'{cluster.sockets}'"}
    with (cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# tests/pgcluster.py\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    (cluster.data / "pg_hba.conf").write_text(HBA.format(superuser=SUPERUSER), encoding="utf-8")


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A new PostgreSQL cluster (``initdb``) on a free port, started; stopped and removed afterwards.

    Yields
    ------
    Cluster
        ``url`` (superuser, Unix socket), ``port``, ``stop()``, ``start()``, ``freeze()``/``thaw()``.
    """
    if not (PG_BIN / "initdb").is_file():
        raise ClusterError(f"{PG_BIN / 'initdb'} is missing (set SDI_TEST_PG_BIN to PostgreSQL's bin folder)")
    folder = Path(tempfile.mkdtemp(prefix="sdi_pgcluster_"))
    cluster = Cluster(folder, free_port())
    try:
        _initdb(cluster)
        cluster.start()
        yield cluster
    finally:
        cluster.thaw()
        if cluster.postmaster_pid() is not None:
            try:
                cluster.stop("immediate")
            except (ClusterError, subprocess.TimeoutExpired):
                cluster._kill()
        shutil.rmtree(folder, ignore_errors=True)


# --- an SDI database in the cluster, served by `sdi serve` ----------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """The server's timeouts for a fault test (short, so the test is quick)."""

    connect_s: int = 2  #: SDI_CONNECT_TIMEOUT
    pool_s: float = 2.0  #: SDI_POOL_TIMEOUT_S
    statement_ms: int = 3000  #: SDI_STATEMENT_TIMEOUT_MS
    refresh_s: float = 0.5  #: SDI_REFRESH_S

    def env(self) -> dict[str, str]:
        """The ``SDI_*`` variables of these timeouts."""
        return {"SDI_CONNECT_TIMEOUT": str(self.connect_s), "SDI_POOL_TIMEOUT_S": f"{self.pool_s:g}",
                "SDI_STATEMENT_TIMEOUT_MS": str(self.statement_ms), "SDI_REFRESH_S": f"{self.refresh_s:g}"}


@contextmanager
def sdi_database(cluster: Cluster, *, layer_ids: Iterable[str] = (), definitions: Iterable[Path] = (),
                 data_dir: Path, dbname: str = "sdi", reader_password: str | None = None) -> Iterator[Settings]:
    """Create database ``dbname`` in ``cluster``, initialise it (``sdi.db.init_db``) and load the YAML files
    ``definitions``, then ``layers/<id>.yml`` of each id in ``layer_ids``; yields its settings (superuser URL,
    ``reader_password`` set on ``sdi_reader``: a random one by default). Dropped afterwards if it still can be.
    """
    from loaders import load
    from sdi.db import init_db
    from sdi.layerdef import read_definition
    from tests.conftest import LAYERS

    with psycopg.connect(cluster.url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    settings = Settings(database_url=cluster.url_for(dbname), layers_dir=LAYERS, data_dir=data_dir,
                        reader_password=reader_password or secrets.token_urlsafe(18))
    try:
        init_db(settings)
        for path in [*definitions, *(LAYERS / f"{layer}.yml" for layer in layer_ids)]:
            load(read_definition(path), settings)
        yield settings
    finally:
        with contextlib.suppress(psycopg.Error), \
                psycopg.connect(cluster.url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


@contextmanager
def sdi_on_cluster(settings: Settings, folder: Path, *, timeouts: Timeouts | None = None, workers: int = 2,
                   extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``sdi serve`` (``tests.live_server.sdi_server``) against an :func:`sdi_database`; yields its base URL.

    ``SDI_DATABASE_URL`` is the cluster's superuser URL: sdi sets the read-only role's password
    (``SDI_READER_PASSWORD``, from ``settings``) and connects as ``sdi_reader`` over TCP with it. The password
    file is kept in ``folder``, never in the home directory. The log is ``folder / "server.log"``.
    """
    env = {"SDI_READER_PASSWORD": settings.reader_password or "",
           "SDI_READER_PASSWORD_FILE": str(folder / "reader-password"), **(timeouts or Timeouts()).env(),
           **(extra_env or {})}
    with sdi_server(settings, folder, workers=workers, extra_env=env) as base:
        yield base


def server_processes(base: str) -> list[int]:
    """The pids of the ``sdi serve`` listening at ``base`` (``http://127.0.0.1:PORT``) and of its children (the
    uvicorn workers): a worker restarted by uvicorn shows as a new pid."""
    port = base.rsplit(":", 1)[1].encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sdi.cli" in argv and b"serve" in argv and port in argv:
            return [int(entry.name), *pids_with_parent(int(entry.name))]
    return []


def wait_until_accepting(cluster: Cluster, timeout: float = 30.0) -> float:
    """Seconds until a superuser connection succeeds (bounded by ``timeout``; raises after it)."""
    started = time.monotonic()
    while True:
        try:
            with psycopg.connect(cluster.url, connect_timeout=2) as conn:
                conn.execute("select 1")
            return time.monotonic() - started
        except psycopg.OperationalError:
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.05)

