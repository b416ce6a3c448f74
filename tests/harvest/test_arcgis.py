"""An ArcGIS REST layer source (the CSDI pattern). No ArcGIS Server can run here, so the fixture server answers the
layer resource and its ``query`` operation as the ArcGIS REST API documents them (Esri JSON; ``maxRecordCount``,
``resultOffset``/``resultRecordCount``, ``exceededTransferLimit``, ``returnCountOnly``, ``returnIdsOnly``,
``objectIds``; errors as HTTP 200 with an ``error`` object)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loaders.sync import sync_layer
from sdi.layerdef import read_definition
from sdi.settings import Settings
from tests.harvest.servers import FixtureServer, Reply, Seen

pytestmark = pytest.mark.db
JSON = {"Content-Type": "application/json; charset=utf-8"}
FIELDS = [
    {"name": "OBJECTID", "type": "esriFieldTypeOID", "alias": "OBJECTID"},
    {"name": "SLOPE_NO", "type": "esriFieldTypeString", "alias": "Slope No.", "length": 20},
    {"name": "NAME_TC", "type": "esriFieldTypeString", "alias": "名稱", "length": 50},
    {"name": "AREA_M2", "type": "esriFieldTypeDouble", "alias": "Area (m2)"},
    {"name": "REPORT_DATE", "type": "esriFieldTypeDate", "alias": "Report date", "length": 8},
]


def _features(n: int, polygons: bool) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        x, y = 836000.0 + 97.5 * i, 817000.0 + 41.25 * i
        geometry = ({"rings": [[[x, y], [x, y + 20], [x + 20, y + 20], [x + 20, y], [x, y]]]} if polygons
                    else {"x": x, "y": y})
        out.append({"attributes": {"OBJECTID": i + 1, "SLOPE_NO": f"11SW-A/C{i:03d}", "NAME_TC": f"斜坡 {i + 1}",
                                   "AREA_M2": 400.0 + i, "REPORT_DATE": 1_640_995_200_000 + i * 86_400_000},
                    "geometry": geometry})
    return out


def arcgis_layer(server: FixtureServer, path: str, features: list[dict[str, Any]], *, polygons: bool = False,
                 max_records: int = 10, paginates: bool = True, count: int | None = None) -> str:
    """Serve ``features`` as an ArcGIS REST layer at ``path`` (and ``path/query``); return its URL."""
    geometry_type = "esriGeometryPolygon" if polygons else "esriGeometryPoint"
    reference = {"wkid": 102140, "latestWkid": 2326}

    def layer(seen: Seen) -> Reply:
        meta = {"currentVersion": 10.91, "id": 0, "name": "Slopes (test)", "type": "Feature Layer",
                "geometryType": geometry_type, "objectIdField": "OBJECTID", "maxRecordCount": max_records,
                "fields": FIELDS, "capabilities": "Query,Data",
                "advancedQueryCapabilities": {"supportsPagination": paginates, "supportsOrderBy": True}}
        return Reply(200, json.dumps(meta).encode(), JSON)

    def query(seen: Seen) -> Reply:
        q = seen.query
        if q.get("f") != "json":
            return Reply(200, json.dumps({"error": {"code": 400, "message": "Invalid format"}}).encode(), JSON)
        rows = [] if q.get("where") == "1=0" else list(features)
        if q.get("returnCountOnly") == "true":
            return Reply(200, json.dumps({"count": count if count is not None else len(rows)}).encode(), JSON)
        if q.get("returnIdsOnly") == "true":
            ids = [f["attributes"]["OBJECTID"] for f in rows]
            return Reply(200, json.dumps({"objectIdFieldName": "OBJECTID", "objectIds": ids[::-1]}).encode(), JSON)
        if "objectIds" in q:
            wanted = {int(i) for i in q["objectIds"].split(",")}
            rows = [f for f in rows if f["attributes"]["OBJECTID"] in wanted]
        if "resultOffset" in q and not paginates:
            error = {"error": {"code": 400, "message": "Unable to complete operation.",
                               "details": ["Pagination is not supported."]}}
            return Reply(200, json.dumps(error).encode(), JSON)
        if q.get("orderByFields") == "OBJECTID ASC":
            rows.sort(key=lambda f: f["attributes"]["OBJECTID"])
        offset = int(q.get("resultOffset", 0))
        size = min(int(q.get("resultRecordCount", max_records)), max_records)
        page = rows[offset: offset + size]
        answer = {"objectIdFieldName": "OBJECTID", "globalIdFieldName": "", "geometryType": geometry_type,
                  "spatialReference": reference, "fields": FIELDS, "features": page}
        if offset + size < len(rows):
            answer["exceededTransferLimit"] = True
        return Reply(200, json.dumps(answer, ensure_ascii=False).encode(), JSON)

    server.routes[path] = layer
    server.routes[f"{path}/query"] = query
    return server.url(path)


@pytest.mark.parametrize(("paginates", "polygons"), [(True, False), (False, False), (True, True)])
def test_a_layer_is_paged_to_the_end(
        paginates: bool, polygons: bool, harvest_settings: Settings, server: FixtureServer,
        url_layer: Callable[..., Path], db: psycopg.Connection) -> None:
    layer_id = f"arcgis_{'offset' if paginates else 'ids'}_{'polygons' if polygons else 'points'}"
    features = _features(23, polygons)
    url = arcgis_layer(server, f"/arcgis/rest/services/{layer_id}/MapServer/0", features, polygons=polygons,
                       paginates=paginates)
    definition = read_definition(url_layer(layer_id, {"url": url + "/query?where=1%3D1", "service": "arcgis"},
                                           primary_key="OBJECTID"))
    result = sync_layer(definition, harvest_settings)
    assert result.status == "loaded", result.message
    assert result.features == 23 and result.fetch is not None and result.fetch["pages"] == 3
    queries = [s.query for s in server.requests_to(f"/arcgis/rest/services/{layer_id}/MapServer/0/query")]
    if paginates:
        assert [q.get("resultOffset") for q in queries if "outFields" in q] == ["0", "10", "20"]
    else:
        assert [len(q["objectIds"].split(",")) for q in queries if "objectIds" in q] == [10, 10, 3]
    rows = db.execute(f"select objectid, slope_no, name_tc, area_m2, st_xmin(geom), st_ymin(geom) "
                      f"from layers.{layer_id} order by objectid").fetchall()
    assert rows[0] == (1, "11SW-A/C000", "斜坡 1", 400.0, 836000.0, 817000.0)
    assert rows[-1] == (23, "11SW-A/C022", "斜坡 23", 422.0, 836000.0 + 97.5 * 22, 817000.0 + 41.25 * 22)
    (kind,) = db.execute("select geometry_type from sdi.layer where id = %s", (layer_id,)).fetchone()
    assert kind == ("Polygon" if polygons else "Point")
    assert sync_layer(definition, harvest_settings).status == "unchanged"


def test_arcgis_errors_and_counts_that_do_not_add_up_are_recorded_failures(
        harvest_settings: Settings, server: FixtureServer, url_layer: Callable[..., Path],
        db: psycopg.Connection) -> None:
    url = arcgis_layer(server, "/arcgis/rest/services/short/MapServer/0", _features(23, False), count=30)
    result = sync_layer(read_definition(url_layer("arcgis_short", {"url": url, "service": "arcgis"})),
                        harvest_settings)
    assert result.status == "failed" and "paged 23 features but the count query said 30" in result.message

    server.routes["/arcgis/rest/services/secured/MapServer/0"] = lambda seen: Reply(200, json.dumps(
        {"error": {"code": 498, "message": "Invalid token.", "details": []}}).encode(), JSON)
    secured = server.url("/arcgis/rest/services/secured/MapServer/0?token=s3cr3t-t0ken")
    result = sync_layer(read_definition(url_layer("arcgis_secured", {"url": secured, "service": "arcgis"})),
                        harvest_settings)
    assert result.status == "failed" and "ArcGIS error 498: Invalid token." in result.message, result.message
    assert server.requests_to("/arcgis/rest/services/secured/MapServer/0")[-1].query["token"] == "s3cr3t-t0ken"
    stored = db.execute("select reason, source_path, report::text from sdi.load_history where layer_id ="
                        " 'arcgis_secured'").fetchone()
    assert "token=***" in stored[0] and all("s3cr3t" not in text for text in (result.message, *stored))
