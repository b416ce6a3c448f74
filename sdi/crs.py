"""Coordinate reference systems for Hong Kong data, resolved from EPSG codes only.

Rules (fail fast, never guess silently):

* CRSs are built from EPSG codes (``"EPSG:2326"``, an ``int``, or a WKT/PRJ that resolves to one
  EPSG code with full confidence). Bare PROJ strings are refused: they drop datum transformations.
* Transformers use ``always_xy=True`` (easting/longitude first), whatever the registry axis order.
* A transformation between Hong Kong 1980 and WGS 84 must be EPSG:1825 ("Hong Kong 1980 to WGS 84
  (1)"); PROJ's 'Ballpark' fallbacks are refused.
* Every geometry must fall inside Hong Kong after reprojection to EPSG:2326; otherwise the error says
  what the coordinates look like (swapped axes, longitude/latitude, another grid).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as PyprojCRSError
from pyproj.exceptions import ProjError

from sdi.errors import CrsError, ExtentError
from sdi.numerals import decimal_integer

HK_GRID = 2326  #: Hong Kong 1980 Grid System, the SDI's storage CRS
HK80_GEOG = 4611  #: Hong Kong 1980 geographic CRS
WGS84_GEOG = 4326
HK80_TO_WGS84 = 1825  #: EPSG:1825, Hong Kong 1980 to WGS 84 (1)

#: Hong Kong in EPSG:2326 (easting, northing): the territory plus about 10 km of sea on every side.
HK_GRID_BOUNDS = (790_000.0, 790_000.0, 880_000.0, 860_000.0)
#: Hong Kong in longitude/latitude, with the same margin.
HK_LONLAT_BOUNDS = (113.73, 22.08, 114.60, 22.65)
#: Hong Kong in UTM zone 49N and 50N (easting, northing), with the same margin.
HK_UTM49_BOUNDS = (770_000.0, 2_440_000.0, 870_000.0, 2_510_000.0)
HK_UTM50_BOUNDS = (150_000.0, 2_440_000.0, 250_000.0, 2_510_000.0)

_RANGES: tuple[tuple[int, tuple[float, float, float, float], str], ...] = (
    (HK_GRID, HK_GRID_BOUNDS, "Hong Kong 1980 Grid (EPSG:2326)"),
    (WGS84_GEOG, HK_LONLAT_BOUNDS, "longitude/latitude (EPSG:4326)"),
    (32649, HK_UTM49_BOUNDS, "UTM zone 49N (EPSG:32649)"),
    (32650, HK_UTM50_BOUNDS, "UTM zone 50N (EPSG:32650)"),
)


def _within(bounds: tuple[float, float, float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= bounds[0] and box[1] <= bounds[1] and bounds[2] <= box[2] and bounds[3] <= box[3]


def parse_crs(value: str | int | CRS, *, what: str = "crs") -> CRS:
    """Build a CRS from an EPSG code, ``"EPSG:nnnn"``, an OGC URN/URI, or WKT that matches one EPSG code.

    Parameters
    ----------
    value
        The CRS as given by a user or a file.
    what
        Where the value came from, for the error message (for example ``"source.crs"``).

    Returns
    -------
    pyproj.CRS
        A CRS with an EPSG identifier.

    Raises
    ------
    CrsError
        For PROJ strings, unknown codes, or WKT without a certain EPSG match.
    """
    if isinstance(value, CRS):
        crs = value
    else:
        text = str(value).strip()
        if text.startswith("+") or "+proj=" in text:
            raise CrsError(f"{what}: PROJ strings are refused ({text[:40]!r}); give an EPSG code such as EPSG:2326")
        if decimal_integer(text, max_digits=6) is not None:
            text = f"EPSG:{text}"
        try:
            crs = CRS.from_user_input(text)
        except PyprojCRSError as exc:
            raise CrsError(f"{what}: unknown coordinate reference system {text[:60]!r}") from exc
    epsg = epsg_code(crs)
    if epsg is None:
        raise CrsError(f"{what}: {crs.name!r} does not match an EPSG code; declare it, for example EPSG:2326")
    return CRS.from_epsg(epsg)


def epsg_code(crs: CRS) -> int | None:
    """Return the EPSG code of ``crs`` (OGC CRS84 counts as EPSG:4326 with x/y order), or ``None``."""
    if crs.to_authority() == ("OGC", "CRS84"):
        return WGS84_GEOG
    code = crs.to_epsg(min_confidence=100)
    if code is None:
        # ESRI .prj WKT often differs only in names; accept a unique high-confidence match.
        matches = [m for m in crs.list_authority(auth_name="EPSG") if m.confidence >= 70]
        if len(matches) == 1:
            code = int(matches[0].code)
    return code


def _operation_ids(node: Any) -> set[tuple[str, int]]:
    """Collect every (authority, code) id in a PROJJSON operation tree."""
    found: set[tuple[str, int]] = set()
    if isinstance(node, dict):
        ident = node.get("id")
        if isinstance(ident, dict) and "code" in ident:
            with contextlib.suppress(TypeError, ValueError):
                found.add((str(ident.get("authority")), int(ident["code"])))
        for value in node.values():
            found |= _operation_ids(value)
    elif isinstance(node, list):
        for item in node:
            found |= _operation_ids(item)
    return found


def _datum_family(crs: CRS) -> str:
    geod = crs.geodetic_crs
    datum = geod.datum if geod is not None else None
    name = (datum.name if datum is not None else "").lower()
    if "hong kong 1980" in name:
        return "hk80"
    if "world geodetic system 1984" in name or "wgs 84" in name or "wgs84" in name:
        return "wgs84"
    return name


@dataclass(frozen=True)
class Reprojection:
    """A checked transformation between two EPSG CRSs (x/y order on both sides)."""

    source_epsg: int
    target_epsg: int
    transformer: Transformer | None  #: ``None`` when source and target are the same CRS

    @property
    def description(self) -> str:
        """PROJ's description of the operation, or ``"none"`` when no transformation is needed."""
        return self.transformer.description if self.transformer else "none (already EPSG:2326)"


