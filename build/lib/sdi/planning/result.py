"""The result of a site selection: a GeoDataFrame of ranked sites that knows how to show itself."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import geopandas as gpd

if TYPE_CHECKING:
    from sdi.maps import MapView

#: Rows of the ranked table shown in Jupyter.
DISPLAY_ROWS = 10


class SiteSelectionResult(gpd.GeoDataFrame):
    """Ranked candidate sites (EPSG:2326): ``rank``, ``site``, ``score``, ``why_*`` and ``score_*`` columns.

    A plain :class:`geopandas.GeoDataFrame` in every respect; pandas operations that keep the
    frame's shape return this class again, so the Jupyter display survives ``head()`` and slicing.

    ``attrs`` describe the run: ``criteria`` (id), optionally ``criteria_title`` (``{"en": ..., "zh": ...}``, a
    model with ``en``/``zh`` or text), ``layers`` (the layer ids used) and ``synthetic_layers`` (those of them
    that are synthetic). The Jupyter table and map show the title and a "synthetic data" badge from them.
    """

    @property
    def _constructor(self) -> Any:  # keep the subclass through pandas operations
        return _constructor_with_fallback

    def synthetic_inputs(self) -> list[str]:
        """Input layers that hold synthetic data: ``attrs["synthetic_layers"]``, else ``synthetic_*`` ids in
        ``attrs["layers"]`` (the naming rule of the generated sample layers)."""
        if "synthetic_layers" in self.attrs:
            return [str(v) for v in self.attrs["synthetic_layers"] or []]
        return [str(v) for v in self.attrs.get("layers") or [] if str(v).startswith("synthetic_")]

    def _title(self) -> tuple[str, str | None]:
        title = self.attrs.get("criteria_title")
        if hasattr(title, "en"):  # a LocalText model rather than its dict
            title = {"en": title.en, "zh": getattr(title, "zh", None)}
        if isinstance(title, dict):
            return str(title.get("en") or self.attrs.get("criteria") or "Site selection"), title.get("zh")
        return str(title or self.attrs.get("criteria") or "Site selection"), None

    def _repr_html_(self) -> str:
        e = html.escape
        en, zh = self._title()
        synthetic = self.synthetic_inputs()
        badge = (f" <span title='{e(', '.join(synthetic))}' style='background:#fef3c7;color:#92400e;"
                 f"padding:1px 6px;border-radius:8px;font-size:85%'>synthetic data 合成數據</span>"
                 if synthetic else "")
        wanted = ["rank", "site", "score", "district"]
        columns = [c for c in wanted if c in self.columns] + [c for c in self.columns if str(c).startswith("why_")]
        top = self.head(DISPLAY_ROWS)
        head = "".join(f"<th style='text-align:left'>{e(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{e(_cell(row[c]))}</td>" for c in columns)
                       + "</tr>" for _, row in top.iterrows())
        more = f"<div style='color:#555'>top {len(top)} of {len(self):,} shown</div>" if len(self) > len(top) else ""
        return (f"<div><b>{e(en)}</b>{' / ' + e(zh) if zh else ''}{badge}"
                f"<div>{len(self):,} site(s) pass every constraint / 個合資格地點</div>"
                f"<table><tr>{head}</tr>{body}</table>{more}</div>")

    def explore(self, column: str = "score", **kwargs: Any) -> MapView:
        """An offline Leaflet map of the sites coloured by ``column`` (see :func:`sdi.maps.explore`)."""
        from sdi.maps import explore

        en, _ = self._title()
        title = en + (" (synthetic data)" if self.synthetic_inputs() else "")
        kwargs.setdefault("title", title)
        kwargs.setdefault("tooltip", "site" if "site" in self.columns else None)
        return explore(gpd.GeoDataFrame(self), column=column if column in self.columns else None, **kwargs)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.2f}"
    return "" if value is None else str(value)


def _constructor_with_fallback(*args: Any, **kwargs: Any) -> Any:
    frame = SiteSelectionResult(*args, **kwargs)
    return frame if "geometry" in frame.columns or frame._geometry_column_name in frame.columns else \
        gpd.GeoDataFrame(frame)
