"""Robustness reports from per-sample records: tables (Markdown, CSV, LaTeX), figures (PNG, SVG), index.md/html.

Every number comes from :mod:`aigrobust.evaluation.metrics` over the records, so a table and a figure of the same quantity
cannot disagree.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.evaluation.metrics import (
    WORST,
    class_rates,
    compact_table,
    efficiency_table,
    format_eps,
    joint_table,
    layer_rates,
    summarize,
)
from aigrobust.files import atomic_write_bytes, swap_in
from aigrobust.reporting.sanity import SanityFlag, flags_table, record_checks
from aigrobust.runs.records import COPIED_FROM, combined_full_flops

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


# --- figures ------------------------------------------------------------------------------------------------------
def save_figure(fig: Any) -> tuple[bytes, bytes]:
    import matplotlib.pyplot as plt

    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    with plt.rc_context({"svg.hashsalt": "aigrobust"}):  # fixed element ids: the same report, the same bytes
        fig.savefig(svg, format="svg", metadata={"Date": None})
    plt.close(fig)
    return png.getvalue(), svg.getvalue()


def _short(attack: str) -> str:
    """An attack's short label for legends and titles ('PGD-20'); the canonical spec is in the tables."""
    from attacks import attack_label

    return "worst case" if attack == WORST else attack_label(attack)


def figure_accuracy_vs_epsilon(summary: pd.DataFrame) -> tuple[bytes, bytes]:
    """Robust accuracy versus epsilon: one panel per defense setting; colour = model, line style = attack."""
    import matplotlib.pyplot as plt

    from attacks import attack_norm

    data = summary[summary["gate_grad"].isin(["none", "exact", WORST]) & (summary["goal"] == "misclassify")]
    # one norm per run and per report (EvalSpec and runs.combine_runs refuse two): Linf reads in /255, L2 as it is
    norm = min({attack_norm(a) for a in set(data["attack"]) if a != WORST} or {"linf"})
    scale = 255 if norm == "linf" else 1
    settings = list(dict.fromkeys(zip(data["defense"], data["defense_grad"])))
    cols = min(3, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows + 0.8), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(data["model"]))}
    attacks = list(dict.fromkeys(a for a in data["attack"] if a != WORST))
    styles = {a: (["--", ":", "-."][i % 3], "os^vD"[i % 5]) for i, a in enumerate(attacks)}
    styles[WORST] = ("-", "o")
    for ax, (defense, grad) in zip(axes.flat, settings):
        panel = data[(data["defense"] == defense) & (data["defense_grad"] == grad)]
        for (model, attack), curve in panel.groupby(["model", "attack"], sort=False):
            if curve["gate_grad"].nunique() > 1:
                curve = curve[curve["gate_grad"] == WORST]
            if attack == WORST:
                # only where several attacks ran: a "worst case" over FGSM alone would zig-zag the line
                single = panel[(panel["model"] == model) & (panel["attack"] != WORST)]
                n_attacks = single.groupby("epsilon")["attack"].nunique()
                full = set(n_attacks.index[n_attacks > 1]) | {0.0}
                curve = curve[curve["epsilon"].isin(full)]
            curve = curve.sort_values("epsilon")
            line, marker = styles[attack]
            ax.plot(curve["epsilon"] * scale, 100 * curve["robust_acc"], line, marker=marker, ms=3,
                    color=colours[model], lw=2.0 if attack == WORST else 1.0, label=f"{model} / {_short(attack)}")
            if attack == WORST or len(attacks) == 1:  # the 95% band of the curve a reader compares models by
                ax.fill_between(curve["epsilon"] * scale, 100 * curve["robust_acc_lo"], 100 * curve["robust_acc_hi"],
                                color=colours[model], alpha=0.15, lw=0,
                                gid=f"band-{_svg_id(model)}-{_svg_id(defense)}-{_svg_id(grad)}")
        ax.set_title("no defense" if defense == "none" else f"{defense} ({grad})")
        ax.set_xlabel("epsilon (/255, Linf)" if norm == "linf" else "epsilon (L2, [0, 1] pixels)")
        ax.set_ylabel("robust accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    # a legend no wider than the panels: four entries a row under three panels, two under one
    fig.legend(handles, labels, loc="outside lower center", ncols=min(cols + 1, max(1, len(labels))), fontsize=7)
    return save_figure(fig)


def figure_layer_rates(layers: pd.DataFrame, epsilon: float) -> tuple[bytes, bytes]:
    """Per-layer execution rate, clean versus adversarial (the paper's layer-wise figure)."""
    import matplotlib.pyplot as plt

    data = layers[(layers["defense"] == "none") & np.isclose(layers["epsilon"], epsilon)]
    groups = list(data.groupby(["model", "attack", "gate_grad"], sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 * len(groups)), squeeze=False, layout="constrained")
    for ax, ((model, attack, grad), rows) in zip(axes[:, 0], groups):
        x = rows["layer"].to_numpy()
        ax.bar(x - 0.2, rows["clean_rate"], width=0.4, label="clean")
        ax.bar(x + 0.2, rows["adv_rate"], width=0.4, label=f"adversarial ({format_eps(epsilon)})")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("execution rate")
        ax.set_title(f"{model}: {_short(attack)}, gate grad {grad}", fontsize=9)
    axes[-1, 0].set_xlabel("residual block")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig)


