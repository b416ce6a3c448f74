"""Scores, explanations and ranks of the sites that passed, shared by every engine.

The engines return the same *raw* frame (one row per passing site: ``_pk``, ``site``, ``area_m2``,
``cx``/``cy`` (centroid), ``district``, ``geometry`` and the raw columns named in
:mod:`sdi.planning.sites.plan`); :func:`finish` turns it into the ranked result, so scores and
explanation sentences are computed by one piece of code whatever the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from sdi.errors import PlanningError
from sdi.planning.criteria import AreaScore, Contains, DistanceTo, ExcludeWithin, InZone, MinArea, SlopeScore, Test
from sdi.planning.result import SiteSelectionResult
from sdi.planning.sites.plan import Plan, member_key, score_key
from sdi.planning.sites.slope import slope_at

HK_GRID = 2326
DECIMALS = 6


def linear(values: np.ndarray, full: float, zero: float) -> np.ndarray:
    """Score values linearly: 1 at ``full``, 0 at ``zero``, clipped to [0, 1]; NaN scores 0."""
    scores = np.clip((np.asarray(values, dtype="float64") - zero) / (full - zero), 0.0, 1.0)
    return np.where(np.isnan(scores), 0.0, scores)


def text(value: object) -> str:
    """A feature attribute as text (whole floats without ``.0``, missing as ``(unnamed)``)."""
    if type(value) is str:  # the usual case, first
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "(unnamed)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _metres(value: float) -> str:
    return f"{round(value):,} m"


def _square_metres(value: float) -> str:
    return f"{round(value):,} m²"


def _member_texts(test: Test, raw: pd.DataFrame, key: Callable[[str], str]) -> list[str]:
    """The explanation of one constraint member for every row (meaningful where the member passed)."""
    n = len(raw)
    if isinstance(test, InZone | Contains):
        labels = [text(v) for v in raw[key("label")]]
        if isinstance(test, Contains):
            prefix = test.name or f"contains {test.layer} feature"
            return [f"{prefix} {lab}" for lab in labels]
        prefix = test.name or f"in {test.layer}"
        values = [f" {text(v)}" for v in raw[key("value")]] if test.where else [""] * n
        return [f"{prefix}{v} ({lab})" for v, lab in zip(values, labels, strict=True)]
    if isinstance(test, ExcludeWithin):
        return [f"no {test.noun} within {test.distance_m:,g} m"] * n
    assert isinstance(test, MinArea)
    return [f"area {_square_metres(a)} ≥ {_square_metres(test.min_m2)}" for a in raw["area_m2"].tolist()]


def _constraint_texts(plan: Plan, raw: pd.DataFrame) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for con in plan.criteria.constraints:
        members = [_member_texts(t, raw, partial(member_key, con.id, k)) for k, t in enumerate(con.any_of)]
        if len(members) == 1:
            out[con.id] = members[0]
            continue
        ok = np.column_stack([raw[member_key(con.id, k, "ok")].fillna(False).to_numpy(dtype=bool)
                              for k in range(len(members))])
        if len(raw) and not ok.any(axis=1).all():  # engines return passing sites only
            raise PlanningError(f"constraints.{con.id}: a site that failed it was returned")
        first = ok.argmax(axis=1)  # the first member that passed explains the pass
        out[con.id] = [members[k][i] for i, k in enumerate(first)]
    return out


def _shares(scores: np.ndarray, weight: float) -> list[str]:
    """``"<score> × weight <w>"`` for each score."""
    tail = f" × weight {weight:g}"
    return [f"{x:.2f}{tail}" for x in scores.tolist()]


def _scores(plan: Plan, raw: pd.DataFrame) -> tuple[dict[str, np.ndarray | None], dict[str, list[str]]]:
    """Each score's 0..1 values (``None`` when it cannot be scored) and its explanations.

    The sentences are formatted from Python floats (``tolist``): the same text as from numpy
    scalars, several times faster.
    """
    values: dict[str, np.ndarray | None] = {}
    texts: dict[str, list[str]] = {}
    for s in plan.criteria.scores:
        if isinstance(s, DistanceTo):
            dist = raw[score_key(s.id, "dist")].to_numpy(dtype="float64")
            v = linear(dist, *s.anchors)
            labels = raw[score_key(s.id, "label")].tolist()
            texts[s.id] = [f"no {s.noun} found → {x}" if math.isnan(d) else
                           f"nearest {s.noun} '{text(lab)}' {_metres(d)} → {x}"
                           for d, lab, x in zip(dist.tolist(), labels, _shares(v, s.weight), strict=True)]
        elif isinstance(s, AreaScore):
            area = raw["area_m2"].to_numpy(dtype="float64")
            v = linear(area, *s.anchors)
            texts[s.id] = [f"area {_square_metres(a)} → {x}"
                           for a, x in zip(area.tolist(), _shares(v, s.weight), strict=True)]
        else:
            assert isinstance(s, SlopeScore)
            path = plan.rasters.get(s.id)
            if path is None:
                values[s.id], texts[s.id] = None, [f"no DEM loaded: not scored (raster {s.raster!r})"] * len(raw)
                continue
            deg = slope_at(path, raw["cx"].to_numpy(), raw["cy"].to_numpy())
            v = linear(deg, *s.anchors)
            texts[s.id] = [f"no DEM value at the site → {x}" if math.isnan(d) else f"slope {d:.1f}° → {x}"
                           for d, x in zip(deg.tolist(), _shares(v, s.weight), strict=True)]
        values[s.id] = v
    return values, texts


def finish(plan: Plan, raw: pd.DataFrame, *, limit: int | None = None) -> SiteSelectionResult:
    """Score, explain and rank the passing sites; keep the top ``limit``.

    The total is ``100 * sum(w * s) / sum(w)`` over the scores that could be computed (a slope
    score without its DEM is left out and the other weights renormalised), rounded to 6 decimals;
    ranks follow the total (highest first), ties broken by the site label, then the primary key.

    Raises
    ------
    PlanningError
        When no score can be computed (every weighted score is unavailable).
    """
    raw = raw.reset_index(drop=True)
    values, score_texts = _scores(plan, raw)
    weights = {s.id: s.weight for s in plan.criteria.scores if values[s.id] is not None}
    if sum(weights.values()) <= 0:
        raise PlanningError("scores: no weighted score can be computed (is the DEM loaded?)")
    total = np.zeros(len(raw))
    for sid, weight in weights.items():
        total += weight * np.asarray(values[sid])
    score = np.round(100.0 * total / sum(weights.values()), DECIMALS)
    frame = pd.DataFrame({"site": raw["site"].to_numpy(), "score": score, "district": raw["district"].to_numpy(),
                          "area_m2": raw["area_m2"].to_numpy(dtype="float64"), "_pk": raw["_pk"].to_numpy()})
    for cid, texts in _constraint_texts(plan, raw).items():
        frame[f"why_{cid}"] = texts
    for sid, texts in score_texts.items():
        frame[f"why_{sid}"] = texts
    for sid, v in values.items():
        frame[f"score_{sid}"] = np.nan if v is None else np.round(v, DECIMALS)
    frame["geometry"] = raw["geometry"].to_numpy()
    frame = frame.assign(_label=frame["site"].map(text)).sort_values(
        ["score", "_label", "_pk"], ascending=[False, True, True], kind="mergesort")
    if limit is not None:
        frame = frame.head(limit)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1, dtype="int64"))
    frame = frame.drop(columns=["_label", "_pk"]).reset_index(drop=True)
    result = SiteSelectionResult(frame, geometry="geometry", crs=HK_GRID)
    result.attrs["criteria"] = plan.criteria.id
    result.attrs["district"] = plan.district
    return result
