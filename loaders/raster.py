"""Raster layers (GeoTIFF, ASCII grid) → Cloud Optimized GeoTIFF in EPSG:2326.

A load reads every pixel once (a truncated file fails before anything is written), settles the CRS
(declared ``source.crs`` wins, then the file's; never inferred for rasters), checks the Hong Kong extent,
copies the pixels unchanged (EPSG:2326 sources) or warps them with nearest-neighbour resampling (so
categorical codes survive) into a staging GeoTIFF in ``<data_dir>/rasters/``, and translates that into
a COG (DEFLATE, nearest-neighbour overviews) tagged ``SDI_LAYER_ID``/``SDI_LOAD_ID``/``SDI_SOURCE_SHA256``.

Publishing is atomic. Under the per-layer advisory lock vector loads take (held for the whole load), one
transaction writes the ``sdi.load_history`` and ``sdi.layer`` rows and, just before the commit, the COG
replaces ``rasters/<id>.tif`` (``os.replace``); if anything fails before the commit completes, the rows
roll back and the previous COG is put back from a hard-linked backup.

``features_read`` and ``features_written`` count pixels per band (width × height) of the source and
of the COG; the band count, valid pixels and value ranges are in the report's notes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import rasterio
import rasterio.shutil
from affine import Affine
from psycopg import sql
from pyproj import CRS, Transformer
from pyproj.exceptions import ProjError
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from loaders.limits import check_sidecars
from loaders.read import declared_crs, sha256_file
from loaders.report import LoadReport
from loaders.write import lineage
from sdi import __version__
from sdi.catalogue.store import refresh_record
from sdi.crs import HK_GRID, Reprojection, check_hk_extent, parse_crs, reprojection
from sdi.db import connect
from sdi.errors import CrsError, LoadInterruptedError, SourceFormatError, SourceNotFoundError
from sdi.layerdef import LayerDefinition
from sdi.settings import Settings

Progress = Callable[[int, int], None]
Bounds = tuple[float, float, float, float]

RASTER_DIR = "rasters"
_VECTOR_ONLY_KEYS = ("layer", "encoding", "coordinates")
_CHUNK_PIXELS = 4_000_000  #: pixels read at once when scanning a band


@dataclass
class BandStats:
    """What one band holds: pixels with data, and their range."""

    valid: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf


@dataclass
class Plan:
    """The source as read and checked, and the EPSG:2326 grid it is written to."""

    source_epsg: int
    reprojection: Reprojection
    width: int
    height: int
    transform: Affine
    bounds: Bounds  #: of the output grid, EPSG:2326
    dtype: str
    nodata: float | None
    descriptions: list[str]
    stats: list[BandStats] = field(default_factory=list)

    @property
    def copied(self) -> bool:
        return self.reprojection.transformer is None


def _number(value: float | None) -> float | str | None:
    """A JSON-safe number: NaN and infinities as strings."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


@contextmanager
def _open(path: Path, label: str) -> Iterator[DatasetReader]:
    """Open a raster; missing, unreadable or corrupt files, and special files beside it, give one-line errors."""
    try:
        is_file = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise SourceNotFoundError(f"{label}: source.path: cannot use {str(path)[:120]!r}: {exc.strerror}") from exc
    if not is_file:
        raise SourceNotFoundError(f"{label}: source file {path} does not exist or is not a file")
    check_sidecars(path)  # GDAL opens <stem>.aux.xml, .prj, .ovr, ...: none may be a FIFO or a device
    if path.stat().st_size == 0:
        raise SourceFormatError(f"{path}: file is empty (0 bytes)")
    try:
        src = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SourceFormatError(f"{path}: not a readable raster ({str(exc).splitlines()[0][:200]})") from exc
    with src:
        yield src


def _row_windows(width: int, height: int) -> Iterator[Window]:
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    for row in range(0, height, rows):
        yield Window(0, row, width, min(rows, height - row))


