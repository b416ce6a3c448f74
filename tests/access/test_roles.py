"""PostgreSQL enforces layer access by itself (sdi/access/roles.py, 0007_access.sql), whatever the web layer does.

A restricted layer's table is readable only by the roles of its groups; row-level security hides its catalogue
row, load history and changes from the public; `sdi layers set-access` moves the grants in one transaction; and
the API's own query path (sdi.web.runtime), with the web layer's check bypassed, is refused by the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import errors as pg_errors
from psycopg import sql

from loaders import load
from sdi.access.identity import ANONYMOUS, SYSTEM, Identity, acting_as
from sdi.access.manage import set_access
from sdi.access.roles import ANON, ensure_role, role_for
from sdi.catalogue import search as catalogue_search
from sdi.errors import ConfigError, LayerNotFoundError
from sdi.layerdef import read_definition
from sdi.query.layer import LayerMeta
from sdi.query.params import parse_items
from sdi.settings import Settings
from tests.conftest import LAYERS, loaded_database

SECRET, PUBLIC = "secret_stations", "districts_18"
TITLE_EN, TITLE_ZH = "Zanzibar sensor sites", "機密氣象站"


def restricted_yaml(folder: Path, groups: list[str] | None, layer_id: str = SECRET) -> Path:
    """weather_stations.yml as ``layer_id``, restricted to ``groups`` (``None``: public)."""
    doc = yaml.safe_load((LAYERS / "weather_stations.yml").read_text(encoding="utf-8"))
    doc.update(id=layer_id, title={"en": TITLE_EN, "zh": TITLE_ZH})
    doc["source"]["path"] = str((LAYERS / doc["source"]["path"]).resolve())
    if groups is not None:
        doc["access"] = {"groups": groups}
    path = folder / f"{layer_id}.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    folder = tmp_path_factory.mktemp("roles")
    with loaded_database([PUBLIC], definitions=[restricted_yaml(folder, ["planning"])],
                         data_dir=folder / "store") as settings:
        yield settings


def count_as(settings: Settings, role: str, query: str) -> Any:
    """The first value of ``query`` run under ``role`` (``SET ROLE``)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def reload(settings: Settings, folder: Path, groups: list[str] | None) -> None:
    load(read_definition(restricted_yaml(folder, groups)), settings)


@pytest.mark.db
def test_only_the_groups_roles_read_a_restricted_table(store: Settings) -> None:
    with psycopg.connect(store.database_url, autocommit=True) as conn:
        combined = ensure_role(conn, ["lands", "planning"])
        ensure_role(conn, ["lands"])
    assert combined == role_for(["planning", "lands"]) and combined.startswith("sdi_c_")
    total = count_as(store, store.owner_role, f"select count(*) from layers.{SECRET}")
    assert total and total > 0
    for role in ("sdi_g_planning", combined):
        assert count_as(store, role, f"select count(*) from layers.{SECRET}") == total
        assert count_as(store, role, f"select count(*) from layers.{PUBLIC}") == 18  # the public's layers too
    for role in (ANON, "sdi_g_lands", store.reader_role):
        with pytest.raises(pg_errors.InsufficientPrivilege):
            count_as(store, role, f"select count(*) from layers.{SECRET}")
    assert count_as(store, ANON, f"select count(*) from layers.{PUBLIC}") == 18
    with pytest.raises(pg_errors.InsufficientPrivilege):  # the login role reads no layer as itself
        count_as(store, store.reader_role, f"select count(*) from layers.{PUBLIC}")


@pytest.mark.db
def test_row_level_security_hides_the_restricted_record_its_history_and_changes(store: Settings) -> None:
    visible = "select coalesce(array_agg(id order by id), '{}') from sdi.layer"
    assert count_as(store, ANON, visible) == [PUBLIC]
    assert count_as(store, "sdi_g_lands", visible) == [PUBLIC]
    assert count_as(store, "sdi_g_planning", visible) == [PUBLIC, SECRET]
    assert count_as(store, store.reader_role, visible) == [PUBLIC, SECRET]  # the API's registry sees every record
    history = f"select count(*) from sdi.load_history where layer_id = '{SECRET}'"
    assert count_as(store, ANON, history) == 0 and count_as(store, "sdi_g_planning", history) >= 1
    changes = ("select count(*) from sdi.load_changes c join sdi.load_history h using (load_id)"
               f" where h.layer_id = '{SECRET}'")
    assert count_as(store, ANON, changes) == 0
    with psycopg.connect(store.database_url, autocommit=True) as conn:  # the catalogue search, as the public
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ANON)))
        assert catalogue_search.search(conn, q="Zanzibar").matched == 0
        assert catalogue_search.search(conn, q=TITLE_ZH).matched == 0
        conn.execute(sql.SQL("set role {}").format(sql.Identifier("sdi_g_planning")))
        assert [r.id for r in catalogue_search.search(conn, q="Zanzibar").records] == [SECRET]
        assert [r.id for r in catalogue_search.search(conn, q=TITLE_ZH).records] == [SECRET]


