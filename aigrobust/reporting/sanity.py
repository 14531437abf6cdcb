"""Sanity checks for signs of gradient masking that read only the records (Athalye et al. 2018; Carlini et al.
2019; AutoAttack): monotone in epsilon, iterative at least as strong as single-step, black box not stronger than
white box. Each check yields a :class:`SanityFlag` with a one-sentence explanation, so reports show them as they
are; the probes that run the model are :mod:`aigrobust.checks.probes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from aigrobust.evaluation.metrics import format_eps, summarize
from attacks import attack_kind, attack_label, attack_role

WHITE_BOX = ("single-step", "iterative")  # the methods that follow the model's gradient
STATUS_OK, STATUS_WARN, STATUS_NA = "ok", "warn", "n/a"


@dataclass(frozen=True)
class SanityFlag:
    """One check's outcome for one model: ok, warn, or n/a (not testable from what was run)."""

    check: str
    model: str
    status: str
    sentence: str

    def as_dict(self) -> dict[str, str]:
        """Plain dict for JSON."""
        return asdict(self)


def percent(value: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100 * value:.1f}%"


def _points(difference: float) -> str:
    """A difference of two accuracies, in percentage points (a '%' would read as relative)."""
    return f"{100 * difference:.1f} points"


def record_checks(records: pd.DataFrame, monotone_tolerance: float = 0.005, iterative_tolerance: float = 0.01,
                  blackbox_tolerance: float = 0.03) -> list[SanityFlag]:
    """Checks that need only the records: monotone in epsilon, iterative >= single-step, black-box <= white-box."""
    flags: list[SanityFlag] = []
    summary = summarize(records[records["goal"] == "misclassify"], include_worst=False)
    if summary.empty:  # only attacks on the gates ran: nothing to compare accuracies by
        return [flag for model, rows in records.groupby("model", sort=False) for flag in _random_model_flag(model, rows)]
    # the checks compare kinds of attack ('pgd', 'square'), whatever their settings, grouped by the method each
    # attack's registration names (attacks no longer registered take part in none)
    specs = set(summary["attack"])
    kinds = {spec: attack_kind(spec) for spec in specs}
    methods = {spec: (role.method if (role := attack_role(spec)) is not None else "") for spec in specs}
    summary = summary.assign(attack_spec=summary["attack"], attack=summary["attack"].map(kinds),
                             method=summary["attack"].map(methods))
    for model, rows in summary.groupby("model", sort=False):
        flags += [_monotone_flag(model, rows, monotone_tolerance), _iterative_flag(model, rows, iterative_tolerance),
                  _blackbox_flag(model, rows, blackbox_tolerance)]
        flags += _random_model_flag(model, records[records["model"] == model])
    return flags


def _random_model_flag(model: str, records: pd.DataFrame) -> list[SanityFlag]:
    """Where judged draws of one input disagree, the model is random at test time: say so, and that EOT was used."""
    if "adv_draw_acc" not in records.columns:
        return []
    draws = records["adv_draw_acc"].to_numpy(dtype=float)
    split = float(((draws > 1e-9) & (draws < 1 - 1e-9)).mean())
    if split == 0:
        return []
    return [SanityFlag("random-model", model, STATUS_WARN,
                       f"The model is random at test time: {percent(split)} of the judged inputs are right in some draws "
                       "and wrong in others. Attack gradients averaged several draws (EOT, --eot-draws), and "
                       "robust_acc_draws / robust_every_draw give the accuracy over draws and the share right in "
                       "every draw; a single-draw robust_acc overstates robustness.")]


def _monotone_flag(model: str, rows: pd.DataFrame, tolerance: float) -> SanityFlag:
    """Robust accuracy never rises with epsilon, for any attack and setting."""

    worst_rise, where = 0.0, ""
    for key, curve in rows.groupby(["defense", "defense_grad", "attack_spec", "gate_grad"], sort=False):
        acc = curve.sort_values("epsilon")["robust_acc"].to_numpy()
        eps = curve.sort_values("epsilon")["epsilon"].to_numpy()
        for i in range(1, len(acc)):
            if acc[i] - acc[i - 1] > worst_rise:
                worst_rise = acc[i] - acc[i - 1]
                where = f"{attack_label(key[2])} ({key[0]}, {key[3]}) at eps {format_eps(float(eps[i]))}"
    if worst_rise > tolerance:
        return SanityFlag("monotone-in-epsilon", model, STATUS_WARN,
                          f"Robust accuracy rises by {_points(worst_rise)} with a larger epsilon for {where}: a stronger "
                          "attack should never do worse, so the attack is failing (masking?).")
    return SanityFlag("monotone-in-epsilon", model, STATUS_OK, "Robust accuracy never rises with epsilon for any attack.")


