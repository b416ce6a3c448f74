"""Declarative site selection: screen candidate sites against hard constraints, then score and rank them.

:func:`site_selection` runs a criteria model (default: the shipped data-centre model) on one of three
engines that give the same answer: ``postgis`` (one SQL statement), ``geopandas`` (in memory, STRtree)
or ``dask`` (the geopandas logic on spatial partitions). Scoring, explanations and ranking are shared
(:mod:`sdi.planning.sites.scoring`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdi.db import connect
from sdi.errors import PlanningError
from sdi.planning.criteria import Criteria, load_criteria
from sdi.planning.result import SiteSelectionResult
from sdi.planning.sites.plan import make_plan
from sdi.planning.sites.scoring import finish
from sdi.planning.sources import resolve_engine
from sdi.settings import Settings

__all__ = ["site_selection"]


def site_selection(criteria: str | Path | Mapping[str, Any] | Criteria | None = None, *, district: str | None = None,
                   engine: str | None = None, settings: Settings | None = None, limit: int | None = None,
                   weights: Mapping[str, Any] | None = None, scheduler: str | None = None) -> SiteSelectionResult:
    """Screen, score and rank candidate sites.

    Parameters
    ----------
    criteria
        ``None`` for the shipped data-centre model, a path to a criteria YAML file, a mapping with
        the same keys, or a :class:`~sdi.planning.criteria.Criteria`.
    district
        Keep only sites whose centroid lies in this district: its English or Chinese name, any case
        (``"kwun tong"``, ``"觀塘區"``, ``"觀塘"``).
    engine
        ``"postgis"`` (default), ``"geopandas"`` or ``"dask"``; all give the same result.
    settings
        Settings naming the database and data folder (default: read from ``SDI_*`` variables).
    limit
        Keep the ``limit`` best-ranked sites.
    weights
        Score weights to override, by score id (``{"mtr": 2}``).
    scheduler
        Address of a dask scheduler for the ``dask`` engine (``None``: a local cluster).

    Returns
    -------
    SiteSelectionResult
        The passing sites in EPSG:2326, best first: ``rank`` (1..n), ``site`` (the candidate label),
        ``score`` (0-100, 6 decimals), ``district``, ``area_m2``, one ``why_<id>`` sentence per
        constraint and score, one ``score_<id>`` (0..1, NaN when not scored) per score, ``geometry``.
        ``attrs``: ``criteria`` (id), ``criteria_title`` (``{"en", "zh"}``), ``district``, ``layers`` (the
        input layer ids) and ``synthetic_layers`` (those the catalogue marks synthetic).

    Raises
    ------
    CriteriaError
        When the criteria or the weights are invalid.
    LayerNotFoundError
        When a layer the criteria use is not loaded.
    PlanningError
        When the engine, district or limit is invalid, or a column named in the criteria is missing.
    """
    model = load_criteria(criteria).with_weights(weights)
    chosen = resolve_engine(engine, [])
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise PlanningError(f"limit: {limit!r} is not a non-negative whole number")
    settings = settings if settings is not None else Settings()
    with connect(settings, autocommit=True) as conn:
        plan = make_plan(conn, model, settings, district=district)
        layers = sorted(model.layers())
        synthetic = [r[0] for r in conn.execute(
            "select id from sdi.layer where synthetic and id = any(%s) order by id", (layers,)).fetchall()]
        if chosen == "postgis":
            from sdi.planning.sites.postgis_engine import screen

            raw = screen(conn, plan)
        elif chosen == "geopandas":  # the dask engine's tasks read the layers themselves
            from sdi.planning.sites.frame_engine import read_inputs

            inputs = read_inputs(conn, plan)
    if chosen == "geopandas":
        from sdi.planning.sites.frame_engine import screen_frame

        raw = screen_frame(inputs)
    elif chosen == "dask":
        from sdi.planning.sites.dask_engine import screen_dask

        raw = screen_dask(plan, settings, scheduler=scheduler)
    result = finish(plan, raw, limit=limit)
    result.attrs.update(criteria_title=model.title.model_dump(), layers=layers, synthetic_layers=synthetic)
    return result

