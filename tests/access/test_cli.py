"""The stewards' commands for restricted layers (`sdi keys`, `sdi layers set-access`, `sdi audit`) and the analyst's
`sdi.remote.connect(url, token=...)`, against a live `sdi serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import Result
from typer.testing import CliRunner

import sdi
from sdi.cli import app
from sdi.errors import AuthenticationError, LayerNotFoundError
from tests.access.test_roles import PUBLIC, SECRET, TITLE_EN, restricted_yaml
from tests.live_server import Live, live_layers

pytestmark = pytest.mark.db
KEY = re.compile(r"^sdi_[a-z0-9]{10}_[A-Za-z0-9_-]{43}$")



@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("access_cli")
    fast = {"SDI_KEY_CACHE_S": "0.2", "SDI_REFRESH_S": "0.2", "SDI_AUDIT_FLUSH_S": "0.2"}
    with live_layers(folder, [PUBLIC], definitions=[restricted_yaml(folder, ["planning"])], workers=1,
                     extra_env=fast) as served:
        yield served


def run(live: Live, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"SDI_DATABASE_URL": live.settings.database_url})


def new_key(live: Live, *args: str) -> str:
    result = run(live, "keys", "create", *args)
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert KEY.fullmatch(last), result.stdout
    return last


def collections(live: Live, key: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = requests.get(f"{live.url}/collections?f=json", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text[:200]
    return sorted(c["id"] for c in answer.json()["collections"])


def test_a_key_is_printed_once_as_the_last_line_and_listed_without_its_secret(live: Live) -> None:
    key = new_key(live, "--name", "PlanD GIS team", "--group", "planning", "--group", "lands")
    key_id = key.split("_")[1]
    listed = run(live, "keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    entry = next(k for k in json.loads(listed.stdout) if k["id"] == key_id)
    assert entry["name"] == "PlanD GIS team" and entry["groups"] == ["lands", "planning"]
    assert entry["revoked_at"] is None
    table = run(live, "keys", "list")
    assert key_id in table.stdout and "PlanD GIS team" in table.stdout
    secret = key.split("_", 2)[2]
    assert secret not in listed.stdout + table.stdout + listed.stderr


def test_a_key_of_the_group_sees_the_layer_until_it_is_revoked(live: Live) -> None:
    key = new_key(live, "--name", "PlanD", "--group", "planning")
    assert SECRET in collections(live, key) and SECRET not in collections(live)
    revoked = run(live, "keys", "revoke", key.split("_")[1])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # SDI_KEY_CACHE_S=0.2
        answer = requests.get(f"{live.url}/collections?f=json", headers={"Authorization": f"Bearer {key}"},
                              timeout=30)
        if answer.status_code == 401:
            break
        time.sleep(0.1)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer ")
    assert key.split("_")[1] in run(live, "keys", "list", "--revoked").stdout


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "create", "--name", "x", "--group", "Planning Dept"], "error: --group: 'Planning Dept' is not a group"),
    (["keys", "create", "--name", " ", "--group", "planning"], "error: --name: give the key a name"),
    (["keys", "create", "--name", "x", "--rate-limit", "0"], "error: --rate-limit: expected requests per minute"),
    (["keys", "revoke", "zzzzzzzzzz"], "error: no API key 'zzzzzzzzzz'"),
    (["layers", "set-access", SECRET], "error: give either --public or at least one --group"),
    (["layers", "set-access", SECRET, "--public", "--group", "x"], "error: give either --public or at least one"),
    (["layers", "set-access", "no_such_layer", "--public"], "error: no loaded layer 'no_such_layer'"),
    (["audit", "--since", "yesterday"], "error: --since: expected an ISO date"),
])
def test_mistakes_are_one_line_errors(live: Live, args: list[str], message: str) -> None:
    result = run(live, *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_set_access_takes_effect_without_a_restart(live: Live) -> None:
    try:
        result = run(live, "layers", "set-access", SECRET, "--public")
        assert result.exit_code == 0 and result.stdout.strip() == f"{SECRET}: public", result.output
        listed = json.loads(run(live, "layers", "list", "--json").stdout)
        assert {r["id"]: r["access_groups"] for r in listed}[SECRET] is None
        deadline = time.monotonic() + 10
        while SECRET not in collections(live) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert SECRET in collections(live)
        items = requests.get(f"{live.url}/collections/{SECRET}/items?limit=1&f=json", timeout=30)
        assert items.status_code == 200 and items.json()["numberReturned"] == 1
    finally:
        result = run(live, "layers", "set-access", SECRET, "--group", "planning")
        assert result.stdout.strip() == f"{SECRET}: readable by groups planning", result.output
    deadline = time.monotonic() + 10
    while SECRET in collections(live) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert SECRET not in collections(live)
    assert requests.get(f"{live.url}/collections/{SECRET}/items?f=json", timeout=30).status_code == 404


def test_the_audit_log_shows_who_read_what(live: Live) -> None:
    key = new_key(live, "--name", "Audited team", "--group", "planning")
    key_id = key.split("_")[1]
    page = requests.get(f"{live.url}/collections/{SECRET}/items?limit=3&f=json",
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert page.status_code == 200 and page.json()["numberReturned"] == 3
    requests.get(f"{live.url}/collections/{SECRET}/items?limit=3&f=json", timeout=30)  # anonymous: a 404
    deadline = time.monotonic() + 10
    while True:
        result = run(live, "audit", "--layer", SECRET, "--identity", f"key:{key_id}", "--json")
        rows = json.loads(result.stdout)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["name"], r["action"], r["features"], r["status"], r["groups"]) for r in rows] == [
        ("Audited team", "items", 3, 200, ["planning"])]
    assert rows[0]["path"].startswith(f"/collections/{SECRET}/items?")
    anonymous = json.loads(run(live, "audit", "--identity", "anonymous", "--json").stdout)
    assert anonymous == []
    table = run(live, "audit", "--layer", SECRET)
    assert result.exit_code == 0 and "Audited team" in table.stdout and key.split("_", 2)[2] not in table.stdout


def test_remote_connect_with_a_token_reads_the_layers_of_its_groups(live: Live) -> None:
    key = new_key(live, "--name", "Analyst", "--group", "planning")
    public = sdi.remote.connect(live.url)
    assert SECRET not in public.layers and PUBLIC in public.layers
    with pytest.raises(LayerNotFoundError):
        public.read(SECRET)
    keyed = sdi.remote.connect(live.url, token=key)
    assert SECRET in keyed.layers
    assert keyed.catalogue.search("Zanzibar").records[0].title_en == TITLE_EN
    frame = keyed.read(SECRET)
    assert len(frame) > 0 and frame.crs.to_epsg() == 2326
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        sdi.remote.connect(live.url, token="sdi_aaaaaaaaaa_" + "a" * 43)


@pytest.mark.parametrize("tool", ["pyogrio", "ogrinfo"])
def test_gdal_reads_the_layer_with_the_key_in_a_header_file(live: Live, tool: str, tmp_path: Path) -> None:
    """The README's recipe: GDAL_HTTP_HEADER_FILE works with GDAL 3.12 (pyogrio's) and Debian's 3.6 alike."""
    if tool == "ogrinfo" and shutil.which("ogrinfo") is None:
        pytest.fail("ogrinfo is missing: scripts/setup.sh installs gdal-bin")
    key = new_key(live, "--name", "GDAL user", "--group", "planning")
    header = tmp_path / "sdi-headers.txt"
    header.write_text(f"Authorization: Bearer {key}\n", encoding="utf-8")
    if tool == "ogrinfo":
        command = ["ogrinfo", "-ro", "-so", f"OAPIF:{live.url}", SECRET]
    else:
        command = [sys.executable, "-c", f"import pyogrio; print(len(pyogrio.read_dataframe('OAPIF:{live.url}', "
                                         f"layer='{SECRET}')))"]
    results = {}
    for name, env in (("key", {"GDAL_HTTP_HEADER_FILE": str(header)}), ("none", {})):
        results[name] = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                                       timeout=120)
    assert results["key"].returncode == 0, results["key"].stderr[-500:]
    assert (f"Layer name: {SECRET}" in results["key"].stdout if tool == "ogrinfo"
            else int(results["key"].stdout.split()[-1]) > 0)
    assert results["none"].returncode != 0 and f"Layer name: {SECRET}" not in results["none"].stdout


def test_layers_list_shows_access(live: Live) -> None:
    table = run(live, "layers", "list").stdout
    line = next(row for row in table.splitlines() if SECRET in row)
    assert "groups: planning" in line
    assert "public" in next(row for row in table.splitlines() if PUBLIC in row)
