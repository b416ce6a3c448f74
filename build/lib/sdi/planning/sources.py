"""Inputs of the planning functions: a loaded layer (named by id) or a GeoDataFrame, in EPSG:2326 metres.

Every planning function takes *sources*: either the id of a vector layer loaded in the SDI database
(table ``layers.<id>``, geometry column ``geom``, SRID 2326) or a :class:`geopandas.GeoDataFrame`
with a CRS. The ``postgis`` engine works on tables (a GeoDataFrame is copied into a temporary table
first); the in-memory engines read layers into GeoDataFrames. Everything is in EPSG:2326 (HK1980
Grid) so distances and areas are in metres.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql

from sdi.errors import LayerNotFoundError, PlanningError

#: The engines a planning function can run on.
Engine = Literal["postgis", "geopandas", "dask"]
ENGINES: tuple[Engine, ...] = ("postgis", "geopandas", "dask")
#: What a planning function accepts as an input layer.
Source: TypeAlias = str | gpd.GeoDataFrame

HK_GRID = 2326
LAYER_SCHEMA = "layers"


@dataclass(frozen=True)
class LayerTable:
    """A loaded vector layer as the ``postgis`` engine sees it.

    Attributes
    ----------
    id
        Layer id (also the table name in schema ``layers``).
    primary_key
        Name of the primary-key column.
    columns
        Attribute columns in table order, without ``geom``.
    geometry_type
        Geometry type recorded in the catalogue (``MultiPolygon``, ``Point`` ...).
    schema
        ``layers`` for a loaded layer, ``None`` for a temporary table.
    """

    id: str
    primary_key: str
    columns: tuple[str, ...]
    geometry_type: str | None
    schema: str | None = LAYER_SCHEMA

    @property
    def ident(self) -> sql.Identifier:
        """The quoted table identifier (``layers.<id>``, or the bare name of a temporary table)."""
        return sql.Identifier(self.schema, self.id) if self.schema else sql.Identifier(self.id)


def resolve_engine(engine: str | None, sources: Iterable[object]) -> Engine:
    """Pick the engine: the one asked for, else ``postgis`` when every input is a layer id, else ``geopandas``.

    Raises
    ------
    PlanningError
        When ``engine`` is not one of :data:`ENGINES`.
    """
    if engine is None:
        return "postgis" if all(isinstance(s, str) for s in sources) else "geopandas"
    if engine not in ENGINES:
        raise PlanningError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    return cast(Engine, engine)


def layer_table(conn: psycopg.Connection, layer_id: str) -> LayerTable:
    """Describe the loaded vector layer ``layer_id``.

    Raises
    ------
    LayerNotFoundError
        When no layer of that id is loaded.
    PlanningError
        When the layer is a raster.
    """
    row = conn.execute("select kind, primary_key, geometry_type from sdi.layer where id = %s",
                       (layer_id,)).fetchone()
    if row is None:
        raise LayerNotFoundError(f"layer {layer_id!r} is not loaded ('sdi layers list' shows the loaded layers)")
    kind, primary_key, geometry_type = row
    if kind != "vector":
        raise PlanningError(f"layer {layer_id!r} is a {kind} layer; joins need a vector layer")
    cols = conn.execute(
        "select attname from pg_attribute where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped "
        "and attname <> 'geom' order by attnum", (sql.Identifier(LAYER_SCHEMA, layer_id).as_string(conn),)).fetchall()
    return LayerTable(layer_id, primary_key or "fid", tuple(c[0] for c in cols), geometry_type)


def read_layer(conn: psycopg.Connection, layer_id: str, *, columns: Sequence[str] | None = None,
               where: sql.Composable | None = None, params: Sequence[object] = ()) -> gpd.GeoDataFrame:
    """Read a loaded vector layer into a GeoDataFrame in EPSG:2326, ordered by its primary key.

    Parameters
    ----------
    conn
        An open connection to the SDI database.
    layer_id
        Id of a loaded vector layer.
    columns
        Attribute columns to read (default: all). The geometry column is always ``geometry``.
    where
        An optional SQL condition on the table (alias ``t``), with ``%s`` placeholders for ``params``.
    params
        Values bound to the placeholders of ``where``.

    Raises
    ------
    LayerNotFoundError
        When the layer is not loaded.
    PlanningError
        When a requested column does not exist.
    """
    table = layer_table(conn, layer_id)
    wanted = list(table.columns if columns is None else columns)
    unknown = [c for c in wanted if c not in table.columns]
    if unknown:
        raise PlanningError(f"layer {layer_id!r} has no column {unknown[0]!r} (columns: {', '.join(table.columns)})")
    query = sql.SQL("select {cols}st_asbinary(t.geom) from {table} t{where} order by t.{pk}").format(
        cols=sql.SQL("").join(sql.SQL("t.{}, ").format(sql.Identifier(c)) for c in wanted),
        table=table.ident, pk=sql.Identifier(table.primary_key),
        where=sql.SQL(" where ") + where if where is not None else sql.SQL(""))
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, params).fetchall()
    frame = pd.DataFrame([r[:-1] for r in rows], columns=wanted)
    geometry = shapely.from_wkb(np.array([bytes(r[-1]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometry, crs=HK_GRID), crs=HK_GRID)


def as_frame(conn: psycopg.Connection | None, source: Source, *, name: str = "input") -> gpd.GeoDataFrame:
    """Return ``source`` as a GeoDataFrame in EPSG:2326 (reading a layer id from the database).

    Raises
    ------
    PlanningError
        When a GeoDataFrame has no CRS, or a layer id is given without a connection.
    """
    if isinstance(source, str):
        if conn is None:
            raise PlanningError(f"{name}: layer {source!r} needs a database connection")
        return read_layer(conn, source)
    if not isinstance(source, gpd.GeoDataFrame):
        raise PlanningError(f"{name}: expected a layer id or a GeoDataFrame, got {type(source).__name__}")
    if source.crs is None:
        raise PlanningError(f"{name}: the GeoDataFrame has no CRS; set one with .set_crs() (no CRS is guessed)")
    if source.crs.to_epsg() != HK_GRID:
        return source.to_crs(HK_GRID)
    return source


_PG_TYPES = {"i": "bigint", "u": "bigint", "f": "double precision", "b": "boolean"}


def temp_table(conn: psycopg.Connection, frame: gpd.GeoDataFrame, name: str) -> LayerTable:
    """Copy a GeoDataFrame into a temporary table (GiST-indexed, analysed) for the ``postgis`` engine.

    The table lives until the connection closes. Its primary key ``_row`` is the frame's position
    (0-based), so results can be mapped back to the frame's rows.
    """
    frame = as_frame(None, frame, name=name)
    attrs = [c for c in frame.columns if c != frame.geometry.name]
    defs = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_PG_TYPES.get(frame[c].dtype.kind, "text")))
            for c in attrs]
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create temp table {} (_row bigint primary key, {}geom geometry(Geometry, 2326))").format(
        ident, sql.SQL("").join(d + sql.SQL(", ") for d in defs)))
    copy_sql = sql.SQL("copy {} from stdin").format(ident)
    wkb = shapely.to_wkb(frame.geometry.values, hex=True, include_srid=False)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for i, values in enumerate(zip(*(frame[c].tolist() for c in attrs), wkb, strict=True)):
            *vals, geom = values
            copy.write_row([i, *(None if _missing(v) else v for v in vals),
                            None if geom is None else f"SRID={HK_GRID};{geom}"])
    conn.execute(sql.SQL("create index on {} using gist (geom)").format(ident))
    conn.execute(sql.SQL("analyze {}").format(ident))
    return LayerTable(name, "_row", ("_row", *attrs), None, schema=None)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT
