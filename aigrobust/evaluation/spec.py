"""What an evaluation runs: the typed, canonical EvalSpec (attacks, epsilons, gate and defense settings, seed), the
models it runs on, epsilon parsing, and the run document written beside the records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from aigrobust.models.dynamic import DynamicNetwork
from aigrobust.models.gates import GateGrad, GateMode
from aigrobust.settings import eval_default
from attacks import NORM_NAMES, Attack, attack_from_spec
from defenses import DefenseGrad, NoDefense, parse_defense


def parse_epsilon(text: str | float) -> float:
    """'0.03', '8/255' or a number -> float in [0, 1]; anything else is a ValueError naming the value."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            value = float(Fraction(raw)) if "/" in raw else float(raw)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"epsilon {text!r} is not a number or a fraction like 8/255") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"epsilon {text!r} is outside [0, 1] (pixel units; 8/255 is accepted)")
    if 0.0 < value <= EPSILON_RESOLUTION:  # it would merge into the clean reference: nothing would be attacked
        raise ValueError(f"epsilon {text!r} is not above the resolution {EPSILON_RESOLUTION:g} (epsilons this close to 0 "
                         "are taken for 0); give 0 or a larger epsilon")
    return value

EPSILON_RESOLUTION = 1e-7  # epsilons closer than this are one epsilon ('8/255' and '0.031372549')

def with_zero(epsilons: Sequence[float]) -> tuple[float, ...]:
    """The sweep, sorted, with epsilon 0 always present (the clean reference) and equal epsilons merged."""
    merged: list[float] = []
    for eps in sorted({0.0, *map(float, epsilons)}):
        if not merged or eps - merged[-1] > EPSILON_RESOLUTION:
            merged.append(eps)
    return tuple(merged)

def refuse_repeated_attacks(texts: Sequence[str], attacks: Sequence[Attack]) -> None:
    """Two spellings of one attack ('pgd' and 'pgd:steps=20') would run it twice and merge its records: refused."""
    seen: dict[str, str] = {}
    for text, attack in zip(texts, attacks):
        if attack.spec in seen:
            raise ValueError(f"attack {text!r} repeats {seen[attack.spec]!r} (both are {attack.spec})")
        seen[attack.spec] = text

def refuse_mixed_norms(texts: Sequence[str], attacks: Sequence[Attack]) -> None:
    """Every epsilon applies to every attack, and the worst case, the tables and the sanity checks compare attacks
    at one epsilon: Linf and L2 attacks in one run would be compared across balls of different size. Refused."""
    by_norm: dict[str, str] = {}
    for text, attack in zip(texts, attacks):
        by_norm.setdefault(attack.distance.name, text)
    if len(by_norm) > 1:
        named = " and ".join(f"{text!r} ({NORM_NAMES.get(norm, norm)})" for norm, text in by_norm.items())
        raise ValueError(f"attacks {named} bound different norms, and every epsilon applies to every attack: run "
                         "the Linf and the L2 attacks as two runs")

@dataclass(frozen=True)
class ModelEntry:
    """A model to evaluate, under the name its records carry."""

    name: str
    model: DynamicNetwork
    source: str = ""

SPEC_FIELDS = ("attacks", "epsilons", "gate_grads", "gate_mode", "seed", "defenses", "defense_grads", "early_exit",
               "eot_draws", "judge_draws", "fold_batchnorm")
# written only where set: a run that does not fold keeps the run.json it always had
WRITTEN_WHEN_SET = ("fold_batchnorm",)

