"""The one spec grammar: attacks, training methods and defenses split and read values the same way."""

from __future__ import annotations

import pytest

import attacks
import defenses
from aigrobust.specs import format_value, parse_value, split_spec
from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec


@pytest.mark.parametrize("value", [None, True, False, 0, 20, 0.1, 8 / 255, 1e-3, "l2", "prob"])
def test_every_value_formats_to_a_text_that_parses_back_to_it(value: object) -> None:
    assert parse_value(format_value(value)) == value and type(parse_value(format_value(value))) is type(value)


def test_fractions_auto_and_dashes_read_alike_for_every_owner() -> None:
    assert split_spec("pgd:rel-stepsize=auto,steps=5").settings == {"rel_stepsize": "auto", "steps": "5"}
    assert attacks.attack_from_spec("pgd:rel-stepsize=0.1").spec == attacks.attack_from_spec("pgd:rel_stepsize=0.1").spec
    assert inner_attack_from_spec("pgd:eps=8/255").eps == pytest.approx(8 / 255)
    assert inner_attack_from_spec("n-fgsm:step=auto").spec == inner_attack_from_spec("n-fgsm").spec
    assert defenses.parse_defense("jpeg:50+median:2").spec == "jpeg:50+median:2"


@pytest.mark.parametrize(("parse", "error", "what"), [
    (attacks.attack_from_spec, attacks.AttackSpecError, "attack"),
    (inner_attack_from_spec, InnerSpecError, "training"),
])
def test_a_setting_without_a_value_or_given_twice_is_one_line_from_every_owner(parse, error, what) -> None:
    with pytest.raises(error, match=f"^{what} setting 'steps' in 'pgd:steps' is not key=value$"):
        parse("pgd:steps")
    with pytest.raises(error, match=f"^{what} setting 'steps' is given twice in 'pgd:steps=3,steps=4'$"):
        parse("pgd:steps=3,steps=4")


def test_a_defense_takes_its_one_value_bare() -> None:
    with pytest.raises(defenses.DefenseSpecError, match="takes its one value bare"):
        defenses.parse_defense("jpeg:quality=75")
    with pytest.raises(defenses.DefenseSpecError, match="is not key=value"):
        defenses.parse_defense("jpeg:75,80")
