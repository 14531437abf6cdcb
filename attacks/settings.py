"""The rules every attack setting is checked against, wherever it appears (native attacks and foolbox's alike): a
check and its wording per setting, and a type check from a constructor's default."""

from __future__ import annotations

from typing import Any

from aigrobust.specs import Rule, finite_number, positive_int
from attacks.distances import DISTANCES

# What each setting takes, wherever it appears (native attacks and foolbox's alike): a check and its wording.
SETTING_RULES: dict[str, Rule] = {
    "steps": (lambda v: positive_int(v) and v <= 100_000, "a positive integer up to 100000"),
    "restarts": (lambda v: positive_int(v) and v <= 1000, "a positive integer up to 1000"),
    "n_queries": (lambda v: positive_int(v) and v <= 10_000_000, "a positive integer up to 10000000"),
    "n_target_classes": (lambda v: positive_int(v) and v <= 1000, "a positive integer up to 1000"),
    "eta": (lambda v: finite_number(v) and v >= 1, "a number >= 1"),
    "beta": (lambda v: finite_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "alpha_max": (lambda v: finite_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "loss": (lambda v: v in ("ce", "dlr"), "ce or dlr"),
    "eot_draws": (lambda v: positive_int(v) and v <= 10_000, "a positive integer up to 10000"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
    "rel_stepsize": (lambda v: finite_number(v) and v > 0, "a number > 0"),
    "abs_stepsize": (lambda v: finite_number(v) and v > 0, "a number > 0"),
    "stepsize": (lambda v: finite_number(v) and v > 0, "a number > 0"),
    "p_init": (lambda v: finite_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "rho": (lambda v: finite_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "alpha": (lambda v: finite_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "decay": (lambda v: finite_number(v) and v >= 0, "a number >= 0"),
    "label_weight": (lambda v: finite_number(v) and v >= 0, "a number >= 0"),
    "random_start": (lambda v: isinstance(v, bool), "true or false"),
    "keep_label": (lambda v: isinstance(v, bool), "true or false"),
    "stop_at_success": (lambda v: isinstance(v, bool), "true or false"),
    "distance": (lambda v: v in DISTANCES, " or ".join(DISTANCES)),
}


def rule_from_default(default: Any) -> Rule | None:
    """A type check from a constructor default (foolbox settings without a rule of ours)."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool), "true or false")
    if isinstance(default, int):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    if isinstance(default, float):
        return (finite_number, "a finite number")
    return None