def _setting_words(defense: str, defense_grad: str, gate_grad: str) -> str:
    """'undefended' or 'jpeg:50 under bpda', with the gate gradient where the model has gates."""
    words = "undefended" if defense == "none" else f"{defense} under {defense_grad}"
    return words if gate_grad == "none" else f"{words}, {gate_grad} gate gradients"


def _largest_gap(rows: pd.DataFrame, weaker: Sequence[str], stronger: Sequence[str]) -> tuple[float, str]:
    """The largest excess of the stronger kind's best (lowest) accuracy over the weaker kind's, per setting."""
    gap, where = 0.0, ""
    for key, group in rows[rows["epsilon"] > 0].groupby(["defense", "defense_grad", "gate_grad", "epsilon"], sort=False):
        strong = group[group["attack"].isin(stronger)]["robust_acc"]
        weak = group[group["attack"].isin(weaker)]["robust_acc"]
        if len(strong) and len(weak) and strong.min() - weak.min() > gap:
            gap = float(strong.min() - weak.min())
            where = f"{_setting_words(*key[:3])} at eps {format_eps(float(key[3]))}"
    return gap, where


def _iterative_flag(model: str, rows: pd.DataFrame, tolerance: float) -> SanityFlag:
    """Iterative attacks at least as strong as single-step ones."""
    iterative, single = _kinds(rows, "iterative"), _kinds(rows, "single-step")
    if not (iterative and single):
        return SanityFlag("iterative-beats-single-step", model, STATUS_NA,
                          "Not testable: the run needs both a single-step and an iterative attack.")
    gap, where = _largest_gap(rows, single, iterative)
    if gap > tolerance:
        return SanityFlag("iterative-beats-single-step", model, STATUS_WARN,
                          f"Iterative attacks leave {_points(gap)} more accuracy than single-step ones ({where}): "
                          "iterative attacks should be stronger, so their gradients are likely masked.")
    return SanityFlag("iterative-beats-single-step", model, STATUS_OK,
                      "Iterative attacks are at least as strong as single-step ones.")


def _blackbox_flag(model: str, rows: pd.DataFrame, tolerance: float) -> SanityFlag:
    """The black-box attacks (Square) not beating the white-box ones."""
    black, white = _kinds(rows, "black-box"), [k for method in WHITE_BOX for k in _kinds(rows, method)]
    if not (black and white):
        return SanityFlag("blackbox-not-better", model, STATUS_NA,
                          "Not testable: the run needs the Square attack and a white-box attack.")
    named = "the black-box Square attack" if black == ["square"] else f"the black-box attacks ({', '.join(black)})"
    gap, where = _largest_gap(rows, black, white)
    if gap > tolerance:
        return SanityFlag("blackbox-not-better", model, STATUS_WARN,
                          f"{named[0].upper()}{named[1:]} leaves {_points(gap)} less accuracy than the best white-box "
                          f"attack ({where}): white-box gradients are masked.")
    return SanityFlag("blackbox-not-better", model, STATUS_OK,
                      f"{named[0].upper()}{named[1:]} does not beat the white-box attacks.")


def _kinds(rows: pd.DataFrame, method: str) -> list[str]:
    """The kinds of attack in ``rows`` whose registration names ``method``."""
    return sorted(set(rows.loc[rows["method"] == method, "attack"]))


def flags_table(flags: Sequence[SanityFlag]) -> pd.DataFrame:
    """Flags as a table (model, check, status, sentence)."""
    return pd.DataFrame([f.as_dict() for f in flags], columns=["check", "model", "status", "sentence"])