def scan(src: DatasetReader, nodata: float | None, where: Path) -> list[BandStats]:
    """Read every pixel once; count pixels with data and their range (SourceFormatError if unreadable)."""
    stats = [BandStats() for _ in range(src.count)]
    for band, st in enumerate(stats, start=1):
        for window in _row_windows(src.width, src.height):
            try:
                data = src.read(band, window=window)
            except (RasterioError, OSError) as exc:
                raise SourceFormatError(f"{where}: band {band} cannot be read at row {int(window.row_off)} "
                                        f"(truncated or corrupt file)") from exc
            valid = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
            if nodata is not None and not math.isnan(nodata):
                valid &= data != nodata
            values = data[valid]
            if values.size:
                st.valid += int(values.size)
                st.minimum = min(st.minimum, float(values.min()))
                st.maximum = max(st.maximum, float(values.max()))
    return stats


def _source_epsg(src: DatasetReader, definition: LayerDefinition, report: LoadReport) -> int:
    label, name = definition.label, definition.source_path.name
    prj = definition.source_path.with_suffix(".prj")
    file_epsg = None
    if src.driver == "AAIGrid" and prj.is_file():  # GDAL's rewrite of ESRI WKT loses the EPSG match
        file_epsg = parse_crs(prj.read_text(encoding="utf-8", errors="replace"), what=f"{label}: {prj.name}").to_epsg()
    elif src.crs:
        file_epsg = parse_crs(src.crs.to_wkt(), what=f"{label}: CRS of {name}").to_epsg()
    declared = declared_crs(definition, file_epsg, report)
    if declared is not None:
        return declared
    if file_epsg is None:
        raise CrsError(f"{label}: {name} has no CRS; set source.crs (for example EPSG:2326) in the layer YAML")
    report.source_crs, report.crs_origin = f"EPSG:{file_epsg}", "file"
    return file_epsg


def _yx(crs: CRS) -> bool:
    return crs.axis_info[0].direction.lower() in ("north", "south")


def gdal_operation(rep: Reprojection) -> str:
    """The checked transformation as a PROJ pipeline for GDAL's COORDINATE_OPERATION warp option.

    GDAL applies such a pipeline in each CRS's authority axis order, so the x/y pipeline of the
    checked (EPSG:1825, non-ballpark) transformer is wrapped in axis swaps where needed, then
    verified against that transformer on a point in Hong Kong.
    """
    assert rep.transformer is not None
    src, dst = CRS.from_epsg(rep.source_epsg), CRS.from_epsg(rep.target_epsg)
    steps = rep.transformer.to_proj4()
    body = steps.removeprefix("+proj=pipeline").strip() if steps.startswith("+proj=pipeline") else f"+step {steps}"
    if not body.startswith("+step"):
        raise CrsError(f"EPSG:{rep.source_epsg} -> EPSG:{rep.target_epsg}: cannot pass the operation to GDAL")
    swap = "+step +proj=axisswap +order=2,1"
    pipeline = " ".join(["+proj=pipeline", *([swap] if _yx(src) else []), body, *([swap] if _yx(dst) else [])])
    probe = (835_000.0, 825_000.0)
    sx, sy = Transformer.from_crs(dst, src, always_xy=True).transform(*probe)
    ox, oy = Transformer.from_pipeline(pipeline).transform(*((sy, sx) if _yx(src) else (sx, sy)))
    got = ((oy, ox) if _yx(dst) else (ox, oy))
    expected = rep.transformer.transform(sx, sy)
    if math.isfinite(sx) and not (abs(got[0] - expected[0]) < 1e-3 and abs(got[1] - expected[1]) < 1e-3):
        raise CrsError(f"EPSG:{rep.source_epsg} -> EPSG:{rep.target_epsg}: the pipeline built for GDAL "
                       f"disagrees with the checked transformation")
    return pipeline


