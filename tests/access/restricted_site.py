"""A live ``sdi serve`` with restricted layers, API keys and a local OpenID Connect IdP (test helper, not tests).

:func:`restricted_site` loads the site-selection layers (public) and three restricted layers into a fresh
database and serves it:

* ``zanzibar_stations`` (group ``planning``): the weather stations, renamed and given a ``codename`` property
  (``OBSIDIANHERON-<n>``) that no public layer holds;
* ``zanzibar_tidal_grid`` (group ``planning``): the synthetic mudflat raster, a coverage;
* ``lands_boundary_marks`` (group ``lands``): the weather stations as published (no ``codename``), so that
  group ``lands`` exists.

Every distinctive word of the restricted layers (ids, English and Chinese title and abstract words, keywords, the
feature property) is in :data:`SECRETS`: an identity that may not read them must never see any of them. Each
restricted id has a made-up id of the same length (:data:`MADE_UP`), which exists nowhere: asking for a hidden
layer must be answered exactly as asking for that one (:func:`normalised`).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
import yaml

from sdi.access import keys
from sdi.publishing.process import PROCESS_ID
from sdi.settings import Settings
from tests.access.idp import LocalIdP
from tests.conftest import LAYERS, SAMPLE
from tests.live_server import sdi_server
from tests.planning.sites_db import criteria_layers

SECRET_LAYER = "zanzibar_stations"
SECRET_RASTER = "zanzibar_tidal_grid"
LANDS_LAYER = "lands_boundary_marks"
PLANNING_IDS = (SECRET_LAYER, SECRET_RASTER)
RESTRICTED_IDS = (*PLANNING_IDS, LANDS_LAYER)
#: A made-up id of the same length for each restricted id: a layer that does not exist.
MADE_UP = {SECRET_LAYER: "nonexistent_layer", SECRET_RASTER: "nonexistent_rasters",
           LANDS_LAYER: "nonexistent_landmark"}
CODENAME = "OBSIDIANHERON"  #: the prefix of the secret layer's ``codename`` values
#: English and Chinese words of the planning layers' titles (a catalogue search for each finds them).
TITLE_WORDS = {SECRET_LAYER: ("Zanzibar", "sensor", "桑給巴爾", "感測站"),
               SECRET_RASTER: ("Zanzibar", "tidal", "桑給巴爾", "潮汐")}
#: What an identity outside group ``planning`` must never be shown (lower-cased; the ids start with ``zanzibar``).
PLANNING_SECRETS = ("zanzibar", "桑給巴爾", "感測站", "潮汐網格", "quokka", "袋鼠", CODENAME.lower())
#: What an identity outside group ``lands`` must never be shown.
LANDS_SECRETS = ("lands_boundary", "wallaby", "邊界石")
SECRETS = PLANNING_SECRETS + LANDS_SECRETS
KEY_CACHE_S = 0.5  #: the server's SDI_KEY_CACHE_S
AUDIT_FLUSH_S = 0.2  #: the server's SDI_AUDIT_FLUSH_S
REFRESH_S = 0.5  #: the server's SDI_REFRESH_S
WAIT_S = 20.0


@dataclass(frozen=True)
class Site:
    """The served database, its URL and the callers' credentials."""

    url: str
    settings: Settings
    idp: LocalIdP
    planning_key: str
    lands_key: str
    folder: Path

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection as the database owner."""
        return psycopg.connect(self.settings.database_url, autocommit=True)

    def new_key(self, name: str, groups: tuple[str, ...], rate_limit: int | None = None) -> tuple[str, str]:
        """A new API key: its id and its full text."""
        with self.connect() as conn:
            made, text = keys.create(conn, name, groups, rate_limit=rate_limit)
        return made.id, text

    def revoke(self, key_id: str) -> None:
        """Revoke a key, then wait until every worker has stopped trusting its last check."""
        with self.connect() as conn:
            keys.revoke(conn, key_id)
        time.sleep(KEY_CACHE_S * 2 + 0.2)


def bearer(credential: str | None) -> dict[str, str]:
    """The ``Authorization`` header of a key or token (none for ``None``: anonymous)."""
    return {} if credential is None else {"Authorization": f"Bearer {credential}"}


def key_id(text: str) -> str:
    """The public id of a full API key."""
    parsed = keys.parse(text)
    assert parsed is not None
    return parsed[0]


def _secret_source(folder: Path) -> Path:
    """The weather stations with a ``codename`` property of their own."""
    doc = json.loads((SAMPLE / "geodatastore" / "weather_stations.geojson").read_text(encoding="utf-8"))
    for n, feature in enumerate(doc["features"], 1):
        feature["properties"] = {"codename": f"{CODENAME}-{n}", **feature["properties"]}
    path = folder / "stations.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def _definition(folder: Path, template: str, layer_id: str, title: tuple[str, str], abstract: tuple[str, str],
                keywords: list[str], group: str, source: Path | None = None) -> Path:
    doc = yaml.safe_load((LAYERS / f"{template}.yml").read_text(encoding="utf-8"))
    path = (LAYERS / doc["source"]["path"]).resolve() if source is None else source
    doc.update(id=layer_id, title={"en": title[0], "zh": title[1]}, abstract={"en": abstract[0], "zh": abstract[1]},
               keywords=keywords, access={"groups": [group]}, source={**doc["source"], "path": str(path)})
    out = folder / f"{layer_id}.yml"
    out.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return out


def definitions(folder: Path) -> list[Path]:
    """The YAML files of the three restricted layers."""
    source = _secret_source(folder)
    return [
        _definition(folder, "weather_stations", SECRET_LAYER, ("Zanzibar sensor sites", "桑給巴爾感測站"),
                    ("Quokka telemetry positions.", "袋鼠遙測位置。"), ["quokka", "袋鼠"], "planning", source),
        _definition(folder, "synthetic_mudflat_elevation", SECRET_RASTER, ("Zanzibar tidal grid", "桑給巴爾潮汐網格"),
                    ("Quokka tidal survey.", "袋鼠潮汐測量。"), ["quokka"], "planning"),
        _definition(folder, "weather_stations", LANDS_LAYER, ("Wallaby boundary marks", "邊界石標記"),
                    ("Wallaby marks.", "邊界石。"), ["wallaby"], "lands"),
    ]


@contextmanager
def restricted_site(store: Path, folder: Path, **extra_env: str) -> Iterator[Site]:
    """The database (layers in ``store``), served from ``folder`` with two workers; ``extra_env`` is added to the
    server's environment."""
    from tests.conftest import loaded_database

    idp = LocalIdP(folder)
    env = {"SDI_KEY_CACHE_S": str(KEY_CACHE_S), "SDI_AUDIT_FLUSH_S": str(AUDIT_FLUSH_S),
           "SDI_REFRESH_S": str(REFRESH_S), "SDI_OIDC_ISSUER": idp.issuer, "SDI_OIDC_AUDIENCE": idp.audience,
           "SDI_OIDC_JWKS_FILE": str(idp.jwks_path), **extra_env}
    with loaded_database(criteria_layers(), definitions=definitions(folder), data_dir=store) as settings:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            _, planning = keys.create(conn, "planning analyst", ["planning"])
            _, lands = keys.create(conn, "lands officer", ["lands"])
        with sdi_server(settings, folder, workers=2, extra_env=env) as base:
            yield Site(base, settings, idp, planning, lands, folder)