@dataclass(frozen=True)
class EvalSpec:
    """What to run: attack specs, epsilons, gate gradient modes, gate mode of the deployed network, seed (each
    setting's default and meaning: :mod:`aigrobust.settings`).

    Holds each attack and defense twice: as its spec text (what run.json stores and a resume compares) and as the
    object parsed from it, once, here or by the command line (``parsed_attacks``/``parsed_defenses``), so evaluation
    never parses a spec again. :meth:`to_dict` and :meth:`from_dict` are the only way to and from JSON.
    """

    attacks: tuple[str, ...]
    epsilons: tuple[float, ...]
    gate_grads: tuple[str, ...] = eval_default("gate_grads")
    gate_mode: str = eval_default("gate_mode")
    seed: int = eval_default("seed")
    defenses: tuple[str, ...] = eval_default("defenses")
    defense_grads: tuple[str, ...] = eval_default("defense_grads")
    early_exit: bool = eval_default("early_exit")
    # stochastic gates make the deployed model random: attack gradients average ``eot_draws`` draws (EOT) and each
    # clean and adversarial input is judged on ``judge_draws`` fresh draws (records: adv_draw_acc)
    eot_draws: int = eval_default("eot_draws")
    judge_draws: int = 10
    fold_batchnorm: bool = eval_default("fold_batchnorm")  # see aigrobust.settings and aigrobust.models.folding
    parsed_attacks: tuple[Attack, ...] = field(default=(), compare=False, repr=False)
    parsed_defenses: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", with_zero(self.epsilons))
        object.__setattr__(self, "gate_grads", tuple(str(GateGrad(g)) for g in self.gate_grads))
        mode = GateMode(self.gate_mode)
        if mode not in (GateMode.HARD, GateMode.STOCHASTIC):
            raise ValueError("the deployed network runs hard or stochastic gates")
        object.__setattr__(self, "gate_mode", str(mode))
        if not (isinstance(self.eot_draws, int) and self.eot_draws >= 1 and isinstance(self.judge_draws, int)
                and self.judge_draws >= 1):
            raise ValueError("eot_draws and judge_draws must be positive integers")
        if not self.attacks:
            raise ValueError("give at least one attack")
        if not self.parsed_attacks:
            object.__setattr__(self, "parsed_attacks", tuple(attack_from_spec(a) for a in self.attacks))
        elif len(self.parsed_attacks) != len(self.attacks):
            raise ValueError("parsed_attacks must hold one attack per spec")
        refuse_repeated_attacks(self.attacks, self.parsed_attacks)
        refuse_mixed_norms(self.attacks, self.parsed_attacks)
        self._settle_defenses()

    def _settle_defenses(self) -> None:
        parsed = self.parsed_defenses or tuple(parse_defense(d) for d in self.defenses)  # raises on bad specs
        if len(parsed) != len(self.defenses):
            raise ValueError("parsed_defenses must hold one defense per spec")
        by_name = {}
        for defense in parsed:
            by_name.setdefault(defense.name, defense)
        if "none" not in by_name:
            by_name = {"none": NoDefense(), **by_name}  # the reference row is always present
        object.__setattr__(self, "defenses", tuple(by_name))
        object.__setattr__(self, "parsed_defenses", tuple(by_name.values()))
        object.__setattr__(self, "defense_grads", tuple(str(DefenseGrad(g)) for g in self.defense_grads))
        if not self.defense_grads:
            raise ValueError("give at least one defense gradient (oblivious, bpda, diff or eot)")
        for defense in self.parsed_defenses:  # eot alone would drop a deterministic defense without a word
            if defense.name != "none" and not defense.randomized and set(self.defense_grads) <= {"eot"}:
                raise ValueError(f"defense {defense.name} is deterministic and eot averages draws of randomised "
                                 "defenses only: give it --defense-grad oblivious, bpda or diff")

    def defense(self, name: str) -> Any:
        """The parsed defense behind a name of :attr:`defenses`."""
        return self.parsed_defenses[self.defenses.index(name)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored beside the records, compared on resume). Attacks as their canonical specs, every
        setting filled in, so a later change of an attack's defaults cannot change what a stored run means."""
        data = {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in SPEC_FIELDS}
        data["attacks"] = [attack.spec for attack in self.parsed_attacks]
        for name in WRITTEN_WHEN_SET:
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSpec:
        """The spec a :meth:`to_dict` document describes (its attack and defense specs parsed once)."""
        return cls(**{name: (tuple(data[name]) if isinstance(data[name], list) else data[name])
                      for name in SPEC_FIELDS if name in data})
