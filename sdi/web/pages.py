"""HTML pages from pygeoapi's Jinja templates (sdi's copies first), rendered by sdi with the live configuration.

sdi renders every page itself, pygeoapi's included (the bridge asks pygeoapi for JSON and renders that), with
pygeoapi's template filters: pygeoapi's own renderer caches the first configuration it translates per
language for the life of the process, which would freeze the base URL and the collection list of the first
request.

The interface words (``{% trans %}``) are English in the templates; the Traditional Chinese (Hong Kong) ones are
in ``sdi/web/locale/zh_HK/LC_MESSAGES/*.po``, every file of that folder merged (:func:`message_catalogue`) and
read at run time with babel, so no compiled ``.mo`` file is kept. pygeoapi ships no catalogue for zh-HK.
"""

from __future__ import annotations

import gettext
import io
import json
import threading
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from sdi.web.assets import TEMPLATES_DIR
from sdi.web.runtime import Runtime

LOCALES = {"en": "en-US", "zh": "zh-HK"}
PAGE_LANG = {"en": "en", "zh": "zh-HK"}  #: the pages' ``<html lang>`` (BCP 47) per language
#: What the pages' own links add to stay in their language (``lang_q`` in the templates; English is the default).
LANG_QUERY = {"en": "", "zh": "lang=zh-HK"}
#: Message catalogues per language (``zh_HK``): every ``*.po`` of ``<LOCALE_DIR>/<folder>/LC_MESSAGES``, read
#: through importlib.resources (so also from a zipped install).
LOCALE_DIR: Traversable = resources.files("sdi.web") / "locale"
CATALOGUE_FOLDERS = {"zh": "zh_HK"}


def message_catalogue(lang: str, locale_dir: Traversable = LOCALE_DIR) -> gettext.NullTranslations:
    """The interface words of ``lang``: every ``.po`` file of its folder, merged in name order (a message in
    a later file wins); English (the templates' own words) has none.

    Parameters
    ----------
    lang
        ``en`` or ``zh``.
    locale_dir
        The folder holding ``zh_HK/LC_MESSAGES/*.po``.

    Returns
    -------
    gettext.NullTranslations
        A babel ``Translations`` object (``gettext``, ``ngettext``...) for Jinja's i18n extension.
    """
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import NullTranslations, Translations

    folder = CATALOGUE_FOLDERS.get(lang)
    messages = locale_dir / folder / "LC_MESSAGES" if folder else None
    files = sorted((f for f in messages.iterdir() if f.name.endswith(".po")), key=lambda f: f.name) \
        if messages is not None and messages.is_dir() else []
    merged: Translations | None = None
    for path in files:
        with path.open("rb") as fh:
            catalog = read_po(fh, locale="zh_Hant_HK")
        buffer = io.BytesIO()
        write_mo(buffer, catalog)  # fuzzy entries are left out, as msgfmt does
        buffer.seek(0)
        translations = Translations(fp=buffer)
        merged = translations if merged is None else merged.merge(translations)
    return merged if merged is not None else NullTranslations()


_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any, pretty: bool = False) -> str:
    """JSON that is safe inside ``<script>`` and HTML attributes: ``<``, ``>``, ``&`` and the two JavaScript line
    separators are written as ``\\uXXXX`` escapes, so no value (a feature property, a layer title) can close the
    script element or start a comment. It is still the same JSON value. Templates use it as ``to_json``."""
    text = json.dumps(value, ensure_ascii=False, default=str, indent=2 if pretty else None)
    return "".join(_SCRIPT_UNSAFE.get(ch, ch) for ch in text) if any(ch in text for ch in _SCRIPT_UNSAFE) else text