@lru_cache(maxsize=64)
def reprojection(source_epsg: int, target_epsg: int = HK_GRID) -> Reprojection:
    """Return the checked transformation from ``source_epsg`` to ``target_epsg``.

    Raises
    ------
    CrsError
        When PROJ offers only a 'Ballpark' transformation, or an HK80↔WGS84 transformation other
        than EPSG:1825.
    """
    if source_epsg == target_epsg:
        return Reprojection(source_epsg, target_epsg, None)
    src, dst = CRS.from_epsg(source_epsg), CRS.from_epsg(target_epsg)
    try:
        transformer = Transformer.from_crs(src, dst, always_xy=True, allow_ballpark=False)
    except ProjError as exc:
        raise CrsError(
            f"no accurate transformation from EPSG:{source_epsg} to EPSG:{target_epsg} (ballpark refused)"
        ) from exc
    if "ballpark" in transformer.description.lower():
        raise CrsError(f"refusing ballpark transformation EPSG:{source_epsg} -> EPSG:{target_epsg}")
    families = {_datum_family(src), _datum_family(dst)}
    if families == {"hk80", "wgs84"}:
        ids = _operation_ids(transformer.to_json_dict())
        if not ids & {("EPSG", HK80_TO_WGS84), ("INVERSE(EPSG)", HK80_TO_WGS84)}:
            raise CrsError(
                f"EPSG:{source_epsg} -> EPSG:{target_epsg} does not use EPSG:1825 "
                f"(Hong Kong 1980 to WGS 84 (1)); PROJ offered: {transformer.description}"
            )
    return Reprojection(source_epsg, target_epsg, transformer)


def guess_from_bounds(bounds: tuple[float, float, float, float]) -> int | None:
    """Return the one EPSG code whose Hong Kong range contains ``bounds`` (x/y order), else ``None``.

    The ranges of HK1980 Grid, longitude/latitude, UTM 49N and UTM 50N around Hong Kong do not
    overlap, so at most one matches.
    """
    matches = [code for code, box, _ in _RANGES if _within(bounds, box)]
    return matches[0] if len(matches) == 1 else None


def describe_bounds(bounds: tuple[float, float, float, float]) -> str | None:
    """Say what coordinates with these bounds look like around Hong Kong, or ``None`` if nothing fits."""
    xmin, ymin, xmax, ymax = bounds
    for _, box, label in _RANGES:
        if _within(bounds, box):
            return f"they look like {label}"
        if _within((ymin, xmin, ymax, xmax), box):
            return f"they look like {label} with the axes swapped (northing/latitude first)"
    return None


