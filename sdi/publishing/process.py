"""The OGC API – Processes process ``data-centre-site-selection``: :func:`sdi.planning.site_selection` over HTTP.

``POST /processes/data-centre-site-selection/execution`` with ``{"inputs": {...}}`` runs the site
selection on the served database and answers the ranked sites as a GeoJSON FeatureCollection in
EPSG:4326 (RFC 7946); with ``Prefer: respond-async`` it answers 201 and a ``Location: /jobs/{id}``
(jobs are kept by :class:`sdi.publishing.jobs.SdiJobManager`). Unknown inputs and inputs of the wrong
type are refused here; every planning error the library raises for the inputs (unknown district,
weight or criterion, unknown layer) too becomes :class:`~pygeoapi.process.base.ProcessorExecuteError`,
which pygeoapi answers with HTTP 400 and ``Error executing process: <one-line message>``; server-side
failures keep their status (503 for an unreachable database, 500 otherwise).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

from sdi.errors import ConfigError, CriteriaError, LayerNotFoundError, PlanningError, SdiError, http_status
from sdi.planning.sources import ENGINES, resolve_engine
from sdi.settings import Settings

if TYPE_CHECKING:
    import geopandas as gpd

    from sdi.planning.criteria import Criteria

PROCESS_ID = "data-centre-site-selection"
PROCESSOR = "sdi.publishing.process.SiteSelectionProcessor"
OUTPUT = "sites"
WGS84 = 4326

#: The input names (checked by :func:`validate_inputs`).
_INPUTS = ("district", "weights", "min_area_m2", "criteria", "limit", "engine")

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": PROCESS_ID,
    "title": {"en": "Data-centre site selection", "zh": "數據中心選址"},
    "description": {
        "en": "Screens every candidate lot against hard constraints (zoning, minimum area, flood, landslide, "
              "oil depot, country park and conservation buffers) and ranks the ones that pass by a weighted "
              "score (distance to a ≥132 kV substation and an MTR station, lot area, slope). Each site comes "
              "with one sentence per criterion explaining why it passed and how it scored. Lots, zones, "
              "substations, MTR stations, flood-prone areas, country-park areas and the DEM are synthetic "
              "sample data, not real planning information.",
        "zh": "按硬性限制（分區、最小面積、水浸、山泥傾瀉、油庫、郊野公園及保育緩衝區）篩選每幅候選地段，"
              "並以加權分數（與132千伏或以上變電站及港鐵站的距離、地段面積、坡度）為合格地段排名；"
              "每個選址附有逐項準則的說明。地段、分區、變電站、港鐵站、水浸區、郊野公園範圍及數碼高程模型"
              "均為合成樣本數據，並非真實規劃資料。",
    },
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["site selection", "data centre", "planning", "Hong Kong", "選址", "數據中心"],
    "links": [],
    "inputs": {
        "district": {
            "title": {"en": "District", "zh": "地區"},
            "description": {"en": "Only sites in this district (English or Chinese name of one of the 18 "
                                  "districts, case-insensitive); all districts when omitted.",
                            "zh": "只篩選此地區（十八區之一的中文或英文名稱）內的地段；省略則篩選全港。"},
            "schema": {"type": "string", "minLength": 1},
            "minOccurs": 0, "maxOccurs": 1,
        },
        "weights": {
            "title": {"en": "Score weights", "zh": "評分權重"},
            "description": {"en": "Weights overriding the criteria's, by score id (substation, mtr, area, slope "
                                  "in the shipped model), e.g. {\"substation\": 5}.",
                            "zh": "按評分項目編號覆蓋權重，例如 {\"substation\": 5}。"},
            "schema": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
            "minOccurs": 0, "maxOccurs": 1,
        },
        "min_area_m2": {
            "title": {"en": "Minimum site area (m²)", "zh": "最小地段面積（平方米）"},
            "description": {"en": "Overrides the minimum area of every min_area constraint of the criteria.",
                            "zh": "覆蓋準則中所有最小面積限制的數值。"},
            "schema": {"type": "number", "exclusiveMinimum": 0},
            "minOccurs": 0, "maxOccurs": 1,
        },
        "criteria": {
            "title": {"en": "Criteria document", "zh": "準則文件"},
            "description": {"en": "A full criteria document (the YAML criteria model as JSON: id, title, "
                                  "candidates, districts, constraints, scores); the shipped data-centre "
                                  "model when omitted.",
                            "zh": "完整的準則文件（以JSON表示的YAML準則模型）；省略則使用內置的數據中心模型。"},
            "schema": {"type": "object"},
            "minOccurs": 0, "maxOccurs": 1,
        },
        "limit": {
            "title": {"en": "Maximum number of sites", "zh": "最多選址數目"},
            "description": {"en": "Return only the best N sites; all passing sites when omitted.",
                            "zh": "只傳回排名最高的N個選址；省略則傳回所有合格選址。"},
            "schema": {"type": "integer", "minimum": 1},
            "minOccurs": 0, "maxOccurs": 1,
        },
        "engine": {
            "title": {"en": "Engine", "zh": "運算引擎"},
            "description": {"en": "Where the analysis runs: postgis (default), geopandas or dask; every engine "
                                  "gives the same sites.",
                            "zh": "分析所用的引擎：postgis（預設）、geopandas 或 dask；結果相同。"},
            "schema": {"type": "string", "enum": list(ENGINES)},
            "minOccurs": 0, "maxOccurs": 1,
        },
    },
    "outputs": {
        OUTPUT: {
            "title": {"en": "Ranked sites", "zh": "選址排名"},
            "description": {"en": "GeoJSON FeatureCollection in EPSG:4326 (RFC 7946), best site first; "
                                  "properties: rank, site, score (0–100), district, area_m2, one why_<id> "
                                  "sentence and one score_<id> per criterion.",
                            "zh": "GeoJSON 要素集合（EPSG:4326），排名最高者在前；屬性包括排名、地段、"
                                  "分數（0至100）、地區、面積及每項準則的說明。"},
            "schema": {"type": "object", "contentMediaType": "application/geo+json"},
        },
    },
    "example": {"inputs": {"district": "KWUN TONG", "weights": {"substation": 5}, "limit": 10}},
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_inputs(data: object) -> dict[str, Any]:
    """Check the process inputs; return them as keyword arguments of the site selection.

    Parameters
    ----------
    data
        The ``inputs`` object of the execute request.

    Returns
    -------
    dict
        ``criteria`` (``None`` or a document), ``district``, ``weights``, ``limit``, ``engine`` and
        ``min_area_m2`` (each ``None`` when not given).

    Raises
    ------
    PlanningError
        When ``data`` is not an object, names an unknown input, or an input has the wrong type or range
        (the message names the input). Weights, the district name, the engine and the criteria document
        are checked by :func:`sdi.planning.site_selection`.
    """
    if not isinstance(data, dict):
        raise PlanningError("inputs: expected an object of named inputs")
    unknown = sorted(set(data) - set(_INPUTS))
    if unknown:
        raise PlanningError(f"unknown input {unknown[0]!r}; expected some of: {', '.join(_INPUTS)}")
    out: dict[str, Any] = {name: data.get(name) for name in _INPUTS}
    if out["district"] is not None and (not isinstance(out["district"], str) or not out["district"].strip()):
        raise PlanningError(f"district: expected a district name, got {out['district']!r}")
    if out["weights"] is not None and not isinstance(out["weights"], dict):
        raise PlanningError(f"weights: expected an object of score id → number, got {out['weights']!r}")
    area = out["min_area_m2"]
    if area is not None and (not _is_number(area) or area <= 0):
        raise PlanningError(f"min_area_m2: {area!r} is not a number > 0")
    if out["criteria"] is not None and not isinstance(out["criteria"], dict):
        raise PlanningError("criteria: expected a criteria document (an object)")
    limit = out["limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PlanningError(f"limit: {limit!r} is not an integer ≥ 1")
    return out


def with_min_area(criteria: dict[str, Any] | Criteria | None, min_m2: float) -> Criteria:
    """The criteria (``None``: the shipped model) with every ``min_area`` test set to ``min_m2`` square metres.

    Raises
    ------
    CriteriaError
        When the criteria are invalid or have no ``min_area`` test.
    """
    from sdi.planning.criteria import MinArea, load_criteria

    model = load_criteria(criteria)
    constraints = [c.model_copy(update={"any_of": [t.model_copy(update={"min_m2": float(min_m2)})
                                                   if isinstance(t, MinArea) else t for t in c.any_of]})
                   for c in model.constraints]
    if not any(isinstance(t, MinArea) for c in model.constraints for t in c.any_of):
        raise CriteriaError(f"min_area_m2: the criteria {model.id!r} have no min_area constraint to override")
    return model.model_copy(update={"constraints": constraints})


def feature_collection(sites: gpd.GeoDataFrame) -> dict[str, Any]:
    """Ranked sites (a GeoDataFrame in EPSG:2326) as a GeoJSON FeatureCollection in EPSG:4326, ids = site labels.

    Foreign members ``criteria`` and ``synthetic_layers`` say which model ran and which inputs are synthetic.
    """
    frame = sites.to_crs(WGS84).set_index("site", drop=False)
    doc: dict[str, Any] = json.loads(frame.to_json(na="null", drop_id=False))
    doc["criteria"] = sites.attrs.get("criteria")
    doc["synthetic_layers"] = list(sites.attrs.get("synthetic_layers", []))
    return doc


@dataclass(frozen=True)
class Prepared:
    """Checked inputs of one execution, ready to run."""

    criteria: Criteria
    district: str | None
    engine: str | None
    limit: int | None
    weights: dict[str, Any] | None
    scheduler: str | None


def prepare(inputs: object, *, published: Collection[str] | None = None, scheduler: str | None = None,
            local_dask: bool = False, settings: Settings | None = None) -> Prepared:
    """Check the inputs of an execution before any work starts.

    Parameters
    ----------
    inputs
        The ``inputs`` object of the execute request.
    published
        The layer ids the caller may read (``None``: no restriction); a criteria document naming another is
        refused, so the process reads nothing its collections do not publish.
    scheduler
        The dask scheduler executions may use; without one, ``engine: dask`` is refused (it would start a
        cluster inside the server) unless ``local_dask`` (the library and stock pygeoapi).
    settings
        When given, the criteria are also checked against that database (layers, columns, the district), so an
        asynchronous job is only started for inputs that can run.

    Raises
    ------
    PlanningError, ConfigError, LayerNotFoundError
        For invalid inputs (an unknown weight, criterion or unpublished layer included).
    """
    from sdi.planning.criteria import load_criteria

    args = validate_inputs(inputs)
    criteria = load_criteria(args["criteria"])
    if args["min_area_m2"] is not None:
        criteria = with_min_area(criteria, args["min_area_m2"])
    if published is not None:
        hidden = [layer for layer in criteria.layers() if layer not in published]
        if hidden:
            raise LayerNotFoundError(f"criteria: no published layer {hidden[0]!r}")
    if args["engine"] == "dask" and scheduler is None and not local_dask:
        raise PlanningError("engine: dask runs only on a dask cluster configured for the server "
                            "(SDI_DASK_SCHEDULER); use postgis or geopandas")
    resolve_engine(args["engine"], [])
    weighted = criteria.with_weights(args["weights"])
    if settings is not None:
        from sdi.db import connect
        from sdi.planning.sites.plan import make_plan

        with connect(settings, autocommit=True) as conn:
            make_plan(conn, weighted, settings, district=args["district"])
    return Prepared(criteria, args["district"], args["engine"], args["limit"], args["weights"], scheduler)


def run_prepared(prepared: Prepared, settings: Settings) -> dict[str, Any]:
    """Run a prepared execution on ``settings``' database; the ranked sites as a FeatureCollection."""
    from sdi.planning import site_selection

    sites = site_selection(prepared.criteria, district=prepared.district, engine=prepared.engine,
                           settings=settings, limit=prepared.limit, weights=prepared.weights,
                           scheduler=prepared.scheduler)
    return feature_collection(sites)


