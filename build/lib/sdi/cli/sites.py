"""``sdi sites``: data-centre (or any criteria) site selection to a GeoPackage, GeoJSON or CSV file and a PNG map.

Every file is written to a temporary name next to its target and renamed into place only when all of
them are complete, so an error leaves no output file behind (and never half of one).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from sdi.cli._common import clean_errors, consoles, settings_from_env
from sdi.errors import ConfigError
from sdi.settings import Settings

if TYPE_CHECKING:
    import geopandas as gpd

    from sdi.planning.criteria import Criteria

LAYER = "sites"  #: layer name in the GeoPackage and GeoJSON files
HK_GRID, WGS84 = 2326, 4326
SHOWN = 10  #: sites in the printed table and labelled on the map
_SIDECARS = ("-journal", "-wal", "-shm")  # SQLite files GDAL may leave next to a GeoPackage


def _write_gpkg(sites: gpd.GeoDataFrame, path: Path) -> None:
    import pyogrio

    pyogrio.write_dataframe(sites.to_crs(HK_GRID), path, layer=LAYER, driver="GPKG",
                            geometry_type=None if len(sites) else "Polygon")


def _write_geojson(sites: gpd.GeoDataFrame, path: Path) -> None:
    import pyogrio

    pyogrio.write_dataframe(sites.to_crs(WGS84), path, layer=LAYER, driver="GeoJSON", layer_options={"RFC7946": "YES"},
                            geometry_type=None if len(sites) else "Polygon")


def _write_csv(sites: gpd.GeoDataFrame, path: Path) -> None:
    frame = sites.to_crs(HK_GRID)
    table = frame.drop(columns=frame.geometry.name)
    table["wkt"] = frame.geometry.to_wkt()
    table.to_csv(path, index=False, encoding="utf-8-sig")  # the BOM makes Excel read UTF-8 (Chinese names)


#: Writers by file extension.
WRITERS: dict[str, Callable[[gpd.GeoDataFrame, Path], None]] = {
    ".gpkg": _write_gpkg, ".geojson": _write_geojson, ".csv": _write_csv}


def check_target(path: Path, option: str, suffixes: Sequence[str]) -> str:
    """The lower-case extension of ``path``; :class:`ConfigError` naming ``option`` when unknown or no folder."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ConfigError(f"{option} {path}: unknown file extension {path.suffix or '(none)'!r}; "
                          f"expected one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: folder {path.parent} does not exist")
    return suffix


def parse_weights(values: Sequence[str] | None) -> dict[str, float]:
    """``["substation=5", ...]`` → ``{"substation": 5.0}``; :class:`ConfigError` naming ``--weight`` otherwise."""
    weights: dict[str, float] = {}
    for value in values or ():
        key, sep, number = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--weight {value!r}: expected ID=NUMBER, e.g. --weight substation=5")
        try:
            weight = float(number)
        except ValueError:
            raise ConfigError(f"--weight {value!r}: {number!r} is not a number") from None
        if not math.isfinite(weight):
            raise ConfigError(f"--weight {value!r}: {number!r} is not a finite number")
        weights[key.strip()] = weight
    return weights


def _remove(path: Path) -> None:
    for candidate in (path, *(path.with_name(path.name + s) for s in _SIDECARS)):
        candidate.unlink(missing_ok=True)


@contextmanager
def staged(targets: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary paths for ``targets`` (same folders and extensions); renamed onto them when the block succeeds.

    On any error (or interruption) the temporary files are removed and the targets are left untouched.
    """
    token = uuid.uuid4().hex[:8]
    temps = [t.with_name(f".{t.stem}.{token}.tmp{t.suffix}") for t in targets]
    try:
        yield temps
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    finally:
        for temp in temps:
            _remove(temp)


def _districts(settings: Settings, criteria: Criteria) -> gpd.GeoDataFrame | None:
    from sdi.db import connect
    from sdi.planning.sources import read_layer

    if criteria.districts is None:
        return None
    with connect(settings) as conn:
        return read_layer(conn, criteria.districts.layer, columns=[])


def draw_map(sites: gpd.GeoDataFrame, path: Path, settings: Settings, criteria: Criteria,
             district: str | None) -> None:
    """The PNG map of ``sites`` with the criteria's district outlines and its synthetic layers in the title."""
    from sdi.planning.plot import plot_sites

    title = criteria.title.en + (f" in {sites['district'].iloc[0]}" if district and len(sites) else "")
    plot_sites(sites, path, districts=_districts(settings, criteria), title=title,
               synthetic=list(sites.attrs.get("synthetic_layers", [])), top=SHOWN)


def summary(sites: gpd.GeoDataFrame, criteria_id: str) -> Table:
    """A rich table of the best :data:`SHOWN` sites."""
    table = Table(title=f"Top {min(SHOWN, len(sites))} of {len(sites)} site(s) ({criteria_id})")
    for name in ("rank", "site", "district", "score", "area m²"):
        table.add_column(name, justify="right" if name in ("rank", "score", "area m²") else "left")
    for row in sites.head(SHOWN).itertuples():
        table.add_row(str(row.rank), Text(str(row.site)), Text(str(row.district or "")), f"{row.score:.2f}",
                      f"{row.area_m2:,.0f}")  # Text: labels are not rich markup
    return table


@clean_errors
def sites_cmd(
    out: Annotated[Path, typer.Option(
        "--out", help="Output file by extension: .gpkg (layer 'sites', EPSG:2326), .geojson (EPSG:4326 "
        "longitude/latitude per RFC 7946) or .csv (UTF-8 with BOM: every attribute, then "
        "the geometry as WKT in EPSG:2326 in column 'wkt').")],
    criteria: Annotated[Path | None, typer.Option(
        "--criteria", help="Criteria YAML file (default: the shipped data-centre model).")] = None,
    district: Annotated[str | None, typer.Option(
        "--district", help="Only sites in this district (English or Chinese name, any case).")] = None,
    engine: Annotated[str | None, typer.Option(
        "--engine", help="postgis (default), geopandas or dask; every engine gives the same sites.")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Dask scheduler address for --engine dask (default: a local cluster).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Keep only the best N sites.")] = None,
    weight: Annotated[list[str] | None, typer.Option(
        "--weight", help="Override a score weight, ID=NUMBER (repeatable), e.g. --weight substation=5.")] = None,
    map_file: Annotated[Path | None, typer.Option("--map", help="Also draw a PNG map of the sites.")] = None,
) -> None:
    """Rank candidate sites by the criteria (hard constraints, then a weighted score) and write them to a file."""
    from sdi.planning import site_selection
    from sdi.planning.criteria import load_criteria

    suffix = check_target(out, "--out", tuple(WRITERS))
    if map_file is not None:
        check_target(map_file, "--map", (".png",))
    weights = parse_weights(weight)
    settings = settings_from_env()
    model = load_criteria(criteria)
    sites = site_selection(model, district=district, engine=engine, settings=settings, limit=limit,
                           weights=weights or None, scheduler=scheduler)
    targets = [out] + ([map_file] if map_file is not None else [])
    with staged(targets) as temps:
        WRITERS[suffix](sites, temps[0])
        if map_file is not None:
            draw_map(sites, temps[1], settings, model, district)
    consoles.out.print(summary(sites, model.id))
    if sites.attrs.get("synthetic_layers"):
        names = ", ".join(sites.attrs["synthetic_layers"])
        consoles.out.print(f"note: these sites come from SYNTHETIC layers: {names}", markup=False)
    consoles.out.print(f"wrote {len(sites)} site(s) to {out}" + (f" and a map to {map_file}" if map_file else ""),
                       markup=False)
