"""What a report holds (:class:`Report`) and its tables: the headline table, Markdown and LaTeX renderings, the sentences that state the threat model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.evaluation.metrics import format_eps
from aigrobust.reporting.sanity import SanityFlag
from attacks import attack_label, attack_norm, is_compute_attack

HEADLINE_COLUMNS = ["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon", "n", "clean_acc",
                    "robust_acc", "robust_acc_lo", "robust_acc_hi", "unchanged_gates", "hamming_mean", "flops_ratio"]


@dataclass
class Report:
    """What a report holds before it is written: tables, figures (name -> (png, svg) bytes), text."""

    title: str
    summary: pd.DataFrame
    layers: pd.DataFrame
    classes: pd.DataFrame
    flags: list[SanityFlag]
    figures: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    preface: str = ""  # Markdown placed under the title, e.g. a study's findings in plain words
    worst_case: pd.DataFrame = field(default_factory=pd.DataFrame)  # the compact table: per model and defense
    threat_model: list[str] = field(default_factory=list)  # norm, epsilons, attacks with budgets, gates, defenses, n


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The compact, human-readable table: percentages, CI as [lo, hi], epsilon as k/255."""
    table = summary[[c for c in HEADLINE_COLUMNS if c in summary.columns]].copy()
    if "attack_label" in summary.columns:  # the short label; the canonical spec is in summary.csv
        table["attack"] = summary["attack_label"]
    table["epsilon"] = table["epsilon"].map(format_eps)
    for col in ("clean_acc", "robust_acc", "unchanged_gates"):
        table[col] = (100 * table[col]).map(lambda v: f"{v:.1f}")
    table["robust 95% CI"] = [f"[{100 * lo:.1f}, {100 * hi:.1f}]"
                              for lo, hi in zip(summary["robust_acc_lo"], summary["robust_acc_hi"])]
    table["hamming_mean"] = table["hamming_mean"].map(lambda v: f"{v:.3f}")
    table["flops_ratio"] = table["flops_ratio"].map(lambda v: f"{v:.3f}")
    table = table.drop(columns=["robust_acc_lo", "robust_acc_hi"])
    return table.rename(columns={"clean_acc": "clean %", "robust_acc": "robust %", "unchanged_gates": "same gates %",
                                 "hamming_mean": "hamming", "flops_ratio": "FLOPs adv/clean",
                                 "defense_grad": "defense grad", "gate_grad": "gate grad"})


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown table."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "{": r"\{",
                   "}": r"\}", "$": r"\$", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}"}


def latex_escape(value: object) -> str:
    """Text safe inside a LaTeX cell: each special character replaced in one pass (so the braces a replacement
    brings in are never escaped again)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(value))


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A LaTeX tabular (booktabs) with escaped cells."""
    esc = latex_escape

    cols = list(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}",
             r"\toprule", " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + esc(caption) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def sample_counts_sentence(records: pd.DataFrame) -> str:
    """How many samples each figure aggregates and the widest 95% interval that gives: one n, or the range where
    the runs differ (a study that puts 1000-image runs beside 200-image ones)."""
    sizes = records.groupby(["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon"]).size()
    low, high = int(sizes.min()), int(sizes.max())
    half = 100 * 1.96 * np.sqrt(0.25 / low)
    if low == high:
        return f"n = {low} samples per setting: a 95% interval on an accuracy is at most +-{half:.1f} points."
    return (f"n = {low} to {high} samples per setting (each row's n is in summary.csv): a 95% interval on an accuracy "
            f"is at most +-{half:.1f} points (at n = {low}).")


def threat_model(records: pd.DataFrame, provenance: dict[str, Any], sample_counts: str) -> list[str]:
    """Plain-language lines stating what was tested: perturbation set, epsilons, every attack with its full budget,
    gate-gradient modes, defenses and how attackers treated them, and ``sample_counts``
    (:func:`sample_counts_sentence`: the samples and the interval width they give)."""

    specs = [doc["spec"] for doc in provenance.values() if isinstance(doc, dict) and isinstance(doc.get("spec"), dict)]
    budgets, norms = [], set()
    for spec in dict.fromkeys(records["attack"]):  # canonical specs: every setting, defaults filled in
        norms.add(attack_norm(spec))  # from the attack: 'apgd-l2' names its norm without a 'distance' setting
        budgets.append(f"{attack_label(spec)}: `{spec}`")
    eps = ", ".join(format_eps(e) for e in sorted(set(records["epsilon"])))
    norm_text = " and ".join(sorted({"linf": "L-infinity", "l2": "L2"}.get(x, x) for x in norms)) or "L-infinity"
    lines = [f"Perturbations: {norm_text} balls in [0, 1] pixel space (normalisation is inside each model), "
             f"epsilons {eps}; robust accuracy is pointwise (right on the clean input and under every attack)."]
    lines += [f"Attack {b}." for b in budgets]
    if any(spec.get("early_exit") and len(spec.get("attacks", [])) > 1 for spec in specs):
        lines.append("Runs with early exit attack as a chain in the order given: each attack works only on the samples "
                     "the ones before it left standing, so an attack's figure there is the chain up to it, not the "
                     "attack alone.")
    if any("stepsize=auto" in b for b in budgets):
        lines.append("A step size 'auto' is the attack's own: 2.5 eps / steps for PGD, BIM and the gate attacks.")
    grads = sorted(set(records["gate_grad"]) - {"none"})
    modes = sorted({str(spec.get("gate_mode", "hard")) for spec in specs}) or ["hard"]
    if grads:
        lines.append(f"Gated models run {' and '.join(modes)} gates; attack gradients pass them as: {', '.join(grads)}.")
    eot_draws = sorted({int(spec.get("eot_draws", 20)) for spec in specs
                        if spec.get("gate_mode") == "stochastic" or "eot" in spec.get("defense_grads", [])})
    if eot_draws and ((records["defense_grad"] == "eot").any() or "stochastic" in modes):
        lines.append(f"EOT: each attack gradient averages {' or '.join(map(str, eot_draws))} draws of the random "
                     "parts (stochastic gates, randomised defenses; drawn together where both are random); an attack "
                     "with its own eot_draws averages its draws instead.")
    defended = records[records["defense"] != "none"]
    if not defended.empty:
        settings = ", ".join(f"{d} ({', '.join(sorted(set(g['defense_grad'])))})" for d, g in defended.groupby("defense"))
        lines.append(f"Defenses, with how the attacker treats them: {settings}; 'none' is always the reference.")
    lines.append(sample_counts)
    return lines


def robustness_per_flop_points(records: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model and epsilon above 0 (undefended): robust accuracy under the worst case over every accuracy
    attack run (with its 95% interval), executed MFLOPs per clean image (with a 95% interval over images), and the
    MFLOPs under the strongest compute attack run (NaN without one); ``gated`` says whether its FLOPs vary."""
    undefended = summary[(summary["defense"] == "none") & (summary["epsilon"] > 0)
                         & (summary["goal"] == "misclassify")]
    rows = []
    for (model, eps), group in undefended.groupby(["model", "epsilon"], sort=False):
        worst = group.loc[group["robust_acc"].idxmin()]
        clean = records[(records["model"] == model) & (records["defense"] == "none")
                        & np.isclose(records["epsilon"], eps)]
        per_image = clean.drop_duplicates("sample")["clean_flops"].to_numpy(dtype=float) / 1e6
        spread = 1.96 * per_image.std(ddof=1) / np.sqrt(len(per_image)) if len(per_image) > 1 else 0.0
        compute = summary[(summary["model"] == model) & (summary["defense"] == "none")
                          & np.isclose(summary["epsilon"], eps)
                          & summary["attack"].map(is_compute_attack)]
        rows.append({"model": model, "epsilon": float(eps), "robust_acc": float(worst["robust_acc"]),
                     "robust_acc_lo": float(worst["robust_acc_lo"]), "robust_acc_hi": float(worst["robust_acc_hi"]),
                     "mflops": float(per_image.mean()), "mflops_ci": float(spread),
                     "mflops_attacked": float(compute["adv_flops"].max() / 1e6) if len(compute) else float("nan"),
                     "gated": bool(np.ptp(per_image) > 0) if len(per_image) else False})
    return pd.DataFrame(rows)
