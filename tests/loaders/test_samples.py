"""Every sample layer, checked against an independent reading of its source.

The oracle reads each source file directly (pyogrio for vector files, pandas for the GeoInfo Map
CSVs), converts it with a plain pyproj transformer (EPSG:1825 for WGS 84) and compares: row counts
equal the source's less the drops the report explains; every geometry that was valid in the source
is within 1 cm of the direct conversion; no text holds private-use characters or U+FFFD.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from loaders import normalise, read
from loaders.formats import RASTER_SUFFIXES
from loaders.report import LoadReport
from sdi.layerdef import LayerDefinition, read_definition
from tests.conftest import LAYERS

VECTOR_LAYERS = sorted(p.stem for p in LAYERS.glob("*.yml")
                       if read_definition(p).source_path.suffix.lower() not in RASTER_SUFFIXES)
BAD_CHARS = {chr(c) for c in range(0xE000, 0xF900)} | {"\ufffd"}


def _oracle(definition: LayerDefinition, tmp_path: Path) -> tuple[np.ndarray, int]:
    """Source geometries converted straight to EPSG:2326 with pyproj, and the source's row count."""
    path = definition.source_path
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, encoding="utf-16", sep="\t", dtype=str)
        geoms = shapely.points(table["EASTING"].astype(float), table["NORTHING"].astype(float))
        return geoms, len(table)
    if path.suffix.lower() == ".shp":
        for sibling in path.parent.glob(path.stem + ".*"):
            shutil.copy(sibling, tmp_path / sibling.name)
        pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": "YES"})
        try:
            raw = pyogrio.read_dataframe(tmp_path / path.name)
        finally:
            pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": None})
    else:
        raw = pyogrio.read_dataframe(path, layer=definition.source.layer)
    source_crs = raw.crs if raw.crs is not None else "EPSG:2326"  # the census shapefiles: HK1980 per the README
    transformer = Transformer.from_crs(source_crs, 2326, always_xy=True)
    geoms = np.asarray(raw.geometry.array, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    out = np.full(len(geoms), None, dtype=object)
    out[present] = shapely.transform(geoms[present], lambda xy: np.column_stack(transformer.transform(xy[:, 0],
                                                                                                      xy[:, 1])))
    return out, len(raw)


@pytest.mark.parametrize("layer_id", VECTOR_LAYERS)
def test_sample_layer_matches_its_source(layer_id: str, tmp_path: Path) -> None:
    definition = read_definition(LAYERS / f"{layer_id}.yml")
    report = LoadReport(layer_id, str(definition.source_path))
    frame, epsg = read(definition, report)
    layer = normalise(frame, epsg, definition, report)
    expected, source_rows = _oracle(definition, tmp_path)

    # row counts: the source's, less what the report says was dropped
    assert report.features_read == source_rows
    assert len(layer.frame) == source_rows - report.features_dropped
    # coordinates: within 1 cm of the direct conversion, for every geometry valid in the source
    kept = ~shapely.is_missing(expected)
    if report.features_dropped:
        assert set(report.dropped) == {"empty geometry"} and int((~kept).sum()) == report.features_dropped
    expected = expected[kept]
    got = layer.geometries()
    assert len(got) == len(expected)
    checked = 0
    for want, have in zip(expected, got, strict=True):
        if not shapely.is_valid(want):
            continue  # repaired: compared by validity below
        a, b = shapely.get_coordinates(want), shapely.get_coordinates(have)
        assert a.shape == b.shape and np.abs(a - b).max() <= 0.01
        checked += 1
    assert checked >= len(expected) - report.features_repaired
    assert shapely.is_valid(got).all()
    # text: no private-use code points, no replacement characters
    for column in layer.frame.columns:
        values = layer.frame[column]
        if values.dtype == object:
            text = "".join(v for v in values if isinstance(v, str))
            assert not (set(text) & BAD_CHARS), (column, sorted(set(text) & BAD_CHARS)[:5])


def test_sham_shui_po_is_spelled_right() -> None:
    for layer_id, column in (("district_council_2001", "dcca_chin"), ("district_council_2001_wgs84", "name_zh")):
        definition = read_definition(LAYERS / f"{layer_id}.yml")
        report = LoadReport(layer_id, "x")
        frame, epsg = read(definition, report)
        names = set(normalise(frame, epsg, definition, report).frame[column])
        assert not any("鶧" in n for n in names)
        if layer_id == "district_council_2001_wgs84":
            assert "深水埗區" in names
