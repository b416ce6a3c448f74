"""Settings of the web API (``SDI_*`` variables, or ``.env``), read once per worker in the app's lifespan."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_password_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hk-sdi" / "reader-password"


class WebSettings(BaseSettings):
    """The web API's limits, caches and connections (beyond :class:`sdi.settings.Settings`)."""

    model_config = SettingsConfigDict(env_prefix="SDI_", env_file=".env", extra="ignore")

    server_config: Path | None = Field(
        None, validation_alias=AliasChoices("SDI_SERVER_CONFIG", "SDI_PYGEOAPI_CONFIG"),
        description="YAML with the server metadata (server, metadata, logging, processes): a copy of the "
                    "packaged sdi/web/base.yml or a configuration written by `sdi publish`; default: the "
                    "packaged base.yml.")
    reader_password_file: Path = Field(default_factory=_default_password_file,
                                       description="Where a generated read-only role password is kept.")
    reader_host: str | None = Field(None, description="Host the read-only role connects to (default: "
                                                      "the database URL's TCP host, else 127.0.0.1).")
    basemap: str | None = Field(None, description="Base map of the HTML pages, by preset name (`none`, `landsd`: the "
                                "Lands Department's public base map): overrides `server.map` of the server "
                                "configuration.")
    pool_min: int = Field(1, ge=0, le=100, description="Database connections each worker keeps open.")
    pool_max: int = Field(8, ge=1, le=200, description="Most database connections of one worker.")
    pool_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds a request waits for a free "
                                                                 "connection before answering 503 (no longer than "
                                                                 "SDI_CONNECT_TIMEOUT once connecting fails).")
    statement_timeout_ms: int = Field(20_000, ge=100, description="Longest SQL statement of a request (ms).")
    heavy_requests: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1, le=200,
                                description="Heavy requests (pages, new tiles, processes) one worker runs at once "
                                            "(default: half the CPUs: with two workers, one heavy query per "
                                            "core, so light requests are never starved); keep it below pool_max.")
    heavy_wait_s: float = Field(1.0, ge=0, le=60, description="Seconds a heavy request waits for a slot before "
                                                             "answering 503 with Retry-After.")
    max_body_bytes: int = Field(262_144, ge=1024, description="Largest request body (a process execution) in "
                                                               "bytes; larger is a 400.")
    async_jobs: int = Field(2, ge=1, le=64, description="Asynchronous process jobs one worker runs at once; more "
                                                         "are answered 503.")
    job_ttl_hours: float = Field(24.0, gt=0, description="Jobs and their result files are removed this long after "
                                                        "they finished.")
    process_timeout_s: float = Field(120.0, gt=0, description="Statement timeout of the process's queries (s).")
    dask_scheduler: str | None = Field(None, description="Address of a dask scheduler for `engine: dask` in "
                                                         "process inputs; without it `dask` is refused over HTTP.")
    default_items: int = Field(1000, ge=1, description="Features per page when `limit` is not given.")
    max_items: int = Field(10_000, ge=1, description="Most features per page; a larger `limit` is clamped.")
    tile_cache_mb: int = Field(64, ge=0, description="Vector tile cache per worker (MB); 0 turns it off.")
    cache_max_age_s: int = Field(60, ge=0, description="Cache-Control max-age of data responses (seconds).")
    cors_origins: list[str] = Field(default_factory=lambda: ["*"],
                                    description="Origins allowed by CORS (GET); [] turns CORS off.")
    forwarded_allow_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"],
                                           description="Proxies whose X-Forwarded-Proto/-Host/-Prefix headers "
                                                       "are trusted for links (\"*\": any).")
    refresh_s: float = Field(2.0, gt=0, le=3600, description="How often each worker checks the catalogue for "
                                                            "loaded, reloaded or dropped layers (seconds).")
    key_cache_s: float = Field(5.0, ge=0, le=300, description="How long a worker trusts an API key check (seconds): "
                                                            "a revoked key is refused at most this long after.")
    key_rate_limit: int = Field(600, ge=1, description="Requests per minute an API key may make to one worker, "
                                                       "unless the key sets its own (`sdi keys create --rate-limit`).")
    token_rate_limit: int = Field(600, ge=1, description="Requests per minute an OIDC identity may make to one "
                                                         "worker.")
    anonymous_rate_limit: int = Field(0, ge=0, description="Requests per minute one client address may make "
                                                           "anonymously to one worker; 0: no limit.")
    audit_flush_s: float = Field(1.0, gt=0, le=60, description="How often the audit log of reads of restricted "
                                                              "layers is written to the database (seconds).")
