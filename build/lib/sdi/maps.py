"""One-call maps that work offline: a GeoDataFrame drawn with Leaflet, in one self-contained HTML page.

>>> import sdi.maps
>>> m = sdi.maps.explore(frame, column="score")   # doctest: +SKIP
>>> m                                             # doctest: +SKIP  (Jupyter shows the map)
>>> m.save("sites.html")                          # doctest: +SKIP

Leaflet's script and stylesheet are inlined from the copy vendored for the API's HTML pages
(``sdi/web/static/vendor/leaflet``, package data) and the features are embedded as GeoJSON in EPSG:4326, so the
map renders without the internet. There is no base map unless ``tiles`` names a tile server (opt-in).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdi.errors import ConfigError, CrsError
from sdi.web.assets import STATIC_DIR

if TYPE_CHECKING:
    import geopandas as gpd

LEAFLET_DIR = STATIC_DIR / "vendor" / "leaflet"
#: Colour ramp for numbers (low → high), viridis' anchors.
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Colours for categories, in order of first appearance (the rest are grey).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")
DEFAULT_COLOUR = "#2563eb"
OTHER_COLOUR = "#9ca3af"
MAX_POPUP_COLUMNS = 15
DEGREE_DIGITS = 6  #: decimals of longitude/latitude in the page (about 10 cm): enough to draw, half the bytes


@dataclass(frozen=True)
class MapView:
    """A map as one HTML document; Jupyter shows it in an ``<iframe srcdoc>``."""

    html: str  #: the whole page: Leaflet, styles, features and script inlined
    height: int = 500  #: height of the iframe in Jupyter, in pixels
    features: int = 0  #: number of features drawn

    def __repr__(self) -> str:
        return f"<MapView: {self.features:,} feature(s), {len(self.html.encode('utf-8')) / 1e3:,.0f} kB of HTML>"

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:{self.height}px;'
                f'border:1px solid #ddd" sandbox="allow-scripts"></iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (UTF-8) and return the path; it opens in any browser, offline."""
        target = Path(path)
        target.write_text(self.html, encoding="utf-8")
        return target


