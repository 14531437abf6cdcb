"""Aggregates of the per-sample records: accuracy, success, norms, gate stability, FLOPs, worst case over attacks.

Robust accuracy is pointwise: a sample counts only if it is right on the clean input and on every attack tried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from attacks import attack_label, attack_objective, is_compute_attack

GROUP = ["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon"]
WORST = "worst-case"  # the worst case over attacks, gate gradients or defense gradients: one spelling


def format_eps(eps: float) -> str:
    """8/255-style label where epsilon is a multiple of 1/255 below 1, else the number (an L2 budget of 1 reads
    '1', not '255/255'): the one way epsilons print."""
    if eps == 0:
        return "0"
    k = eps * 255
    return f"{k:g}/255" if abs(k - round(k)) < 1e-6 and eps < 1 else f"{eps:.4g}"


def compact_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model and defense setting, one column per epsilon: the worst case over every attack and gate
    gradient that ran (robust accuracy % and its 95% interval; '-' where a setting did not run at an epsilon), then,
    at the largest epsilon, executed FLOPs adversarial / clean and the share of unchanged gate patterns."""
    data = summary[summary["goal"] == "misclassify"]
    rows = []
    for (model, defense, defense_grad), group in data.groupby(["model", "defense", "defense_grad"], sort=False):
        attack = WORST if WORST in set(group["attack"]) else group["attack"].iloc[0]
        rows_of = group[group["attack"] == attack]
        grads = set(rows_of["gate_grad"])
        rows_of = rows_of[rows_of["gate_grad"] == (WORST if WORST in grads else rows_of["gate_grad"].iloc[0])]
        rows_of = rows_of.sort_values("epsilon")
        row: dict[str, object] = {"model": model,
                                  "defense": "none" if defense == "none" else f"{defense} {defense_grad}"}
        for r in rows_of.itertuples():
            label = "clean %" if r.epsilon == 0 else format_eps(r.epsilon)
            row[label] = (f"{100 * r.robust_acc:.1f}" if r.epsilon == 0 else
                          f"{100 * r.robust_acc:.1f} [{100 * r.robust_acc_lo:.1f}, {100 * r.robust_acc_hi:.1f}]")
        last = rows_of.iloc[-1]
        row[f"FLOPs adv/clean ({format_eps(last['epsilon'])})"] = f"{last['flops_ratio']:.3f}"
        row[f"same gates ({format_eps(last['epsilon'])})"] = f"{100 * last['unchanged_gates']:.1f}%"
        rows.append(row)
    return _in_model_order(rows, summary).fillna("-")  # '-': this setting did not run at that epsilon


def gate_attack_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The attacks on the gates themselves (gate-flip, compute-inflation), which aim at no misclassification: one row
    per model, defense setting, attack and gate gradient, one column per epsilon above 0 with the share of samples
    whose goal was met (gate-flip: another gate pattern; compute-inflation: more executed FLOPs) and, in brackets,
    executed FLOPs adversarial / clean."""
    data = summary[(summary["goal"] != "misclassify") & (summary["epsilon"] > 0)]
    data = data.sort_values("attack_label", kind="stable")  # each attack's gate gradients together
    rows = []
    keys = ["model", "defense", "defense_grad", "attack_label", "gate_grad"]
    for (model, defense, defense_grad, label, gate_grad), group in data.groupby(keys, sort=False):
        row: dict[str, object] = {"model": model, "defense": "none" if defense == "none" else f"{defense} {defense_grad}",
                                  "gate attack": label, "gate grad": gate_grad}
        for r in group.sort_values("epsilon").itertuples():
            compute = attack_objective(r.attack) == "compute"
            recovery = getattr(r, "recovery", float("nan")) if compute else float("nan")
            taken = f", {100 * recovery:.0f}% of the saved FLOPs back" if recovery == recovery else ""
            row[format_eps(r.epsilon)] = f"{100 * r.goal_success_rate:.1f} ({r.flops_ratio:.3f}{taken})"
        rows.append(row)
    return _in_model_order(rows, summary)


def efficiency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Efficiency robustness in every measure the field uses, one row per compute attack (and its random-noise
    control), gate gradient and epsilon: the per-image FLOPs ratio (mean of FLOPs over mean, median, p95, max), the
    share of the saved compute taken back (FLOPs-weighted where the full FLOPs are known; GradMDM's block count)
    the share of images that already run every block, and DeepSloth's efficacy clean and attacked."""
    data = summary[(summary["epsilon"] > 0) & (summary["attack"].map(attack_objective) == "compute")]
    data = data[data["recovery_blocks"].notna()] if "recovery_blocks" in data.columns else data.iloc[0:0]

    def pct(v: float) -> str:
        return "-" if v != v else f"{100 * v:.1f}"

    rows = [{"model": r.model, "attack": r.attack_label, "gate grad": r.gate_grad, "eps": format_eps(r.epsilon),
             "FLOPs ratio": f"{r.flops_ratio:.3f}", "median": f"{r.flops_ratio_median:.3f}",
             "p95": f"{r.flops_ratio_p95:.3f}", "max": f"{r.flops_ratio_max:.3f}",
             "recovery % (FLOPs)": pct(r.recovery), "recovery % (blocks)": pct(r.recovery_blocks),
             "all open clean %": pct(r.all_open_clean),
             "efficacy clean / attacked": ("-" if r.efficacy_clean != r.efficacy_clean
                                           else f"{r.efficacy_clean:.3f} / {r.efficacy_adv:.3f}")}
            for r in data.itertuples()]
    return _in_model_order(rows, summary)


