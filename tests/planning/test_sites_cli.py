"""`sdi sites`: each output format reads back as the library's ranking; bad input is one line, exit 1, no file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
import yaml
from typer.testing import CliRunner

from sdi.cli import app
from sdi.planning import site_selection
from sdi.planning.criteria import DEFAULT_CRITERIA
from sdi.settings import Settings
from tests.planning.sites_db import planning_database

pytestmark = pytest.mark.db
WEIGHTS = {"substation": 5.0, "mtr": 0.5}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with planning_database(tmp_path_factory.mktemp("sites_store")) as settings:
        yield settings


@pytest.fixture(scope="module")
def expected(store: Settings) -> gpd.GeoDataFrame:
    """What the library returns for the options the CLI tests pass."""
    sites = site_selection(settings=store, weights=WEIGHTS)
    assert len(sites) > 1, "the planning layers give no site to compare"
    return sites


def _invoke(settings: Settings, *args: str) -> tuple[int, str, list[str]]:
    env = {"SDI_DATABASE_URL": settings.database_url, "SDI_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["sites", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, [line for line in result.stderr.splitlines() if line.strip()]


def _weights() -> list[str]:
    return [a for key, value in WEIGHTS.items() for a in ("--weight", f"{key}={value}")]


def _same_ranking(got: pd.DataFrame, expected: gpd.GeoDataFrame) -> None:
    assert got["site"].astype(str).tolist() == expected["site"].astype(str).tolist()
    assert got["rank"].astype(int).tolist() == expected["rank"].astype(int).tolist()
    np.testing.assert_allclose(got["score"].astype(float), expected["score"].astype(float), atol=1e-6)


def test_geopackage_in_hk_grid(store: Settings, expected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    out = tmp_path / "sites.gpkg"
    code, stdout, err = _invoke(store, "--out", str(out), *_weights())
    assert code == 0, err
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["sites"]
    got = pyogrio.read_dataframe(out, layer="sites")
    assert got.crs.to_epsg() == 2326
    _same_ranking(got, expected)
    assert {c for c in expected.columns if c.startswith("why_")} <= set(got.columns)
    assert shapely.equals_exact(got.geometry.values, expected.geometry.values, tolerance=1e-6).all()
    flat = " ".join(stdout.split())
    assert f"wrote {len(expected)} site(s)" in flat and str(expected["site"].iloc[0]) in flat
    assert "SYNTHETIC layers: " + ", ".join(expected.attrs["synthetic_layers"]) in flat
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites.gpkg"]  # no temporary file left


def test_geojson_is_rfc7946_lonlat(store: Settings, expected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    out = tmp_path / "sites.geojson"
    code, _, err = _invoke(store, "--out", str(out), *_weights())
    assert code == 0, err
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))  # JSON is YAML
    assert "crs" not in doc  # RFC 7946: always WGS 84 longitude/latitude
    got = gpd.GeoDataFrame.from_features(doc["features"], crs=4326)
    _same_ranking(got, expected)
    box = got.geometry.bounds
    assert box.minx.ge(113.8).all() and box.maxx.le(114.5).all()  # longitude first
    assert box.miny.ge(22.1).all() and box.maxy.le(22.6).all()
    back = got.to_crs(2326).geometry.centroid.distance(expected.geometry.centroid.reset_index(drop=True))
    assert back.max() < 0.5  # metres: RFC 7946's 7 decimals are ~1 cm


def test_csv_has_bom_wkt_and_every_attribute(store: Settings, expected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    out = tmp_path / "sites.csv"
    code, _, err = _invoke(store, "--out", str(out), *_weights())
    assert code == 0, err
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    got = pd.read_csv(out, encoding="utf-8-sig")
    _same_ranking(got, expected)
    assert set(expected.columns) - {"geometry"} <= set(got.columns)
    geoms = shapely.from_wkt(got["wkt"].to_numpy())
    assert shapely.equals_exact(geoms, expected.geometry.values, tolerance=1e-6).all()


def test_district_limit_and_map(store: Settings, expected: gpd.GeoDataFrame, tmp_path: Path) -> None:
    district = str(expected["district"].iloc[0])
    want = site_selection(settings=store, district=district.lower(), limit=3)
    out, png = tmp_path / "top.gpkg", tmp_path / "map.png"
    code, _, err = _invoke(store, "--district", district.lower(), "--limit", "3", "--out", str(out),
                           "--map", str(png))
    assert code == 0, err
    got = pyogrio.read_dataframe(out, layer="sites")
    _same_ranking(got, want)
    assert set(got["district"]) == {district}
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert np.ptp(image[..., :3]) > 0.5  # something was drawn


def test_engine_is_passed_on(store: Settings, tmp_path: Path) -> None:
    want = site_selection(settings=store, engine="geopandas", limit=5, weights={"area": 4})
    out = tmp_path / "sites.csv"
    code, _, err = _invoke(store, "--engine", "geopandas", "--limit", "5", "--weight", "area=4", "--out", str(out))
    assert code == 0, err
    _same_ranking(pd.read_csv(out, encoding="utf-8-sig"), want)


def _criteria_file(tmp_path: Path, change: dict[str, object]) -> Path:
    doc = yaml.safe_load(DEFAULT_CRITERIA.read_text(encoding="utf-8"))
    doc.update(change)
    path = tmp_path / "criteria.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _unknown_layer(tmp_path: Path) -> list[str]:
    doc = yaml.safe_load(DEFAULT_CRITERIA.read_text(encoding="utf-8"))
    doc["scores"][0]["layer"] = "no_such_layer"
    path = tmp_path / "criteria.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return ["--criteria", str(path)]


BAD = [
    ("unknown_district", lambda tmp: ["--district", "Atlantis"], "district"),
    ("weight_not_a_number", lambda tmp: ["--weight", "substation=abc"], "--weight"),
    ("weight_unknown_id", lambda tmp: ["--weight", "x=2"], "'x'"),
    ("unknown_criteria_key", lambda tmp: ["--criteria", str(_criteria_file(tmp, {"colour": "red"}))], "colour"),
    ("missing_criteria_file", lambda tmp: ["--criteria", str(tmp / "nowhere.yml")], "nowhere.yml"),
    ("unknown_engine", lambda tmp: ["--engine", "spark"], "spark"),
    ("unknown_layer", _unknown_layer, "no_such_layer"),
]


@pytest.mark.parametrize(("name", "args", "message"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("suffix", [".gpkg", ".csv"])
def test_bad_input_writes_nothing(name: str, args: object, message: str, suffix: str, store: Settings,
                                  tmp_path: Path) -> None:
    out, png = tmp_path / f"out{suffix}", tmp_path / "map.png"
    extra = args(tmp_path)  # type: ignore[operator]
    before = set(tmp_path.iterdir())  # the criteria file a case wrote
    code, _, err = _invoke(store, *extra, "--out", str(out), "--map", str(png))
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert set(tmp_path.iterdir()) == before  # no output, no temporary file


@pytest.mark.parametrize(("out", "option"), [("sites.shp", "--out"), ("sites", "--out"), ("map.jpg", "--map")])
def test_bad_file_extension(out: str, option: str, store: Settings, tmp_path: Path) -> None:
    args = ["--out", str(tmp_path / out)] if option == "--out" else ["--out", str(tmp_path / "s.gpkg"),
                                                                        "--map", str(tmp_path / out)]
    code, _, err = _invoke(store, *args)
    assert code == 1 and len(err) == 1 and err[0].startswith(f"error: {option} "), err
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_file(store: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer failing half-way keeps the old file and removes its temporary one."""
    from sdi.cli import sites as cli_sites
    from sdi.errors import SdiError

    out = tmp_path / "sites.csv"
    out.write_text("old", encoding="utf-8")

    def broken(sites: gpd.GeoDataFrame, path: Path) -> None:
        path.write_text("half", encoding="utf-8")
        raise SdiError("disk full")

    monkeypatch.setitem(cli_sites.WRITERS, ".csv", broken)
    code, _, err = _invoke(store, "--limit", "2", "--out", str(out))
    assert code == 1 and err == ["error: disk full"]
    assert out.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites.csv"]
