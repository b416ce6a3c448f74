"""Servers and database of the API benchmark (``benchmarks/api_bench.py``).

The scratch database, the read-only role's URL, and the three kinds of server it starts: sdi
(:func:`start_sdi`, the one place that knows sdi's command line), TiPg (:func:`start_tipg`) and,
optionally, pygeoapi with its stock PostgreSQL providers (:func:`start_stock`). Every server is a
process group of its own that :meth:`Server.stop` ends; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import requests
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
LAYER = "bench_polygons"
START_TIMEOUT_S = 180.0  #: seconds a server may take to answer its first request
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 1800.0  #: sdi db init / load / publish
CONNECT_TIMEOUT_S = 10
#: The role the other servers read as: the API's login role (NOINHERIT since access control) reads the public's
#: layers after switching to it, as sdi does for an anonymous request (``sdi.access.roles.ANON``).
PUBLIC_ROLE = "sdi_anon"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG2326 = "http://www.opengis.net/def/crs/EPSG/0/2326"
SETUP = {
    "tipg": "python3 -m venv benchmarks/out/.venv-tipg && "
            "benchmarks/out/.venv-tipg/bin/pip install 'tipg>=1.6,<1.7' uvicorn",
    "stock": "python3 -m venv benchmarks/out/.venv-stock && benchmarks/out/.venv-stock/bin/pip install "
             "pygeoapi==0.21.0 psycopg2-binary GeoAlchemy2 SQLAlchemy starlette uvicorn",
    "wrk": "apt-get install -y wrk",
}


class SetupError(RuntimeError):
    """A prerequisite (venv, wrk) is missing; the message gives the command that installs it."""


def venv_tool(name: str, tool: str) -> Path:
    """``benchmarks/out/.venv-<name>/bin/<tool>``, or a :class:`SetupError` naming the set-up command."""
    path = OUT / f".venv-{name}" / "bin" / tool
    if not path.exists():
        raise SetupError(f"{path.relative_to(ROOT)} is missing; set it up (from {ROOT}) with:\n  {SETUP[name]}")
    return path


def redact(text: str, secret: str) -> str:
    """``text`` with ``secret`` (and its URL-quoted form) replaced by ``***``."""
    return text.replace(quote(secret, safe=""), "***").replace(secret, "***") if secret else text


# --- the scratch database and the read-only role ---------------------------------------------------------------


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` (a libpq URL or key=value string) pointing at database ``dbname``."""
    if server_url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(server_url)  # urlunsplit would drop the empty host of postgresql:///db
        return f"{parts.scheme}://{parts.netloc}/{quote(dbname, safe='')}" + (f"?{parts.query}" if parts.query else "")
    return make_conninfo(server_url, dbname=dbname)