def _corners(src: DatasetReader) -> Bounds:
    xs, ys = zip(*(src.transform @ xy for xy in ((0, 0), (src.width, 0), (0, src.height),
                                                  (src.width, src.height))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def plan(src: DatasetReader, definition: LayerDefinition, report: LoadReport) -> Plan:
    """Settle the CRS, check the extent and choose the output grid (the source's when no warp)."""
    path, label = definition.source_path, definition.label
    if src.count == 0:
        raise SourceFormatError(f"{path}: raster has no bands")
    if len(set(src.dtypes)) > 1:
        raise SourceFormatError(f"{path}: bands have different data types ({', '.join(src.dtypes)})")
    if src.transform.is_identity and not src.gcps[0]:
        raise SourceFormatError(f"{path}: raster has no georeferencing (no geotransform)")
    if src.transform.is_identity:
        raise SourceFormatError(f"{path}: raster is georeferenced by ground control points only; not supported")
    epsg = _source_epsg(src, definition, report)
    rep = reprojection(epsg)
    report.transformation = rep.description
    source_bounds = _corners(src)
    width, height, transform = src.width, src.height, src.transform
    if rep.transformer is None:
        bounds = source_bounds
    else:
        try:
            bounds = rep.transformer.transform_bounds(*source_bounds, densify_pts=21)
        except (ProjError, ValueError):  # PROJ fails on coordinates far outside the CRS's area
            bounds = (math.inf,) * 4
    check_hk_extent(bounds, source_bounds, epsg, where=f"{label}: {path.name}")
    if rep.transformer is not None:
        transform, width, height = calculate_default_transform(
            RioCRS.from_epsg(epsg), RioCRS.from_epsg(HK_GRID), src.width, src.height, *source_bounds,
            COORDINATE_OPERATION=gdal_operation(rep))
        bounds = (transform.c, transform.f + transform.e * height, transform.c + transform.a * width, transform.f)
    nodata = src.nodata
    if nodata is None and rep.transformer is not None:
        if np.dtype(src.dtypes[0]).kind == "f":
            nodata = math.nan
            report.warn("the source has no nodata value: nodata=nan set for pixels outside it after reprojection")
        else:
            report.warn("the source has no nodata value: pixels outside it after reprojection are 0, like data")
    described = [d or f"band {i}" for i, d in enumerate(src.descriptions, start=1)]
    missing = [d for d, original in zip(described, src.descriptions, strict=True) if not original]
    if missing:
        report.note(f"band descriptions set where the source has none: {', '.join(missing)}")
    return Plan(epsg, rep, int(width), int(height), transform, tuple(float(v) for v in bounds),  # type: ignore[arg-type]
                src.dtypes[0], nodata, described)


def _blocksize(width: int, height: int) -> int:
    """Tile size: 512 px, down to 128 px (GDAL's minimum for COGs) so that small rasters get overviews."""
    size = 512
    while size > 128 and size * 2 > max(width, height):
        size //= 2
    return size


def write_staging(src: DatasetReader, p: Plan, path: Path, tags: dict[str, str], progress: Progress | None) -> None:
    """Copy (EPSG:2326 source) or warp (nearest neighbour, checked transformation) into a tiled GeoTIFF."""
    profile = {"driver": "GTiff", "width": p.width, "height": p.height, "count": src.count, "dtype": p.dtype,
               "crs": RioCRS.from_epsg(HK_GRID), "transform": p.transform, "nodata": p.nodata, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(**src.tags(), **tags)
        for band in range(1, src.count + 1):
            if p.copied:
                for window in _row_windows(src.width, src.height):
                    dst.write(src.read(band, window=window), band, window=window)
            else:
                reproject(rasterio.band(src, band), rasterio.band(dst, band), src_crs=RioCRS.from_epsg(p.source_epsg),
                          dst_crs=RioCRS.from_epsg(HK_GRID), src_nodata=src.nodata, dst_nodata=p.nodata,
                          resampling=Resampling.nearest, COORDINATE_OPERATION=gdal_operation(p.reprojection))
            dst.set_band_description(band, p.descriptions[band - 1])
            dst.update_tags(band, **src.tags(band))
            with suppress(ValueError):
                dst.write_colormap(band, src.colormap(band))
            if progress:
                progress(band, src.count)
        dst.scales, dst.offsets, dst.units = src.scales, src.offsets, src.units


def write_cog(staging: Path, cog: Path) -> list[int]:
    """Translate the staging GeoTIFF into a COG, check its layout, and return its overview factors."""
    with rasterio.open(staging) as s:
        blocksize = _blocksize(s.width, s.height)
    rasterio.shutil.copy(staging, cog, driver="COG", BLOCKSIZE=blocksize, COMPRESS="DEFLATE", PREDICTOR="YES",
                         OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
    with rasterio.open(cog) as c:
        if c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG" or c.crs.to_epsg() != HK_GRID:
            raise LoadInterruptedError(f"{cog}: GDAL did not write a valid COG in EPSG:{HK_GRID}")
        return list(c.overviews(1))


_TEMP = re.compile(r"^\.(?P<id>[a-z0-9_]+)\.\d+\.(staging|cog|previous)\.tif$")


def _remove_stale(folder: Path, layer_id: str, report: LoadReport) -> None:
    """Remove temporary files left by a killed load of this layer (safe: we hold the layer's lock)."""
    stale = [f for f in folder.iterdir() if (m := _TEMP.match(f.name)) and m["id"] == layer_id]
    for f in stale:
        f.unlink(missing_ok=True)
    if stale:
        report.warn(f"removed {len(stale)} temporary file(s) left by an interrupted load: "
                    f"{', '.join(f.name for f in stale)}")


def _swap_in(new: Path, final: Path, backup: Path) -> bool:
    """Replace ``final`` with ``new``, keeping the previous file at ``backup``; True if there was one."""
    had = final.exists()
    if had:
        try:
            os.link(final, backup)
        except OSError:  # no hard links on this file system
            shutil.copy2(final, backup)
    os.replace(new, final)
    return had


def _raster_json(p: Plan, path: str, stats: list[BandStats], overviews: list[int], blocksize: int) -> dict[str, Any]:
    return {"path": path, "width": p.width, "height": p.height, "band_count": len(p.descriptions),
            "dtype": p.dtype, "nodata": _number(p.nodata), "resolution": [p.transform.a, -p.transform.e],
            "transform": list(p.transform)[:6], "overviews": overviews, "blocksize": blocksize,
            "compression": "DEFLATE", "resampling": "nearest",
            "bands": [{"band": i, "description": d, "valid_pixels": s.valid,
                       "min": _number(s.minimum if s.valid else None), "max": _number(s.maximum if s.valid else None)}
                      for i, (d, s) in enumerate(zip(p.descriptions, stats, strict=True), start=1)]}


def record(conn: psycopg.Connection, definition: LayerDefinition, settings: Settings, report: LoadReport,
           load_id: int, started_at: dt.datetime, raster: dict[str, Any], bounds: Bounds) -> None:
    """Insert the history row, upsert the ``sdi.layer`` row (kind 'raster') and its catalogue columns."""
    conn.execute(
        "insert into sdi.load_history (load_id, layer_id, started_at, source_path, source_sha256, source_crs,"
        " transformation, loader_version, features_read, features_written, report)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
        (load_id, definition.id, started_at, str(definition.source_path), report.source_sha256, report.source_crs,
         report.transformation, __version__, report.features_read, report.features_written,
         json.dumps(report.to_dict(), ensure_ascii=False, default=str)))
    columns = ("id, kind, table_name, title_en, title_zh, abstract_en, abstract_zh, custodian, licence, geometry_type,"
               " srid, primary_key, feature_count, extent, fields, synthetic, definition, load_id, loaded_at,"
               " file_path, raster")
    updates = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in columns.split(",")[1:])
    conn.execute(
        f"insert into sdi.layer ({columns}) values (%(id)s, 'raster', null, %(ten)s, %(tzh)s, %(aen)s, %(azh)s,"
        " %(cust)s, %(lic)s, null, 2326, null, %(n)s, st_makeenvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 2326),"
        " '[]'::jsonb, %(syn)s, %(def)s::jsonb, %(load)s, now(), %(path)s, %(raster)s::jsonb)"
        f" on conflict (id) do update set {updates}",
        {"id": definition.id, "ten": definition.title.en, "tzh": definition.title.zh, "aen": definition.abstract.en,
         "azh": definition.abstract.zh, "cust": definition.custodian, "lic": definition.licence,
         "n": report.features_written, "x0": bounds[0], "y0": bounds[1], "x1": bounds[2], "y1": bounds[3],
         "syn": definition.synthetic, "def": definition.model_dump_json(), "load": load_id,
         "path": raster["path"], "raster": json.dumps(raster)})
    refresh_record(conn, definition, kind="raster", public_url=settings.public_url, bounds=bounds,
                   lineage=lineage(report, load_id, __version__, started_at))


def _owner_role(conn: psycopg.Connection, settings: Settings) -> None:
    if conn.execute("select 1 from pg_roles where rolname = %s", (settings.owner_role,)).fetchone():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(settings.owner_role)))


def _describe(report: LoadReport, src: DatasetReader, p: Plan, definition: LayerDefinition) -> None:
    ignored = [f"source.{k}" for k in _VECTOR_ONLY_KEYS if getattr(definition.source, k) is not None]
    ignored += [k for k in ("fields", "primary_key", "geometry_type") if getattr(definition, k)]
    if ignored:
        report.warn(f"ignored for a raster layer: {', '.join(ignored)}")
    unit = CRS.from_epsg(p.source_epsg).axis_info[0].unit_name
    report.note(f"raster: {src.count} band(s) {p.dtype}, {src.width} x {src.height} pixels of "
                f"{abs(src.transform.a):g} x {abs(src.transform.e):g} {unit}")
    for i, (d, st) in enumerate(zip(p.descriptions, p.stats, strict=True), start=1):
        span = f", values {st.minimum:g} to {st.maximum:g}" if st.valid else ""
        report.note(f"band {i} '{d}': {st.valid:,} of {src.width * src.height:,} pixels hold data{span}")
    if p.copied:
        report.note("already EPSG:2326: no reprojection, pixels copied unchanged")
    else:
        report.note(f"reprojected EPSG:{p.source_epsg} -> EPSG:2326 with nearest-neighbour resampling: "
                    f"{p.width} x {p.height} pixels of {p.transform.a:.6g} m")


def load_raster(definition: LayerDefinition, settings: Settings, *, dry_run: bool = False,
                progress: Progress | None = None, stage: Callable[[str], None] | None = None) -> LoadReport:
    """Load a raster layer into ``<data_dir>/rasters/<id>.tif`` (a COG in EPSG:2326) and the registry.

    Parameters
    ----------
    definition
        The layer definition; its source is a GeoTIFF or an ASCII grid (``.asc``, with a ``.prj`` or
        ``source.crs``).
    settings
        Settings naming the database and ``data_dir``.
    dry_run
        Read and check only (every pixel, the CRS and the extent); write nothing.
    progress
        Called as ``progress(bands_done, bands_total)`` after each band is copied or warped, and once more
        just before the commit; an exception it raises aborts the load (the tests inject failures so).
    stage
        Called with the name of each step as it starts ("read", "warp", "cog", "write").

    Returns
    -------
    LoadReport
        ``features_read``/``features_written``: pixels per band (width x height) of the source / the COG.

    Raises
    ------
    SdiError
        Any load problem; the database and the published COG are then unchanged.
    """
    started, started_at = time.perf_counter(), dt.datetime.now(dt.UTC)
    path = definition.source_path
    report = LoadReport(layer_id=definition.id, source_path=str(path), dry_run=dry_run, geometry_type="Raster")
    step = [time.perf_counter()]

    def timed(name: str, previous: str | None) -> None:
        now = time.perf_counter()
        if previous:
            report.timings[previous] = round(now - step[0], 3)
        step[0] = now
        if stage and name != "done":
            stage(name)

    timed("read", None)
    with _open(path, definition.label) as src:
        report.driver = src.driver
        report.source_sha256 = sha256_file(path)
        p = plan(src, definition, report)
        p.stats = scan(src, src.nodata, path)
        report.features_read = src.width * src.height
        _describe(report, src, p, definition)
        if dry_run:
            timed("done", "read")
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        _publish(src, p, definition, settings, report, started_at, timed, progress)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def cog_path(layer_id: str, settings: Settings) -> Path:
    """Where a raster layer's Cloud Optimized GeoTIFF lives: ``<SDI_DATA_DIR>/rasters/<id>.tif``."""
    return settings.data_dir / RASTER_DIR / f"{layer_id}.tif"


def _publish(src: DatasetReader, p: Plan, definition: LayerDefinition, settings: Settings, report: LoadReport,
             started_at: dt.datetime, timed: Callable[[str, str | None], None], progress: Progress | None) -> None:
    final, lock = cog_path(definition.id, settings), f"sdi.load.{definition.id}"
    folder = final.parent
    with connect(settings, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(hashtext(%s))", (lock,))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _remove_stale(folder, definition.id, report)
            with conn.transaction():
                _owner_role(conn, settings)
                row = conn.execute("select nextval(pg_get_serial_sequence('sdi.load_history', 'load_id'))").fetchone()
                previous = conn.execute("select kind from sdi.layer where id = %s", (definition.id,)).fetchone()
            assert row is not None
            load_id = int(row[0])
            temp = {k: folder / f".{definition.id}.{load_id}.{k}.tif" for k in ("staging", "cog", "previous")}
            try:
                timed("warp", "read")
                tags = {"SDI_LAYER_ID": definition.id, "SDI_LOAD_ID": str(load_id),
                        "SDI_SOURCE_SHA256": report.source_sha256}
                write_staging(src, p, temp["staging"], tags, progress)
                timed("cog", "warp")
                overviews = write_cog(temp["staging"], temp["cog"])
                with rasterio.open(temp["cog"]) as cog:
                    written = scan(cog, p.nodata, temp["cog"])
                if p.copied and [s.valid for s in written] != [s.valid for s in p.stats]:
                    raise LoadInterruptedError(f"{final}: the COG's valid pixels differ from the source's")
                blocksize, report.features_written = _blocksize(p.width, p.height), p.width * p.height
                report.note(f"written as COG with {len(overviews)} overview level(s) {overviews} (nearest), "
                            f"{blocksize} x {blocksize} tiles, DEFLATE, nodata={p.nodata}: {final}")
                if previous and previous[0] == "vector":
                    report.warn(f"layer {definition.id} was a vector layer: layers.{definition.id} is left in place")
                timed("write", "cog")
                raster = _raster_json(p, f"{RASTER_DIR}/{final.name}", written, overviews, blocksize)
                last = (lambda: progress(src.count, src.count)) if progress else (lambda: None)
                _commit(conn, settings, definition, report, load_id, started_at, raster, p.bounds,
                        (temp["cog"], final, temp["previous"]), last)
                timed("done", "write")
            finally:
                for f in temp.values():
                    f.unlink(missing_ok=True)
        finally:
            with suppress(psycopg.Error):
                conn.execute("select pg_advisory_unlock(hashtext(%s))", (lock,))


def _commit(conn: psycopg.Connection, settings: Settings, definition: LayerDefinition, report: LoadReport,
            load_id: int, started_at: dt.datetime, raster: dict[str, Any], bounds: Bounds,
            files: tuple[Path, Path, Path], before_commit: Callable[[], None]) -> None:
    """Record the rows and swap the COG in, in one transaction; on any failure restore the previous COG."""
    new, final, backup = files
    report.load_id = load_id
    swapped, had_previous = False, False
    try:
        with conn.transaction():
            _owner_role(conn, settings)
            record(conn, definition, settings, report, load_id, started_at, raster, bounds)
            had_previous, swapped = _swap_in(new, final, backup), True
            before_commit()
    except BaseException:
        report.load_id = None
        if swapped and had_previous:
            os.replace(backup, final)
        elif swapped:
            final.unlink(missing_ok=True)
        raise
