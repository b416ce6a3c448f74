"""The SDI in a PostGIS database: catalogue search, the layer list and reads of ``layers.<id>`` into GeoDataFrames.

>>> import sdi
>>> db = sdi.connect()                                  # doctest: +SKIP
>>> db.read("districts_18", where="name_en = 'EASTERN'")   # doctest: +SKIP

A read counts the matching features first, then fetches them page by page in primary-key order (keyset
paging: ``where pk > last`` — each page is one SQL statement). Filtering (bbox, CQL ``where``) and
reprojection (``ST_Transform``) run in PostGIS; geometries arrive as WKB at full precision.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from sdi.catalogue import Catalogue
from sdi.client.base import (
    DEFAULT_CRS,
    Client,
    LayerInfo,
    Layers,
    check_bbox,
    check_columns,
    check_limit,
    output_epsg,
    progress_bar,
    typed_frame,
)
from sdi.db import connect as db_connect
from sdi.db import redact
from sdi.errors import ConfigError, LayerNotFoundError, QueryError
from sdi.query.boxes import box_sql
from sdi.query.cql import parse_filter, to_sql
from sdi.query.layer import json_schema_type
from sdi.query.sqlerrors import client_reason
from sdi.settings import Settings

if TYPE_CHECKING:
    import geopandas as gpd

TABLE_SRID = 2326
PAGE_SIZE = 10_000  #: rows per SQL statement


def parse_where(where: str, columns: dict[str, str]) -> tuple[sql.Composable, dict[str, Any]]:
    """A CQL text filter as a SQL expression over alias ``t`` (see :func:`sdi.query.cql.to_sql`).

    The text is parsed exactly as the API parses its ``filter`` parameter (CQL2 text or ECQL, with
    :func:`sdi.query.cql.parse_filter`: comparisons, ``LIKE``, ``IN``, ``BETWEEN``, ``IS NULL``,
    ``AND``/``OR`` and spatial predicates such as ``S_INTERSECTS(geom, POINT(114.17 22.28))`` or ECQL's
    ``INTERSECTS(...)``), so one string selects the same features locally and remotely.

    Raises
    ------
    ConfigError
        When the text does not parse or names an unknown property.
    """
    try:
        return to_sql(parse_filter(where), columns, "geom", TABLE_SRID)
    except QueryError as exc:
        raise ConfigError(f"where: {exc}".replace("where: filter: ", "where: ")) from exc


def bbox_condition(box: tuple[float, float, float, float], srid: int, params: dict[str, Any]) -> sql.Composable:
    """``t.geom`` intersects the box (x/y in ``srid``), densified before transforming so its edges stay edges."""
    envelope = box_sql(box, srid, params, "b")
    if envelope is None:
        return sql.SQL("false")
    return sql.SQL("st_intersects(t.geom, {})").format(envelope)


@contextmanager
def _query_errors(layer: str) -> Iterator[None]:
    """Turn PostgreSQL's refusal of a query (a filter comparing text with a number...) into a one-line ConfigError."""
    try:
        yield
    except (psycopg.DataError, psycopg.ProgrammingError) as exc:
        detail = client_reason(exc.sqlstate) or (exc.diag.message_primary or type(exc).__name__).splitlines()[0]
        raise ConfigError(f"where: invalid query on layer {layer!r}: {detail}") from exc


