"""Figures drawn from aggregated records with matplotlib: each function returns the figure as (PNG, SVG) bytes."""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from aigrobust.evaluation.metrics import WORST, format_eps
from attacks import attack_label, attack_norm


def save_figure(fig: Any) -> tuple[bytes, bytes]:
    """A matplotlib figure as (PNG, SVG) bytes, without dates or random ids (the same report, the same bytes); the
    figure is closed.

    Args:
        fig: a matplotlib figure.

    Returns:
        The PNG bytes and the SVG bytes.

    >>> import matplotlib.pyplot as plt
    >>> figure, axes = plt.subplots()
    >>> _ = axes.plot([0, 1], [1, 0])
    >>> png, svg = save_figure(figure)
    >>> png[:4], svg.startswith(b"<?xml")
    (b'\x89PNG', True)
    """
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    with plt.rc_context({"svg.hashsalt": "aigrobust"}):  # fixed element ids: the same report, the same bytes
        fig.savefig(svg, format="svg", metadata={"Date": None})
    plt.close(fig)
    return png.getvalue(), svg.getvalue()


def short_label(attack: str) -> str:
    """An attack's short label for legends and titles ('PGD-20'); the canonical spec is in the tables."""

    return "worst case" if attack == WORST else attack_label(attack)


MAX_LEGEND = 8


def _runs_of(present: list[bool]) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in ``present``."""
    runs, start = [], None
    for i, flag in enumerate([*present, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _curve(ax: Any, grid: list[float], curve: pd.DataFrame, scale: float, band: str | None = None,
           **style: Any) -> None:
    """A curve on the report's epsilon grid: lines (and, with ``band``, its 95% band under that SVG id) only between
    epsilons that were both run and adjacent on the grid, never across one this curve skipped; a marker on every
    point."""
    rows = {i: row for i, e in enumerate(grid) for row in curve.itertuples() if np.isclose(row.epsilon, e)}
    for start, stop in _runs_of([i in rows for i in range(len(grid))]):
        part = [rows[i] for i in range(start, stop)]
        xs = [grid[i] * scale for i in range(start, stop)]
        ax.plot(xs, [100 * r.robust_acc for r in part], marker="o", **style)
        if band is not None and len(part) > 1:
            ax.fill_between(xs, [100 * r.robust_acc_lo for r in part], [100 * r.robust_acc_hi for r in part],
                            color=style.get("color"), alpha=0.15, lw=0, gid=band)
        elif band is not None:  # a lone point: its interval as an error bar
            y = 100 * part[0].robust_acc
            ax.errorbar(xs, [y], yerr=[[y - 100 * part[0].robust_acc_lo], [100 * part[0].robust_acc_hi - y]],
                        color=style.get("color"), alpha=0.5, linewidth=1, capsize=2, gid=band)
        style = {**style, "label": None}


def _model_curves(ax: Any, grid: list[float], mine: pd.DataFrame, scale: float, colour: Any, band: str) -> bool:
    """One model's curves in one panel: its worst case bold with its band, each single attack faint (where several
    ran); returns whether faint curves were drawn."""
    if mine["gate_grad"].nunique() > 1:  # a dynamic model run under several gate gradients: the worst over them
        mine = mine[mine["gate_grad"] == WORST]
    singles = [a for a in dict.fromkeys(mine["attack"]) if a != WORST]
    worst = mine[mine["attack"] == WORST] if len(singles) > 1 else mine[mine["attack"] == singles[0]]
    if len(singles) > 1:
        # the worst case only where several attacks ran at that epsilon (not a zig-zag over FGSM alone)
        counts = mine[mine["attack"] != WORST].groupby("epsilon")["attack"].nunique()
        worst = worst[worst["epsilon"].isin(set(counts.index[counts > 1]) | {0.0})]
        for attack in singles:
            _curve(ax, grid, mine[mine["attack"] == attack], scale, color=colour, linewidth=0.8, alpha=0.3,
                   markersize=2, label=None)
    _curve(ax, grid, worst, scale, band=band, color=colour, linewidth=2.0, markersize=3.5,
           label=str(mine["model"].iloc[0]))
    return len(singles) > 1


def figure_accuracy_vs_epsilon(summary: pd.DataFrame) -> tuple[bytes, bytes]:
    """Robust accuracy versus epsilon: one panel per defense setting that was run, one colour per model; each
    model's worst case bold with its 95% band, its single attacks faint; no line across an epsilon a curve did not
    run; at most eight legend entries, outside the axes."""

    data = summary[summary["gate_grad"].isin(["none", "exact", WORST]) & (summary["goal"] == "misclassify")]
    # one norm per run and per report (EvalSpec and runs.combine_runs refuse two): Linf reads in /255, L2 as it is
    norm = min({attack_norm(a) for a in set(data["attack"]) if a != WORST} or {"linf"})
    scale = 255 if norm == "linf" else 1
    settings = list(dict.fromkeys(zip(data["defense"], data["defense_grad"])))
    cols = min(3, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in axes.flat[len(settings):]:
        fig.delaxes(ax)  # no empty cell
    models = list(dict.fromkeys(data["model"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    faint_drawn = False
    grid = sorted(set(data["epsilon"]))  # the report's epsilons: a panel that skipped one shows the gap
    for ax, (defense, grad) in zip(axes.flat, settings):
        panel = data[(data["defense"] == defense) & (data["defense_grad"] == grad)]
        for model in models:
            mine = panel[panel["model"] == model]
            if not mine.empty:
                faint_drawn |= _model_curves(ax, grid, mine, scale, colours[model],
                                             f"band-{_svg_id(model)}-{_svg_id(defense)}-{_svg_id(grad)}")
        ax.set_title("no defense" if defense == "none" else f"{defense} ({grad})", fontsize=9)
        ax.set_xlabel("epsilon (/255, Linf)" if norm == "linf" else "epsilon (L2, [0, 1] pixels)")
        ax.set_ylabel("robust accuracy % (worst case)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[m], linewidth=2.0, marker="o", markersize=3.5, label=str(m))
               for m in models[: MAX_LEGEND - (1 if faint_drawn else 0)]]
    if faint_drawn:
        handles.append(Line2D([], [], color="0.4", linewidth=0.8, alpha=0.4, label="single attacks"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    return save_figure(fig)


def _svg_id(text: str) -> str:
    """A string safe inside an SVG element id."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


