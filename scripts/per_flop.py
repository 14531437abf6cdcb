"""Robustness per FLOP at equal compute: each gated model against the line through the robust plain models.

The line: at each cost the most robust plain model (a plain model runs every block of every image, so its FLOPs are
one number), joined between costs. A gated model at FLOPs ``f`` between two plain costs ``f1 < f2`` is compared with
the line there, ``w * plain1 + (1 - w) * plain2`` with ``w = (f2 - f) / (f2 - f1)``, image by image: the difference is
the gated model's per-image robust flag minus that blend of the two plain models' flags on the same image, so the
paired bootstrap keeps the images' pairing. A gated model cheaper than every plain one is compared with the cheapest
(it sits above the line wherever it is more robust than a model that costs more); one dearer than every plain one
with the dearest. Robust: right under the whole standard suite under every gate gradient the model ran (the worst
case per image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from study_findings import STANDARD_NAMES, pct, table

from aigrobust.evaluation.metrics import format_eps

Interval = Callable[[np.ndarray, Callable[[np.ndarray], float]], tuple[float, float]]


def robust_flags(rows: pd.DataFrame) -> pd.Series:
    """Per sample: right on the clean image and under every one of ``rows`` (AutoAttack's AND over attacks, and
    here over whatever else the rows vary: gate gradients, restarts); empty for no rows."""
    if rows.empty:
        return pd.Series(dtype=bool)
    right = rows["clean_correct"].astype(bool) & rows["adv_correct"].astype(bool)
    return right.groupby(rows["sample"]).all()


def standard_worst_case(records: pd.DataFrame, model: str, epsilon: float) -> pd.Series:
    """Per image: right on the clean image and under every attack of the standard suite under every gate gradient
    the model ran it with; empty unless every attack of the suite ran."""
    rows = records[(records["model"] == model) & records["attack_name"].isin(STANDARD_NAMES)
                   & np.isclose(records["epsilon"], epsilon) & (records["defense"] == "none")]
    if set(rows["attack_name"]) != set(STANDARD_NAMES):
        return pd.Series(dtype=bool)
    return robust_flags(rows)


def compute_attacked_mflops(records: pd.DataFrame, model: str, epsilon: float) -> float:
    """Mean MFLOPs per image under the compute attack at ``epsilon`` that forces the most (NaN where none ran)."""
    rows = records[(records["model"] == model) & records["attack"].str.startswith("compute-inflation")
                   & np.isclose(records["epsilon"], epsilon) & (records["defense"] == "none")]
    if rows.empty:
        return float("nan")
    return float(rows.groupby("attack")["adv_flops"].mean().max() / 1e6)


def _decides(records: pd.DataFrame, model: str) -> bool:
    """Whether ``model`` has decisions an attacker's gradient passes (records with a gate gradient other than
    'none'): a gated network, even where its gates all agree on every image."""
    return bool((records.loc[records["model"] == model, "gate_grad"] != "none").any())


def line_weights(cost: float, plain_costs: list[float]) -> tuple[int, int, float]:
    """The two plain costs (indices into the sorted ``plain_costs``) the line at ``cost`` blends, and the weight of
    the first; outside their range the nearest one alone.

    >>> line_weights(100.0, [80.0, 140.0])
    (0, 1, 0.6666666666666666)
    >>> line_weights(60.0, [80.0, 140.0])
    (0, 0, 1.0)
    """
    if cost <= plain_costs[0]:
        return 0, 0, 1.0
    if cost >= plain_costs[-1]:
        last = len(plain_costs) - 1
        return last, last, 1.0
    upper = next(i for i, c in enumerate(plain_costs) if c >= cost)
    low, high = plain_costs[upper - 1], plain_costs[upper]
    return upper - 1, upper, (high - cost) / (high - low)


def verdict(lo: float, hi: float) -> str:
    """Where a difference's 95% interval puts the gated model against the line."""
    return "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"


def per_flop_rows(records: pd.DataFrame, epsilon: float,
                  interval: Interval) -> tuple[list[list[str]], dict[str, list[str]]]:
    """One row per gated model that ran the standard suite at ``epsilon``: its robust accuracy and FLOPs, the plain
    line at its clean FLOPs and at its FLOPs under the compute attack, and its difference from each [95%]; and per
    model where it sits against the line (clean, then under the compute attack where it ran)."""
    models = list(dict.fromkeys(records["model"]))
    flags = {m: standard_worst_case(records, m, epsilon) for m in models}
    flags = {m: f for m, f in flags.items() if len(f)}
    clean = records[records["epsilon"] == 0].groupby(["model", "sample"])["clean_flops"].first() / 1e6
    mflops = {m: clean[m] for m in flags if m in clean.index.get_level_values(0)}
    plain = [m for m in mflops if np.ptp(mflops[m].to_numpy()) == 0 and not _decides(records, m)]
    # the line: the most robust plain model at each cost
    best: dict[float, str] = {}
    for m in plain:
        cost = float(mflops[m].iloc[0])
        if cost not in best or flags[m].mean() > flags[best[cost]].mean():
            best[cost] = m
    costs = sorted(best)
    if not costs:
        return [], {}
    rows, verdicts = [], {}
    for m in (m for m in mflops if m not in plain):
        common = flags[m].index
        for p in best.values():
            common = common.intersection(flags[p].index)
        own = flags[m][common].to_numpy(float)
        cost = float(mflops[m][common].mean())
        cells = [m, str(len(common)), pct(own.mean()), f"{cost:.1f}"]
        verdicts[m] = []
        for at in (cost, compute_attacked_mflops(records, m, epsilon)):
            if not np.isfinite(at):
                cells += ["not run", "-", "-"]  # the compute attack did not run on this model
                continue
            i, j, w = line_weights(at, costs)
            line = w * flags[best[costs[i]]][common].to_numpy(float) + (1 - w) * flags[best[costs[j]]][common].to_numpy(float)
            pair = np.stack([own, line], axis=1)
            lo, hi = interval(pair, lambda p: p[:, 0].mean() - p[:, 1].mean())
            d = own.mean() - line.mean()
            verdicts[m].append(verdict(lo, hi))
            cells += ([] if at == cost else [f"{at:.1f}"]) + [pct(line.mean()),
                                                              f"**{100 * d:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}]"]
        rows.append(cells)
    plain_models = ", ".join(f"{best[c]} ({c:.1f} MFLOPs)" for c in costs)
    verdicts["plain models of the line"] = [plain_models]
    return rows, verdicts


def per_flop_section(records: pd.DataFrame, epsilons: tuple[float, ...], interval: Interval) -> list[str]:
    """The section: per epsilon, the plain models of the line and the table of gated models against it."""
    lines: list[str] = []
    for epsilon in epsilons:
        rows, verdicts = per_flop_rows(records, epsilon, interval)
        if not rows:
            continue
        line = verdicts.pop("plain models of the line")[0]
        said = "; ".join(f"{m} {v[0]} the line clean" + (f" and {v[1]} it under the compute attack" if len(v) > 1 else "")
                         for m, v in verdicts.items())
        lines += [f"## Robustness per FLOP at equal compute, {format_eps(epsilon)} (standard suite, worst case over "
                  "the gate gradients run)", "",
                  f"The line joins {line}" + ("" if line.count("(") > 1 else ": one plain cost, so each gated model is "
                                              "compared with that model") + f". Against it: {said}.", "",
                  *table(["gated model", "images", "robust %", "MFLOPs clean", "plain line at its FLOPs %",
                          "gated - line, points [95%]", "MFLOPs under the compute attack", "plain line there %",
                          "gated - line there, points [95%]"], rows), ""]
    return lines