def joint_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Both goals an attacker may choose, side by side, per model, defense setting and epsilon: robust accuracy
    under the strongest accuracy attack run (the worst case where several ran) and executed FLOPs under the
    strongest compute attack run (the largest FLOPs ratio over compute attacks and gate gradients)."""
    if summary.empty:
        return pd.DataFrame()
    attacked = summary[summary["epsilon"] > 0]
    accuracy = attacked[attacked["goal"] == "misclassify"]
    compute = attacked[attacked["attack"].map(is_compute_attack)]
    if accuracy.empty or compute.empty:
        return pd.DataFrame()
    rows = []
    keys = ["model", "defense", "defense_grad", "epsilon"]
    for key, group in accuracy.groupby(keys, sort=False):
        worst = group.loc[group["robust_acc"].idxmin()]
        same = compute
        for column, value in zip(keys, key):
            same = same[same[column] == value]
        if same.empty:
            continue
        heaviest = same.loc[same["flops_ratio"].idxmax()]
        model, defense, defense_grad, eps = key
        rows.append({"model": model, "defense": "none" if defense == "none" else f"{defense} {defense_grad}",
                     "eps": format_eps(eps), "robust acc % (worst)": f"{100 * worst['robust_acc']:.1f}",
                     "by": worst["attack_label"], "FLOPs adv/clean (worst)": f"{heaviest['flops_ratio']:.3f}",
                     "recovery %": "-" if heaviest["recovery"] != heaviest["recovery"]
                     else f"{100 * heaviest['recovery']:.1f}"})
    return _in_model_order(rows, summary)


def _in_model_order(rows: list[dict[str, object]], summary: pd.DataFrame) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=["model", "defense"])
    order = {name: i for i, name in enumerate(dict.fromkeys(summary["model"]))}
    return pd.DataFrame(rows).sort_values("model", key=lambda m: m.map(order), kind="stable").reset_index(drop=True)


def table_text(summary: pd.DataFrame, style: str = "compact") -> str:
    """The summary as the terminal shows it: ``compact`` (``compact_table``, then ``gate_attack_table`` where gate
    attacks ran) or ``full`` (every row)."""
    if style == "compact":
        blocks = []
        for heading, table in (("", compact_table(summary)),
                               ("gate attacks: goal met % (executed FLOPs adversarial / clean)",
                                gate_attack_table(summary))):
            if table.empty:
                continue
            names = [c for c in table.columns if c in ("model", "defense", "gate attack", "gate grad")]
            left = {c: (lambda w: lambda v: f"{v:<{w}}")(table[c].str.len().max()) for c in names}
            blocks.append((heading + "\n" if heading else "")
                          + table.to_string(index=False, formatters=left, justify="left"))
        return "\n".join(blocks)
    noise = "noise_floor_hamming" in summary.columns
    lines = [f"{'model':<18} {'defense':<20} {'attack':<22} {'gate-grad':<16} {'eps':>7} {'clean':>6} {'robust':>6} "
             f"{'same gates':>10} {'hamming':>8} {'FLOPs adv/clean':>15}" + (f" {'noise floor':>11}" if noise else "")]
    for row in summary.itertuples():
        defense = row.defense if row.defense == "none" else f"{row.defense} {row.defense_grad}"
        lines.append(f"{row.model:<18} {defense:<20} {row.attack_label:<22} {row.gate_grad:<16} "
                     f"{format_eps(row.epsilon):>7} {100 * row.clean_acc:>5.1f}% {100 * row.robust_acc:>5.1f}% "
                     f"{100 * row.unchanged_gates:>9.1f}% {row.hamming_mean:>8.3f} {row.flops_ratio:>15.3f}"
                     + (f" {row.noise_floor_hamming:>11.3f}" if noise else ""))
    return "\n".join(lines)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved at 0 and 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def gate_matrix(patterns: pd.Series) -> np.ndarray:
    """'0110...' strings -> (N, L) uint8 array (L = 0 for models without gates)."""
    values = patterns.astype(str).tolist()
    if not values or not values[0]:
        return np.zeros((len(values), 0), dtype=np.uint8)
    return np.frombuffer("".join(values).encode(), dtype=np.uint8).reshape(len(values), -1) - ord("0")


def worst_case_records(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of a synthetic attack 'worst-case': per (model, defense, defense_grad, gate_grad, epsilon, sample),
    adversarially correct only if correct under every misclassification attack (AutoAttack's AND)."""
    cls = records[records["goal"] == "misclassify"]
    if cls.empty:
        return cls
    keys = ["model", "defense", "defense_grad", "gate_grad", "epsilon", "sample"]
    # The worst case keeps, per sample, the row of the first attack that fooled it (else the first row).
    ordered = cls.assign(_fooled=~cls["adv_correct"].astype(bool)).sort_values("_fooled", ascending=False,
                                                                                  kind="stable")
    first = ordered.drop_duplicates(keys, keep="first").drop(columns="_fooled")
    return first.assign(attack=WORST)


