"""Fixtures of the download tests: every vector sample layer loaded once, each format of each written once, and
readers that turn a download back into comparable rows."""

from __future__ import annotations

import datetime as dt
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely

from loaders.formats import RASTER_SUFFIXES
from sdi.distribution.formats import FORMATS
from sdi.distribution.writers import Written, export_layer
from sdi.layerdef import read_definition
from sdi.query.layer import LayerMeta
from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database

#: Every sample layer that is a vector layer (all load in seconds).
VECTOR_LAYERS = tuple(sorted(p.stem for p in LAYERS.glob("*.yml")
                             if not str(read_definition(p).source.path or "").lower().endswith(tuple(RASTER_SUFFIXES))))
#: Layers the issue names: Chinese text, Big5 repaired text, lists, lines, long text and dates, 10,000 polygons.
NAMED = ("districts_18", "public_libraries_2013", "landslide_incidents", "buildings_with_carparks",
         "traffic_hotzone_streets", "industrial_special_waivers", "synthetic_lots")


@dataclass
class Sample:
    """The database with every vector sample layer, and the downloads written from it (made on first use)."""

    settings: Settings
    folder: Path
    written: dict[tuple[str, str], Written] = field(default_factory=dict)

    def export(self, layer_id: str, fmt: str) -> Written:
        key = (layer_id, fmt)
        if key not in self.written:
            path = self.folder / FORMATS[fmt].filename(layer_id)
            self.written[key] = export_layer(self.settings, layer_id, fmt, path, page_rows=1500)
        return self.written[key]


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    """Every vector sample layer in a database of its own (read only: tests that change layers make their own)."""
    assert set(NAMED) <= set(VECTOR_LAYERS)
    with loaded_database(VECTOR_LAYERS, data_dir=tmp_path_factory.mktemp("dist_store")) as settings:
        yield Sample(settings, tmp_path_factory.mktemp("downloads"))


# --- what PostGIS holds -----------------------------------------------------------------------------------------


def layer_meta(settings: Settings, layer_id: str) -> LayerMeta:
    with psycopg.connect(settings.database_url) as conn:
        meta = LayerMeta.read(conn, layer_id)
    assert meta is not None
    return meta


def postgis_rows(settings: Settings, layer: LayerMeta, *, as_text: bool = False) -> dict[str, dict[str, Any]]:
    """Key (as text) → {property: value} of the live table (``as_text``: every value as PostgreSQL writes it)."""
    names = list(layer.columns)
    columns = ", ".join(f'"{n}"::text' if as_text else f'"{n}"' for n in names)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(f'select "{layer.primary_key}"::text, {columns} from layers."{layer.id}"').fetchall()
    return {str(r[0]): dict(zip(names, r[1:], strict=True)) for r in rows}


def _components(geometry: Any) -> list[np.ndarray]:
    """Every point, line and ring of ``geometry`` as a coordinate array, in order."""
    out: list[np.ndarray] = []
    for part in shapely.get_parts(geometry):
        rings = shapely.get_rings(part) if part.geom_type == "Polygon" else [part]
        out += [shapely.get_coordinates(r) for r in rings]
    return out


def vertex_gap(a: Any, b: Any) -> float:
    """The largest distance between corresponding vertices of ``a`` and ``b`` (a ring may run either way: files
    orient rings by their own rules), or their Hausdorff distance when their parts do not correspond."""
    ca, cb = _components(a), _components(b)
    if len(ca) != len(cb) or any(len(x) != len(y) for x, y in zip(ca, cb, strict=True)):
        return float(shapely.hausdorff_distance(a, b))
    gap = 0.0
    for x, y in zip(ca, cb, strict=True):
        gap = max(gap, min(float(np.max(np.hypot(*(x - y).T), initial=0.0)),
                           float(np.max(np.hypot(*(x - y[::-1]).T), initial=0.0))))
    return gap


def max_distance(settings: Settings, layer: LayerMeta, keys: list[str], wkbs: list[bytes],
                 srid: int) -> tuple[int, float]:
    """(features matched by key, largest distance in metres between corresponding vertices) of the file's
    geometries (in ``srid``, brought to EPSG:2326 by PostGIS) and PostGIS's."""
    query = (f"select st_asbinary(st_transform(st_setsrid(st_geomfromwkb(f.g), %(srid)s), 2326)), st_asbinary(t.geom) "
             f"from unnest(%(k)s::text[], %(g)s::bytea[]) as f(k, g) "
             f'join layers."{layer.id}" as t on t."{layer.primary_key}"::text = f.k')
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(query, {"k": keys, "g": wkbs, "srid": srid}).fetchall()
    gaps = [vertex_gap(shapely.from_wkb(a), shapely.from_wkb(b)) for a, b in rows]
    return len(rows), max(gaps, default=0.0)


# --- comparable values ------------------------------------------------------------------------------------------


def missing(value: Any) -> bool:
    if value is None or value is np.ma.masked:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, list | dict | np.ndarray) else False
    except (TypeError, ValueError):
        return False


def comparable(value: Any, pg_type: str) -> Any:
    """A value read from a file or from PostGIS, normalised for comparison by its column's PostgreSQL type."""
    if missing(value):
        return None
    if pg_type in ("bigint", "integer", "smallint"):
        return int(value)
    if pg_type in ("double precision", "real", "numeric"):
        return float(value)
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "date":
        if isinstance(value, np.datetime64):
            value = str(value.astype("datetime64[D]"))
        return value.isoformat()[:10] if isinstance(value, dt.date) else str(value)[:10]
    if pg_type.startswith("timestamp"):
        if isinstance(value, np.datetime64):
            value = str(value.astype("datetime64[s]"))
        text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
        return text.replace(" ", "T")[:19]
    if pg_type in ("json", "jsonb"):
        if isinstance(value, str):
            return json.loads(value)
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value
    return str(value)


def same(a: Any, b: Any, pg_type: str, rel: float = 0.0) -> bool:
    x, y = comparable(a, pg_type), comparable(b, pg_type)
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=rel, abs_tol=0.0) if rel else x == y
    return bool(x == y)


def shapefile_mapping(path: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """From a zipped Shapefile: short name → name (``fields.csv``) and (key, name) → full value
    (``full_values.csv``)."""
    import csv
    import io

    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        fields = list(csv.DictReader(io.StringIO(archive.read("fields.csv").decode("utf-8-sig"))))
        full_values: dict[tuple[str, str], str] = {}
        if "full_values.csv" in names:
            reader = csv.reader(io.StringIO(archive.read("full_values.csv").decode("utf-8-sig"), newline=""))
            next(reader)
            full_values = {(row[0], row[1]): row[3] for row in reader}
    return {f["shapefile_name"]: f["name"] for f in fields}, full_values


def wkb_of(geometries: Any) -> list[bytes]:
    return [bytes(b) for b in shapely.to_wkb(np.asarray(geometries, dtype=object))]