@contextlib.contextmanager
def scratch_database(server_url: str, keep: bool) -> Iterator[str]:
    """Create ``sdi_apibench_<random>`` on the server of ``server_url``; yield its URL; drop it unless ``keep``."""
    dbname = f"sdi_apibench_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    try:
        yield database_url(server_url, dbname)
    finally:
        if keep:
            print(f"kept database {dbname} (drop it with: dropdb --force {dbname})", flush=True)
        else:
            with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def _password_file() -> Path:
    if os.environ.get("SDI_READER_PASSWORD_FILE"):
        return Path(os.environ["SDI_READER_PASSWORD_FILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hk-sdi" / "reader-password"


def _stored_password(path: Path) -> str:
    """The password in ``path`` (sdi's file); created with a random one (mode 0600) when missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


def _login_error(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, options=f"-c role={PUBLIC_ROLE}") as conn:
            conn.execute(f"select 1 from layers.{LAYER} limit 1")
        return None
    except psycopg.Error as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return lines[-1] if lines else type(exc).__name__


def reader_url(owner_url: str) -> tuple[str, str]:
    """URL and password of the read-only role (``SDI_READER_ROLE``, default ``sdi_reader``) over TCP.

    The servers compared with sdi log in with it and switch to :data:`PUBLIC_ROLE` at connection start (TiPg:
    asyncpg's ``?role=`` server setting; stock pygeoapi: ``PGOPTIONS``), as sdi does for anonymous requests.

    The password is found as ``sdi serve`` finds it: ``SDI_READER_PASSWORD``, else the file
    ``~/.config/hk-sdi/reader-password`` (``SDI_READER_PASSWORD_FILE``), generated once; when the role
    cannot log in with it, it is set with ``ALTER ROLE`` through the owner's connection.
    """
    role = os.environ.get("SDI_READER_ROLE", "sdi_reader")
    password = os.environ.get("SDI_READER_PASSWORD") or _stored_password(_password_file())
    params = {k: str(v) for k, v in conninfo_to_dict(owner_url).items() if v is not None}
    host = params.get("host", "")
    host = "127.0.0.1" if not host or host.startswith("/") else host
    url = (f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{params.get('port') or 5432}"
           f"/{quote(params['dbname'], safe='')}")
    if _login_error(url) is not None:
        with psycopg.connect(owner_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql.SQL("alter role {} with login password {}").format(sql.Identifier(role),
                                                                                sql.Literal(password)))
        reason = _login_error(url)
        if reason is not None:
            raise RuntimeError(f"role {role!r} cannot read layers.{LAYER} over TCP: {reason}")
    return url, password


# --- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process (its own process group) and how it was started."""

    name: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    command: str  #: the command line with its environment, as printed in the report (secrets redacted)

    def stop(self) -> None:
        """SIGTERM the process group (uvicorn stops its workers), wait, then SIGKILL what is left of it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _shown(cmd: list[str], env: dict[str, str], shown_env: tuple[str, ...], secret: str) -> str:
    assignments = [f"{k}={shlex.quote(env[k])}" for k in shown_env if k in env]
    return redact(" ".join([*assignments, *(shlex.quote(c) for c in cmd)]), secret)


def start_process(name: str, cmd: list[str], env: dict[str, str], cwd: Path, port: int, ready: str,
                  log_dir: Path, started: list[Server], shown: str) -> Server:
    """Start ``cmd`` in a new session and wait (bounded) until ``GET ready`` answers 200 with JSON asked for.

    The server is appended to ``started`` as soon as it runs, so the caller's clean-up stops it even
    when it never becomes ready.
    """
    log = log_dir / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log, shown)
    started.append(server)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; end of {log}:\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.base + ready, headers={"Accept": "application/json"},
                            timeout=10).status_code == 200:
                return server
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer {ready} within {START_TIMEOUT_S:.0f} s; end of {log}:\n"
                               f"{_tail(log)}")
        time.sleep(0.3)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def sdi_env(root: Path, owner_url: str, data_dir: Path) -> dict[str, str]:
    """Environment of sdi's commands: this process's without ``SDI_*``/``PYGEOAPI_*`` settings, plus the run's."""
    keep = {"SDI_READER_PASSWORD", "SDI_READER_PASSWORD_FILE", "SDI_READER_ROLE"}
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("SDI_", "PYGEOAPI_")) and k not in keep)}
    env.update({"SDI_DATABASE_URL": owner_url, "SDI_DATA_DIR": str(data_dir), "PYTHONPATH": str(root)})
    return env


def run_sdi(root: Path, env: dict[str, str], *args: str) -> None:
    """``python -m sdi.cli ARGS`` from ``root`` (bounded); its output is shown only when it fails."""
    proc = subprocess.run([sys.executable, "-m", "sdi.cli", *args], env=env, cwd=str(root), capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sdi {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


@functools.cache
def _serve_help(root: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "sdi.cli", "serve", "--help"], cwd=str(root), capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root),
                                                                    "COLUMNS": "200"})
    return proc.stdout + proc.stderr


def start_sdi(name: str, *, root: Path, owner_url: str, data_dir: Path, port: int, workers: int,
              tile_cache_mb: int | None, legacy: bool, log_dir: Path, started: list[Server]) -> Server:
    """Start ``sdi serve`` (the one place that knows its command line) and wait until the layer is served.

    Parameters
    ----------
    name
        Name of the server in logs and the report.
    root
        The sdi checkout to run (``python -m sdi.cli`` with ``PYTHONPATH=root``).
    owner_url
        URL of the scratch database as its owner (a superuser); sdi switches to the read-only role itself.
    data_dir
        ``SDI_DATA_DIR``.
    port, workers
        Where to listen (127.0.0.1) and how many uvicorn workers.
    tile_cache_mb
        ``SDI_TILE_CACHE_MB`` (0 disables sdi's tile cache); ``None`` leaves sdi's default.
    legacy
        The interface before the server rewrite: ``sdi publish --output-dir D --public-url URL``, then
        ``sdi serve --config D/pygeoapi-config.yml``. Otherwise just ``sdi serve``.
    log_dir
        Folder for the server's log.
    started
        The server is appended to it (for clean-up) as soon as it runs.

    Returns
    -------
    Server
    """
    base = f"http://127.0.0.1:{port}"
    env = sdi_env(root, owner_url, data_dir)
    env["SDI_PUBLIC_URL"] = base
    if tile_cache_mb is not None:
        env["SDI_TILE_CACHE_MB"] = str(tile_cache_mb)
    cmd = [sys.executable, "-m", "sdi.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers)]
    shown_env = ("SDI_DATABASE_URL", "SDI_DATA_DIR", "SDI_TILE_CACHE_MB", "PYTHONPATH")
    prefix = ""
    if legacy:
        publish_dir = log_dir / f"{name}-publish"
        run_sdi(root, env, "publish", "--output-dir", str(publish_dir), "--public-url", base)
        prefix = _shown([sys.executable, "-m", "sdi.cli", "publish", "--output-dir", str(publish_dir),
                         "--public-url", base], env, shown_env, "") + " && "
        cmd += ["--config", str(publish_dir / "pygeoapi-config.yml")]
    if "--log-level" in _serve_help(root):  # no access log: TiPg is run with the same level
        cmd += ["--log-level", "warning"]
    return start_process(name, cmd, env, root, port, f"/collections/{LAYER}", log_dir, started,
                         prefix + _shown(cmd, env, shown_env, ""))


def start_tipg(*, port: int, workers: int, reader: str, password: str, log_dir: Path,
               started: list[Server]) -> Server:
    """Start ``uvicorn tipg.main:app`` (schema ``layers``, the read-only role) and wait until it answers."""
    uvicorn = venv_tool("tipg", "uvicorn")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "DATABASE_URL": f"{reader}?role={PUBLIC_ROLE}", "TIPG_DB_SCHEMAS": '["layers"]', "TIPG_CATALOG_TTL": "0"}
    cmd = [str(uvicorn), "tipg.main:app", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning"]
    shown = _shown(cmd, env, ("DATABASE_URL", "TIPG_DB_SCHEMAS", "TIPG_CATALOG_TTL"), password)
    return start_process("tipg", cmd, env, log_dir, port, f"/collections/layers.{LAYER}", log_dir, started,
                         shown)


def _stock_config(folder: Path, base_url: str, reader: str) -> tuple[Path, Path]:
    """A minimal pygeoapi configuration serving the table with the stock PostgreSQL providers, and its OpenAPI."""
    params = conninfo_to_dict(reader)
    data = {"host": params["host"], "port": int(params.get("port") or 5432), "dbname": params["dbname"],
            "user": params["user"], "password": params["password"], "search_path": ["layers", "public"]}
    common = {"data": data, "table": LAYER, "id_field": "fid", "geom_field": "geom", "storage_crs": EPSG2326}
    contact = {"name": "HK SDI benchmarks", "position": "n/a", "address": "n/a", "city": "Hong Kong",
               "stateorprovince": "Hong Kong", "postalcode": "000000", "country": "Hong Kong",
               "email": "sdi@example.org", "url": "https://example.org", "hours": "n/a", "instructions": "n/a",
               "role": "pointOfContact"}
    config = {
        "server": {"bind": {"host": "127.0.0.1", "port": 0}, "url": base_url,
                   "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8", "gzip": False,
                   "languages": ["en-US"], "pretty_print": False,
                   "limits": {"default_items": 10, "max_items": 1000}, "map": {"url": "", "attribution": ""}},
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "API benchmark (stock providers)", "description": "synthetic",
                               "keywords": ["synthetic"], "keywords_type": "theme",
                               "terms_of_service": "https://example.org", "url": "https://example.org"},
            "license": {"name": "synthetic", "url": "https://example.org"},
            "provider": {"name": "HK SDI benchmarks", "url": "https://example.org"}, "contact": contact},
        "resources": {LAYER: {
            "type": "collection", "title": "Synthetic API benchmark polygons (synthetic)",
            "description": "synthetic", "keywords": ["synthetic"], "links": [],
            "extents": {"spatial": {"bbox": [113.8, 22.1, 114.5, 22.6], "crs": CRS84}},
            "providers": [
                {"type": "feature", "name": "PostgreSQL", **common, "crs": [CRS84, EPSG2326]},
                {"type": "tile", "name": "MVT-postgresql", **common, "options": {"zoom": {"min": 0, "max": 20}},
                 "format": {"name": "pbf", "mimetype": "application/vnd.mapbox-vector-tile"}},
            ]}},
    }
    cfg, openapi = folder / "stock-config.yml", folder / "stock-openapi.yml"
    cfg.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run([str(venv_tool("stock", "pygeoapi")), "openapi", "generate", str(cfg), "--output-file",
                    str(openapi)], check=True, cwd=str(folder), env={**os.environ, "PYGEOAPI_CONFIG": str(cfg)},
                   stdout=subprocess.DEVNULL, timeout=300)
    return cfg, openapi


