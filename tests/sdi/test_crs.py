"""CRS handling: EPSG-only parsing, EPSG:1825 between HK80 and WGS84, accuracy, axis order, extent."""

from __future__ import annotations

import math

import pytest
from pyproj import CRS, Transformer

from sdi.crs import (
    HK_GRID,
    check_hk_extent,
    describe_bounds,
    guess_from_bounds,
    parse_crs,
    reprojection,
)
from sdi.errors import CrsError, ExtentError

# Lands Department's conversion service: HK1980 Grid <-> WGS84.
LANDSD_E, LANDSD_N = 835411.431, 817266.016
LANDSD_LAT, LANDSD_LON = 22.294313001, 114.168562005
CM_PER_DEGREE_LAT = 110_760 * 100  # at 22.3°N
CM_PER_DEGREE_LON = 111_320 * math.cos(math.radians(22.294)) * 100


def test_hk80_to_wgs84_within_1cm_of_landsd() -> None:
    lon, lat = reprojection(HK_GRID, 4326).transformer.transform(LANDSD_E, LANDSD_N)  # type: ignore[union-attr]
    assert abs(lat - LANDSD_LAT) * CM_PER_DEGREE_LAT <= 1.0
    assert abs(lon - LANDSD_LON) * CM_PER_DEGREE_LON <= 1.0


@pytest.mark.parametrize("source", [4326, "EPSG:4326", "OGC:CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84"])
def test_wgs84_to_hk80_within_1cm_of_landsd(source: object) -> None:
    epsg = parse_crs(source).to_epsg()  # type: ignore[arg-type]
    e, n = reprojection(epsg).transformer.transform(LANDSD_LON, LANDSD_LAT)  # type: ignore[arg-type, union-attr]
    assert math.hypot(e - LANDSD_E, n - LANDSD_N) <= 0.01


@pytest.mark.parametrize("source", [4326, 32649, 32650, 3857])
def test_wgs84_family_goes_through_epsg_1825(source: int) -> None:
    assert "Hong Kong 1980 to WGS 84 (1)" in reprojection(source).description


def test_utm49_round_trip_matches_direct_pyproj() -> None:
    to_utm = Transformer.from_crs(4326, 32649, always_xy=True)
    x, y = to_utm.transform(LANDSD_LON, LANDSD_LAT)
    e, n = reprojection(32649).transformer.transform(x, y)  # type: ignore[union-attr]
    assert math.hypot(e - LANDSD_E, n - LANDSD_N) <= 0.01


def test_registry_axis_order_is_northing_easting_but_we_use_xy() -> None:
    # EPSG:2326's registry order is (northing, easting); a transformer without always_xy would swap.
    axes = [a.abbrev for a in CRS.from_epsg(HK_GRID).axis_info]
    assert axes[0].upper() == "N"
    naive = Transformer.from_crs(4326, HK_GRID)  # lat, lon in -> northing, easting out
    n, e = naive.transform(LANDSD_LAT, LANDSD_LON)
    ours_e, ours_n = reprojection(4326).transformer.transform(LANDSD_LON, LANDSD_LAT)  # type: ignore[union-attr]
    assert math.hypot(ours_e - e, ours_n - n) <= 0.01
    assert abs(ours_e - LANDSD_E) < 0.01  # first value out is the easting


def test_same_crs_needs_no_transformer() -> None:
    assert reprojection(HK_GRID).transformer is None


@pytest.mark.parametrize("source", [4035, 4210])
def test_ballpark_only_is_refused(source: int) -> None:
    with pytest.raises(CrsError, match="ballpark"):
        reprojection(source)


@pytest.mark.parametrize("text", ["+proj=tmerc +lat_0=22.31213333333334 +ellps=intl", "+init=epsg:2326"])
def test_proj_strings_are_refused(text: str) -> None:
    with pytest.raises(CrsError, match="PROJ strings are refused"):
        parse_crs(text, what="source.crs")


def test_unknown_code_is_a_crs_error() -> None:
    with pytest.raises(CrsError, match=r"source\.crs"):
        parse_crs("EPSG:999999", what="source.crs")


def test_esri_prj_wkt_resolves_to_epsg() -> None:
    wkt = ('PROJCS["WGS_1984_UTM_Zone_49N",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",'
           '6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],'
           'PROJECTION["Transverse_Mercator"],PARAMETER["False_Easting",500000.0],PARAMETER["False_Northing",0.0],'
           'PARAMETER["Central_Meridian",111.0],PARAMETER["Scale_Factor",0.9996],'
           'PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]')
    assert parse_crs(wkt).to_epsg() == 32649


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ((799186.0, 799837.0, 869854.0, 847618.0), 2326),
        ((113.84, 22.15, 114.44, 22.56), 4326),
        ((800000.0, 2460000.0, 860000.0, 2500000.0), 32649),
        ((180000.0, 2460000.0, 230000.0, 2500000.0), 32650),
        ((0.0, 0.0, 10.0, 10.0), None),
        ((22.15, 113.84, 22.56, 114.44), None),  # swapped lon/lat is not guessed
    ],
)
def test_guess_from_bounds(bounds: tuple[float, float, float, float], expected: int | None) -> None:
    assert guess_from_bounds(bounds) == expected


def test_swapped_lonlat_is_named() -> None:
    assert "swapped" in (describe_bounds((22.2, 114.1, 22.3, 114.2)) or "")


def test_extent_error_names_lonlat_declared_as_grid() -> None:
    with pytest.raises(ExtentError, match="longitude/latitude") as info:
        check_hk_extent((114.1, 22.2, 114.2, 22.3), (114.1, 22.2, 114.2, 22.3), 2326, where="x.yml")
    assert "x.yml" in str(info.value) and "\n" not in str(info.value)


def test_extent_inside_hong_kong_passes() -> None:
    check_hk_extent((830000.0, 815000.0, 840000.0, 820000.0), None, 2326, where="x.yml")
