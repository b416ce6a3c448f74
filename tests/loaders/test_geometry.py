"""Geometry normalisation: every repair and drop is counted, families are kept, types unified."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from loaders import geometry, reproject
from loaders.report import LoadReport
from sdi.errors import ExtentError, GeometryError
from sdi.layerdef import parse_definition

BOWTIE = Polygon([(830000, 815000), (830100, 815100), (830100, 815000), (830000, 815100)])
SQUARE = Polygon([(831000, 816000), (831100, 816000), (831100, 816100), (831000, 816100)])


def _definition(**extra: object):
    doc = {"id": "t", "title": {"en": "t"}, "abstract": {"en": "a"}, "custodian": "c", "licence": "l",
           "source": {"path": "x.geojson"}, **extra}
    return parse_definition(doc, where="t.yml")


def _frame(geoms: list[object]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"n": range(len(geoms))}, geometry=gpd.GeoSeries(geoms), crs=2326)


def test_null_empty_and_nonfinite_are_dropped_and_counted() -> None:
    report = LoadReport("t", "x")
    frame = _frame([SQUARE, None, Polygon(), Point(np.nan, 815000), Point(np.inf, 1), Point(830000, 815000)])
    out = geometry.drop_unpublishable(frame, report)
    assert list(out["n"]) == [0, 5]
    assert report.dropped == {"null geometry": 1, "empty geometry": 1, "NaN or infinite coordinates": 2}


def test_z_is_dropped_to_2d_and_counted() -> None:
    report = LoadReport("t", "x")
    out = geometry.drop_unpublishable(_frame([Point(830000, 815000, 12.5), Point(830001, 815001)]), report)
    assert not shapely.has_z(out.geometry.array).any()
    assert report.repaired == {"Z/M coordinates dropped to 2D": 1}


def test_self_intersection_repaired_keeping_polygon_family() -> None:
    report = LoadReport("t", "x")
    out = geometry.repair(_frame([BOWTIE, SQUARE]), report)
    assert shapely.is_valid(out.geometry.array).all()
    assert set(out.geometry.geom_type) <= {"Polygon", "MultiPolygon"}
    assert out.geometry.iloc[0].geom_type == "MultiPolygon"
    assert out.geometry.iloc[0].area == pytest.approx(5000)  # both triangles of the bow-tie kept
    assert report.repaired == {"invalid geometry repaired (self-intersection)": 1}


def test_repair_that_leaves_nothing_of_the_family_drops_and_counts() -> None:
    report = LoadReport("t", "x")
    flat = Polygon([(830000, 815000), (830100, 815000), (830200, 815000), (830000, 815000)])
    out = geometry.repair(_frame([flat, SQUARE]), report)
    assert list(out["n"]) == [1]
    assert sum(report.dropped.values()) == 1 and "nothing left after repair" in next(iter(report.dropped))


def test_mixed_single_and_multi_promoted_and_counted() -> None:
    report = LoadReport("t", "x")
    frame = _frame([SQUARE, MultiPolygon([SQUARE, shapely.affinity.translate(SQUARE, 500)]), SQUARE])
    gtype, promote = geometry.unify_type(frame, _definition(), report)
    assert (gtype, promote) == ("MultiPolygon", True)
    assert report.repaired == {}
    assert report.notes == ["2 single parts written as one-part MultiPolygon (the layer mixes single and multi parts)"]
    promoted = geometry.promote_to_multi(np.asarray(frame.geometry.array))
    assert set(shapely.get_type_id(promoted)) == {int(shapely.GeometryType.MULTIPOLYGON)}
    assert [g.area for g in promoted] == [g.area for g in frame.geometry]


def test_declared_multi_promotes_everything() -> None:
    report = LoadReport("t", "x")
    gtype, promote = geometry.unify_type(_frame([Point(830000, 815000)]), _definition(geometry_type="MultiPoint"),
                                         report)
    assert (gtype, promote) == ("MultiPoint", True)
    assert report.notes == ["1 single parts written as one-part MultiPoint (declared)"]


def test_single_type_layer_is_not_promoted() -> None:
    report = LoadReport("t", "x")
    assert geometry.unify_type(_frame([SQUARE, SQUARE]), _definition(), report) == ("Polygon", False)
    assert report.repaired == {} and report.notes == []


def test_mixed_families_need_geometry_type() -> None:
    frame = _frame([Point(830000, 815000), LineString([(830000, 815000), (830010, 815010)])])
    with pytest.raises(GeometryError, match=r"mixed geometry types \(LineString: 1, Point: 1\)"):
        geometry.unify_type(frame, _definition(), LoadReport("t", "x"))
    assert geometry.unify_type(frame, _definition(geometry_type="Geometry"), LoadReport("t", "x")) == (
        "Geometry", False)


def test_declared_type_contradicted_by_data() -> None:
    with pytest.raises(GeometryError, match="geometry_type Point but the data are Polygons"):
        geometry.unify_type(_frame([SQUARE]), _definition(geometry_type="Point"), LoadReport("t", "x"))


def test_reproject_to_hk_grid_within_1cm() -> None:
    (pt,) = reproject.to_hk_grid(np.array([Point(114.168562005, 22.294313001)]), 4326, where="t.yml")
    assert abs(pt.x - 835411.431) < 0.01 and abs(pt.y - 817266.016) < 0.01


def test_reproject_outside_hong_kong_names_the_cause() -> None:
    with pytest.raises(ExtentError, match=r"t\.yml: .*look like longitude/latitude"):
        reproject.to_hk_grid(np.array([Point(114.17, 22.29)]), 2326, where="t.yml")


def test_to_storage_repairs_in_hk_grid_by_the_source_reason() -> None:
    report = LoadReport("t", "x")
    lonlat_bowtie = Polygon([(114.16, 22.29), (114.17, 22.30), (114.17, 22.29), (114.16, 22.30)])
    frame = gpd.GeoDataFrame({"a": [1, 2]}, geometry=[lonlat_bowtie, box(114.1, 22.3, 114.11, 22.31)], crs=4326)
    out = reproject.to_storage(frame, 4326, report, where="t.yml")
    assert out.crs.to_epsg() == 2326 and list(out["a"]) == [1, 2]
    assert shapely.is_valid(out.geometry.array).all()
    assert out.geometry.iloc[0].geom_type == "MultiPolygon" and 830_000 < out.geometry.iloc[0].centroid.x < 840_000
    assert report.repaired == {"invalid geometry repaired (self-intersection)": 1}


def test_a_geometry_only_reprojection_broke_is_counted_as_such() -> None:
    report = LoadReport("t", "x")
    valid_in_source = box(0, 0, 1, 1)
    broken = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    geoms, keep = geometry.repair_geometries(np.array([broken]), report, source=np.array([valid_in_source]))
    assert keep.all() and shapely.is_valid(geoms).all()
    assert report.repaired == {"invalid geometry repaired (self-intersection) after reprojection": 1}
