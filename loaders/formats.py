"""Vector formats that need more than pyogrio's defaults: KML/KMZ, TopoJSON, GPX, File Geodatabase,
Esri JSON, and zipped inputs of any supported format.

:func:`read_other` returns a GeoDataFrame for these and ``None`` for everything else (GeoJSON,
GeoPackage, ... go through the generic reader in :mod:`loaders.read`).

- **KML/KMZ** (EPSG:4326, lon,lat): every GDAL layer (one per folder) is read and concatenated, with
  column ``kml_layer`` naming it. The ``<Placemark>`` elements are also counted with
  :mod:`xml.etree`; when GDAL read fewer (it skips placemarks outside a ``<Document>`` or in some
  nested folders), this module's own parser reads them all (Point, LineString, Polygon,
  MultiGeometry; name, description, ExtendedData ``Data`` and ``SchemaData``) and the report says so.
- **TopoJSON** (content ``"type": "Topology"``, any suffix), **GPX** and **File Geodatabase**
  (``source.path`` is the ``.gdb`` folder): ``source.layer`` picks the object/layer; without it the
  one non-empty layer is read (GPX: of waypoints, routes, tracks); several → an error listing them.
- **Esri JSON** (content ``"geometryType"`` or ``"features"`` with ``"attributes"``): the CRS comes
  from ``spatialReference`` — ESRI wkids 102140 → EPSG:2326, 102100/102113/900913 → EPSG:3857, or
  any EPSG code; an unknown wkid is an error unless ``source.crs`` is declared.
- **Zip** (``.zip``): see :mod:`loaders.archive`.

Archives (zip, KMZ) are read within the source's :class:`~loaders.limits.Budget`; a structure nested too
deeply for the parsers (JSON arrays, KML folders) is refused with one line rather than a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS
from pyproj.exceptions import CRSError as PyprojCRSError

from loaders.limits import Budget, dataset_files, open_regular
from loaders.report import LoadReport
from sdi.errors import CrsError, SourceFormatError
from sdi.layerdef import LayerDefinition

#: File suffixes this module reads itself (lower case, with the dot).
SUFFIXES: frozenset[str] = frozenset({".kml", ".kmz", ".topojson", ".gpx", ".gdb", ".json", ".esrijson", ".zip"})
#: File suffixes loaded as rasters by :mod:`loaders.raster` (lower case, with the dot); kept here, away from
#: rasterio, so that a vector load does not import it.
RASTER_SUFFIXES: frozenset[str] = frozenset({".tif", ".tiff", ".asc"})
#: ESRI well-known ids that are not EPSG codes, and their EPSG equivalents.
ESRI_WKIDS: dict[int, int] = {102140: 2326, 102100: 3857, 102113: 3857, 900913: 3857}
_JSON_SUFFIXES = {".json", ".geojson", ".topojson", ".esrijson"}
_GPX_MAIN = ("waypoints", "routes", "tracks")
#: Arrow → pandas types keeping integers and booleans with NULLs (as in :mod:`loaders.read`).
_NULLABLE = {pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.bool_(): pd.BooleanDtype()}
_TOPOLOGY = re.compile(rb'"type"\s*:\s*"Topology"')


def read_other(path: Path, definition: LayerDefinition, report: LoadReport,
               budget: Budget | None = None) -> gpd.GeoDataFrame | None:
    """Read ``path`` if it is one of this module's formats; return ``None`` to use the generic reader.

    Parameters
    ----------
    budget
        What reading this source may still unpack from archives (default: a fresh one with default limits).

    Raises
    ------
    SourceFormatError
        Unreadable content, nothing to load, an ambiguous/unknown layer choice, or a limit passed.
    CrsError
        An Esri JSON ``spatialReference`` that maps to no EPSG code (and no ``source.crs``).
    """
    budget = budget if budget is not None else Budget()
    suffix = path.suffix.lower()
    if suffix in (".kml", ".kmz"):
        return _read_kml(path, definition, report, budget)
    if suffix == ".zip":
        from loaders.archive import read_zip  # archive imports this module

        return read_zip(path, definition, report, budget)
    if suffix == ".gpx":
        return _read_layered(path, definition, report, "GPX", _GPX_MAIN)
    if suffix == ".gdb" and path.is_dir():
        return _read_layered(path, definition, report, "File Geodatabase", None)
    if suffix in _JSON_SUFFIXES and path.is_file():
        flavour = json_flavour(path)
        if flavour == "topojson":
            return _read_layered(path, definition, report, "TopoJSON", None)
        if flavour == "esrijson":
            return _read_esrijson(path, definition, report)
    return None


def json_flavour(path: Path) -> str | None:
    """``"topojson"`` or ``"esrijson"`` when the start of a JSON file says so; ``None`` for (Geo)JSON."""
    with open_regular(path) as fh:
        head = fh.read(1 << 16)
    if _TOPOLOGY.search(head):
        return "topojson"
    if b'"geometryType"' in head or (b'"attributes"' in head and b'"features"' in head
                                     and b'"FeatureCollection"' not in head):
        return "esrijson"
    return None


def is_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is a folder that is one dataset (a File Geodatabase, ``*.gdb``)."""
    return path.is_dir() and path.suffix.lower() == ".gdb"


