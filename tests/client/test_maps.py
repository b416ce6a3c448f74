"""Offline maps (`sdi.maps.explore`, `.explore()` on results) and the site-selection table shown in Jupyter."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely

from sdi.errors import ConfigError, CrsError
from sdi.maps import RAMP, MapView, explore
from sdi.planning.result import SiteSelectionResult
from tests.client.conftest import Pair

pytestmark = pytest.mark.db

HK_LONLAT = (113.8, 22.1, 114.5, 22.6)
EXTERNAL = [
    re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", re.I),
    re.compile(r"url\(\s*[\"']?(https?:)?//", re.I),
    re.compile(r"\{z\}/\{x\}/\{y\}"),
    re.compile(r"@import", re.I),
]


def _data(view: MapView) -> dict[str, Any]:
    """The GeoJSON embedded in the page."""
    match = re.search(r"^var data = (.*);$", view.html, re.M)
    assert match, "the page embeds its features"
    return json.loads(match.group(1).replace("<\\/", "</"))


def assert_offline(view: MapView) -> None:
    page = view.html
    for pattern in EXTERNAL:
        assert not pattern.search(page), pattern.pattern
    assert '"tiles": null' in page  # no base map unless asked for
    assert "Leaflet 1.9.4" in page and "<script src" not in page and "<link" not in page
    frame = view._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and html.unescape(frame.split('"')[1]) == page


def test_points_map_is_offline_with_popups(pair: Pair, tmp_path: Path) -> None:
    frame = pair.local.read("public_libraries_2013")
    view = explore(frame, column="district", tooltip="name_zh", title="Libraries 圖書館")
    assert_offline(view)
    data = _data(view)
    features = data["features"]
    assert isinstance(features, list) and len(features) == len(frame)
    coords = shapely.get_coordinates(shapely.from_geojson([json.dumps(f["geometry"]) for f in features]))
    assert ((coords[:, 0] > HK_LONLAT[0]) & (coords[:, 0] < HK_LONLAT[2])).all()
    assert ((coords[:, 1] > HK_LONLAT[1]) & (coords[:, 1] < HK_LONLAT[3])).all()
    first = features[0]["properties"]
    assert frame["name_zh"].iloc[0] in first["p"] and first["t"] == frame["name_zh"].iloc[0]
    assert "圖書館" in view.html
    saved = view.save(tmp_path / "libraries.html")
    assert saved.read_text(encoding="utf-8") == view.html


def test_map_coordinates_match_postgis_lonlat(pair: Pair) -> None:
    """The page's EPSG:4326 coordinates equal PostGIS's ST_Transform to 4326 (EPSG:1825) within 1e-6 degrees."""
    grid = pair.local.read("public_libraries_2013", columns=["fid"])
    lonlat = pair.local.read("public_libraries_2013", columns=["fid"], crs="EPSG:4326")
    features = _data(explore(grid))["features"]
    drawn = shapely.from_geojson([json.dumps(f["geometry"]) for f in features])
    assert shapely.equals_exact(drawn, lonlat.geometry.to_numpy(), tolerance=1e-6).all()


def test_polygons_are_coloured_by_number(pair: Pair) -> None:
    frame = pair.local.read("districts_18")
    view = explore(frame, column="shape_are")
    colours = [f["properties"]["c"] for f in _data(view)["features"]]
    assert colours[int(frame["shape_are"].idxmax())] == RAMP[-1]
    assert colours[int(frame["shape_are"].idxmin())] == RAMP[0]
    assert_offline(view)


def test_map_refuses_frames_without_crs_or_columns() -> None:
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.Point(835000, 815000)])
    with pytest.raises(CrsError, match="no CRS"):
        explore(frame)
    with pytest.raises(ConfigError, match="'b'"):
        explore(frame.set_crs(2326), column="b")


def test_catalogue_results_explore(pair: Pair) -> None:
    result = pair.remote.catalogue.search("district")
    view = result.explore()
    assert_offline(view)
    features = _data(view)["features"]
    assert len(features) == len(result)
    assert result[0].title_zh and result[0].title_zh in features[0]["properties"]["p"]


def _sites(pair: Pair, layers: list[str]) -> SiteSelectionResult:
    """A ranked frame shaped like sdi.planning.site_selection's result (the class under test is the display)."""
    frame = pair.local.read("industrial_special_waivers", limit=25)
    sites = SiteSelectionResult(frame.assign(
        rank=range(1, len(frame) + 1), site=frame["lot_number_en"], score=[100.0 - 3 * i for i in range(len(frame))],
        district=frame["relevant_district_council_en"], why_zoning="zone OU(B) (Z0042)",
        why_substation="nearest ≥132 kV substation at 412 m → 0.96 × weight 3"))
    sites.attrs.update(criteria="data-centre", layers=layers,
                       criteria_title={"en": "Data-centre site screening", "zh": "數據中心選址篩選"})
    return sites


def test_site_selection_table(pair: Pair) -> None:
    sites = _sites(pair, ["synthetic_lots", "districts_18"])
    page = sites._repr_html_()
    assert "Data-centre site screening" in page and "數據中心選址篩選" in page
    assert "synthetic data" in page and "25 site(s)" in page and "top 10 of 25" in page
    for column in ("rank", "site", "score", "district", "why_zoning", "why_substation"):
        assert f">{column}</th>" in page
    assert html.escape(sites["site"].iloc[0]) in page and html.escape(sites["site"].iloc[10]) not in page
    head = sites.head(3)
    assert isinstance(head, SiteSelectionResult) and "3 site(s)" in head._repr_html_()
    real = _sites(pair, ["districts_18"])._repr_html_()
    assert "synthetic data" not in real


def test_site_selection_map(pair: Pair) -> None:
    sites = _sites(pair, ["synthetic_lots"])
    view = sites.explore()
    assert_offline(view)
    colours = [f["properties"]["c"] for f in _data(view)["features"]]
    assert colours[0] == RAMP[-1] and colours[-1] == RAMP[0]  # best score brightest
    assert "(synthetic data)" in view.html


def test_context_is_drawn_without_popups(pair: Pair) -> None:
    districts = pair.local.read("districts_18", columns=["name_en"])
    libraries = pair.local.read("public_libraries_2013", where="district = 'KWUN TONG'")
    view = explore(libraries, context=districts)
    assert_offline(view)
    match = re.search(r"^var context = (.*);$", view.html, re.M)
    assert match
    context = json.loads(match.group(1))
    assert len(context["features"]) == 18 and all(f["properties"] == {} for f in context["features"])
    assert len(_data(view)["features"]) == len(libraries)
