"""``sdi publish`` (pygeoapi configuration and OpenAPI document from the catalogue) and ``sdi serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.db import redact
from sdi.errors import ConfigError


@clean_errors
def publish_cmd(
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Folder for pygeoapi-config.yml and "
                                                    "pygeoapi-openapi.yml (default pygeoapi_config/).")] = None,
    public_url: Annotated[str | None, typer.Option("--public-url", help="Base URL the API is served at "
                                                   "(default SDI_PUBLIC_URL).")] = None,
) -> None:
    """Write the pygeoapi configuration and OpenAPI document for every loaded layer and the catalogue."""
    from sdi.publishing.config import publish

    settings = settings_from_env()
    result = publish(settings, output_dir=output_dir, public_url=public_url)
    consoles.out.print(f"wrote {result.config} ({len(result.collections)} collections: "
                       f"{', '.join(result.collections)})", markup=False)
    consoles.out.print(f"wrote {result.openapi}", markup=False)


@clean_errors
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    config: Annotated[Path | None, typer.Option("--config", help="pygeoapi configuration (default "
                                                "pygeoapi_config/pygeoapi-config.yml, or SDI_PYGEOAPI_CONFIG); "
                                                "its OpenAPI document is read from the same folder.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the OGC API (pygeoapi under uvicorn) with the read-only database role."""
    import uvicorn

    from sdi.publishing.app import ServeSettings, serve_environment

    settings = settings_from_env()
    try:
        serve = ServeSettings()
    except Exception as exc:  # pydantic ValidationError: a bad SDI_* variable
        raise ConfigError(f"invalid SDI_* setting: {str(exc).splitlines()[1:3]}") from exc
    if config is not None:
        serve = serve.model_copy(update={"pygeoapi_config": config, "pygeoapi_openapi": None})
    env = serve_environment(settings, serve)
    os.environ.update(env)  # the workers (spawned) inherit it and build the app from it
    os.environ["SDI_PYGEOAPI_CONFIG"] = env["PYGEOAPI_CONFIG"]
    consoles.err.print(f"serving {env['PYGEOAPI_CONFIG']} on http://{host}:{port} with {workers} worker(s), "
                       f"database {redact(env['SDI_DATABASE_URL'])}", markup=False)
    uvicorn.run("sdi.publishing.app:app", host=host, port=port, workers=workers, log_level=log_level,
                proxy_headers=True, forwarded_allow_ips="127.0.0.1")