def dataset_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a dataset folder (each file's relative path and bytes, in name order).

    Raises
    ------
    SourceFormatError
        When the file, or anything in the folder, is a FIFO, device or socket (none is opened).
    """
    digest = hashlib.sha256()
    files = dataset_files(path) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open_regular(file) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "not recognized as being in a supported file format" in text:
        return "GDAL recognises no format in it"
    return text.splitlines()[0] if text else type(exc).__name__


def _layers(path: Path) -> list[tuple[str, str | None]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            found = pyogrio.list_layers(path)
    except (DataSourceError, OSError) as exc:
        raise SourceFormatError(f"{path}: not a readable vector file ({_first_line(exc)})") from exc
    return [(str(name), None if gtype is None else str(gtype)) for name, gtype in found]


def _read_layer(path: Path, layer: str | int) -> gpd.GeoDataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return pyogrio.read_dataframe(path, layer=layer, use_arrow=True,
                                          arrow_to_pandas_kwargs={"types_mapper": _NULLABLE.get})
    except (DataSourceError, DataLayerError, OSError, ValueError, shapely.errors.GEOSException) as exc:
        raise SourceFormatError(f"{path}: cannot read layer {layer!r}: {_first_line(exc)}") from exc


def _read_layered(path: Path, definition: LayerDefinition, report: LoadReport, kind: str,
                  main: tuple[str, ...] | None) -> gpd.GeoDataFrame:
    """Read one layer of a multi-layer source: ``source.layer``, else the only non-empty candidate."""
    layers = _layers(path)
    names = [name for name, _ in layers]
    chosen = definition.source.layer
    if chosen is not None and chosen not in names:
        raise SourceFormatError(f"{path}: source.layer {chosen!r} is not a layer of this {kind} "
                                f"(has: {', '.join(names) or 'none'})")
    if chosen is None:
        candidates = [n for n, g in layers if (n in main if main else g is not None)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            counts = {n: int(pyogrio.read_info(path, layer=n, force_feature_count=True)["features"])
                      for n in candidates}
        full = [n for n in candidates if counts[n] > 0]
        if not full:
            raise SourceFormatError(f"{path}: {kind} has no features in {', '.join(candidates) or 'any layer'}; "
                                    f"nothing to load")
        if len(full) > 1:
            listed = ", ".join(f"{n} ({counts[n]})" for n in full)
            raise SourceFormatError(f"{path}: {kind} has {len(full)} non-empty layers: {listed}; "
                                    f"set source.layer to one of them")
        chosen = full[0]
        report.note(f"{kind} layer {chosen!r} read (the only non-empty one of: {', '.join(names)})")
    frame = _read_layer(path, chosen)
    report.driver = kind
    return frame


def esri_wkid_to_epsg(*wkids: int) -> int | None:
    """EPSG code for an Esri ``spatialReference`` wkid (then its ``latestWkid``), ``None`` if unknown."""
    for code in wkids:
        if code in ESRI_WKIDS:
            return ESRI_WKIDS[code]
        try:
            CRS.from_epsg(code)
        except PyprojCRSError:
            continue
        return code
    return None


def _spatial_reference(data: Any) -> dict[str, Any] | None:
    """The top-level ``spatialReference``, else the first geometry's."""
    features = data.get("features") if isinstance(data, dict) else None
    for holder in [data, *(f.get("geometry") for f in features or [] if isinstance(f, dict))]:
        if isinstance(holder, dict) and isinstance(holder.get("spatialReference"), dict):
            return dict(holder["spatialReference"])
    return None


def _read_esrijson(path: Path, definition: LayerDefinition, report: LoadReport) -> gpd.GeoDataFrame | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            if pyogrio.read_info(path)["driver"] != "ESRIJSON":
                return None  # GeoJSON that merely mentions "geometryType"/"attributes"
        except (DataSourceError, DataLayerError, OSError):
            pass  # the JSON check below names the problem
    try:
        with open_regular(path) as fh:
            data = json.loads(fh.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceFormatError(f"{path}: Esri JSON is not valid JSON ({_first_line(exc)})") from exc
    except RecursionError as exc:  # the C scanner recurses once per level of nesting
        raise SourceFormatError(f"{path}: Esri JSON is nested too deeply to read (arrays or objects nested "
                                f"hundreds of levels deep)") from exc
    frame = _read_layer(path, 0)
    report.driver = "ESRIJSON"
    ref = _spatial_reference(data)
    if ref is None:
        report.note("Esri JSON has no spatialReference")
        return frame
    wkid, latest = ref.get("wkid"), ref.get("latestWkid")
    if wkid is None and latest is None:
        report.note("Esri JSON spatialReference has no wkid; GDAL's reading of it is used")
        return frame
    codes = [int(c) for c in (wkid, latest) if isinstance(c, int | str) and str(c).isdigit()]
    epsg = esri_wkid_to_epsg(*codes) if codes else None
    if epsg is None:
        known = ", ".join(f"{k}→EPSG:{v}" for k, v in ESRI_WKIDS.items())
        if definition.source.crs is None:
            raise CrsError(f"{path}: spatialReference wkid {wkid} is not an EPSG code or a known ESRI code "
                           f"({known}); set source.crs")
        report.warn(f"Esri JSON spatialReference wkid {wkid} is unknown; source.crs is used")
        return frame
    report.note(f"Esri JSON spatialReference wkid {wkid} read as EPSG:{epsg}")
    return frame.set_crs(epsg, allow_override=True)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _kml_tree(path: Path, budget: Budget) -> ET.Element:
    try:
        if path.suffix.lower() == ".kmz":
            from loaders.archive import kmz_document  # archive imports this module

            return ET.fromstring(kmz_document(path, budget))
        with open_regular(path) as fh:
            return ET.parse(fh).getroot()
    except ET.ParseError as exc:
        raise SourceFormatError(f"{path}: KML is not well-formed XML ({exc})") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise SourceFormatError(f"{path}: KMZ is not a valid zip file ({_first_line(exc)})") from exc


def _read_kml(path: Path, definition: LayerDefinition, report: LoadReport, budget: Budget) -> gpd.GeoDataFrame:
    root = _kml_tree(path, budget)
    raw = sum(1 for e in root.iter() if _local(e.tag) == "Placemark")
    links = sum(1 for e in root.iter() if _local(e.tag) == "NetworkLink")
    if links:
        report.warn(f"{links} KML NetworkLink(s) not followed: only placemarks in the file are read")
    if raw == 0:
        raise SourceFormatError(f"{path}: KML has no <Placemark> elements; nothing to load")
    frames, gdal_error = [], ""
    try:
        for index, (name, _) in enumerate(_layers(path)):
            layer = _read_layer(path, index)
            if len(layer):
                layer.insert(0, "kml_layer", name)
                frames.append(layer)
    except SourceFormatError as exc:
        gdal_error = f" (GDAL: {exc})"
        frames = []
    read = sum(len(f) for f in frames)
    if read >= raw:
        report.driver = str(pyogrio.read_info(path, layer=0)["driver"])
        report.note(f"KML: {read} features from {len(frames)} layers (folders) in column kml_layer; "
                    f"{raw} <Placemark> elements in the file")
        if read > raw:
            report.warn(f"GDAL read {read} features but the KML has {raw} <Placemark> elements")
        frame = pd.concat(frames, ignore_index=True)
        return gpd.GeoDataFrame(frame, geometry="geometry").set_crs(4326, allow_override=True)
    report.warn(f"GDAL read {read} of {raw} KML placemarks{gdal_error}; all {raw} read with the built-in "
                f"KML parser instead")
    report.driver = "KML (built-in parser)"
    try:
        return _parse_placemarks(root, path, report)
    except RecursionError as exc:  # _walk and _geometry recurse once per nested Folder or MultiGeometry
        raise SourceFormatError(f"{path}: KML is nested too deeply to read (Folders or MultiGeometry nested "
                                f"hundreds of levels deep)") from exc


def _walk(element: ET.Element, container: str) -> Iterator[tuple[ET.Element, str]]:
    for child in element:
        tag = _local(child.tag)
        if tag == "Placemark":
            yield child, container
        elif tag in ("Document", "Folder"):
            name = next((c.text for c in child if _local(c.tag) == "name" and c.text), None)
            yield from _walk(child, (name or container).strip())
        else:  # <kml>, <Update>/<Create>, or anything else that may hold a placemark
            yield from _walk(child, container)


def _coords(element: ET.Element | None, alt: list[bool]) -> list[tuple[float, float]]:
    """The lon,lat pairs of an element's ``<coordinates>`` child; sets ``alt[0]`` when altitudes are present."""
    text = next((c.text for c in element if _local(c.tag) == "coordinates"), None) if element is not None else None
    points = [tuple(float(v) for v in t.split(",")) for t in re.sub(r"\s*,\s*", ",", (text or "").strip()).split()]
    if not points or any(len(p) < 2 for p in points):
        raise ValueError("coordinates need lon,lat tuples")
    alt[0] |= any(len(p) > 2 for p in points)
    return [(p[0], p[1]) for p in points]


def _rings(polygon: ET.Element, boundary: str, alt: list[bool]) -> list[list[tuple[float, float]]]:
    return [_coords(ring, alt) for b in polygon if _local(b.tag) == boundary
            for ring in b if _local(ring.tag) == "LinearRing"]


def _geometry(element: ET.Element, alt: list[bool]) -> shapely.Geometry | None:
    tag = _local(element.tag)
    if tag == "Point":
        return shapely.Point(_coords(element, alt)[0])
    if tag in ("LineString", "LinearRing"):
        return shapely.LineString(_coords(element, alt))
    if tag == "Polygon":
        return shapely.Polygon(_rings(element, "outerBoundaryIs", alt)[0], _rings(element, "innerBoundaryIs", alt))
    if tag != "MultiGeometry":
        return None
    parts = [g for c in element if (g := _geometry(c, alt)) is not None]
    flat = [p for g in parts for p in getattr(g, "geoms", [g])]
    multi = {"Point": shapely.MultiPoint, "LineString": shapely.MultiLineString, "Polygon": shapely.MultiPolygon}
    families = {p.geom_type for p in flat}
    kind = multi.get(families.pop()) if len(families) == 1 else None
    return kind(flat) if kind else shapely.GeometryCollection(flat)


_GEOMETRY_TAGS = {"Point", "LineString", "LinearRing", "Polygon", "MultiGeometry"}


def _parse_placemarks(root: ET.Element, path: Path, report: LoadReport) -> gpd.GeoDataFrame:
    """Every ``<Placemark>``: folder (``kml_layer``), id, Name, description, ExtendedData fields, geometry."""
    records: list[dict[str, Any]] = []
    geoms: list[shapely.Geometry | None] = []
    bad: list[str] = []
    alt = [False]
    for placemark, container in _walk(root, path.stem):
        record: dict[str, Any] = {"kml_layer": container, "id": placemark.get("id"),
                                  "Name": None, "description": None}
        geometry = None
        for child in placemark:
            tag = _local(child.tag)
            if tag == "name":
                record["Name"] = (child.text or "").strip()
            elif tag == "description":
                record["description"] = (child.text or "").strip()
            elif tag == "ExtendedData":
                for data in child.iter():
                    if _local(data.tag) == "Data" and data.get("name"):
                        record[str(data.get("name"))] = next((v.text for v in data if _local(v.tag) == "value"), None)
                    elif _local(data.tag) == "SimpleData" and data.get("name"):
                        record[str(data.get("name"))] = data.text
            elif tag in _GEOMETRY_TAGS or tag in ("Track", "MultiTrack", "Model"):
                try:
                    geometry = _geometry(child, alt)
                except (ValueError, IndexError, shapely.errors.GEOSException):
                    geometry = None
                if geometry is None:
                    bad.append(record["Name"] or record["id"] or f"#{len(records) + 1}")
        records.append(record)
        geoms.append(geometry)
    if bad:
        report.warn(f"{len(bad)} KML placemarks have no readable Point/LineString/Polygon/MultiGeometry "
                    f"(first: {bad[0]!r}); they have no geometry")
    if alt[0]:
        report.note("KML altitudes ignored: coordinates read as lon,lat")
    report.note(f"KML: {len(records)} placemarks read by the built-in parser; folder in column kml_layer")
    return gpd.GeoDataFrame(records, geometry=gpd.GeoSeries(geoms, crs=4326))


def _listing(names: list[str]) -> str:
    files = [n for n in names if not n.endswith("/")]
    shown, more = files[:10], len(files) - 10
    return (", ".join(shown) or "nothing") + (f", … ({more} more)" if more > 0 else "")
