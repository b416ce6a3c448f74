"""Site-selection criteria: the YAML file (or dict) that says which sites pass and how they are scored.

A criteria document names the candidate layer, the hard *constraints* every site must pass and the
weighted *scores* that rank the sites that pass. :func:`load_criteria` validates it into a
:class:`Criteria` model; every problem is a :class:`~sdi.errors.CriteriaError` whose one-line
message names the file and the key (``criteria.yml: scores[1].weight: 'heavy' is not a number``).
The shipped model is ``sdi/planning/criteria/data_centre.yml``.

Every test or score that reads a layer also takes two optional keys for its explanation sentence:
``name`` (what a matching feature is called, e.g. ``"flood-prone area"``; default: the layer id)
and ``label`` (the column naming the feature, e.g. ``zone_id``; default: the primary key).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sdi.errors import CriteriaError
from sdi.yamlfile import read_yaml

#: The shipped data-centre screening model (used when no criteria are given).
DEFAULT_CRITERIA = Path(__file__).resolve().parent / "criteria" / "data_centre.yml"

Number = Annotated[float, Field(strict=True)]  # an int or a float; never a string or a bool
Id = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
#: Bounds on a criteria document, so that one model cannot make unbounded work (each test is a query).
MAX_CONSTRAINTS, MAX_ALTERNATIVES, MAX_SCORES, MAX_VALUES = 30, 20, 20, 200


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LocalText(_Model):
    """A title in English and (optionally) Chinese."""

    en: str = Field(max_length=500)
    zh: str | None = Field(None, max_length=500)


class Where(_Model):
    """A filter on a layer's features: ``in`` a list, ``contains`` a text (case-insensitive), ``min``/``max``."""

    column: Name
    in_: list[Annotated[str, Field(max_length=200)] | int | float] | None = Field(
        None, alias="in", min_length=1, max_length=MAX_VALUES)
    contains: Name | None = None
    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Where:
        kinds = [k for k, v in (("in", self.in_), ("contains", self.contains)) if v is not None]
        if self.min is not None or self.max is not None:
            kinds.append("min/max")
        if len(kinds) != 1:
            raise ValueError("give exactly one of 'in', 'contains', or 'min'/'max'")
        return self


class LayerTest(_Model):
    """A criterion that reads a vector layer: its features, filtered by ``where``, named by ``label``."""

    layer: Name
    where: Where | None = None
    label: Name | None = None  #: column naming a feature in explanations (default: its primary key)
    name: Name | None = None  #: what a feature is called in explanations (default: the layer id)

    @property
    def noun(self) -> str:
        """What a matching feature is called in explanations."""
        return self.name or self.layer


class InZone(LayerTest):
    """Pass when the site's centroid lies in a matching feature (a zone)."""

    type: Literal["in_zone"]


class Contains(LayerTest):
    """Pass when the site polygon covers a matching (point) feature."""

    type: Literal["contains"]


class ExcludeWithin(LayerTest):
    """Fail when the site is within ``distance_m`` of a matching feature (0 = touches or overlaps)."""

    type: Literal["exclude_within"]
    distance_m: Number = Field(ge=0)


class MinArea(_Model):
    """Pass when the site's area is at least ``min_m2`` square metres."""

    type: Literal["min_area"]
    min_m2: Number = Field(gt=0)


Test = Annotated[InZone | Contains | ExcludeWithin | MinArea, Field(discriminator="type")]
TEST_TYPES = ("in_zone", "contains", "exclude_within", "min_area")