class Pages:
    """One Jinja environment per language, built on first use (templates: sdi's, then pygeoapi's)."""

    def __init__(self) -> None:
        self._envs: dict[str, Environment] = {}
        self._lock = threading.Lock()

    def environment(self, lang: str) -> Environment:
        """The environment for ``lang`` with pygeoapi's filters and sdi's message catalogue
        (:func:`message_catalogue`)."""
        with self._lock:
            env = self._envs.get(lang)
            if env is None:
                from pygeoapi import util
                from pygeoapi.util import TEMPLATES

                env = Environment(loader=FileSystemLoader([str(TEMPLATES_DIR), str(TEMPLATES)]),
                                  extensions=["jinja2.ext.i18n"], autoescape=select_autoescape())
                for name in ("format_datetime", "format_duration", "human_size", "get_path_basename",
                             "get_breadcrumbs", "filter_dict_by_key_value"):
                    env.filters[name] = getattr(util, name)
                    env.globals[name] = getattr(util, name)
                env.filters["to_json"] = env.globals["to_json"] = script_json
                env.install_gettext_translations(message_catalogue(lang))  # type: ignore[attr-defined]  # added by jinja2.ext.i18n
                self._envs[lang] = env
            return env

    def render(self, config: dict[str, Any], template: str, data: dict[str, Any], lang: str) -> str:
        """``template`` with ``config`` (translated to ``lang``) and ``data``."""
        from pygeoapi import __version__, l10n

        locale = l10n.str2locale(LOCALES[lang])
        env = self.environment(lang)
        translated = l10n.translate_struct(config, locale, False)
        return env.get_template(template).render(config=translated, data=data, locale=locale, version=__version__,
                                                 page_lang=PAGE_LANG[lang], lang_q=LANG_QUERY[lang])


async def render(runtime: Runtime, base_url: str, lang: str, template: str, data: dict[str, Any],
                 headers: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    """``template`` rendered with ``data`` for a client at ``base_url`` reading ``lang`` (``en`` or ``zh``)."""
    api = runtime.state["bridge"].api(base_url, lang)
    pages: Pages = runtime.state["pages"]
    text = await run_in_threadpool(pages.render, api.config, template, data, lang)
    return HTMLResponse(text, status_code=status, headers={"Content-Language": LOCALES[lang], **(headers or {})})


@dataclass(frozen=True)
class PageContext:
    """What a page of a pygeoapi document may need besides the document."""

    name: str  #: the pygeoapi API function (its JSON document decides the template)
    base_url: str
    collection: str | None = None
    title: str | None = None
    offset: int = 0


def pygeoapi_page(function: str, doc: Any, ctx: PageContext) -> tuple[str, dict[str, Any]]:
    """The template and data pygeoapi itself would render for the JSON ``doc`` of one of its API functions."""
    collections = f"{ctx.base_url}/collections"
    if function == "landing_page":
        return "landing_page.html", {**doc, "collection": True, "process": True, "stac-collection": False,
                                     "tile": True}
    if function == "describe_collections":
        return "collections/collection.html", {**doc, "collections_path": collections}
    if function == "get_collection_items":
        items = f"{collections}/{ctx.collection}/items"
        return "collections/items/index.html", {**doc, "items_path": items, "dataset_path": items.rsplit("/", 1)[0],
                                                "collections_path": collections, "offset": ctx.offset,
                                                "id_field": "title", "title_field": "title"}
    if function == "get_collection_item":
        return "collections/items/item.html", {**doc, "title": ctx.title or doc.get("id"), "id_field": "id",
                                               "title_field": "title", "collections_path": collections}
    if function in ("get_collection_queryables", "get_collection_schema"):
        template = "collections/queryables.html" if function == "get_collection_queryables" else \
            "collections/schema.html"
        return template, {**doc, "title": ctx.title, "collections_path": collections,
                          "dataset_path": f"{collections}/{ctx.collection}"}
    if function == "describe_processes":
        return ("processes/process.html" if "processes" not in doc else "processes/index.html"), doc
    if function == "get_jobs":
        import datetime as dt

        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        template = "jobs/job.html" if "jobs" not in doc else "jobs/index.html"
        return template, {"jobs": doc, "offset": ctx.offset, "now": now}
    if function == "get_job_result":
        return "jobs/results/index.html", {"job": {"id": ctx.collection}, "result": doc}
    raise KeyError(function)