PLAIN_LINE = "plain models (most robust per cost)"  # the reference line's label; the caption explains it


def figure_robustness_per_flop(points: pd.DataFrame) -> tuple[bytes, bytes] | None:
    """Robust accuracy (y, worst case, 95% interval) against executed MFLOPs per image (x, 95% interval), one panel
    per epsilon: a marker per model, an arrow to the FLOPs its strongest compute attack forces, and the plain models
    (FLOPs fixed; the most robust at each cost) joined as the reference line a gated model must sit above to buy
    robustness per FLOP."""
    if points.empty:
        return None
    epsilons = sorted(points["epsilon"].unique())
    models = list(dict.fromkeys(points["model"]))
    # tab10 without its grey, which the reference line uses (the caption names the line, so it takes no legend entry),
    # then tab20's lighter shades without theirs: 18 colours before one repeats
    palette = ([plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
               + [plt.get_cmap("tab20")(i) for i in range(1, 20, 2) if i != 15])
    colours = {m: palette[i % len(palette)] for i, m in enumerate(models)}
    columns = min(3, len(epsilons))  # at most three panels a row: the figure stays under 2000 px wide
    rows = -(-len(epsilons) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(4.2 * columns + 1.8, 3.4 * rows), squeeze=False,
                             layout="constrained")
    axes = list(grid.flat)
    for ax in axes[len(epsilons):]:
        fig.delaxes(ax)  # no empty cell
    axes = axes[: len(epsilons)]
    for ax, eps in zip(axes, epsilons):
        at = points[np.isclose(points["epsilon"], eps)]
        # the reference: at each cost the most robust plain model, joined across costs (needs two costs)
        plain = at[~at["gated"]].groupby("mflops", sort=True)["robust_acc"].max()
        if len(plain) > 1:
            ax.plot(plain.index, 100 * plain.to_numpy(), color="0.55", linewidth=1.2, zorder=1, label=PLAIN_LINE)
        for row in at.itertuples():
            y = 100 * row.robust_acc
            yerr = [[y - 100 * row.robust_acc_lo], [100 * row.robust_acc_hi - y]]
            ax.errorbar(row.mflops, y, xerr=row.mflops_ci, yerr=yerr, fmt="o" if row.gated else "s",
                        color=colours[row.model], markersize=5, capsize=2, linewidth=1, label=str(row.model), zorder=3)
            if row.mflops_attacked == row.mflops_attacked and row.mflops_attacked > row.mflops:
                ax.annotate("", xy=(row.mflops_attacked, y), xytext=(row.mflops, y), zorder=2,
                            arrowprops={"arrowstyle": "->", "color": colours[row.model], "linewidth": 1})
        ax.set_title(f"eps {format_eps(float(eps))}", fontsize=9)
        ax.set_xlabel("executed MFLOPs per image")  # the caption says what the arrows are
        ax.set_ylabel("robust accuracy % (worst case)")
        ax.grid(alpha=0.3)
    unique: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        unique.update({label: handle for label, handle in zip(labels, handles)
                       if label not in unique and label != PLAIN_LINE})
    # every model named: a study compares them all (two columns past a dozen, so the legend stays within the height)
    fig.legend(list(unique.values()), list(unique), loc="outside right center", fontsize=8, frameon=False,
               ncols=1 if len(unique) <= 12 else 2)
    return save_figure(fig)