def figure_flip_heatmap(layers: pd.DataFrame) -> tuple[bytes, bytes]:
    """Gate flip rate per residual block: one row per model, attack, gate gradient and epsilon (no defense), in one
    image whose height grows with its rows, so a study with dozens of settings stays readable (one panel per setting
    collapsed to nothing there)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    data = layers[(layers["defense"] == "none") & (layers["epsilon"] > 0)]
    grid = data.pivot_table(index=["model", "attack", "gate_grad", "epsilon"], columns="layer", values="flip_rate",
                            sort=False)
    labels = [f"{model}: {_short(attack)}, {grad}, {format_eps(eps)}" for model, attack, grad, eps in grid.index]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.22 * max(1, len(labels))), layout="constrained")
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=1)  # square-root scale: a 2% flip rate is still visibly not 0
    image = ax.imshow(grid.to_numpy(), aspect="auto", norm=norm, cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
    ax.set_xlabel("residual block")
    fig.colorbar(image, ax=ax, label="flip rate", shrink=min(1.0, 6 / max(1, len(labels)) + 0.3))
    return save_figure(fig)


def _svg_id(text: str) -> str:
    """A string safe inside an SVG element id."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


RASTER_SAMPLES = 6  # images in the gate raster: those whose pattern changed most first, then unchanged ones


def gate_raster_rows(records: pd.DataFrame, epsilon: float, n: int = RASTER_SAMPLES) -> pd.DataFrame:
    """The records the gate raster shows: one gated model, undefended, at ``epsilon``, under the attack that changed
    the most gate patterns (exact gate gradients where run); up to ``n`` samples, most-changed first, and at least
    one unchanged where there is one. Empty where no gated model was attacked there."""
    rows = records[(records["defense"] == "none") & (records["gate_grad"] != "none")
                   & np.isclose(records["epsilon"], epsilon) & (records["clean_gates"].astype(str).str.len() > 0)]
    if rows.empty:
        return rows
    if (rows["gate_grad"] == "exact").any():
        rows = rows[rows["gate_grad"] == "exact"]
    rows = rows[rows["model"] == rows["model"].iloc[0]]
    changed = rows.assign(_flips=[sum(a != b for a, b in zip(c, d)) for c, d in zip(rows["clean_gates"],
                                                                                     rows["adv_gates"])])
    attack = changed.groupby("attack", sort=False)["_flips"].mean().idxmax()
    chosen = changed[changed["attack"] == attack].sort_values(["_flips", "sample"], ascending=[False, True],
                                                              kind="stable")
    flipped, still = chosen[chosen["_flips"] > 0], chosen[chosen["_flips"] == 0]
    keep = pd.concat([flipped.head(n - min(1, len(still))), still.head(n)]).head(n)
    return keep.drop(columns="_flips").reset_index(drop=True)


