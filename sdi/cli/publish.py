"""``sdi publish`` (a pygeoapi configuration and OpenAPI document from the catalogue) and ``sdi serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.cli.ports import check_port, where
from sdi.db import redact
from sdi.errors import ConfigError

if TYPE_CHECKING:
    from sdi.web.settings import WebSettings


def web_settings() -> WebSettings:
    """The web settings from the ``SDI_*`` environment; a bad variable is a one-line :class:`ConfigError`."""
    from sdi.web.settings import WebSettings

    try:
        return WebSettings()
    except Exception as exc:  # pydantic ValidationError: a bad SDI_* variable
        raise ConfigError(f"invalid SDI_* setting: {str(exc).splitlines()[1:3]}") from exc


@clean_errors
def publish_cmd(
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Folder for pygeoapi-config.yml and "
                                                    "pygeoapi-openapi.yml (default pygeoapi_config/).")] = None,
    public_url: Annotated[str | None, typer.Option("--public-url", help="Base URL the API is served at "
                                                   "(default SDI_PUBLIC_URL, else http://127.0.0.1:5000).")] = None,
    base: Annotated[Path | None, typer.Option("--base", help="Hand-edited server metadata (a copy of the "
                                              "packaged sdi/web/base.yml); default: the packaged one.")] = None,
) -> None:
    """Write a pygeoapi configuration and OpenAPI document for every loaded layer (a snapshot).

    `sdi serve` does not need it: it publishes every layer live from the catalogue. Use this to review the
    configuration, to run stock pygeoapi, or to give `sdi serve --config` edited server metadata.
    """
    from sdi.publishing.config import publish

    settings = settings_from_env()
    result = publish(settings, output_dir=output_dir, public_url=public_url, base_file=base,
                     basemap=web_settings().basemap)
    consoles.out.print(f"wrote {result.config} ({len(result.collections)} collections: "
                       f"{', '.join(result.collections)})", markup=False)
    consoles.out.print(f"wrote {result.openapi}", markup=False)


@clean_errors
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    config: Annotated[Path | None, typer.Option("--config", help="Server metadata: a copy of the packaged "
                                                "base.yml or a configuration written by `sdi publish` "
                                                "(default SDI_SERVER_CONFIG, else the packaged base.yml).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the OGC API with the read-only database role; every loaded layer is published live."""
    import uvicorn

    from sdi.publishing.app import serve_environment
    from sdi.publishing.config import read_base
    from sdi.web.assets import default_base

    settings = settings_from_env()
    web = web_settings()
    if config is not None:
        os.environ["SDI_SERVER_CONFIG"] = str(config.resolve())
    # fail now, with the file's name, not in each worker
    read_base(config or web.server_config or default_base(), web.basemap)
    check_port(host, port, workers=workers)
    os.environ.update(serve_environment(settings, web))  # the workers (spawned) inherit it
    check_port(host, port, workers=workers)  # again: preparing the database role may have taken a while
    consoles.err.print(f"serving on http://{where(host, port)} with {workers} worker(s), database "
                       f"{redact(os.environ['SDI_DATABASE_URL'])}", markup=False)
    uvicorn.run("sdi.publishing.app:app", host=host, port=port, workers=workers, log_level=log_level,
                proxy_headers=True, forwarded_allow_ips="127.0.0.1", access_log=log_level == "debug")
