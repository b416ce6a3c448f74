"""Settings, read from ``SDI_*`` environment variables (or a ``.env`` file) and passed explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """HK SDI settings.

    Each field reads the environment variable ``SDI_<FIELD>``, for example ``SDI_DATABASE_URL``.
    Nothing is read at import time: build one ``Settings()`` at the edge (CLI, server, notebook)
    and pass it down.
    """

    #: ``hide_input_in_errors``: a bad value may hold a password, so validation errors never repeat it.
    model_config = SettingsConfigDict(env_prefix="SDI_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(
        "postgresql:///sdi",
        description="libpq URL of the SDI database; the default is database 'sdi' on the local server.",
    )

    @field_validator("database_url")
    @classmethod
    def _parses(cls, value: str) -> str:
        """Refuse a connection string libpq cannot parse, naming it with its passwords masked."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        from sdi.db import redact, scrub  # sdi.db imports this module

        try:
            conninfo_to_dict(value)
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{redact(value)} is not a valid connection string: {scrub(detail, value)}") from None
        return value

    layers_dir: Path = Field(PROJECT_ROOT / "layers", description="Folder of layer YAML files.")
    data_dir: Path = Field(PROJECT_ROOT / "data" / "store", description="Folder for raster and derived files.")
    owner_role: str = Field("sdi_owner", description="Role that owns and loads the SDI schemas.")
    reader_role: str = Field("sdi_reader", description="Read-only role that the API connects with.")
    reader_password: str | None = Field(None, description="Password set on the read-only role, if any.")
    public_url: str | None = Field(None, description="Base URL the OGC API is served at, for links; default: "
                                                     "each request's own (Host and trusted X-Forwarded-* headers).")
    connect_timeout: int = Field(5, ge=1, description="Seconds to wait for the database to answer.")
    copy_chunk_rows: int = Field(50_000, ge=1, description="Rows per COPY chunk (and progress step).")
    load_chunk_rows: int = Field(10_000, ge=1, description="Features per chunk of a streamed load: a GeoPackage, "
                                 "FlatGeobuf or GeoJSON source with more features is read, normalised and copied "
                                 "this many at a time, in bounded memory (see loaders.stream).")
    swap_lock_timeout_ms: int = Field(250, ge=1, description="Longest wait, per try, for the lock that swaps a "
                                      "reloaded table in; readers of the layer wait at most this long per try.")
    swap_deadline_s: float = Field(120.0, gt=0, description="Seconds a reload keeps retrying the swap while readers "
                                                            "hold the layer before it fails as busy.")
    max_member_bytes: int = Field(256 * 1024**2, ge=1, description="Largest uncompressed size, in bytes, of one "
                                  "member of a zip or KMZ source (a bigger member is refused before it is read).")
    max_unzipped_bytes: int = Field(4 * 1024**3, ge=1, description="Largest total uncompressed size, in bytes, of "
                                    "one zipped source, counted across every nested archive.")
    max_archive_depth: int = Field(3, ge=1, description="Deepest nesting of archives in a source (a zip is 1, a zip "
                                   "or KMZ inside it 2, ...); deeper archives are refused.")
    max_table_columns: int = Field(2_000, ge=1, description="Most columns a CSV/TSV/TXT or xlsx table may have; a "
                                   "wider header is refused before the table is parsed.")
    # Harvesting (``sdi sync``): fetching a layer's ``source.url``.
    fetch_timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for a harvested server to connect, "
                                   "or to send the next bytes of an answer, before the try fails.")
    fetch_deadline_s: float = Field(1800.0, gt=0, description="Longest time, in seconds, one answer of a harvested "
                                    "server may take to arrive in full.")
    fetch_retries: int = Field(3, ge=0, description="Retries of a failed request (connection errors, timeouts, "
                               "HTTP 5xx and 429), with exponential back-off.")
    fetch_backoff_s: float = Field(1.0, ge=0, description="First back-off between retries, in seconds; doubled at "
                                   "each retry (with jitter); a Retry-After header is honoured up to 60 s.")
    fetch_max_bytes: int = Field(1024**3, ge=1, description="Most bytes fetched for one layer, all pages and "
                                 "answers together; a larger source is refused while it downloads.")
    fetch_page_size: int = Field(10_000, ge=1, description="Features asked for per page of an OGC API, WFS or "
                                 "ArcGIS source (servers cap it at their maximum); source.page_size overrides.")
    fetch_max_pages: int = Field(10_000, ge=1, description="Most pages fetched for one layer (a server that never "
                                 "stops paging is refused).")
    fetch_user_agent: str | None = Field(None, description="User-Agent of harvesting requests; default "
                                         "'hk-sdi/<version> (sdi sync)'.")
