"""Figures of what dynamic networks decide, drawn from aggregated records with matplotlib (gates and exits alike):
execution rates per block, gate flips, gate rasters, FLOPs clean against attacked, efficacy curves, class rates.
Each function returns the figure as (PNG, SVG) bytes."""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from aigrobust.evaluation.metrics import format_eps
from aigrobust.reporting.plots import save_figure, short_label
from attacks import attack_label, attack_role, is_compute_attack

MAX_RATE_PANELS = 6  # per model: clean, and the strongest attack of each kind


def figure_flip_heatmap(layers: pd.DataFrame) -> tuple[bytes, bytes]:
    """Gate flip rate per residual block: one row per model, attack, gate gradient and epsilon (no defense), in one
    image whose height grows with its rows, so a study with dozens of settings stays readable (one panel per setting
    collapsed to nothing there)."""
    data = layers[(layers["defense"] == "none") & (layers["epsilon"] > 0)]
    grid = data.pivot_table(index=["model", "attack", "gate_grad", "epsilon"], columns="layer", values="flip_rate",
                            sort=False)
    labels = [f"{model}: {short_label(attack)}, {grad}, {format_eps(eps)}" for model, attack, grad, eps in grid.index]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.22 * max(1, len(labels))), layout="constrained")
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=1)  # square-root scale: a 2% flip rate is still visibly not 0
    image = ax.imshow(grid.to_numpy(), aspect="auto", norm=norm, cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
    ax.set_xlabel("residual block")
    fig.colorbar(image, ax=ax, label="flip rate", shrink=min(1.0, 6 / max(1, len(labels)) + 0.3))
    return save_figure(fig)


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
    axes[0, 1].set_title(f"{first['model']}: {short_label(first['attack'])}, gate grad {first['gate_grad']}, "
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


def _rate_panels(rows: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """One model's panels: clean, then the strongest attack of each kind (accuracy, gates, compute, and the noise
    control), each as (title, per-block rate); a panel identical to one already kept is dropped."""

    if (rows["gate_grad"] == "exact").any():
        rows = rows[rows["gate_grad"] == "exact"]
    by_attack = {attack: group.sort_values("layer") for attack, group in rows.groupby("attack", sort=False)}
    if not by_attack:
        return []
    clean = next(iter(by_attack.values()))["clean_rate"].to_numpy()
    panels: list[tuple[str, np.ndarray]] = [("clean", clean)]
    kinds: dict[str, tuple[float, str]] = {}
    for attack, group in by_attack.items():
        role = attack_role(str(attack))
        kind = "control" if role is not None and role.control else (role.objective if role is not None else "")
        adv = group["adv_rate"].to_numpy()
        # the strongest of a kind: the most blocks opened (compute), else the largest change of the rates
        strength = float(adv.mean()) if kind == "compute" else float(np.abs(adv - clean).mean() + group["flip_rate"].mean())
        if kind not in kinds or strength > kinds[kind][0]:
            kinds[kind] = (strength, str(attack))
    for kind in ("accuracy", "gates", "compute", "control", ""):
        if kind in kinds and len(panels) < MAX_RATE_PANELS:
            attack = kinds[kind][1]
            adv = by_attack[attack]["adv_rate"].to_numpy()
            if not any(np.array_equal(adv, kept) for _, kept in panels):
                panels.append((short_label(attack), adv))
    return panels


def figure_layer_rates(layers: pd.DataFrame, epsilon: float) -> tuple[bytes, bytes] | None:
    """Per-block execution rate as small multiples: a row per model, at most six panels (clean, and the strongest
    attack of each kind at ``epsilon``, undefended), none identical to another."""
    data = layers[(layers["defense"] == "none") & np.isclose(layers["epsilon"], epsilon)]
    models = [(model, _rate_panels(rows)) for model, rows in data.groupby("model", sort=False)]
    models = [(model, panels) for model, panels in models if panels]
    if not models:
        return None
    columns = max(len(panels) for _, panels in models)
    fig, axes = plt.subplots(len(models), columns, figsize=(2.2 * columns + 0.6, 1.9 * len(models) + 0.6),
                             squeeze=False, sharey=True, layout="constrained")
    for row, (model, panels) in enumerate(models):
        for col in range(columns):
            ax = axes[row, col]
            if col >= len(panels):
                ax.set_visible(False)
                continue
            title, rates = panels[col]
            ax.bar(np.arange(len(rates)), rates, width=0.8, color="0.35" if col == 0 else f"C{col}")
            ax.set_ylim(0, 1.05)
            ax.set_title("\n".join(textwrap.wrap(title, 24)), fontsize=7)
            ax.tick_params(labelsize=6)
            if col == 0:
                ax.set_ylabel(f"{model}\nexecution rate", fontsize=7)
            if row == len(models) - 1:
                ax.set_xlabel("block", fontsize=7)
    fig.suptitle(f"execution rate per block, clean and attacked at {format_eps(epsilon)}", fontsize=8)
    return save_figure(fig)


def flops_ratio_groups(records: pd.DataFrame, epsilon: float) -> list[tuple[str, str, np.ndarray, str, np.ndarray]]:
    """Per dynamic model, undefended at ``epsilon``: (model, the strongest compute attack's label, its per-image
    FLOPs ratio attacked / clean, the noise control's label, its ratios); the control's may be empty."""

    rows = records[(records["defense"] == "none") & np.isclose(records["epsilon"], epsilon)
                   & (records["gate_grad"] != "none")]
    groups = []
    for model, at in rows.groupby("model", sort=False):
        if (at["gate_grad"] == "exact").any():
            at = at[at["gate_grad"] == "exact"]
        ratio = at["adv_flops"].astype(float) / at["clean_flops"].astype(float)
        attacks = at["attack"].astype(str)
        compute = [a for a in dict.fromkeys(attacks) if is_compute_attack(a)]
        if not compute:
            continue
        strongest = max(compute, key=lambda a: float(ratio[attacks == a].mean()))
        controls = [a for a in dict.fromkeys(attacks) if (attack_role(a) is not None and attack_role(a).control)]
        control = controls[0] if controls else ""
        groups.append((str(model), short_label(strongest), ratio[attacks == strongest].to_numpy(),
                       short_label(control) if control else "", ratio[attacks == control].to_numpy()))
    return groups


def figure_flops_ratio(records: pd.DataFrame, epsilon: float) -> tuple[bytes, bytes] | None:
    """Per dynamic model, the distribution (box: quartiles, whiskers 5-95%) of the per-image FLOPs ratio attacked /
    clean under its strongest compute attack and under the noise control, at ``epsilon``."""
    groups = flops_ratio_groups(records, epsilon)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(min(3.0 + 1.3 * len(groups), 16), 3.6), layout="constrained")
    attack_colour, control_colour = "#c0392b", "0.6"
    for i, (_, _, attacked, _, control) in enumerate(groups):
        for offset, values, colour in ((-0.18, attacked, attack_colour), (0.18, control, control_colour)):
            if len(values):
                ax.boxplot([values], positions=[i + offset], widths=0.3, whis=(5, 95), showfliers=False,
                           patch_artist=True, boxprops={"facecolor": colour, "alpha": 0.6},
                           medianprops={"color": "black"})
    ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("executed FLOPs, attacked / clean")
    ax.grid(axis="y", alpha=0.3)
    attack_names = sorted({g[1] for g in groups})
    control_names = sorted({g[3] for g in groups if g[3]})
    handles = [Patch(facecolor=attack_colour, alpha=0.6, label="strongest compute attack" + (
        f" ({attack_names[0]})" if len(attack_names) == 1 else ""))]
    if control_names:
        handles.append(Patch(facecolor=control_colour, alpha=0.6, label=f"noise control ({control_names[0]})"))
    fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=7, frameon=False)
    ax.set_title(f"per image, at {format_eps(epsilon)} (boxes: quartiles; whiskers: 5-95%)", fontsize=8)
    return save_figure(fig)

def figure_class_rates(classes: pd.DataFrame) -> tuple[bytes, bytes]:
    """Per-class execution rate of each gated block on clean images (one panel per model, at most three a row)."""
    models = list(dict.fromkeys(classes["model"]))
    columns = min(len(models), 3)
    rows = -(-len(models) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    image = None
    for ax, model in zip(axes.flat, models):
        grid = classes[classes["model"] == model].pivot_table(index="class", columns="layer", values="clean_rate",
                                                               sort=False)
        image = ax.imshow(grid.to_numpy(), aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=7)
        ax.set_xlabel("residual block")
        ax.set_title(model, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.flat[:len(models)], label="execution rate")
    return save_figure(fig)


def _efficacy_step(ax: Any, cost: np.ndarray, **style: Any) -> float:
    """One efficacy curve, the share of images at or below each normalised cost; returns its efficacy."""
    cost = np.sort(np.asarray(cost, dtype=float))
    share = np.arange(1, len(cost) + 1) / len(cost)
    ax.step(np.concatenate([[0.0], cost, [1.0]]), np.concatenate([[0.0], share, [1.0]]), where="post", **style)
    return float((1 - cost).mean())


def figure_efficacy_curve(records: pd.DataFrame, full_flops: dict[str, float]) -> tuple[bytes, bytes] | None:
    """Share of images running at most a given share of the full FLOPs, clean and under each compute attack (and
    random-noise control) at its largest epsilon, one panel per dynamic model, each curve's efficacy written in the
    panel; one legend for the figure. None without compute attacks or without the models' full FLOPs."""

    compute = records[(records["defense"] == "none") & (records["epsilon"] > 0)
                      & records["attack"].map(lambda spec: is_compute_attack(spec, controls=True))]
    compute = compute[compute["model"].astype(str).map(lambda m: full_flops.get(m, 0.0) > 0)]
    if compute.empty:
        return None
    models = list(dict.fromkeys(compute["model"]))
    curves = list(dict.fromkeys(zip(compute["attack"].astype(str), compute["gate_grad"].astype(str))))[:7]
    styles = {curve: {"color": f"C{i}", "linestyle": "-" if is_compute_attack(curve[0]) else "--"}
              for i, curve in enumerate(curves)}  # dashed: the noise control
    names = {curve: f"{attack_label(curve[0])}, {curve[1]}" for curve in curves}
    lowest = min(float((compute["clean_flops"] / compute["model"].astype(str).map(full_flops)).min()), 1.0)
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(3.8 * columns + 1.9, 3.2 * rows), squeeze=False,
                             layout="constrained")
    for ax in grid.flat[len(models):]:
        fig.delaxes(ax)
    for ax, model in zip(grid.flat, models):
        rows_of = compute[compute["model"] == model]
        full = full_flops[str(model)]
        clean = rows_of["clean_flops"].to_numpy() / full
        lines = [f"clean {_efficacy_step(ax, clean, color='black', linewidth=1.6):.2f}"]
        for curve in curves:
            group = rows_of[(rows_of["attack"].astype(str) == curve[0]) & (rows_of["gate_grad"].astype(str) == curve[1])]
            if group.empty:
                continue
            at = group[np.isclose(group["epsilon"], float(group["epsilon"].max()))]
            efficacy = _efficacy_step(ax, at["adv_flops"].to_numpy() / full, **styles[curve])
            lines.append(f"{names[curve]} ({format_eps(float(at['epsilon'].iloc[0]))}) {efficacy:.2f}")
        ax.text(0.03, 0.97, "efficacy\n" + "\n".join(lines), transform=ax.transAxes, fontsize=5.5, va="top",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_xlim(max(0.0, lowest - 0.05), 1.01)  # the cost no image goes below is not drawn
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("executed FLOPs / every block open")
        ax.set_ylabel("share of images at or below")
        ax.set_title(str(model), fontsize=9)
    handles = [Line2D([], [], color="black", linewidth=1.6, label="clean")]
    handles += [Line2D([], [], label=names[curve], **styles[curve]) for curve in curves]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    return save_figure(fig)


