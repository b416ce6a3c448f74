"""A static PNG map of ranked sites (matplotlib's Agg canvas, no pyplot state, no network, no base map).

Sites are filled by score, the best ones labelled with their rank, district outlines drawn in grey;
axes are HK1980 Grid eastings and northings in metres, with a scale bar and a north arrow (grid north,
within half a degree of true north in Hong Kong). The title names the layers that are synthetic.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from sdi.errors import CrsError

HK_GRID = 2326
CMAP = "viridis"
_NICE = (1, 2, 5)


def scale_length(width_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10ⁿ metres) close to a fifth of ``width_m``."""
    target = max(width_m / 5, 1.0)
    power = 10 ** math.floor(math.log10(target))
    return float(max(n * power for n in _NICE if n * power <= target))


def _check_crs(frame: gpd.GeoDataFrame, name: str) -> None:
    if frame.crs is None or frame.crs.to_epsg() != HK_GRID:
        raise CrsError(f"{name}: expected a GeoDataFrame in EPSG:{HK_GRID}, got {frame.crs}")


def _decorate(ax: Axes, bounds: tuple[float, float, float, float]) -> None:
    """Scale bar (lower left) and north arrow (upper right) inside ``bounds``."""
    minx, miny, maxx, maxy = bounds
    width, height = maxx - minx, maxy - miny
    length = scale_length(width)
    x0, y0 = minx + 0.05 * width, miny + 0.05 * height
    ax.plot([x0, x0 + length], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(x0 + length / 2, y0 + 0.015 * height, label, ha="center", va="bottom", fontsize=8)
    nx, ny = maxx - 0.06 * width, maxy - 0.14 * height
    ax.annotate("N", xy=(nx, ny + 0.08 * height), xytext=(nx, ny), ha="center", va="center", fontsize=10,
                fontweight="bold", arrowprops={"arrowstyle": "-|>", "color": "black"})


def plot_sites(sites: gpd.GeoDataFrame, path: Path, *, districts: gpd.GeoDataFrame | None = None,
               title: str = "Site selection", synthetic: Sequence[str] = (), top: int = 10,
               dpi: int = 150) -> Path:
    """Draw ranked sites to a PNG file.

    Parameters
    ----------
    sites
        Ranked sites in EPSG:2326 with ``rank`` and ``score`` columns (a site-selection result); may be empty.
    path
        The PNG file to write (overwritten).
    districts
        District polygons (EPSG:2326) drawn as outlines; the view covers them when there is no site.
    title
        First line of the title.
    synthetic
        Ids of the synthetic layers behind the result, named in the title ("Synthetic layers: ...").
    top
        How many of the best sites get a rank label.
    dpi
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    CrsError
        When ``sites`` or ``districts`` is not in EPSG:2326.
    """
    _check_crs(sites, "sites")
    if districts is not None:
        _check_crs(districts, "districts")
    fig = Figure(figsize=(10, 8.5))
    FigureCanvasAgg(fig)  # render with Agg, whatever pyplot's backend is; no global state touched
    ax = fig.add_subplot()
    ax.set_facecolor("#eef3f7")
    if len(sites):
        view = sites.total_bounds
    elif districts is not None and len(districts):
        view = districts.total_bounds
    else:
        view = (800_000.0, 800_000.0, 870_000.0, 850_000.0)  # Hong Kong in HK1980 Grid
    minx, miny, maxx, maxy = (float(v) for v in view)
    pad = max(maxx - minx, maxy - miny, 500.0) * 0.08
    bounds = (minx - pad, miny - pad, maxx + pad, maxy + pad)
    if districts is not None and len(districts):
        districts.boundary.plot(ax=ax, color="#7f8c8d", linewidth=0.6, zorder=1)
    if len(sites):
        norm = Normalize(vmin=0, vmax=100)
        sites.plot(ax=ax, column="score", cmap=CMAP, norm=norm, edgecolor="black", linewidth=0.3, zorder=2)
        points = sites.geometry.representative_point()  # lots are specks at territory scale: mark them too
        ax.scatter(points.x, points.y, c=sites["score"], cmap=CMAP, norm=norm, s=14, edgecolors="black",
                   linewidths=0.3, zorder=2)
        fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, shrink=0.7, label="score (0–100)")
        best = sites.nsmallest(top, "rank").iloc[::-1]  # rank 1 drawn last, on top
        for rank, point in zip(best["rank"], best.geometry.representative_point(), strict=True):
            ax.annotate(str(int(rank)), xy=(point.x, point.y), xytext=(3, 3), textcoords="offset points",
                        fontsize=8, fontweight="bold", zorder=3,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "black", "lw": 0.4})
    else:
        ax.text(0.5, 0.5, "no site passes every constraint", transform=ax.transAxes, ha="center", fontsize=12)
    ax.set_xlim(bounds[0], bounds[2])
    ax.set_ylim(bounds[1], bounds[3])
    ax.set_aspect("equal")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("Easting (m, HK1980 Grid EPSG:2326)")
    ax.set_ylabel("Northing (m)")
    _decorate(ax, bounds)
    lines = [f"{title} — {len(sites)} site(s), top {min(top, len(sites))} labelled by rank"]
    lines += textwrap.wrap(f"Synthetic layers: {', '.join(synthetic)}" if synthetic else "No synthetic layers",
                           width=100)
    ax.set_title("\n".join(lines), fontsize=10)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
    return path