def figure_gate_raster(rows: pd.DataFrame, images: dict[int, np.ndarray]) -> tuple[bytes, bytes]:
    """Gate patterns, clean against adversarial, of a few sample images with the images beside them: per image one
    row of blocks for the clean input and one for the adversarial, open blocks dark, flipped blocks marked."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 0.9 * len(rows) + 0.9), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 7]})
    cmap = ListedColormap(["#f2f2f2", "#2b5d8a"])  # closed, open
    for (image_ax, gates_ax), row in zip(axes, rows.itertuples()):
        picture = images.get(int(row.sample))
        if picture is not None:
            image_ax.imshow(picture, interpolation="nearest")
        else:
            image_ax.text(0.5, 0.5, "image\nnot read", ha="center", va="center", fontsize=6)
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_ylabel(f"#{row.sample}", fontsize=7)
        grid = np.array([[int(c) for c in row.clean_gates], [int(c) for c in row.adv_gates]])
        gates_ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", gid=f"gate-raster-{int(row.sample)}")
        for layer in np.flatnonzero(grid[0] != grid[1]):
            gates_ax.plot([layer, layer], [0, 1], "x", color="#d62728", ms=6, mew=1.5)
        verdict = "still right" if row.adv_correct else "fooled"
        gates_ax.set_yticks([0, 1], ["clean", f"adv ({verdict})"], fontsize=7)
        gates_ax.set_xticks(range(grid.shape[1]), [str(i) for i in range(grid.shape[1])], fontsize=6)
    first = rows.iloc[0]
    axes[0, 1].set_title(f"{first['model']}: {_short(first['attack'])}, gate grad {first['gate_grad']}, "
                         f"{format_eps(first['epsilon'])}; dark = block runs, x = decision flipped", fontsize=8)
    axes[-1, 1].set_xlabel("residual block")
    return save_figure(fig)


def gate_figure_epsilon(records: pd.DataFrame) -> float:
    """The epsilon the gate figures show: the largest at which an attack on the gates ran, else the largest at which
    the most attacks ran (not a large epsilon where only FGSM ran)."""
    gates = records[records["goal"] == "gates"]
    if not gates.empty:
        return float(gates["epsilon"].max())
    attacked = records[records["epsilon"] > 0]
    if attacked.empty:
        return 0.0
    counts = attacked.groupby("epsilon")["attack"].nunique()
    return float(counts[counts == counts.max()].index.max())


def figure_flops(summary: pd.DataFrame, epsilon: float) -> tuple[bytes, bytes]:
    """Executed FLOPs, clean versus adversarial, at ``epsilon``, per model and attack."""
    import matplotlib.pyplot as plt

    data = summary[(summary["defense"] == "none") & (summary["attack"] != WORST) & (summary["gate_grad"] != "none")]
    data = data[np.isclose(data["epsilon"], epsilon)]
    labels = [f"{m}\n{_short(a)}\n{g}" for m, a, g in zip(data["model"], data["attack"], data["gate_grad"])]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels)), 3.6), layout="constrained")
    x = np.arange(len(labels))
    ax.bar(x - 0.2, data["clean_flops"] / 1e6, width=0.4, label="clean")
    ax.bar(x + 0.2, data["adv_flops"] / 1e6, width=0.4, label=f"adversarial ({format_eps(epsilon)})")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_ylabel("executed MFLOPs per image")
    ax.legend(fontsize=7)
    return save_figure(fig)


def figure_class_rates(classes: pd.DataFrame) -> tuple[bytes, bytes]:
    """Per-class execution rate of each gated block on clean images (one panel per model)."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(classes["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False, layout="constrained")
    image = None
    for ax, model in zip(axes[0], models):
        grid = classes[classes["model"] == model].pivot_table(index="class", columns="layer", values="clean_rate",
                                                               sort=False)
        image = ax.imshow(grid.to_numpy(), aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=7)
        ax.set_xlabel("residual block")
        ax.set_title(model, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="execution rate")
    return save_figure(fig)