def run(inputs: object, settings: Settings) -> dict[str, Any]:
    """Validate ``inputs``, run the site selection on ``settings``' database, return the FeatureCollection.

    Raises
    ------
    PlanningError, ConfigError, LayerNotFoundError
        For invalid inputs (an unknown district, weight, criterion or layer included).
    """
    return run_prepared(prepare(inputs, local_dask=True), settings)


class SiteSelectionProcessor(BaseProcessor):
    """pygeoapi processor of ``data-centre-site-selection``: the web worker's settings (its read-only role) when
    served by sdi, else ``SDI_*`` at execution time."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, copy.deepcopy(PROCESS_METADATA))  # pygeoapi pops keys from it
        self.runtime = processor_def.get("runtime")  #: the web worker's runtime when served by sdi
        self.failure: ProcessorExecuteError | None = None  #: why the last execution failed

    def execute(self, data: dict[str, Any], outputs: dict[str, Any] | None = None) -> tuple[str, Any]:
        """Run the site selection; answer ``("application/json", FeatureCollection)``.

        Raises
        ------
        ProcessorExecuteError
            With a one-line message and ``http_status_code``: 400 for an invalid input (unknown layers
            included), else the status of the :class:`~sdi.errors.SdiError` (503 for an unreachable
            database) or 500. The error is also kept in :attr:`failure` for the job manager.
        """
        try:
            settings = self.runtime.settings if self.runtime is not None else Settings()
            return "application/json", run(data, settings)
        except (PlanningError, ConfigError, LayerNotFoundError) as exc:
            raise self._fail(str(exc), HTTPStatus.BAD_REQUEST, "InvalidParameterValue") from exc
        except SdiError as exc:
            raise self._fail(str(exc), HTTPStatus(http_status(exc)), "NoApplicableCode") from exc
        except Exception as exc:  # a bug: the traceback goes to the server log, not to the client
            raise self._fail(f"internal error in {PROCESS_ID} ({type(exc).__name__}); see the server log",
                             HTTPStatus.INTERNAL_SERVER_ERROR, "NoApplicableCode") from exc

    def _fail(self, message: str, status: HTTPStatus, code: str) -> ProcessorExecuteError:
        error = ProcessorExecuteError(message, user_msg=message)
        error.http_status_code = status
        error.ogc_exception_code = code
        self.failure = error
        return error

    def __repr__(self) -> str:
        return f"<SiteSelectionProcessor> {self.name}"