def start_stock(*, port: int, workers: int, reader: str, password: str, log_dir: Path,
                started: list[Server]) -> Server:
    """Start pygeoapi's Starlette app with its stock ``PostgreSQL`` and ``MVT-postgresql`` providers."""
    uvicorn = venv_tool("stock", "uvicorn")
    cfg, openapi = _stock_config(log_dir, f"http://127.0.0.1:{port}", reader)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(openapi), "PGOPTIONS": f"-c role={PUBLIC_ROLE}"}
    cmd = [str(uvicorn), "pygeoapi.starlette_app:APP", "--host", "127.0.0.1", "--port", str(port), "--workers",
           str(workers), "--log-level", "warning"]
    shown = _shown(cmd, env, ("PYGEOAPI_CONFIG", "PYGEOAPI_OPENAPI"), password)
    return start_process("stock", cmd, env, log_dir, port, f"/collections/{LAYER}", log_dir, started, shown)


# --- what the run was measured on -------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _sdi_revision(root: Path) -> str:
    top = _first_line(["git", "-C", str(root), "rev-parse", "--show-toplevel"])
    if Path(top).resolve() != root.resolve():
        return f"{root} (not a git checkout)"
    rev = _first_line(["git", "-C", str(root), "log", "-1", "--format=%h %cs %s"])
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    return f"{root} at {rev[:90].rstrip()}" + (" + uncommitted changes" if dirty else "")


def environment(owner_url: str, root: Path, with_tipg: bool, with_stock: bool) -> dict[str, str]:
    """Machine, PostgreSQL/PostGIS and software versions, as label → text."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or "?")
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    ram_gib = int(meminfo["MemTotal"].split()[0]) / 2**20
    with psycopg.connect(owner_url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        pg = conn.execute("show server_version").fetchone()
        gis = conn.execute("select postgis_lib_version(), postgis_geos_version(), postgis_proj_version()").fetchone()
    assert pg is not None and gis is not None
    versions = [f"Python {platform.python_version()}", f"pygeoapi {importlib.metadata.version('pygeoapi')} (sdi)"]
    if with_tipg:
        versions.append("TiPg " + _first_line([str(venv_tool("tipg", "python")), "-c",
                                               "import importlib.metadata as m; print(m.version('tipg'), "
                                               "'/ uvicorn', m.version('uvicorn'))"]))
    if with_stock:
        versions.append("stock pygeoapi " + _first_line([str(venv_tool("stock", "python")), "-c",
                                                          "import importlib.metadata as m; "
                                                          "print(m.version('pygeoapi'))"]))
    versions.append(_first_line(["wrk", "-v"]).split(" [")[0])
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {ram_gib:.1f} GiB RAM, Linux {platform.release()}; "
                   f"load average at start {Path('/proc/loadavg').read_text().split()[0]}",
        "database": f"PostgreSQL {pg[0]}, PostGIS {gis[0]} (GEOS {gis[1]}, PROJ {gis[2]}), "
                    "server settings as found",
        "software": ", ".join(versions),
        "sdi": _sdi_revision(root),
    }