def worst_over(records: pd.DataFrame, dimension: str, label: str = WORST) -> pd.DataFrame:
    """Collapse ``dimension`` (gate_grad or defense_grad): per remaining key and sample, correct only if correct
    under every value of it; rows get ``label`` in that column."""
    keys = [c for c in GROUP if c != dimension] + ["sample"]
    ordered = records.assign(_fooled=~records["adv_correct"].astype(bool)).sort_values("_fooled", ascending=False,
                                                                                       kind="stable")
    return ordered.drop_duplicates(keys, keep="first").drop(columns="_fooled").assign(**{dimension: label})


def summarize(records: pd.DataFrame, include_worst: bool = True,
              full_flops: Mapping[str, float] | None = None, input_values: int | None = None) -> pd.DataFrame:
    """One row per (model, defense, defense_grad, attack, gate_grad, epsilon) with every headline metric.

    ``full_flops`` (per model label: the FLOPs with every block open) adds the FLOPs-weighted recovery of the saved
    compute; the block-counted recovery and the FLOPs-ratio spread need only the records. ``input_values`` (values
    per image, C x H x W) adds the perturbation's MSE and PSNR (:func:`perturbation_size`)."""
    frames = [records]
    if include_worst and not records.empty:
        cls = records[records["goal"] == "misclassify"]
        gated = cls[cls["gate_grad"] != "none"]
        if gated["gate_grad"].nunique() > 1:
            frames.append(worst_over(gated, "gate_grad"))
        defended = pd.concat(frames, ignore_index=True)
        defended = defended[(defended["defense"] != "none") & (defended["goal"] == "misclassify")]
        if defended["defense_grad"].nunique() > 1:
            frames.append(worst_over(defended, "defense_grad"))
        if cls["attack"].nunique() > 1:
            frames.append(worst_case_records(pd.concat(frames, ignore_index=True)))
    data = pd.concat(frames, ignore_index=True)
    rows = []
    for key, group in data.groupby(GROUP, sort=False):
        full = (full_flops or {}).get(str(key[0]))
        rows.append({**dict(zip(GROUP, key)), **_metrics(group), **compute_metrics(group, full),
                     **perturbation_size(group, input_values)})
    summary = pd.DataFrame(rows)
    if not summary.empty:  # the short name tables and legends show, beside the canonical spec that identifies
        labels = {spec: attack_label(spec) for spec in set(summary["attack"])}
        summary.insert(GROUP.index("attack") + 1, "attack_label", summary["attack"].map(labels))
    return summary


