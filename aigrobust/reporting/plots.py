"""Figures drawn from aggregated records with matplotlib: each function returns the figure as (PNG, SVG) bytes."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.evaluation.metrics import WORST, format_eps


def save_figure(fig: Any) -> tuple[bytes, bytes]:
    """A matplotlib figure as (PNG, SVG) bytes, without dates or random ids (the same report, the same bytes);
    the figure is closed."""
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

    from attacks import attack_label, is_compute_attack

    compute = records[(records["defense"] == "none") & (records["epsilon"] > 0)
                      & records["attack"].map(lambda spec: is_compute_attack(spec, controls=True))]
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
                           linestyle="-" if is_compute_attack(attack) else "--")  # dashed: the noise control
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("executed FLOPs / every block open")
        ax.set_ylabel("share of images at or below")
        ax.set_title(str(model), fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    return save_figure(fig)


def figure_robustness_per_flop(points: pd.DataFrame) -> tuple[bytes, bytes] | None:
    """Robust accuracy (y, worst case, 95% interval) against executed MFLOPs per image (x, 95% interval), one panel
    per epsilon: a marker per model, an arrow to the FLOPs its strongest compute attack forces, and the plain models
    (FLOPs fixed; the most robust at each cost) joined as the reference line a gated model must sit above to buy
    robustness per FLOP."""
    import matplotlib.pyplot as plt

    if points.empty:
        return None
    epsilons = sorted(points["epsilon"].unique())
    models = list(dict.fromkeys(points["model"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
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
            ax.plot(plain.index, 100 * plain.to_numpy(), color="0.55", linewidth=1.2, zorder=1,
                    label="plain models (most robust per cost)")
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
        unique.update({label: handle for label, handle in zip(labels, handles) if label not in unique})
    fig.legend(list(unique.values())[:8], list(unique)[:8], loc="outside right center", fontsize=8, frameon=False)
    return save_figure(fig)
