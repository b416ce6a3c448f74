"""What a query needs to know about a loaded layer: its columns, key, time column and load, from ``sdi.layer``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sdi.catalogue.models import CatalogueRecord
from sdi.catalogue.search import RECORD_COLUMNS

GEOMETRY_COLUMN = "geom"  #: every layer table's geometry column, ``geometry(<Type>, 2326)``
TABLE_SRID = 2326
INTEGER_TYPES = ("smallint", "integer", "bigint")
NUMBER_TYPES = ("double precision", "real", "numeric", "float")
TEXT_TYPES = ("text", "character varying", "varchar")
TIME_TYPES = ("date", "timestamp", "timestamp without time zone", "timestamp with time zone", "timestamptz")

#: Every catalogue column plus the registry columns the query core needs, for ``select ... from sdi.layer``.
LAYER_COLUMNS = RECORD_COLUMNS + ", primary_key, load_id"


def json_schema_type(pg_type: str) -> dict[str, str]:
    """The JSON Schema of a column type as stored in ``sdi.layer.fields``."""
    pg_type = pg_type.lower()
    if pg_type in INTEGER_TYPES:
        return {"type": "integer"}
    if pg_type in NUMBER_TYPES or pg_type.startswith("numeric"):
        return {"type": "number"}
    if pg_type == "boolean":
        return {"type": "boolean"}
    if pg_type == "date":
        return {"type": "string", "format": "date"}
    if pg_type.startswith("timestamp"):
        return {"type": "string", "format": "date-time"}
    if pg_type in ("json", "jsonb"):
        return {"type": "object"}
    return {"type": "string"}


@dataclass(frozen=True)
class LayerMeta:
    """A loaded vector layer as the query core sees it.

    Attributes
    ----------
    record
        Its catalogue record (titles, extent, fields, links...).
    primary_key
        The key column: feature ids, the last sort key of every page.
    load_id
        The load that wrote the live table; changes with every reload (ETags and tile caches use it).
    columns
        Property columns (name → PostgreSQL type) in table order, without the geometry.
    time_field
        The column ``datetime`` filters on: the first date or timestamp column, or ``None``.
    """

    record: CatalogueRecord
    primary_key: str
    load_id: int
    columns: Mapping[str, str]
    time_field: str | None

    @property
    def id(self) -> str:
        """The layer id, which is also the table name in schema ``layers``."""
        return self.record.id

    @property
    def key_type(self) -> str:
        """The PostgreSQL type of the primary key column."""
        return self.columns.get(self.primary_key, "text")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LayerMeta | CatalogueRecord:
        """A layer from a ``select LAYER_COLUMNS from sdi.layer`` row (dict); rasters stay plain records."""
        record = CatalogueRecord.model_validate({k: v for k, v in row.items() if k not in ("primary_key", "load_id")})
        if record.kind != "vector" or not row.get("primary_key"):
            return record
        columns = {str(f["name"]): str(f.get("type") or "text") for f in record.fields
                   if f.get("name") and f["name"] != GEOMETRY_COLUMN}
        time_field = next((n for n, t in columns.items() if t.lower() in TIME_TYPES), None)
        return cls(record, str(row["primary_key"]), int(row["load_id"]), columns, time_field)

    @classmethod
    def read(cls, conn: psycopg.Connection, layer_id: str) -> LayerMeta | None:
        """The vector layer ``layer_id`` from ``sdi.layer`` over a synchronous connection (``None``: none)."""
        row = conn.cursor(row_factory=dict_row).execute(f"select {LAYER_COLUMNS} from sdi.layer where id = %s",
                                                        (layer_id,)).fetchone()
        found = cls.from_row(row) if row else None
        return found if isinstance(found, LayerMeta) else None

    def schema(self) -> dict[str, dict[str, str]]:
        """Property name → JSON Schema type, in table order."""
        return {name: json_schema_type(pg) for name, pg in self.columns.items()}
