"""What names a feature on the HTML pages and in link titles: the layer's title field, declared or detected.

A layer YAML may declare ``title_field`` (one field, or ``{en: name_en, zh: name_zh}``; see
:class:`sdi.layerdef.LayerDefinition`). It is read from the stored definition (``sdi.layer.definition``) once per
load and worker. A declared field the layer does not have is ignored (with one warning in the log) and the field
is detected instead: on Chinese pages the first of :data:`ZH_NAMES` the layer has, then (on every page) the first
of :data:`EN_NAMES`, then :data:`OTHER_NAMES`, names compared without case or underscores. A feature whose title
field is empty is named by its id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sdi.query.layer import LayerMeta
from sdi.web.runtime import Runtime

LOGGER = logging.getLogger("sdi.web")

#: Columns that name a feature in Chinese, best first (compared without underscores: ``namezh`` is ``name_zh``).
ZH_NAMES = ("name_zh", "name_tc", "name_chi", "name_chinese", "chinese_name", "chi_name", "cname", "tcname",
            "name_c", "chname", "facility_name_zh", "title_zh")
#: Columns that name a feature in English (or in no particular language), best first.
EN_NAMES = ("name_en", "name_eng", "name_english", "english_name", "eng_name", "ename", "name_e", "enname",
            "name", "facility_name", "title_en", "title", "site_name", "station_name", "zone_name")
#: Columns that label a feature when it has no name, best first.
OTHER_NAMES = ("site", "station", "label", "lot_no", "lot_number", "lot_number_en", "address", "address_en",
               "location", "location_en", "district")
_CACHE = "title_fields"  #: runtime.state key: {(layer id, load id): declared fields}
_CACHE_SIZE = 256


def detect_title_field(columns: Mapping[str, str] | list[str], lang: str) -> str | None:
    """The column that best names features on a page in ``lang`` (``"zh"`` or ``"en"``), by its name; ``None``
    when no column looks like a name.

    Parameters
    ----------
    columns
        The layer's property columns (names, lower case as loaded).
    lang
        The page's language: Chinese pages prefer a Chinese name, and fall back to an English one.
    """
    names: dict[str, str] = {}
    for column in columns:
        names.setdefault(str(column).lower().replace("_", ""), str(column))
    preferred = (ZH_NAMES if lang.startswith("zh") else ()) + EN_NAMES + OTHER_NAMES
    return next((names[key] for n in preferred if (key := n.replace("_", "")) in names), None)


def choose_title_field(layer: LayerMeta, lang: str, declared: Mapping[str, str]) -> str | None:
    """The title field of ``layer`` for ``lang``: the declared one (``{"en": ..., "zh": ...}``) when the layer has
    it, else the detected one (:func:`detect_title_field`)."""
    wanted = declared.get("zh" if lang.startswith("zh") else "en")
    if wanted and wanted in layer.columns:
        return wanted
    return detect_title_field(list(layer.columns), lang)


def declared_fields(definition: Any) -> dict[str, str]:
    """The ``title_field`` of a stored layer definition (JSON) as ``{"en": ..., "zh": ...}`` (empty: none)."""
    value = definition.get("title_field") if isinstance(definition, Mapping) else None
    if isinstance(value, str) and value:
        return {"en": value, "zh": value}
    if isinstance(value, Mapping) and isinstance(value.get("en"), str):
        zh = value.get("zh")
        return {"en": value["en"], "zh": zh if isinstance(zh, str) and zh else value["en"]}
    return {}


async def title_field(runtime: Runtime, layer: LayerMeta, lang: str) -> str | None:
    """The title field of ``layer`` on a page in ``lang``, its declaration read from the database once per load."""
    cache: dict[tuple[str, int], dict[str, str]] = runtime.state.setdefault(_CACHE, {})
    key = (layer.id, layer.load_id)
    if key not in cache:
        rows = await runtime.fetch_dicts("select definition from sdi.layer where id = %(id)s and load_id = %(load)s",
                                         {"id": layer.id, "load": layer.load_id})
        declared = declared_fields(rows[0]["definition"]) if rows else {}
        for name in sorted(set(declared.values()) - set(layer.columns)):
            LOGGER.warning("layer %s: title_field %r is not one of its fields; detecting one instead", layer.id, name)
        cache[key] = declared
        while len(cache) > _CACHE_SIZE:
            cache.pop(next(iter(cache)))
    return choose_title_field(layer, lang, cache[key])


def feature_title(value: Any, fid: Any) -> str:
    """What names a feature: the value of its title field, or its id when that is empty (or there is none)."""
    if value is None or str(value).strip() == "":
        return str(fid)
    return str(value)
