"""Who may read a restricted layer, through a live ``sdi serve``: API keys (revoked, malformed, rate-limited), OpenID
Connect tokens of a local IdP, the audit log of restricted reads, private jobs, and real clients (OWSLib, GDAL).

The served database and the layers are :mod:`tests.access.restricted_site`'s; what an identity outside the
layers' groups sees of every route is :mod:`tests.access.test_restricted_api`'s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyogrio
import pytest
import requests
from psycopg.rows import dict_row
from pyogrio.errors import DataLayerError, DataSourceError

from sdi.query.tms import grids
from tests.access.restricted_site import (
    AUDIT_FLUSH_S,
    CODENAME,
    MADE_UP,
    SECRET_LAYER,
    SECRET_RASTER,
    Site,
    bearer,
    criteria_naming,
    execute,
    key_id,
    leaks,
    like_a_missing_layer,
    restricted_site,
    wait_for,
)
from tests.live_server import wait_for_job

pytestmark = pytest.mark.db
ITEMS = f"/collections/{SECRET_LAYER}/items"


# --- helpers ----------------------------------------------------------------------------------------------------


def get(site: Site, path: str, credential: str | None = None, **headers: str) -> requests.Response:
    return requests.get(site.url + path, headers={**bearer(credential), **headers}, timeout=60)


def assert_refused(response: requests.Response, *secrets: str) -> None:
    """A 401 with an RFC 6750 challenge that repeats nothing of the credential (``secrets``: its parts)."""
    assert response.status_code == 401, response.text
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, challenge
    assert response.json()["code"] == "Unauthorized"
    shown = response.text + " ".join(response.headers.values())
    assert not [s for s in secrets if s and s in shown], "the answer repeats the credential"
    assert not leaks(response)


def audit_rows(site: Site, identity: str) -> list[dict[str, Any]]:
    with site.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute("select identity, name, groups, layer_id, action, path, features, status"
                                " from sdi.access_log where identity = %s order by id", (identity,)).fetchall())


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with restricted_site(tmp_path_factory.mktemp("identities_store"),
                         tmp_path_factory.mktemp("identities_serve")) as served:
        yield served


# --- API keys ---------------------------------------------------------------------------------------------------


def test_a_revoked_key_is_refused_everywhere(site: Site) -> None:
    made, text = site.new_key("leaving analyst", ("planning",))
    assert get(site, ITEMS, text).status_code == 200
    site.revoke(made)
    for path in (ITEMS, "/collections", "/", "/collections/districts_18/items?limit=1", "/jobs"):
        assert_refused(get(site, path, text), text, text.split("_")[-1])
    assert get(site, "/collections").status_code == 200  # anonymous callers are not refused


@pytest.mark.parametrize("authorization", [
    "Basic cGxhbm5pbmc6c2VjcmV0", "Bearer", "Bearer ", "Token sdi_abcdefghij_" + "x" * 43, "bearer sdi_short_key",
    "Bearer sdi_abcdefghij_" + "A" * 43, "Bearer not-a-key-nor-a-token", "Bearer a.b.c"])
def test_a_malformed_or_unknown_credential_is_refused(site: Site, authorization: str) -> None:
    response = requests.get(site.url + ITEMS, headers={"Authorization": authorization}, timeout=30)
    assert_refused(response, *[p for p in authorization.split(" ")[1:] if len(p) > 8])


def test_a_key_of_the_group_with_its_own_rate_limit_gets_429(site: Site) -> None:
    _, limited = site.new_key("script", ("planning",), rate_limit=3)
    answers = [get(site, "/collections?f=json", limited) for _ in range(20)]  # two workers: one sees 10 or more
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.status_code in (200, 429) for a in answers), [a.status_code for a in answers]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert not leaks(refused[0]) and limited not in refused[0].text
    assert get(site, ITEMS, site.planning_key).status_code == 200  # other keys keep their own budget


# --- OpenID Connect ---------------------------------------------------------------------------------------------


def test_a_token_of_the_group_reads_the_layer(site: Site) -> None:
    token = site.idp.token(groups=["planning", "Some/Other"], sub="carol")
    items = get(site, f"{ITEMS}?limit=3", token)
    assert items.status_code == 200, items.text
    assert all(f["properties"]["codename"].startswith(CODENAME) for f in items.json()["features"])
    assert items.headers["Cache-Control"].startswith("private") and "Authorization" in items.headers["Vary"]
    assert get(site, f"/collections/{SECRET_RASTER}/coverage?f=json", token).status_code == 200
    found = get(site, "/collections/catalogue/items?f=json&q=桑給巴爾", token).json()["features"]
    assert SECRET_LAYER in [f["id"] for f in found]


@pytest.mark.parametrize("case", ["expired", "wrong audience", "wrong issuer", "rogue key", "unsigned", "hmac",
                                  "unknown kid"])
def test_a_token_that_does_not_verify_is_refused(site: Site, case: str) -> None:
    idp = site.idp
    token = {"expired": lambda: idp.token(groups=["planning"], expires_in=-600),
             "wrong audience": lambda: idp.token(groups=["planning"], aud="another-api"),
             "wrong issuer": lambda: idp.token(groups=["planning"], iss="https://evil.example/realms/sdi"),
             "rogue key": lambda: idp.token(groups=["planning"], key="rogue"),
             "unsigned": lambda: idp.token(groups=["planning"], algorithm="none"),
             "hmac": lambda: idp.token(groups=["planning"], algorithm="HS256"),
             "unknown kid": lambda: idp.token(groups=["planning"], key="rogue", kid="key-99")}[case]()
    for path in (ITEMS, "/collections"):
        assert_refused(get(site, path, token), token, *token.split("."))


def test_a_token_without_groups_is_anonymous_to_restricted_layers(site: Site) -> None:
    token = site.idp.token(groups=None, sub="dave")
    assert get(site, "/collections/districts_18/items?limit=1", token).status_code == 200
    listed = {c["id"] for c in get(site, "/collections?f=json", token).json()["collections"]}
    assert "districts_18" in listed and SECRET_LAYER not in listed and SECRET_RASTER not in listed

    def as_dave(path: str) -> requests.Response:
        return get(site, path, token)

    for path in (f"/collections/{SECRET_LAYER}", ITEMS, f"{ITEMS}/1", f"/collections/{SECRET_RASTER}/coverage",
                 f"/metadata/{SECRET_LAYER}.xml", f"/collections/{SECRET_LAYER}/download/csv"):
        assert like_a_missing_layer(as_dave, path).status_code == 404


# --- the audit log ----------------------------------------------------------------------------------------------


def test_reads_of_restricted_layers_are_logged_and_nothing_else_is(site: Site) -> None:
    made, text = site.new_key("audited analyst", ("planning",))
    page = get(site, f"{ITEMS}?limit=7", text)
    assert page.status_code == 200
    returned = page.json()["numberReturned"]
    assert returned == 7
    lon, lat = page.json()["features"][0]["geometry"]["coordinates"]
    tile = grids()["WebMercatorQuad"].tms.tile(lon, lat, 12)
    reads = [f"{ITEMS}/2", f"/collections/{SECRET_LAYER}/download/geojson",
             f"/collections/{SECRET_LAYER}/tiles/WebMercatorQuad/12/{tile.y}/{tile.x}?f=mvt",
             f"/collections/{SECRET_RASTER}/coverage?f=json", "/collections/districts_18/items?limit=2"]
    assert [get(site, p, text).status_code for p in reads] == [200, 200, 200, 200, 200]
    expected = {(SECRET_LAYER, "items", returned), (SECRET_LAYER, "item", 1), (SECRET_LAYER, "download", 49),
                (SECRET_RASTER, "coverage", None)}
    rows = wait_for(lambda: (found := audit_rows(site, f"key:{made}")) and len(found) >= 5 and found)
    assert rows, "no audit rows were written"
    assert expected <= {(r["layer_id"], r["action"], r["features"]) for r in rows}, rows
    assert {r["layer_id"] for r in rows} == {SECRET_LAYER, SECRET_RASTER}  # the public read is not logged
    assert [r["action"] for r in rows if r["layer_id"] == SECRET_LAYER].count("tile") == 1
    assert all(r["name"] == "audited analyst" and r["groups"] == ["planning"] and r["status"] == 200 for r in rows)
    assert f"{ITEMS}?limit=7" in [r["path"] for r in rows]

    _, lands = site.new_key("audited officer", ("lands",))
    for credential in (None, lands):
        for path in (ITEMS, f"{ITEMS}/2", f"/collections/{SECRET_LAYER}/download/geojson",
                     f"/collections/{MADE_UP[SECRET_LAYER]}/items"):
            assert get(site, path, credential).status_code == 404
    time.sleep(AUDIT_FLUSH_S * 5 + 0.5)
    assert audit_rows(site, "anonymous") == [] and audit_rows(site, f"key:{key_id(lands)}") == []


# --- jobs -------------------------------------------------------------------------------------------------------


def test_an_asynchronous_job_belongs_to_the_key_that_started_it(site: Site) -> None:
    started = execute(site.url, {"criteria": criteria_naming(SECRET_LAYER), "limit": 3}, site.planning_key,
                      asynchronous=True)
    assert started.status_code == 201, started.text
    location = started.headers["Location"]
    job = location.rsplit("/", 1)[1]
    status = wait_for_job(location, bearer(site.planning_key))
    assert status["status"] == "successful", status
    listed = get(site, "/jobs?f=json", site.planning_key).json()["jobs"]
    assert job in [j["jobID"] for j in listed]
    results = get(site, f"/jobs/{job}/results", site.planning_key)
    assert results.status_code == 200 and CODENAME in results.text

    unknown = str(uuid.uuid4())
    for credential in (None, site.lands_key, site.idp.token(groups=["planning"], sub="erin")):
        assert job not in [j["jobID"] for j in get(site, "/jobs?f=json", credential).json()["jobs"]]
        for path in (f"/jobs/{job}", f"/jobs/{job}/results"):
            answer, missing = get(site, path, credential), get(site, path.replace(job, unknown), credential)
            assert answer.status_code == missing.status_code == 404, path
            assert answer.text.replace(job, unknown) == missing.text
            assert CODENAME not in answer.text and not leaks(answer, allowed=(SECRET_LAYER,))
        dismissed = requests.delete(site.url + f"/jobs/{job}", headers=bearer(credential), timeout=30)
        assert dismissed.status_code == 404
    assert get(site, f"/jobs/{job}", site.planning_key).json()["status"] == "successful"  # not dismissed by others


# --- real clients -----------------------------------------------------------------------------------------------


def test_owslib_lists_and_reads_the_layer_with_the_key_only(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import owslib.ogcapi
    from owslib.ogcapi.features import Features

    # OWSLib adds a client's headers to its module-wide defaults: give each client a fresh copy
    defaults = dict(owslib.ogcapi.REQUEST_HEADERS)
    monkeypatch.setattr(owslib.ogcapi, "REQUEST_HEADERS", dict(defaults))
    anonymous = Features(site.url)
    assert SECRET_LAYER not in [c["id"] for c in anonymous.collections()["collections"]]
    with pytest.raises(RuntimeError, match="no collection"):
        anonymous.collection_items(SECRET_LAYER, limit=2)
    monkeypatch.setattr(owslib.ogcapi, "REQUEST_HEADERS", dict(defaults))
    keyed = Features(site.url, headers={"Authorization": f"Bearer {site.planning_key}"})
    assert SECRET_LAYER in [c["id"] for c in keyed.collections()["collections"]]
    items = keyed.collection_items(SECRET_LAYER, limit=5)
    assert [f["properties"]["codename"] for f in items["features"]] == [f"{CODENAME}-{n}" for n in range(1, 6)]


def test_gdal_reads_the_layer_with_the_key_only(site: Site) -> None:
    source = f"OAPIF:{site.url}"
    anonymous = [name for name, _ in pyogrio.list_layers(source)]
    assert "districts_18" in anonymous and SECRET_LAYER not in anonymous
    with pytest.raises((DataLayerError, DataSourceError)):
        pyogrio.read_dataframe(source, layer=SECRET_LAYER)
    # GDAL's OAPIF driver sends headers of its own, which override GDAL_HTTP_HEADERS (GDAL 3.12); a bearer
    # token is given with GDAL_HTTP_AUTH=BEARER (GDAL >= 3.9)
    options = {"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": site.planning_key}
    pyogrio.set_gdal_config_options(options)
    try:
        assert SECRET_LAYER in [name for name, _ in pyogrio.list_layers(source)]
        frame = pyogrio.read_dataframe(source, layer=SECRET_LAYER)
    finally:
        pyogrio.set_gdal_config_options(dict.fromkeys(options))
    assert pyogrio.get_gdal_config_option("GDAL_HTTP_BEARER") is None
    assert len(frame) == 49 and frame["codename"].str.startswith(CODENAME).all()
    assert frame.crs is not None and frame.total_bounds[0] > 113.8
