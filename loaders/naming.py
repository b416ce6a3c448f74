"""Column names: each source column's PostgreSQL name, English labels in snake_case, Chinese ones from their twin.

See :func:`column_names`; the Chinese naming rules (twins, glossary, composed names) are in
:mod:`loaders.glossary`.
"""

from __future__ import annotations

import re
import unicodedata

from loaders.glossary import composed_name, glossary_name, twin_columns, twin_name
from sdi.layerdef import FieldSpec
from sdi.text import has_cjk

RESERVED = frozenset({"geom"})  #: names a source column may not keep (the loaded table's own columns)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_ascii(name: str) -> str:
    """Return ``name`` as lower snake_case ASCII (``''`` when nothing ASCII is left).

    >>> snake_ascii("DCCA_ENG"), snake_ascii("lotNumberEN"), snake_ascii("Road_Length (m)")
    ('dcca_eng', 'lot_number_en', 'road_length_m')
    """
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    text = _CAMEL.sub("_", text.strip())
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    return re.sub(r"_+", "_", text)[:63]


def column_names(originals: list[str], specs: dict[str, FieldSpec], reserved: set[str]) -> dict[str, str]:
    """Map each source column to a unique, valid PostgreSQL column name.

    Declared ``fields.<original>.name`` wins. An English label becomes :func:`snake_ascii`; the Chinese
    twin beside it (:func:`loaders.glossary.twin_columns`) becomes ``<english>_zh`` (``中文類別`` after
    ``ENGLISH CATEGORY`` → ``category_zh``); another Chinese label gets its name from
    :data:`loaders.glossary.GLOSSARY` (``地址`` → ``address_zh``) or is composed word by word
    (:func:`loaders.glossary.composed_name`); a label mixing both languages that is no twin is named
    from its English part. Only a label with neither letters nor CJK becomes ``field_<position>``.
    Reserved names get a ``_src`` suffix.
    """
    result: dict[str, str] = {}
    chosen: list[str] = []
    used: set[str] = set()
    twins = twin_columns(originals)
    for position, original in enumerate(originals, start=1):
        spec = specs.get(original)
        name = spec.name if spec and spec.name else _derived_name(original, position, twins, chosen)
        if name[0].isdigit():
            name = f"f_{name}"[:63]
        chosen.append(name)
        if name in reserved or name in RESERVED:
            name = f"{name}_src"
        base, n = name, 2
        while name in used:
            name = f"{base[:59]}_{n}"
            n += 1
        used.add(name)
        result[original] = name
    return result


def _derived_name(original: str, position: int, twins: dict[int, int], chosen: list[str]) -> str:
    """The name of a column with no declared name (``chosen``: the names of the columns before it)."""
    twin = twins.get(position - 1)
    if twin is not None:
        return twin_name(chosen[twin])
    if has_cjk(original):  # a bilingual label ("Name 名稱") is named from its English part
        english = snake_ascii(original) if re.search("[A-Za-z]", original) else ""
        return glossary_name(original) or english or composed_name(original) or f"field_{position}"
    return snake_ascii(original) or f"field_{position}"