def _metrics(group: pd.DataFrame) -> dict[str, float]:
    n = len(group)
    clean = group["clean_correct"].astype(bool).to_numpy()
    adv = group["adv_correct"].astype(bool).to_numpy()
    robust = clean & adv
    success = group["success"].astype(bool).to_numpy()
    lo, hi = wilson_interval(int(robust.sum()), n)
    hamming = group["hamming"].to_numpy(dtype=float)
    unchanged = (group["clean_gates"].astype(str).to_numpy() == group["adv_gates"].astype(str).to_numpy())
    fooled = clean & ~adv
    draws = (group["adv_draw_acc"].to_numpy(dtype=float) if "adv_draw_acc" in group.columns
             else adv.astype(float))
    clean_flops = float(group["clean_flops"].mean())
    adv_flops = float(group["adv_flops"].mean())
    return {
        "goal": str(group["goal"].iloc[0]),
        "n": n,
        "clean_acc": float(clean.mean()),
        "robust_acc": float(robust.mean()),
        "robust_acc_lo": lo,
        "robust_acc_hi": hi,
        "success_rate": float(fooled[clean].mean()) if clean.any() else float("nan"),
        "goal_success_rate": float(success.mean()),
        "linf_max": float(group["linf"].max()),
        "l2_mean": float(group["l2"].mean()),
        "hamming_mean": float(hamming.mean()),
        "unchanged_gates": float(unchanged.mean()),
        "hamming_mean_fooled": float(hamming[fooled].mean()) if fooled.any() else float("nan"),
        "hamming_mean_robust": float(hamming[robust].mean()) if robust.any() else float("nan"),
        "clean_flops": clean_flops,
        "adv_flops": adv_flops,
        "flops_ratio": adv_flops / clean_flops if clean_flops else float("nan"),
        "adv_flops_fooled": float(group["adv_flops"].to_numpy()[fooled].mean()) if fooled.any() else float("nan"),
        "adv_flops_robust": float(group["adv_flops"].to_numpy()[robust].mean()) if robust.any() else float("nan"),
        "unchanged_gates_fooled": float(unchanged[fooled].mean()) if fooled.any() else float("nan"),
        "unchanged_gates_robust": float(unchanged[robust].mean()) if robust.any() else float("nan"),
        # a random model (stochastic gates) is judged on several draws: the accuracy averaged over them, and the
        # share right in every draw (both equal robust_acc for a deterministic model)
        "robust_acc_draws": float((clean * draws).mean()),
        "robust_every_draw": float((clean & (draws >= 1 - 1e-9)).mean()),
    }


def perturbation_size(group: pd.DataFrame, input_values: int | None) -> dict[str, float]:
    """How visible the perturbations are, as ILFO and GradAuto report them (images in [0, 1]): over the perturbed
    samples, the mean MSE (L2 squared over the ``input_values`` values of an image) and the mean PSNR in dB,
    10 log10(1 / MSE). NaN without ``input_values`` or perturbed samples."""
    nan = float("nan")
    l2 = group["l2"].to_numpy(dtype=float)
    moved = l2[l2 > 0]
    if not input_values or not len(moved):
        return {"mse_mean": nan, "psnr_mean": nan}
    mse = moved**2 / input_values
    return {"mse_mean": float(mse.mean()), "psnr_mean": float((10 * np.log10(1 / mse)).mean())}