def _leaflet() -> tuple[str, str]:
    try:
        return ((LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8"),
                (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{LEAFLET_DIR}: the vendored Leaflet is missing ({exc.strerror}); "
                          "maps need leaflet.js and leaflet.css there") from exc


def _lonlat(frame: gpd.GeoDataFrame) -> Any:
    """The frame's geometries in longitude/latitude, through :func:`sdi.crs.reprojection` (EPSG:1825 for HK80)."""
    import shapely

    from sdi.crs import WGS84_GEOG, epsg_code, reprojection

    if frame.crs is None:
        raise CrsError("frame: the GeoDataFrame has no CRS; set one (frame.set_crs(...)) before mapping it")
    source = epsg_code(frame.crs)
    if source is None:
        raise CrsError(f"frame: CRS {frame.crs.name!r} has no EPSG code")
    transformer = reprojection(source, WGS84_GEOG).transformer
    geoms = frame.geometry.to_numpy()
    if transformer is None:
        return shapely.transform(geoms, lambda xy: xy.round(DEGREE_DIGITS))
    return shapely.transform(geoms, lambda xy: _xy(transformer.transform(xy[:, 0], xy[:, 1])))


def _xy(pair: tuple[Any, Any]) -> Any:
    import numpy as np

    return np.column_stack(pair).round(DEGREE_DIGITS)


def _ramp(share: float) -> str:
    """The colour at ``share`` (0–1) along :data:`RAMP`."""
    pos = min(max(share, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(pos), len(RAMP) - 2)
    lo, hi = RAMP[i], RAMP[i + 1]
    mix = [round(int(lo[k:k + 2], 16) + (int(hi[k:k + 2], 16) - int(lo[k:k + 2], 16)) * (pos - i))
           for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def colours(values: Any) -> tuple[list[str], str]:
    """A colour per value and a legend (HTML): a ramp for numbers, a palette for categories."""
    import pandas as pd

    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        numbers = series.astype("float64")
        lo, hi = numbers.min(), numbers.max()
        span = (hi - lo) if pd.notna(hi) and hi > lo else 1.0
        cols = [OTHER_COLOUR if pd.isna(v) else _ramp((v - lo) / span) for v in numbers]
        gradient = ", ".join(RAMP)
        legend = (f"<div style='width:160px;height:10px;background:linear-gradient(to right, {gradient})'></div>"
                  f"<div style='display:flex;justify-content:space-between'><span>{_fmt(lo)}</span>"
                  f"<span>{_fmt(hi)}</span></div>") if pd.notna(lo) else ""
        return cols, legend
    order = list(dict.fromkeys(str(v) for v in series if pd.notna(v)))
    lookup = {v: PALETTE[i] for i, v in enumerate(order[: len(PALETTE)])}
    cols = [lookup.get(str(v), OTHER_COLOUR) if pd.notna(v) else OTHER_COLOUR for v in series]
    legend = "".join(f"<div><span style='display:inline-block;width:10px;height:10px;background:{c}'></span> "
                     f"{html.escape(v)}</div>" for v, c in lookup.items())
    if len(order) > len(PALETTE):
        legend += f"<div style='color:#666'>… {len(order) - len(PALETTE)} more (grey)</div>"
    return cols, legend


def _fmt(value: Any) -> str:
    """A value as short popup text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        import pandas as pd

        if pd.isna(value):
            return "–"
    except (TypeError, ValueError):
        pass
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    text = str(value)
    return text if len(text) <= 200 else text[:199] + "…"


def _popup(row: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th style='text-align:left;padding-right:6px'>{html.escape(str(k))}</th>"
                    f"<td>{html.escape(_fmt(v))}</td></tr>" for k, v in row.items())
    return f"<table style='font-size:12px'>{cells}</table>"


def explore(frame: gpd.GeoDataFrame, column: str | None = None, *, popup: list[str] | None = None,
            tooltip: str | None = None, title: str | None = None, height: int = 500, tiles: str | None = None,
            attribution: str = "", context: gpd.GeoDataFrame | None = None) -> MapView:
    """Draw a GeoDataFrame on an offline Leaflet map.

    Parameters
    ----------
    frame
        Features in any EPSG CRS (it must be set: a CRS is never guessed); drawn in EPSG:4326.
    column
        Colour features by this column: a ramp for numbers (low purple → high yellow), a palette for text.
    popup
        Columns shown in each feature's popup (default: the first 15 attribute columns).
    tooltip
        Column shown when the pointer hovers a feature.
    title
        Text in the map's corner box (with the legend).
    height
        Height of the map in Jupyter, in pixels.
    tiles
        Optional ``{z}/{x}/{y}`` tile URL template for a base map; the default (``None``) fetches nothing.
    attribution
        Attribution of ``tiles``.
    context
        Features drawn underneath as grey outlines, without popups (e.g. district boundaries), to orient the
        reader on a map without a base map.

    Returns
    -------
    MapView
        Shown in Jupyter; ``.save(path)`` writes the HTML page.

    Raises
    ------
    CrsError
        When the frame has no CRS or one without an EPSG code.
    ConfigError
        When ``column``, ``popup`` or ``tooltip`` name a column the frame lacks.
    """
    import shapely

    attrs = [c for c in frame.columns if c != frame.geometry.name]
    for name in [column, tooltip, *(popup or [])]:
        if name is not None and name not in attrs:
            raise ConfigError(f"explore: no column {name!r}; columns: {', '.join(map(str, attrs))}")
    shown = list(popup) if popup is not None else attrs[:MAX_POPUP_COLUMNS]
    geoms = _lonlat(frame)
    keep = [i for i, g in enumerate(geoms) if g is not None and not shapely.is_empty(g)]
    cols, legend = colours(frame[column].iloc[keep]) if column else ([DEFAULT_COLOUR] * len(keep), "")
    records = frame.iloc[keep][shown].to_dict("records")
    labels = frame[tooltip].iloc[keep].tolist() if tooltip else [None] * len(keep)
    texts = shapely.to_geojson(geoms[keep]) if keep else []
    features = ",".join(
        f'{{"type":"Feature","geometry":{g},"properties":'
        f'{json.dumps({"p": _popup(r), "c": c, "t": None if t is None else _fmt(t)}, ensure_ascii=False)}}}'
        for g, r, c, t in zip(texts, records, cols, labels, strict=True))
    data = f'{{"type":"FeatureCollection","features":[{features}]}}'
    outlines = ",".join(f'{{"type":"Feature","geometry":{g},"properties":{{}}}}'
                        for g in (shapely.to_geojson([g for g in _lonlat(context) if g is not None and not g.is_empty])
                                  if context is not None and len(context) else []))
    box = ""
    if title or legend:
        heading = f"<b>{html.escape(title)}</b>" if title else ""
        colour_by = f"<div>{html.escape(column)}</div>" if column else ""
        box = (f"<div id='legend' style='position:absolute;top:8px;right:8px;z-index:1000;background:#fffe;"
               f"padding:6px 8px;font:12px sans-serif;border-radius:4px;max-width:260px'>"
               f"{heading}{colour_by}{legend}</div>")
    leaflet_js, leaflet_css = _leaflet()
    options = {"tiles": tiles, "attribution": attribution}
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title or "HK SDI map")}</title>
<style>{leaflet_css}</style>
<style>html,body{{height:100%;margin:0}}#map{{height:100%;background:#f4f6f8}}</style>
</head><body><div id="map"></div>{box}
<script>{leaflet_js}</script>
<script>
var data = {_script_safe(data)};
var options = {_script_safe(json.dumps(options))};
var context = {{"type":"FeatureCollection","features":[{outlines}]}};
var map = L.map("map", {{preferCanvas: true}});
map.attributionControl.setPrefix(false);
if (options.tiles) {{ L.tileLayer(options.tiles, {{attribution: options.attribution}}).addTo(map); }}
L.geoJSON(context, {{style: {{color: "#6b7280", weight: 1, fill: false}}, interactive: false}}).addTo(map);
var layer = L.geoJSON(data, {{
  style: function (f) {{ return {{color: f.properties.c, weight: 1.5, fillOpacity: 0.45}}; }},
  pointToLayer: function (f, ll) {{ return L.circleMarker(ll, {{radius: 5, fillOpacity: 0.8}}); }},
  onEachFeature: function (f, l) {{
    l.bindPopup(f.properties.p, {{maxWidth: 420}});
    if (f.properties.t !== null) {{ l.bindTooltip(f.properties.t); }}
  }}
}}).addTo(map);
var bounds = layer.getBounds();
if (bounds.isValid()) {{ map.fitBounds(bounds, {{padding: [12, 12], maxZoom: 17}}); }}
else {{ map.setView([22.35, 114.15], 10); }}
L.control.scale({{imperial: false}}).addTo(map);
</script></body></html>
"""
    return MapView(page, height, len(keep))


def _script_safe(text: str) -> str:
    """JSON text that cannot close the ``<script>`` element it is embedded in."""
    return text.replace("</", "<\\/")