# --- comparing answers ------------------------------------------------------------------------------------------

_STAMP = re.compile(r'"(timeStamp|created|updated)":\s*"[^"]*"')


def text_of(response: requests.Response) -> str:
    """The body as text, lower-cased: binary bodies decoded leniently (embedded strings still show), JSON also with
    its ``\\u`` escapes decoded, HTML also with its character references decoded."""
    text = response.content.decode("utf-8", "replace")
    media = response.headers.get("content-type", "")
    if "json" in media:
        with suppress(ValueError):
            text += "\n" + json.dumps(response.json(), ensure_ascii=False)
    elif "html" in media or "xml" in media:
        text += "\n" + html.unescape(text)
    return text.lower()


def leaks(response: requests.Response, secrets: tuple[str, ...] = SECRETS, allowed: tuple[str, ...] = ()) -> list[str]:
    """The secrets found in a response's body or headers (``allowed``: ids the request itself named, removed)."""
    seen = text_of(response) + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items()).lower()
    for word in allowed:
        seen = seen.replace(word.lower(), "")
    return [s for s in secrets if s in seen]


def normalised(response: requests.Response, replace: Mapping[str, str]) -> tuple[int, str, str]:
    """Status, media type and body of an answer with the ids of ``replace`` replaced and time stamps removed."""
    body = response.content.decode("utf-8", "replace")
    for old, new in replace.items():
        body = body.replace(old, new)
    return response.status_code, response.headers.get("content-type", ""), _STAMP.sub(r'"\1":""', body)


def with_made_up(path: str) -> str:
    """``path`` with every restricted id replaced by its made-up twin."""
    for real, fake in MADE_UP.items():
        path = path.replace(real, fake)
    return path


def named(path: str) -> tuple[str, ...]:
    """The restricted ids ``path`` names."""
    return tuple(i for i in RESTRICTED_IDS if i in path)


def like_a_missing_layer(get: Callable[[str], requests.Response], path: str) -> requests.Response:
    """Request ``path`` (naming a hidden layer) and the same path with made-up ids; assert the two answers are the
    same (status, media type, body once the ids are swapped) and show nothing secret. Returns the first."""
    got, missing = get(path), get(with_made_up(path))
    back = {fake: real for real, fake in MADE_UP.items()}
    assert normalised(got, {}) == normalised(missing, back), f"{path}: {got.status_code} {got.text[:300]!r}"
    assert got.status_code < 500, path
    assert not leaks(got, allowed=named(path)), f"{path}: {leaks(got, allowed=named(path))}"
    return got


def wait_for(check: Callable[[], Any], timeout: float = WAIT_S, pause: float = 0.2) -> Any:
    """Poll ``check`` until it is truthy or ``timeout`` passed; its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(pause)


def criteria_naming(layer: str) -> dict[str, Any]:
    """The shipped data-centre criteria with the MTR score measured to ``layer`` (labelled by ``codename``)."""
    from sdi.planning.criteria import DEFAULT_CRITERIA

    doc: dict[str, Any] = yaml.safe_load(Path(DEFAULT_CRITERIA).read_text(encoding="utf-8"))
    for score in doc["scores"]:
        if score["id"] == "mtr":
            score.update(layer=layer, label="codename", name="sensor site")
    return doc


def execute(base: str, inputs: dict[str, Any], credential: str | None, *, asynchronous: bool = False,
            timeout: float = 300) -> requests.Response:
    """``POST /processes/<site selection>/execution``."""
    headers = {**bearer(credential), **({"Prefer": "respond-async"} if asynchronous else {})}
    return requests.post(f"{base}/processes/{PROCESS_ID}/execution", json={"inputs": inputs}, headers=headers,
                         timeout=timeout)
