"""Fixtures of the harvesting tests: settings with short timeouts, URL layer files, generated sources."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import psycopg
import pytest
import shapely
import yaml

from sdi.settings import Settings
from tests.harvest.servers import FixtureServer, fixture_server

#: Twelve points round Kowloon, in HK1980 Grid (easting, northing).
POINTS = [(835000.0 + 250 * i, 818000.0 + 150 * (i % 5)) for i in range(12)]


@pytest.fixture
def harvest_settings(database_url: str, tmp_path: Path) -> Settings:
    """The test database, short fetch timeouts, one quick retry."""
    return Settings(database_url=database_url, layers_dir=tmp_path / "layers", data_dir=tmp_path / "store",
                    fetch_timeout_s=1.0, fetch_retries=1, fetch_backoff_s=0.01, fetch_deadline_s=30)


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    """A local fixture HTTP server."""
    with fixture_server() as running:
        yield running


@pytest.fixture
def url_layer(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<tmp>/layers/<id>.yml`` whose source is the given mapping (``url``, ``service``, ...)."""

    def write(layer_id: str, source: dict[str, Any], **extra: Any) -> Path:
        folder = tmp_path / "layers"
        folder.mkdir(exist_ok=True)
        doc = {"id": layer_id, "title": {"en": f"Harvest test {layer_id}", "zh": "採集測試"},
               "abstract": {"en": "A layer harvested by a test."}, "custodian": "Test Department",
               "licence": "test data", "source": source, **extra}
        path = folder / f"{layer_id}.yml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        return path

    return write


def points_frame(drop: int = 0, edit: int | None = None) -> gpd.GeoDataFrame:
    """The twelve points with codes ``P001``… and bilingual names; ``drop`` the last ones, ``edit`` one name."""
    rows = [{"code": f"P{i + 1:03d}", "name": f"Point {i + 1}", "name_zh": f"點{i + 1}", "value": i * 1.5}
            for i in range(len(POINTS))]
    geoms = [shapely.Point(x, y) for x, y in POINTS]
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=2326).iloc[: len(POINTS) - drop].copy()
    if edit is not None:
        frame.loc[edit, "name"] = f"Point {edit + 1} (renamed)"
    return frame


def shapefile_zip(frame: gpd.GeoDataFrame, folder: Path, name: str = "points") -> bytes:
    """``frame`` as a zipped shapefile (with .prj and .cpg)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_file(folder / f"{name}.shp", encoding="utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in sorted(folder.glob(f"{name}.*")):  # fixed member times: the same frame gives the same bytes
            member = zipfile.ZipInfo(f"{name}/{part.name}", date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(member, part.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def geojson_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """``frame`` as RFC 7946 GeoJSON (CRS84)."""
    return json.dumps(json.loads(frame.to_crs(4326).to_json(drop_id=True)), ensure_ascii=False).encode()


def live_state(db: psycopg.Connection, layer_id: str) -> tuple[Any, ...]:
    """What must not change when a sync fails: the live load, its feature count, the table's rows."""
    row = db.execute("select load_id, feature_count from sdi.layer where id = %s", (layer_id,)).fetchone()
    count = db.execute(f"select count(*) from layers.{layer_id}").fetchone()
    return row, count


def history(db: psycopg.Connection, layer_id: str) -> list[tuple[Any, ...]]:
    """The layer's load-history rows: (load_id, status, reason, source_path), oldest first."""
    return db.execute("select load_id, status, reason, source_path from sdi.load_history where layer_id = %s"
                      " order by load_id", (layer_id,)).fetchall()
