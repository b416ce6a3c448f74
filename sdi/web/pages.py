"""HTML pages from pygeoapi's Jinja templates (sdi's copies first), rendered by sdi with the live configuration.

sdi renders every page itself, pygeoapi's included (the bridge asks pygeoapi for JSON and renders that), with
pygeoapi's template filters: pygeoapi's own renderer caches the first configuration it translates per
language for the life of the process, which would freeze the base URL and the collection list of the first
request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from sdi.web.assets import TEMPLATES_DIR
from sdi.web.runtime import Runtime

LOCALES = {"en": "en-US", "zh": "zh-HK"}


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

    def environment(self, lang: str, locale_dir: str) -> Environment:
        """The environment for ``lang`` with pygeoapi's filters and its message catalogue (if any)."""
        with self._lock:
            env = self._envs.get(lang)
            if env is None:
                from babel.support import Translations
                from pygeoapi import util
                from pygeoapi.util import TEMPLATES

                env = Environment(loader=FileSystemLoader([str(TEMPLATES_DIR), str(TEMPLATES)]),
                                  extensions=["jinja2.ext.i18n"], autoescape=select_autoescape())
                for name in ("format_datetime", "format_duration", "human_size", "get_path_basename",
                             "get_breadcrumbs", "filter_dict_by_key_value"):
                    env.filters[name] = getattr(util, name)
                    env.globals[name] = getattr(util, name)
                env.filters["to_json"] = env.globals["to_json"] = script_json
                catalogue = Translations.load(locale_dir, [LOCALES[lang].replace("-", "_")])
                env.install_gettext_translations(catalogue)  # type: ignore[attr-defined]  # added by jinja2.ext.i18n
                self._envs[lang] = env
            return env

    def render(self, config: dict[str, Any], template: str, data: dict[str, Any], lang: str) -> str:
        """``template`` with ``config`` (translated to ``lang``) and ``data``."""
        from pygeoapi import __version__, l10n

        locale = l10n.str2locale(LOCALES[lang])
        env = self.environment(lang, str(config["server"].get("locale_dir", "locale")))
        translated = l10n.translate_struct(config, locale, False)
        return env.get_template(template).render(config=translated, data=data, locale=locale, version=__version__)


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
