"""The ``sdi`` command line: database set-up, layer validation and loading, the catalogue.

Every :class:`~sdi.errors.SdiError` becomes one ``error: ...`` line on standard error and exit code 1.
"""

from __future__ import annotations

import sys

import typer

from sdi.cli._common import consoles
from sdi.cli.audit import audit_cmd
from sdi.cli.catalogue import catalogue_app
from sdi.cli.db import db_app
from sdi.cli.export import export_cmd
from sdi.cli.keys import keys_app
from sdi.cli.layers import layers_app, load_cmd
from sdi.cli.publish import publish_cmd, serve_cmd
from sdi.cli.sites import sites_cmd
from sdi.cli.sync import sync_cmd
from sdi.errors import SdiError

app = typer.Typer(help="HK SDI: load Hong Kong geodata into PostGIS (EPSG:2326), catalogue and publish it.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(db_app, name="db")
app.add_typer(layers_app, name="layers")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(keys_app, name="keys")
app.command("load")(load_cmd)
app.command("export")(export_cmd)
app.command("publish")(publish_cmd)
app.command("serve")(serve_cmd)
app.command("sites")(sites_cmd)
app.command("sync")(sync_cmd)
app.command("audit")(audit_cmd)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``sdi`` console script."""
    try:
        app()
    except SdiError as exc:
        consoles.err.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        consoles.err.print("error: interrupted; nothing was committed for the layer being loaded", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