class LocalClient(Client):
    """An SDI database reached with psycopg (use :func:`sdi.connect`).

    Parameters
    ----------
    settings
        Settings naming the database (``database_url``).
    page_size
        Rows fetched per SQL statement.
    """

    def __init__(self, settings: Settings, *, page_size: int = PAGE_SIZE) -> None:
        self.settings = settings
        self.page_size = page_size
        self.catalogue = Catalogue(settings)

    def __repr__(self) -> str:
        return f"<sdi.connect {redact(self.settings.database_url)}>"

    @property
    def layers(self) -> Layers:
        """Every layer in ``sdi.layer`` (vector and raster), by id."""
        result = self.catalogue.search(limit=1000)
        return Layers([LayerInfo.from_record(r) for r in result.records])

    def _layer(self, conn: psycopg.Connection, layer: str) -> tuple[str, dict[str, str]]:
        row = conn.execute("select kind, primary_key, fields from sdi.layer where id = %s", (layer,)).fetchone()
        if row is None:
            raise LayerNotFoundError(f"layer: no layer {layer!r} in {redact(self.settings.database_url)}")
        kind, primary_key, fields = row
        if kind != "vector":
            raise ConfigError(f"layer: {layer!r} is a {kind} layer; read() reads vector layers")
        if not primary_key:
            raise ConfigError(f"layer: {layer!r} has no primary key to page by")
        return str(primary_key), {f["name"]: str(f["type"]) for f in fields if f["name"] != "geom"}

    def read(self, layer: str, bbox: Sequence[float] | None = None, where: str | None = None,
             columns: Sequence[str] | None = None, crs: str | int = DEFAULT_CRS, limit: int | None = None,
             *, progress: bool | None = None) -> gpd.GeoDataFrame:
        """Read features of ``layer`` from PostGIS; see :meth:`sdi.client.base.Client.read`.

        Raises
        ------
        LayerNotFoundError
            When no layer ``layer`` is loaded.
        ConfigError, CrsError
            For a malformed ``bbox``, a bad ``where``, unknown ``columns``, a raster layer or an unknown ``crs``.
        """
        import shapely

        box, limit, epsg = check_bbox(bbox), check_limit(limit), output_epsg(crs)
        with db_connect(self.settings) as conn, _query_errors(layer):
            primary_key, types = self._layer(conn, layer)
            names = check_columns(columns, types, layer)
            params: dict[str, Any] = {}
            conditions: list[sql.Composable] = []
            if box is not None:
                conditions.append(bbox_condition(box, epsg, params))
            if where is not None and where.strip():
                clause, values = parse_where(where, types)
                conditions.append(clause)
                params.update(values)
            table = sql.Identifier("layers", layer)
            key = sql.SQL("t.{}").format(sql.Identifier(primary_key))
            condition = sql.SQL(" and ").join(conditions) if conditions else sql.SQL("true")
            count_row = conn.execute(sql.SQL("select count(*) from {} as t where {}").format(table, condition),
                                     params).fetchone()
            total = min(int(count_row[0]) if count_row else 0, limit or 2**62)
            geometry: sql.Composable = sql.SQL("t.geom")
            if epsg != TABLE_SRID:
                geometry = sql.SQL("st_transform(t.geom, {})").format(sql.Literal(epsg))
            selected = sql.SQL(", ").join([key, *(sql.SQL("t.{}").format(sql.Identifier(n)) for n in names),
                                           sql.SQL("st_asbinary({})").format(geometry)])
            page = sql.SQL("select {} from {} as t where {} {} order by {} limit %(page)s")
            rows: list[tuple[Any, ...]] = []
            with progress_bar(total, self.page_size, progress, layer) as bar:
                after: Any = None
                while len(rows) < total:
                    params["page"] = min(self.page_size, total - len(rows))
                    keyset = sql.SQL("and {} > %(after)s").format(key) if after is not None else sql.SQL("")
                    params["after"] = after
                    batch = conn.execute(page.format(selected, table, condition, keyset, key), params).fetchall()
                    if not batch:
                        break
                    rows.extend(batch)
                    after = batch[-1][0]
                    bar.update(len(batch))
        geometries = shapely.from_wkb([r[-1] for r in rows]) if rows else []
        schema = {n: json_schema_type(types[n]) for n in names}
        return typed_frame([r[1:-1] for r in rows], names, schema, geometries, epsg)


def connect(url: str | None = None, *, settings: Settings | None = None) -> LocalClient:
    """Connect to an SDI database.

    Parameters
    ----------
    url
        libpq URL, e.g. ``"postgresql:///sdi"``; ``None`` uses ``settings.database_url``.
    settings
        Settings to start from (default: ``Settings()``, which reads ``SDI_DATABASE_URL``).

    Returns
    -------
    LocalClient
        A handle with ``.catalogue``, ``.layers`` and ``.read(...)``. No connection is held open:
        each call opens one and closes it.

    Raises
    ------
    DatabaseUnavailableError
        When the database cannot be reached.
    """
    base = settings or Settings()
    if url is not None:
        base = base.model_copy(update={"database_url": url})
    with db_connect(base) as conn:  # fail fast on a wrong URL
        conn.execute("select 1")
    return LocalClient(base)
