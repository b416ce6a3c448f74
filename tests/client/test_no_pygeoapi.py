"""The analyst client on a local database (`sdi.connect`) never imports pygeoapi: not to connect, list layers,
search the catalogue (and show it as in a notebook) nor to read with a filter, a box and another CRS.

``test_import_sdi_stays_light`` checks only ``import sdi``; this runs the calls themselves, in a fresh
interpreter, so a lazy import added inside any of them is caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sdi.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.db

SESSION = """
import json, sys
import sdi

client = sdi.connect(sys.argv[1])
layers = list(client.layers)
found = client.catalogue.search("district", limit=5)
record = client.catalogue.get("districts_18")
html = found._repr_html_() + record._repr_html_()
one = client.read("districts_18", where="name_en = 'EASTERN'", columns=["name_en"])
boxed = client.read("public_libraries_2013", bbox=(114.14, 22.27, 114.20, 22.30), crs="EPSG:4326",
                    where="S_INTERSECTS(geom, BBOX(114.0, 22.1, 114.5, 22.6)) AND fid > 0")
waivers = client.read("industrial_special_waivers", where="user_en LIKE '%Information Technology%'")
print(json.dumps({
    "layers": len(layers), "found": [r.id for r in found.records], "html": len(html),
    "one": one["name_en"].tolist(), "boxed": len(boxed), "waivers": len(waivers),
    "modules": sorted(m for m in sys.modules if m == "pygeoapi" or m.startswith("pygeoapi.")),
}))
"""


def test_connect_search_and_read_do_not_import_pygeoapi(client_store: Settings) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SESSION, client_store.database_url], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the calls did their work (so an empty result cannot hide a skipped code path)
    assert result["layers"] >= 7 and "districts_18" in result["found"] and result["html"] > 0
    assert result["one"] == ["EASTERN"] and result["boxed"] > 0 and result["waivers"] > 0
    assert result["modules"] == [], f"sdi.connect imported {result['modules'][:5]}"
