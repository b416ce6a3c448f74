"""Criteria files: the shipped model validates, bad files fail with one line naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sdi.errors import CriteriaError, PlanningError
from sdi.planning.criteria import DEFAULT_CRITERIA, Constraint, Criteria, InZone, load_criteria, parse_criteria
from tests.conftest import LAYERS
from tests.planning.conftest import CRITERIA


def test_shipped_model_loads_and_names_real_or_defined_layers() -> None:
    criteria = load_criteria()
    assert criteria.id == "data-centre" and criteria.title.zh
    assert [c.id for c in criteria.constraints] == ["zoning", "min_area", "flood", "landslide", "oil_depots",
                                                    "country_parks", "conservation"]
    assert [s.id for s in criteria.scores] == ["substation", "mtr", "area", "slope"]
    assert [s.weight for s in criteria.scores] == [3, 1, 2, 1]
    zoning = criteria.constraints[0]
    assert [t.type for t in zoning.any_of] == ["in_zone", "contains"]
    zone = zoning.any_of[0]
    assert isinstance(zone, InZone) and zone.where is not None and zone.where.in_ == ["I", "OU(B)", "B"]
    # the real layers it reads have a layer definition in the repository
    for layer in ("districts_18", "industrial_special_waivers", "landslide_incidents", "oil_storage_installations"):
        assert layer in criteria.vector_layers()
        assert (LAYERS / f"{layer}.yml").exists()
    assert criteria.layers() == [*criteria.vector_layers(), "synthetic_dem"]  # the slope score's raster last


def test_shipped_model_explains_its_rules() -> None:
    text = DEFAULT_CRITERIA.read_text(encoding="utf-8")
    for phrase in ("Tseung Kwan O", "special waiver", "SYNTHETIC", "Green Belt"):
        assert phrase in text


def test_path_dict_and_model_give_the_same_criteria() -> None:
    from_path = load_criteria(DEFAULT_CRITERIA)
    from_dict = load_criteria(yaml.safe_load(DEFAULT_CRITERIA.read_text(encoding="utf-8")))
    assert from_path == from_dict == load_criteria(from_path) == load_criteria(str(DEFAULT_CRITERIA))


def test_single_test_is_a_constraint_of_one_member() -> None:
    con = Constraint.model_validate({"id": "min_area", "type": "min_area", "min_m2": 10})
    assert len(con.any_of) == 1 and con.any_of[0].type == "min_area"


@pytest.mark.parametrize(("name", "message"), [
    ("bad_unknown_type.yml", r"constraints\[0\]\.type: unknown criterion type 'in_ozp_zone' \(known: .*'in_zone'"),
    ("bad_weight.yml", r"scores\[1\]\.weight: 'heavy' is not a number"),
    ("bad_duplicate_id.yml", r"scores\[0\]\.id: duplicate id 'flood'"),
    ("bad_unknown_key.yml", r"constraints\[0\]\.distance: unknown key"),
    ("bad_where.yml", r"constraints\[0\]\.any_of\[0\]\.where: give exactly one of 'in', 'contains'"),
    ("bad_syntax.yml", r"not valid YAML at line \d"),
    ("no_such_file.yml", r"no such criteria file"),
])
def test_bad_file_names_file_and_key(name: str, message: str) -> None:
    path = CRITERIA / name
    with pytest.raises(CriteriaError) as err:
        load_criteria(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert re.search(message, text), text
    assert isinstance(err.value, PlanningError) and isinstance(err.value, ValueError)


def _shipped() -> dict[str, object]:
    data = yaml.safe_load(DEFAULT_CRITERIA.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("change", "message"), [
    ({"scores": []}, r"criteria: scores: List should have at least 1 item"),
    ({"scores": [{"id": "area", "type": "area", "weight": True, "full_at_m2": 1, "zero_at_m2": 0}]},
     r"scores\[0\]\.weight: True is not a number"),
    ({"scores": [{"id": "area", "type": "area", "weight": 0, "full_at_m2": 1, "zero_at_m2": 0}]},
     r"at least one weight must be positive"),
    ({"scores": [{"id": "area", "type": "area", "weight": 1, "full_at_m2": 5, "zero_at_m2": 5}]},
     r"scores\[0\]: the full and zero anchors are equal"),
    ({"scores": [{"id": "Area score", "type": "area", "weight": 1, "full_at_m2": 5, "zero_at_m2": 0}]},
     r"scores\[0\]\.id: String should match pattern"),
    ({"constraints": [{"id": "x", "type": "exclude_within", "layer": "a", "distance_m": -1}]},
     r"constraints\[0\]\.distance_m: Input should be greater than or equal to 0"),
    ({"constraints": [{"id": "x", "layer": "a"}]}, r"constraints\[0\]\.any_of: Field required"),
    ({"candidates": {"layer": "synthetic_lots"}}, r"candidates\.label: Field required"),
    ({"colour": "red"}, r"colour: unknown key"),
])
def test_bad_mapping(change: dict[str, object], message: str) -> None:
    with pytest.raises(CriteriaError, match=message):
        parse_criteria({**_shipped(), **change})


def test_not_a_mapping(tmp_path: Path) -> None:
    listing = tmp_path / "list.yml"
    listing.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(CriteriaError, match=f"{listing}: expected a mapping of keys, got list"):
        load_criteria(listing)
    with pytest.raises(CriteriaError, match="criteria: expected a path, a mapping of keys or a Criteria, got list"):
        load_criteria([1, 2])  # type: ignore[arg-type]


def test_weights_override_copies_and_checks() -> None:
    criteria = load_criteria()
    heavier = criteria.with_weights({"mtr": 5, "slope": 0})
    assert {s.id: s.weight for s in heavier.scores} == {"substation": 3, "mtr": 5, "area": 2, "slope": 0}
    assert criteria.scores[1].weight == 1  # the original is unchanged
    assert criteria.with_weights(None) is criteria


@pytest.mark.parametrize(("weights", "message"), [
    ({"power": 2}, r"weights: unknown score id 'power' \(scores: substation, mtr, area, slope\)"),
    ({"mtr": "heavy"}, r"weights\.mtr: 'heavy' is not a number"),
    ({"mtr": None}, r"weights\.mtr: None is not a number"),
    ({"mtr": float("nan")}, r"weights\.mtr: nan is not a number"),
    ({"mtr": -1}, r"weights\.mtr: -1 is negative"),
    ({"substation": 0, "mtr": 0, "area": 0, "slope": 0}, r"weights: at least one weight must be positive"),
    (["mtr"], r"weights: expected a mapping"),
])
def test_bad_weights(weights: object, message: str) -> None:
    with pytest.raises(CriteriaError, match=message):
        load_criteria().with_weights(weights)  # type: ignore[arg-type]


def test_criteria_is_immutable() -> None:
    criteria = load_criteria()
    with pytest.raises(ValueError, match="frozen"):
        criteria.id = "x"  # type: ignore[misc]
    assert isinstance(criteria, Criteria)


def test_good_fixture() -> None:
    criteria = load_criteria(CRITERIA / "good_minimal.yml")
    assert criteria.constraints == [] and criteria.districts is None
    assert criteria.vector_layers() == ["crit_lots"]