@pytest.mark.db
def test_set_access_moves_the_grants_and_the_record_in_one_step(store: Settings) -> None:
    query = f"select count(*) from layers.{SECRET}"
    with psycopg.connect(store.database_url) as conn:
        assert set_access(conn, store, SECRET, None) is None
    assert count_as(store, ANON, query) > 0
    assert count_as(store, ANON, f"select access_groups from sdi.layer where id = '{SECRET}'") is None
    with psycopg.connect(store.database_url) as conn:
        assert set_access(conn, store, SECRET, ["lands", "lands"]) == ("lands",)
    with pytest.raises(pg_errors.InsufficientPrivilege):  # the public's grant went with the change
        count_as(store, ANON, query)
    with pytest.raises(pg_errors.InsufficientPrivilege):
        count_as(store, "sdi_g_planning", query)
    assert count_as(store, "sdi_g_lands", query) > 0
    with psycopg.connect(store.database_url) as conn:
        with pytest.raises(LayerNotFoundError):
            set_access(conn, store, "no_such_layer", ["planning"])
        with pytest.raises(ConfigError, match="--group"):
            set_access(conn, store, SECRET, ["Planning Dept"])
        assert set_access(conn, store, SECRET, ["planning"]) == ("planning",)
    assert count_as(store, "sdi_g_planning", query) > 0


@pytest.mark.db
def test_access_role_refuses_bad_group_names(store: Settings) -> None:
    with psycopg.connect(store.database_url, autocommit=True) as conn:
        for bad in (["x; drop table sdi.layer"], ["Planning"], [f"g{i}" for i in range(65)]):
            with pytest.raises(pg_errors.InvalidParameterValue):
                conn.execute("select sdi.access_role(%s::text[])", (bad,))
        assert conn.execute("select sdi.access_role('{}'::text[])").fetchone() == (ANON,)


@pytest.mark.db
def test_a_reload_takes_the_access_of_its_yaml(tmp_path: Path) -> None:
    with loaded_database([], definitions=[restricted_yaml(tmp_path, None)], data_dir=tmp_path / "store") as s:
        query = f"select count(*) from layers.{SECRET}"
        assert count_as(s, ANON, query) > 0
        reload(s, tmp_path, ["planning"])
        with pytest.raises(pg_errors.InsufficientPrivilege):
            count_as(s, ANON, query)
        assert count_as(s, ANON, f"select count(*) from sdi.layer where id = '{SECRET}'") == 0
        reload(s, tmp_path, ["planning"])  # a reload of a restricted layer stays restricted
        with pytest.raises(pg_errors.InsufficientPrivilege):
            count_as(s, ANON, query)
        assert count_as(s, "sdi_g_planning", query) > 0
        reload(s, tmp_path, None)
        assert count_as(s, ANON, query) > 0


# --- the API's query path with the web layer's check bypassed -------------------------------------------------


async def _bypassed(settings: Settings) -> dict[str, Any]:
    """The API's own runtime (pool, roles) and query code, asked for the restricted layer's features and record
    as the public, skipping the registry's check (the layer is taken from its full, unfiltered snapshot)."""
    from sdi.web.app import _reader
    from sdi.web.features import _page
    from sdi.web.registry import Registry
    from sdi.web.runtime import Runtime, open_pool
    from sdi.web.settings import WebSettings

    web = WebSettings()
    url = _reader(settings, web)
    pool = await open_pool(url, settings, web)
    await pool.wait(10)
    runtime = Runtime(settings.model_copy(update={"database_url": url}), web, pool, asyncio.get_running_loop())
    registry = runtime.state["registry"] = Registry(runtime)
    try:
        await registry.refresh(force=True)
        layer = registry.full.layers[SECRET]
        assert isinstance(layer, LayerMeta)
        query = parse_items({"limit": "5"}, layer)
        found: dict[str, Any] = {}
        for who in (ANONYMOUS, Identity("key", "key:lands", "lands", frozenset({"lands"})),
                    Identity("key", "key:planning", "planning", frozenset({"planning"}))):
            with acting_as(who):
                try:
                    rows = await _page(runtime, layer, query, "json")
                    found[who.name] = sum(int(r[1] or 0) for r in rows)
                except LayerNotFoundError as exc:
                    found[who.name] = exc.__cause__
                found[who.name + " search"] = await runtime.fetch_dicts(
                    "select id from sdi.layer where id = %(id)s", {"id": SECRET})
        with acting_as(SYSTEM):
            found["system search"] = await runtime.fetch_dicts("select id from sdi.layer where id = %(id)s",
                                                                {"id": SECRET})
        return found
    finally:
        await pool.close()


@pytest.mark.db
def test_with_the_web_check_bypassed_the_database_still_refuses(store: Settings) -> None:
    found = asyncio.run(_bypassed(store))
    assert isinstance(found["anonymous"], pg_errors.InsufficientPrivilege)
    assert isinstance(found["lands"], pg_errors.InsufficientPrivilege)
    assert found["planning"] == 5  # the same code path, with the group's role, reads
    assert found["anonymous search"] == [] and found["lands search"] == []
    assert found["planning search"] == [{"id": SECRET}] and found["system search"] == [{"id": SECRET}]