def compute_metrics(group: pd.DataFrame, full_flops: float | None = None) -> dict[str, float]:
    """Efficiency robustness of one setting, in every measure the field uses:

    * ``recovery``: the share of the saved compute an attack took back, FLOPs-weighted,
      sum(F_adv - F_clean) / sum(F_max - F_clean) (ILFO, GradAuto); per sample its median, p95 and max;
    * ``recovery_blocks``: GradMDM's block-counted recovery, sum(open_adv - open_clean) / sum(L - open_clean);
    * the per-sample FLOPs ratio F_adv / F_clean: median, p95, max;
    * ``all_open_clean``: the share of images that already run every block (nothing to take back);
    * DeepSloth's efficacy, the area under the curve of the share of images against normalised cost: with cost
      F / F_max per image it is the mean of 1 - F / F_max, clean and attacked (``efficacy_clean``, ``efficacy_adv``).
    NaN where it does not apply (no gates, no full FLOPs given, nothing saved)."""
    clean = group["clean_flops"].to_numpy(dtype=float)
    adv = group["adv_flops"].to_numpy(dtype=float)
    ratio = np.divide(adv, clean, out=np.full_like(adv, np.nan), where=clean > 0)
    gates_clean, gates_adv = gate_matrix(group["clean_gates"]), gate_matrix(group["adv_gates"])
    nan = float("nan")
    out = {"flops_ratio_median": float(np.nanmedian(ratio)) if len(ratio) else nan,
           "flops_ratio_p95": float(np.nanpercentile(ratio, 95)) if len(ratio) else nan,
           "flops_ratio_max": float(np.nanmax(ratio)) if len(ratio) else nan,
           "all_open_clean": nan, "recovery_blocks": nan, "recovery": nan, "recovery_median": nan,
           "recovery_p95": nan, "recovery_max": nan, "efficacy_clean": nan, "efficacy_adv": nan}
    if gates_clean.shape[1] and gates_clean.shape == gates_adv.shape:
        # signed counts: an attack (or noise) that closes gates makes open_adv - open_clean negative, which
        # unsigned sums of the uint8 matrix would wrap around to ~1.8e19
        open_clean, open_adv = gates_clean.sum(1, dtype=np.int64), gates_adv.sum(1, dtype=np.int64)
        saved_blocks = gates_clean.shape[1] - open_clean
        out["all_open_clean"] = float((saved_blocks == 0).mean())
        if saved_blocks.sum() > 0:
            out["recovery_blocks"] = float((open_adv - open_clean).sum() / saved_blocks.sum())
    if full_flops is not None and full_flops > 0:
        out["efficacy_clean"] = float((1 - clean / full_flops).mean())
        out["efficacy_adv"] = float((1 - adv / full_flops).mean())
        saved = full_flops - clean
        if saved.sum() > 0:
            out["recovery"] = saved_compute_recovery(clean, adv, full_flops)
            per_sample = (adv - clean)[saved > 0] / saved[saved > 0]
            out.update(recovery_median=float(np.median(per_sample)), recovery_p95=float(np.percentile(per_sample, 95)),
                       recovery_max=float(per_sample.max()))
    return out


def saved_compute_recovery(clean_flops: np.ndarray, adv_flops: np.ndarray, full_flops: float) -> float:
    """The share of the compute the gates saved (``full_flops`` minus clean, summed over the images) that the
    attack took back (attacked minus clean, summed); NaN where the gates saved nothing."""
    saved = float((full_flops - clean_flops).sum())
    return float((adv_flops - clean_flops).sum() / saved) if saved > 0 else float("nan")


def layer_rates(records: pd.DataFrame) -> pd.DataFrame:
    """Per (group, layer): execution rate clean and adversarial, and flip rate."""
    rows = []
    for key, group in records.groupby(GROUP, sort=False):
        clean = gate_matrix(group["clean_gates"])
        adv = gate_matrix(group["adv_gates"])
        for layer in range(clean.shape[1]):
            rows.append({**dict(zip(GROUP, key)), "layer": layer,
                         "clean_rate": float(clean[:, layer].mean()), "adv_rate": float(adv[:, layer].mean()),
                         "flip_rate": float((clean[:, layer] != adv[:, layer]).mean())})
    return pd.DataFrame(rows)


def class_rates(records: pd.DataFrame, classes: list[str] | None = None) -> pd.DataFrame:
    """Per (model, class, layer): clean execution rate (one sample counted once per model)."""
    rows = []
    for model, group in records.groupby("model", sort=False):
        unique = group.drop_duplicates("sample")
        matrix = gate_matrix(unique["clean_gates"])
        if matrix.shape[1] == 0:
            continue
        labels = unique["label"].to_numpy()
        for label in np.unique(labels):
            rates = matrix[labels == label].mean(0)
            name = classes[int(label)] if classes and int(label) < len(classes) else str(int(label))
            for layer, rate in enumerate(rates):
                rows.append({"model": model, "class": name, "layer": layer, "clean_rate": float(rate)})
    return pd.DataFrame(rows)