def _efficacy_step(ax: Any, cost: np.ndarray, label: str, **style: Any) -> None:
    """One efficacy curve: the share of images at or below each normalised cost, its efficacy in the legend."""
    cost = np.sort(np.asarray(cost, dtype=float))
    share = np.arange(1, len(cost) + 1) / len(cost)
    ax.step(np.concatenate([[0.0], cost, [1.0]]), np.concatenate([[0.0], share, [1.0]]), where="post",
            label=f"{label} (efficacy {float((1 - cost).mean()):.2f})", **style)


def figure_efficacy_curve(records: pd.DataFrame, full_flops: dict[str, float]) -> tuple[bytes, bytes] | None:
    """Share of images running at most a given share of the full FLOPs, clean and under each compute attack (and
    random-noise control) at its largest epsilon, one panel per gated model; None without compute attacks or
    without the models' full FLOPs."""
    import matplotlib.pyplot as plt

    from attacks import attack_label, attack_role

    compute = records[(records["defense"] == "none") & (records["epsilon"] > 0)
                      & records["attack"].map(lambda spec: getattr(attack_role(str(spec)), "objective", "") == "compute")]
    compute = compute[compute["model"].astype(str).map(lambda m: full_flops.get(m, 0.0) > 0)]
    if compute.empty:
        return None
    models = list(dict.fromkeys(compute["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], models):
        rows = compute[compute["model"] == model]
        full = full_flops[str(model)]
        clean_drawn = False
        for (attack, gate_grad), group in rows.groupby(["attack", "gate_grad"], sort=False):
            eps = float(group["epsilon"].max())
            at = group[np.isclose(group["epsilon"], eps)]
            if not clean_drawn:  # the clean FLOPs are the same under every attack of a model
                _efficacy_step(ax, at["clean_flops"].to_numpy() / full, "clean", color="black", linewidth=1.6)
                clean_drawn = True
            _efficacy_step(ax, at["adv_flops"].to_numpy() / full,
                           f"{attack_label(str(attack))} {gate_grad} {format_eps(eps)}",
                           linestyle="--" if getattr(attack_role(str(attack)), "control", False) else "-")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("executed FLOPs / every block open")
        ax.set_ylabel("share of images at or below")
        ax.set_title(str(model), fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    return save_figure(fig)


# --- assembly -----------------------------------------------------------------------------------------------------
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
    from attacks import attack_label, attack_norm

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


@dataclass(frozen=True)
class FigureInputs:
    """What a report figure is drawn from: the records and the tables the report derives from them."""

    records: pd.DataFrame
    summary: pd.DataFrame
    layers: pd.DataFrame
    classes: pd.DataFrame
    gate_epsilon: float  # where the gate figures look: see gate_figure_epsilon
    full_flops: dict[str, float]  # per model label, FLOPs with every block open (empty where unknown)
    sample_images: Callable[[list[int]], dict[int, np.ndarray]] | None = None


FigureBuilder = Callable[[FigureInputs], "tuple[bytes, bytes] | None"]


@dataclass(frozen=True)
class FigureEntry:
    """A registered report figure: its file name, its caption, and what draws it (None: nothing to show here)."""

    name: str
    caption: str
    build: FigureBuilder
    gated_only: bool = False  # drawn only where the records hold a gated model


FIGURES: dict[str, FigureEntry] = {}


def register_figure(name: str, caption: str, gated_only: bool = False) -> Callable[[FigureBuilder], FigureBuilder]:
    """Decorator: add a figure to every report, in registration order. The builder takes :class:`FigureInputs`
    and returns (png, svg) bytes, or None where the records hold nothing for it (the figure is then left out);
    ``gated_only`` figures are not asked where no gated model ran.
    ``name`` is the file name under figures/ and must be new and a plain word (letters, digits, _ and -)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"figure name {name!r} must be letters, digits, _ or -")
    if name in FIGURES:
        raise ValueError(f"a figure named {name!r} is already registered")

    def add(build: FigureBuilder) -> FigureBuilder:
        FIGURES[name] = FigureEntry(name, caption, build, gated_only)
        return build

    return add


def figure_caption(name: str) -> str:
    """The registered caption of a figure (its name where none is registered)."""
    entry = FIGURES.get(name)
    return entry.caption if entry is not None else name


@register_figure("accuracy_vs_epsilon",
                 "Robust accuracy versus epsilon, per model and attack, one panel per defense setting (gated models: "
                 "worst case over gate-gradient modes where several were run); shaded: the 95% interval of the "
                 "worst case.")
def _accuracy_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    if not (inputs.summary["goal"] == "misclassify").any():  # only attacks on the gates ran
        return None
    return figure_accuracy_vs_epsilon(inputs.summary)


@register_figure("layer_execution_rates",
                 "Per-block execution rate on clean versus adversarial inputs, at the epsilon where the gate attacks "
                 "(else the most attacks) ran.", gated_only=True)
def _layer_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_layer_rates(inputs.layers, inputs.gate_epsilon)


@register_figure("gate_flip_heatmap",
                 "Share of samples whose gate flips, per block (columns) and epsilon (rows); square-root colour "
                 "scale, so small rates stay visible.", gated_only=True)
def _flip_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_flip_heatmap(inputs.layers)


@register_figure("flops_clean_vs_adversarial",
                 "Executed FLOPs per image, clean versus adversarial, at the epsilon where the gate attacks (else the "
                 "most attacks) ran.", gated_only=True)
def _flops_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_flops(inputs.summary, inputs.gate_epsilon)


@register_figure("efficacy_curve",
                 "DeepSloth's efficacy curve per gated model: the share of images (y) that run at most a given share "
                 "of the full network's FLOPs (x), clean and under each compute attack and its random-noise control "
                 "at the largest epsilon they ran; the area above a curve is its efficacy (1: nothing computed, 0: "
                 "every block for every image). An attack that takes back the savings pushes its curve to the right "
                 "edge.")
def _efficacy_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_efficacy_curve(inputs.records, inputs.full_flops)


@register_figure("gate_raster",
                 "Gate patterns of a few test images, clean against adversarial (the attack that changed the most "
                 "patterns, at the epsilon of the gate figures), with each image beside its rows.", gated_only=True)
def _raster_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    raster = gate_raster_rows(inputs.records, inputs.gate_epsilon)
    if raster.empty:
        return None
    ids = [int(i) for i in raster["sample"]]
    return figure_gate_raster(raster, inputs.sample_images(ids) if inputs.sample_images else {})


@register_figure("class_execution_rates", "Clean execution rate of each block per class.")
def _class_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return None if inputs.classes.empty else figure_class_rates(inputs.classes)


def build_report(records: pd.DataFrame, title: str, classes: Sequence[str] | None = None,
                 extra_flags: Sequence[SanityFlag] = (), provenance: dict[str, Any] | None = None,
                 sample_images: Callable[[list[int]], dict[int, np.ndarray]] | None = None,
                 full_flops: dict[str, float] | None = None, input_values: int | None = None) -> Report:
    """Aggregate records into tables, every registered figure and sanity flags; ``sample_images`` reads the images
    of given sample ids (HxWx3 uint8) for the gate raster (without it the raster shows the patterns alone);
    ``full_flops`` (per model label, every block open) adds the FLOPs-weighted recovery, efficacy and its curve;
    ``input_values`` (values per image) the perturbations' MSE and PSNR."""
    if records.empty:
        raise ValueError("no records to report")
    full = dict(full_flops or {})
    summary = summarize(records, full_flops=full, input_values=input_values)
    layers = layer_rates(records[records["gate_grad"] != "none"]) if (records["gate_grad"] != "none").any() \
        else pd.DataFrame()
    gated_rows = records[(records["defense"] == "none") & (records["gate_grad"] != "none")]  # plain models: all open
    class_table = class_rates(gated_rows, list(classes) if classes else None) if not gated_rows.empty else pd.DataFrame()
    flags = record_checks(records) + list(extra_flags)
    report = Report(title, summary, layers, class_table, flags, provenance=dict(provenance or {}))
    sample_counts = sample_counts_sentence(records)
    report.notes.append(f"{sample_counts} Wilson intervals in the tables.")
    report.worst_case = compact_table(summary)
    report.threat_model = threat_model(records, report.provenance, sample_counts)
    gate_eps = gate_figure_epsilon(records) if not layers.empty else 0.0
    inputs = FigureInputs(records, summary, layers, class_table, gate_eps, full, sample_images)
    for entry in FIGURES.values():
        drawn = None if entry.gated_only and layers.empty else entry.build(inputs)
        if drawn is not None:
            report.figures[entry.name] = drawn
    if layers.empty:
        report.notes.append("No gated model in these records: gate figures are omitted.")
    return report


def images_from_runs(runs: Sequence[Any], sample_ids: list[int]) -> dict[int, np.ndarray]:
    """The images (HxWx3 uint8) of the given sample ids, from the first run whose test data can be read and holds
    them; empty where none can (the data moved or is absent: the figure then shows the gate patterns alone)."""
    from aigrobust.errors import DataError

    for run in runs:
        try:
            data = run.data()
        except (DataError, OSError, KeyError, ValueError):
            continue
        positions = {int(v): i for i, v in enumerate(data.indices)}
        found = [i for i in sample_ids if i in positions]
        if not found:
            continue
        pictures = data.subset([positions[i] for i in found]).tensors()[0]
        as_uint8 = (pictures.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        return dict(zip(found, as_uint8))
    return {}


def report_from_runs(runs: Sequence[Any], records: pd.DataFrame, title: str, flags: Sequence[SanityFlag] = (),
                     preface: str = "") -> Report:
    """The report of finished runs (``runs.FinishedRun``) and their joined records, with each run's spec in the
    provenance and the noise floor of stochastic-gate runs beside every stability figure."""
    from aigrobust.data import CIFAR10_CLASSES

    provenance: dict[str, Any] = {"runs": [str(run.root) for run in runs]}
    provenance.update({str(run.root): run.document.to_dict() for run in runs if not run.document.is_empty})
    full_flops = combined_full_flops(list(runs))
    sizes = {run.input_values for run in runs} - {None}  # one image size per report (one norm, one data set)
    report = build_report(records, title, classes=list(CIFAR10_CLASSES), extra_flags=flags, provenance=provenance,
                          sample_images=lambda ids: images_from_runs(runs, ids), full_flops=full_flops,
                          input_values=sizes.pop() if len(sizes) == 1 else None)
    report.preface = preface
    for run in runs:
        for model_name, value in run.noise_floor.items():
            report.notes.append(f"{model_name} ran stochastic gates: two seeded draws on the same clean images "
                                f"differ in {100 * value:.1f}% of decisions (the noise floor of its stability "
                                "figures).")
        computed_on = {k: v for k, v in run.unit_origins.items() if not k.startswith(COPIED_FROM)}
        if len(computed_on) > 1:  # float rounding differs between devices: say so beside the run's figures
            where = "; ".join(f"{origin}: {count} units" for origin, count in computed_on.items())
            report.notes.append(f"{run.root.name} was computed on more than one device ({where}); a borderline "
                                "sample's outcome can differ between them.")
    return report

REPORT_FILES = ("summary.csv", "summary.md", "summary.tex", "layer_rates.csv", "class_rates.csv", "sanity_checks.csv",
                "index.md", "index.html")


def refuse_foreign_folder(out_dir: Path) -> None:
    """Raise ``ValueError`` where writing a report into ``out_dir`` would overwrite files no report wrote: an attack
    run's folder, or a folder holding a report's file names without the ``provenance.json`` every report writes."""
    from aigrobust.runs.records import PARTS_DIR, RECORDS_FILE, SPEC_FILE

    out_dir = Path(out_dir)
    if any((out_dir / name).exists() for name in (SPEC_FILE, RECORDS_FILE, PARTS_DIR)):
        raise ValueError(f"{out_dir} is an attack run folder: the report would overwrite its summary.csv; give the "
                         "report its own --out")
    clashing = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if clashing and not (out_dir / "provenance.json").is_file():
        raise ValueError(f"{out_dir} holds {', '.join(clashing)} but no provenance.json (not an aigrobust report): the "
                         "report would overwrite it; give another --out")


REPORT_OWNED = (*REPORT_FILES, "provenance.json", "figures")  # what a report writes, so what a new one replaces


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write tables, figures, index.md and a self-contained index.html into ``out_dir``.

    The report is built whole in a hidden folder inside ``out_dir`` and then swapped in (signals held back for the
    renames): an interrupt or a full disk leaves the previous report as it was, never new tables beside old
    figures. Files of an older report that this one does not write (a figure it no longer draws) go; files that
    no report writes (records, a README) stay."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-"))
    try:
        names = _write_files(report, staging)
        swap_in(staging, out_dir, REPORT_OWNED)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in names]


def _write_files(report: Report, folder: Path) -> list[str]:
    """Every file of the report into ``folder``; their paths relative to it."""
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(folder / name, data)
        written.append(name)

    table = headline(report.summary)
    caption = (f"{report.title}: robust accuracy (pointwise, worst case where named) with 95% Wilson intervals. "
               + " ".join(report.notes[:1]))
    put("summary.csv", report.summary.to_csv(index=False).encode())
    put("summary.md", to_markdown(table).encode())
    put("summary.tex", to_latex(table, caption).encode())
    if not report.layers.empty:
        put("layer_rates.csv", report.layers.to_csv(index=False).encode())
    if not report.classes.empty:
        put("class_rates.csv", report.classes.to_csv(index=False).encode())
    flags = flags_table(report.flags)
    put("sanity_checks.csv", flags.to_csv(index=False).encode())
    for name, (png, svg) in report.figures.items():
        put(f"figures/{name}.png", png)
        put(f"figures/{name}.svg", svg)
    put("provenance.json", json.dumps(report.provenance, indent=2, sort_keys=True, default=str).encode())
    put("index.md", _markdown_index(report, table, flags).encode())
    put("index.html", _html_index(report, table, flags).encode())
    return written


NO_CHECKS = ("No check ran: the record checks compare accuracies under attacks on the label (none here), and the"
             " model probes run unless --no-probe is given.")


def _flag_lines(flags: pd.DataFrame) -> list[str]:
    icon = {"ok": "OK", "warn": "WARNING", "n/a": "n/a"}
    if flags.empty:  # say so, not an empty section
        return [NO_CHECKS]
    return [f"- **{icon.get(r.status, r.status)}** `{r.check}` ({r.model}): {r.sentence}" for r in flags.itertuples()]


def _markdown_index(report: Report, table: pd.DataFrame, flags: pd.DataFrame) -> str:
    parts = [f"# {report.title}", ""]
    if report.preface:
        parts += [report.preface.strip(), ""]
    parts += [f"{note}" for note in report.notes] + [""]
    if not report.worst_case.empty:
        parts += ["## Headline", "", "Worst case over every attack and gate gradient, robust accuracy % [95% interval]; "
                  "FLOPs and unchanged gate patterns at the largest epsilon; '-': not run at that epsilon.", "",
                  to_markdown(report.worst_case), ""]
    if report.threat_model:
        parts += ["## Threat model", ""] + [f"- {line}" for line in report.threat_model] + [""]
    joint = joint_table(report.summary)
    if not joint.empty:
        parts += ["## Both goals", "", "An attacker chooses either goal: robust accuracy under the strongest "
                  "accuracy attack and executed FLOPs under the strongest compute attack, per model and epsilon.",
                  "", to_markdown(joint), ""]
    efficiency = efficiency_table(report.summary)
    if not efficiency.empty:
        parts += ["## Efficiency robustness", "", "Compute attacks and the random-noise control: executed FLOPs "
                  "adversarial over clean per image (mean, median, p95, max), the share of the compute the gates "
                  "save that the attack takes back (FLOPs-weighted, ILFO/GradAuto; block-counted, GradMDM) and the "
                  "share of images that already run every block.", "", to_markdown(efficiency), ""]
    parts += ["## Sanity checks (signs of gradient masking)", ""] + _flag_lines(flags) + [""]
    parts += ["## Results", "", "Columns: attack and its gate-gradient mode, defense and how the attacker treats it "
              "(oblivious / bpda / diff / eot), n samples, clean and robust accuracy with its 95% CI, share of "
              "samples whose gate pattern is unchanged, mean normalised Hamming distance of gate patterns, and "
              "executed FLOPs adversarial over clean.", "", to_markdown(table)]
    parts += ["## Figures", ""]
    for name in report.figures:
        parts += [f"![{name}](figures/{name}.png)", "", figure_caption(name), ""]
    parts += ["Tables: [summary.csv](summary.csv), [summary.md](summary.md), [summary.tex](summary.tex)"
              + (", [layer_rates.csv](layer_rates.csv)" if not report.layers.empty else "")
              + (", [class_rates.csv](class_rates.csv)" if not report.classes.empty else "") + ".", ""]
    return "\n".join(parts)


TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FOLD_ROWS = 30  # longer tables fold away in the HTML page


def _inline_svg(svg: bytes) -> str:
    """A matplotlib SVG file as an element for the page (its XML prolog and doctype dropped)."""
    text = svg.decode()
    return text[text.index("<svg"):]


def _html_index(report: Report, table: pd.DataFrame, flags: pd.DataFrame) -> str:
    """The self-contained page, from templates/report.html with autoescaping; warnings first among the checks."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, keep_trailing_newline=True)
    ordered = sorted(flags.itertuples(), key=lambda r: r.status != "warn")
    return env.get_template("report.html").render(
        title=report.title,
        preface_html=Markup(markdown_to_html(report.preface)),  # noqa: S704  (markdown-it escapes raw HTML)
        notes=report.notes,
        flags=[{"css": r.status.replace("/", ""), "status": r.status, "check": r.check, "model": r.model,
                "sentence": r.sentence} for r in ordered],
        # inline SVG: the page's own check can find the bands and raster rows by their element ids
        figures=[{"name": name, "caption": figure_caption(name), "svg": Markup(_inline_svg(svg))}  # noqa: S704
                 for name, (_, svg) in report.figures.items()],
        worst_case={"columns": [str(c) for c in report.worst_case.columns],
                    "rows": [[str(v) for v in row] for row in report.worst_case.itertuples(index=False)]},
        threat_model=report.threat_model,
        no_checks=NO_CHECKS,
        table={"columns": [str(c) for c in table.columns], "rows": [[str(v) for v in row] for row in
                                                                     table.itertuples(index=False)],
               "folded": len(table) > FOLD_ROWS},
    )


_SAFE_LINK = re.compile(r"^(https?://|mailto:|[^:]*$)", re.IGNORECASE)  # http(s), mailto or a relative path


def markdown_to_html(markdown: str) -> str:
    """CommonMark (plus pipe tables) through markdown-it-py: raw HTML is escaped, links other than http(s), mailto
    and relative ones stay text, and headings move one level down (the page's own title is its only h1)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url.strip()))  # type: ignore[method-assign]
    tokens = md.parse(markdown)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + 1, 6)}"
    return md.renderer.render(tokens, md.options, {})
