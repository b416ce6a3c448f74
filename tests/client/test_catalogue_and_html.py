"""Catalogue search and layer lists through both clients, and the bilingual HTML shown in Jupyter."""

from __future__ import annotations

import pytest

import sdi
from sdi.client.base import Layers
from tests.client.conftest import CLIENT_LAYERS, RASTER, Pair

pytestmark = pytest.mark.db


def test_connect_uses_settings_database(pair: Pair) -> None:
    client = sdi.connect(settings=pair.settings)
    assert set(client.layers) == set(CLIENT_LAYERS)
    assert sdi.remote.connect(pair.remote.url).url == pair.remote.url


def test_layers_agree(pair: Pair) -> None:
    local, remote = pair.local.layers, pair.remote.layers
    assert isinstance(local, Layers) and isinstance(remote, Layers)
    assert list(local) == list(remote) == sorted(CLIENT_LAYERS)
    assert list(local.values()) == list(remote.values())
    districts = local["districts_18"]
    assert districts.count == 18 and districts.type == "MultiPolygon" and districts.title_zh
    assert remote[RASTER].type == "raster" and remote[RASTER].synthetic
    frame = remote.to_frame()
    assert frame.loc["public_libraries_2013", "count"] == 260


@pytest.mark.parametrize(("q", "bbox", "expected"), [
    ("libraries", None, "public_libraries_2013"),
    ("圖書館", None, "public_libraries_2013"),
    ("十八區", None, "districts_18"),
    ("district", (114.15, 22.27, 114.18, 22.29), "districts_18"),
])
def test_search_agrees(pair: Pair, q: str, bbox: tuple[float, float, float, float] | None, expected: str) -> None:
    local = pair.local.catalogue.search(q, bbox=bbox)
    remote = pair.remote.catalogue.search(q, bbox=bbox)
    assert local.ids()[0] == expected
    assert remote.ids() == local.ids()
    assert remote.matched == local.matched
    assert remote.facets == local.facets
    for a, b in zip(local, remote, strict=True):
        assert (a.title_en, a.title_zh, a.custodian, a.feature_count, a.synthetic, a.geometry_type) == \
            (b.title_en, b.title_zh, b.custodian, b.feature_count, b.synthetic, b.geometry_type)
        assert a.bbox_crs84 == pytest.approx(b.bbox_crs84)


def test_search_paging_and_filters(pair: Pair) -> None:
    everything = pair.local.catalogue.search(limit=100)
    second = pair.remote.catalogue.search(limit=2, offset=2)
    assert second.ids() == everything.ids()[2:4]
    assert second.matched == everything.matched == len(CLIENT_LAYERS)
    assert pair.remote.catalogue.search(kind="raster").ids() == [RASTER]
    assert pair.remote.catalogue.search(synthetic=True).ids() == [RASTER]
    assert pair.remote.catalogue.search(synthetic=False).matched == len(CLIENT_LAYERS) - 1


def test_catalogue_html_is_bilingual(pair: Pair) -> None:
    for client in (pair.local, pair.remote):
        page = client.catalogue.search("圖書館")._repr_html_()
        record = client.catalogue.get("districts_18")
        assert "Public libraries (2013)" in page and "公共圖書館" in page
        assert "標題" in page
        assert record.title_zh and record.title_zh in record._repr_html_()


def test_layers_html_is_bilingual(pair: Pair) -> None:
    page = pair.remote.layers._repr_html_()
    assert page.count("[synthetic 合成]") == 1
    districts = pair.local.layers["districts_18"]
    assert districts.title_en in page and districts.title_zh and districts.title_zh in page
    assert "<table>" in page and "18" in page


def test_import_sdi_stays_light() -> None:
    """`import sdi` must not pull in pandas, geopandas, requests or pygeoapi (sdi.connect imports them on use)."""
    import subprocess
    import sys

    code = ("import sys, sdi; heavy = [m for m in ('pandas', 'geopandas', 'requests', 'pygeoapi', 'psycopg') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert callable(sdi.connect) and callable(sdi.remote.connect)