class Constraint(_Model):
    """A hard constraint: the site must pass any one of ``any_of`` (a single test is a list of one)."""

    id: Id
    any_of: list[Test] = Field(min_length=1, max_length=MAX_ALTERNATIVES)

    @model_validator(mode="before")
    @classmethod
    def _single(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "any_of" not in data and "type" in data:
            rest = {k: v for k, v in data.items() if k != "id"}
            return {"id": data.get("id"), "any_of": [rest]}
        return data


class _Score(_Model):
    id: Id
    weight: Number = Field(ge=0)


class DistanceTo(_Score, LayerTest):
    """Score by the distance from the site to the nearest matching feature (1 at ``full_at_m``, 0 at ``zero_at_m``)."""

    type: Literal["distance_to"]
    full_at_m: Number = Field(ge=0)
    zero_at_m: Number = Field(ge=0)

    @property
    def anchors(self) -> tuple[float, float]:
        """The (full, zero) anchors of the linear score."""
        return self.full_at_m, self.zero_at_m


class AreaScore(_Score):
    """Score by the site's area (1 at ``full_at_m2``, 0 at ``zero_at_m2``)."""

    type: Literal["area"]
    full_at_m2: Number = Field(ge=0)
    zero_at_m2: Number = Field(ge=0)

    @property
    def anchors(self) -> tuple[float, float]:
        """The (full, zero) anchors of the linear score."""
        return self.full_at_m2, self.zero_at_m2


class SlopeScore(_Score):
    """Score by the DEM slope at the site's centroid in degrees; not scored when the raster is not loaded."""

    type: Literal["slope"]
    raster: Name
    full_at_deg: Number = Field(ge=0, le=90)
    zero_at_deg: Number = Field(ge=0, le=90)

    @property
    def anchors(self) -> tuple[float, float]:
        """The (full, zero) anchors of the linear score."""
        return self.full_at_deg, self.zero_at_deg


Score = Annotated[DistanceTo | AreaScore | SlopeScore, Field(discriminator="type")]
SCORE_TYPES = ("distance_to", "area", "slope")


class Candidates(_Model):
    """The candidate sites: every row of ``layer``, named by its ``label`` column."""

    layer: Name
    label: Name


class Districts(_Model):
    """The districts layer used for the ``district`` column and filter, with its name columns."""

    layer: Name
    name: Name
    name_zh: Name | None = None


class Criteria(_Model):
    """A validated site-selection model: candidates, hard constraints and weighted scores."""

    id: Name
    title: LocalText
    candidates: Candidates
    districts: Districts | None = None
    constraints: list[Constraint] = Field(default_factory=list, max_length=MAX_CONSTRAINTS)
    scores: list[Score] = Field(min_length=1, max_length=MAX_SCORES)

    @model_validator(mode="after")
    def _checks(self) -> Criteria:
        seen: set[str] = set()
        for kind, items in (("constraints", self.constraints), ("scores", self.scores)):
            for i, item in enumerate(items):
                if item.id in seen:
                    raise ValueError(f"{kind}[{i}].id: duplicate id {item.id!r} (ids name the why_ columns)")
                seen.add(item.id)
        for i, score in enumerate(self.scores):
            full, zero = score.anchors
            if full == zero:
                raise ValueError(f"scores[{i}]: the full and zero anchors are equal ({full:g})")
        if sum(s.weight for s in self.scores) <= 0:
            raise ValueError("scores: at least one weight must be positive")
        return self

    def vector_layers(self) -> list[str]:
        """Ids of the vector layers the model reads (candidates first, then in order of use)."""
        ids = [self.candidates.layer]
        if self.districts:
            ids.append(self.districts.layer)
        tests = [t for c in self.constraints for t in c.any_of] + list(self.scores)
        ids += [t.layer for t in tests if isinstance(t, LayerTest)]
        return list(dict.fromkeys(ids))

    def layers(self) -> list[str]:
        """Ids of every layer the model reads: :meth:`vector_layers`, then the rasters of its slope scores."""
        rasters = [s.raster for s in self.scores if isinstance(s, SlopeScore)]
        return list(dict.fromkeys([*self.vector_layers(), *rasters]))

    def with_weights(self, weights: Mapping[str, Any] | None, *, where: str = "weights") -> Criteria:
        """Return a copy with some score weights replaced.

        Raises
        ------
        CriteriaError
            When an id is not a score id, a weight is not a non-negative number, or all weights are zero.
        """
        if not weights:
            return self
        if not isinstance(weights, Mapping):
            raise CriteriaError(f"{where}: expected a mapping of score id to weight, got {type(weights).__name__}")
        known = {s.id: i for i, s in enumerate(self.scores)}
        scores = list(self.scores)
        for key, value in weights.items():
            if key not in known:
                raise CriteriaError(f"{where}: unknown score id {key!r} (scores: {', '.join(known)})")
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise CriteriaError(f"{where}.{key}: {value!r} is not a number")
            if value < 0:
                raise CriteriaError(f"{where}.{key}: {value!r} is negative")
            scores[known[key]] = scores[known[key]].model_copy(update={"weight": float(value)})
        if sum(s.weight for s in scores) <= 0:
            raise CriteriaError(f"{where}: at least one weight must be positive")
        return self.model_copy(update={"scores": scores})


_TAGS = set(TEST_TYPES) | set(SCORE_TYPES)


def _key(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    constraints = data.get("constraints")
    if (len(loc) > 3 and loc[0] == "constraints" and loc[2:4] == ("any_of", 0) and isinstance(constraints, list)
            and isinstance(loc[1], int) and isinstance(constraints[loc[1]], Mapping)
            and "any_of" not in constraints[loc[1]]):
        loc = loc[:2] + loc[4:]  # a single test is stored as any_of: [test]; name the key as written
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in _TAGS:
            continue  # the discriminator tag pydantic inserts after a list index
        else:
            out += f".{'in' if part == 'in_' else part}" if out else str(part)
    return out or "(top level)"


def _loc(err: Any) -> tuple[int | str, ...]:
    loc = tuple(err["loc"])
    return (*loc, "type") if err["type"] in ("union_tag_invalid", "union_tag_not_found") else loc


def _message(err: Any) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("float_type", "float_parsing", "int_type", "int_parsing"):
        return f"{value!r} is not a number"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown criterion type {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return "missing"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return str(err["msg"])


def _format(where: str, exc: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        key, message = _key(_loc(err), data), _message(err)
        # model-level checks already name their key ("scores[1].id: ...")
        lines.append(f"{where}: {message}" if not err["loc"] and ":" in message else f"{where}: {key}: {message}")
    return "; ".join(dict.fromkeys(lines))


def parse_criteria(data: Any, *, where: str = "criteria") -> Criteria:
    """Validate a mapping as a :class:`Criteria` model.

    Raises
    ------
    CriteriaError
        One line per problem, each naming ``where`` and the key.
    """
    if not isinstance(data, Mapping):
        raise CriteriaError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return Criteria.model_validate(dict(data))
    except ValidationError as exc:
        raise CriteriaError(_format(where, exc, data)) from exc


def load_criteria(source: str | Path | Mapping[str, Any] | Criteria | None = None) -> Criteria:
    """Load site-selection criteria from a YAML file, a mapping, or return a model as is.

    Parameters
    ----------
    source
        ``None`` for the shipped data-centre model (:data:`DEFAULT_CRITERIA`), a path to a YAML
        file, a mapping with the same keys, or an already validated :class:`Criteria`.

    Returns
    -------
    Criteria
        The validated model.

    Raises
    ------
    CriteriaError
        When the file cannot be read, is not YAML, or a key is missing, unknown or of the wrong type;
        the message names the file and the key.
    """
    if isinstance(source, Criteria):
        return source
    if isinstance(source, Mapping):
        return parse_criteria(source)
    if source is not None and not isinstance(source, str | Path):
        raise CriteriaError(f"criteria: expected a path, a mapping of keys or a Criteria, got {type(source).__name__}")
    path = Path(source) if source is not None else DEFAULT_CRITERIA
    where = str(source) if source is not None else path.name
    data = read_yaml(path, where=where, error=CriteriaError, missing=CriteriaError, what="criteria file")
    return parse_criteria(data, where=where)