def check_hk_extent(
    bounds: tuple[float, float, float, float],
    source_bounds: tuple[float, float, float, float] | None,
    source_epsg: int,
    *,
    where: str,
) -> None:
    """Fail unless ``bounds`` (EPSG:2326, x/y) lie inside Hong Kong's extent with margin.

    Parameters
    ----------
    bounds
        Bounds of the reprojected geometries in EPSG:2326.
    source_bounds
        Bounds of the geometries in the source CRS, used to explain the likely cause.
    source_epsg
        The declared or detected source CRS.
    where
        The file or layer named in the message.

    Raises
    ------
    ExtentError
        Naming the likely cause: swapped axes, or coordinates that fit another CRS.
    """
    if _within(bounds, HK_GRID_BOUNDS):
        return
    hint = describe_bounds(source_bounds) if source_bounds is not None else None
    cause = f"; {hint}, not EPSG:{source_epsg}: check source.crs or the coordinate columns" if hint else (
        f"; check that source.crs EPSG:{source_epsg} is right and the axes are not swapped"
    )
    shown = ", ".join(f"{v:.6g}" for v in bounds)
    raise ExtentError(f"{where}: coordinates lie outside Hong Kong after reprojection to EPSG:2326 "
                      f"(bounds {shown}){cause}")


# --- CRSs of the OGC API (OGC API – Features Part 2 URIs) ----------------------------------------------------

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"  #: longitude, latitude (WGS 84); the GeoJSON default
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
WEB_MERCATOR = 3857
#: The output CRSs of every feature collection, CRS84 (the GeoJSON default) first.
SERVED_EPSG = (HK_GRID, WGS84_GEOG, WEB_MERCATOR)


def crs_uri(epsg: int) -> str:
    """The OGC URI of an EPSG code (``http://www.opengis.net/def/crs/EPSG/0/<code>``)."""
    return EPSG_URI.format(epsg)


#: URIs of :data:`SERVED_EPSG` with CRS84 first; what every collection lists as ``crs``.
SERVED_CRS = (CRS84_URI, *(crs_uri(code) for code in SERVED_EPSG))
STORAGE_CRS_URI = crs_uri(HK_GRID)


@dataclass(frozen=True)
class UriCrs:
    """What the SQL needs to know of a CRS named by a URI: SRID, axis order and coordinate precision."""

    uri: str
    srid: int  #: PostGIS SRID (CRS84 is 4326, which PostGIS keeps as x = longitude)
    north_first: bool  #: first axis is northing or latitude (coordinates are flipped from PostGIS's x/y)
    geographic: bool
    digits: int  #: decimals for about 1 cm: 7 in degrees, 2 in metres

    @property
    def axis_label(self) -> str:
        """``"lat,lon"``/``"lon,lat"`` or ``"northing,easting"``/``"easting,northing"``, for messages."""
        pair = ("lat", "lon") if self.geographic else ("northing", "easting")
        return ",".join(pair if self.north_first else pair[::-1])


@lru_cache(maxsize=256)
def uri_crs(uri: str, *, what: str = "crs") -> UriCrs:
    """Resolve a CRS URI (``http://www.opengis.net/def/crs/EPSG/0/2326``, CRS84, or ``EPSG:2326``).

    Cached: pyproj takes milliseconds per lookup, a request must not.

    Raises
    ------
    CrsError
        When the URI is not a CRS with an EPSG code (the message names ``what``).
    """
    text = uri.strip()
    if text in (CRS84_URI, "OGC:CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84"):
        return UriCrs(CRS84_URI, WGS84_GEOG, False, True, 7)
    prefix = EPSG_URI.format("")
    code = text[len(prefix):] if text.startswith(prefix) else text[5:] if text.upper().startswith("EPSG:") else ""
    epsg = decimal_integer(code, max_digits=6)
    if epsg is None:
        raise CrsError(f"{what}: {uri[:80]!r} is not a CRS URI such as {STORAGE_CRS_URI}")
    try:
        crs = CRS.from_epsg(epsg)
    except PyprojCRSError as exc:
        raise CrsError(f"{what}: unknown CRS {uri[:80]!r}") from exc
    axes = crs.axis_info
    north = bool(axes) and axes[0].direction.lower() in ("north", "south")
    degrees = bool(axes) and axes[0].unit_name.lower().startswith("deg")
    return UriCrs(crs_uri(epsg), epsg, north, bool(crs.is_geographic), 7 if degrees else 2)
