"""The base map of the HTML pages: one setting, ``server.map`` of the base configuration.

``server.map`` is either the name of a preset (``none``, ``landsd``) or a block::

    map:
      url: https://tiles.example.hk/{z}/{x}/{y}.png     # Web Mercator XYZ (WebMercatorQuad), {s} allowed
      attribution: '&copy; Example'
      labels: https://tiles.example.hk/labels/{z}/{x}/{y}.png   # optional overlay, or {en: ..., zh: ...}
      hk80: {url: ..., attribution: ..., labels: ...}          # optional, same in the HK80Grid (EPSG:2326) grid

:func:`resolve_base_map` turns either into the blocks the templates read, ``server.map`` (Web Mercator: the
collection, items and item maps and the WebMercatorQuad tiles preview) and ``server.map_hk80`` (the HK80Grid
tiles preview), each ``{url, attribution, labels}`` with ``''`` for none. Without a base map (the default) the
pages draw features on a plain background and work offline. A language-keyed ``labels`` (``{en, zh}``) is picked per
page language by pygeoapi's ``translate_struct``.
"""

from __future__ import annotations

from typing import Any

from sdi.errors import ConfigError

__all__ = ["PRESETS", "resolve_base_map"]

_LANDSD = "https://mapapi.geodata.gov.hk/gs/api/v1.0.0/xyz"
#: pygeoapi's configuration schema wants one text, so the attribution is in both languages.
_LANDSD_ATTRIBUTION = "&copy; The Government of the Hong Kong SAR (Lands Department) 香港特別行政區政府（地政總署）"


def _landsd(grid: str) -> dict[str, Any]:
    return {"url": f"{_LANDSD}/basemap/{grid}/{{z}}/{{x}}/{{y}}.png", "attribution": _LANDSD_ATTRIBUTION,
            "labels": {"en": f"{_LANDSD}/label/hk/en/{grid}/{{z}}/{{x}}/{{y}}.png",
                       "zh": f"{_LANDSD}/label/hk/tc/{grid}/{{z}}/{{x}}/{{y}}.png"}}


#: Named base maps: ``landsd`` is the Lands Department's public XYZ base map with its label layer (English or
#: Traditional Chinese, after the page), in both grids; the browsers need to reach mapapi.geodata.gov.hk.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {"url": "", "attribution": "", "labels": "", "hk80": {"url": "", "attribution": "", "labels": ""}},
    "landsd": {**_landsd("WGS84"), "hk80": _landsd("HK80")},
}
_KEYS = ("url", "attribution", "labels")


def _block(value: Any, where: str) -> dict[str, Any]:
    if value is None or value == "":
        return {k: "" for k in _KEYS}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping with url and attribution, or one of {sorted(PRESETS)}")
    unknown = sorted(set(value) - {*_KEYS, "hk80"})
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; expected url, attribution, labels, hk80")
    for key in _KEYS:
        item = value.get(key)
        if item is not None and not isinstance(item, str) and not (key == "labels" and isinstance(item, dict)):
            raise ConfigError(f"{where}.{key} must be text" + (" (or text per language: {en: ..., zh: ...})"
                                                                 if key == "labels" else ""))
    return {k: value.get(k) or "" for k in _KEYS}


def resolve_base_map(server: dict[str, Any], source: str) -> dict[str, Any]:
    """``server`` with ``map`` and ``map_hk80`` as the templates read them, from the one setting ``server.map``.

    Parameters
    ----------
    server
        The ``server`` section of a base configuration.
    source
        Where it was read from, for messages.

    Returns
    -------
    dict
        A copy of ``server``; ``map_hk80`` comes from ``map.hk80`` (or the preset), else from an explicit
        ``map_hk80`` block (older configurations), else none.

    Raises
    ------
    ConfigError
        ``server.map`` names no preset or is not a block of ``url``, ``attribution``, ``labels``, ``hk80``.
    """
    setting = server.get("map")
    if isinstance(setting, str) and setting.strip():
        name = setting.strip().lower()
        if name not in PRESETS:
            raise ConfigError(f"{source}: server.map {setting!r} is no base map preset; use one of "
                              f"{sorted(PRESETS)} or a block with url and attribution")
        setting = PRESETS[name]
    where = f"{source}: server.map"
    web = _block(setting, where)
    hk80_setting = setting.get("hk80") if isinstance(setting, dict) else None
    hk80 = _block(hk80_setting if hk80_setting is not None else server.get("map_hk80"), f"{where}.hk80")
    return {**server, "map": web, "map_hk80": hk80}
