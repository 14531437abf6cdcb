"""The findings of the dynamic-networks study (early exit beside gates and plain), as Markdown, from run folders.

Reads each run's summary.csv (and universal.json where given) and writes the tables the report's preface holds:
accuracy and robustness per model, compute under attack, decision stability, the universal perturbation.
Usage: python scripts/dynamic_findings.py RUN... [--universal universal.json ...] --out findings.md
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

WORST = "worst-case"


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


def _eps(value: float) -> str:
    return f"{round(value * 255)}/255"


def _rows(runs: list[Path]) -> pd.DataFrame:
    frames = []
    for run in runs:
        frame = pd.read_csv(run / "summary.csv")
        frames.append(frame.assign(run=run.name))
    # a row that two runs hold (the same model, setting, attack and epsilon): the first run listed wins; a worst case
    # is over its own run's attacks, so each run keeps its own
    rows = pd.concat(frames, ignore_index=True)
    own = rows["run"].where(rows["attack"] == WORST, "")
    return rows.assign(_own=own).drop_duplicates(
        ["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon", "_own"]).drop(columns="_own")


def robustness_table(rows: pd.DataFrame) -> list[str]:
    """Per model: clean accuracy and FLOPs, robust accuracy under the standard suite (worst case over its attacks
    and, for dynamic models, the gate gradients run) at each epsilon."""
    suite = rows[(rows["attack"] == WORST) & (rows["defense"] == "none") & rows["run"].str.startswith("standard")]
    # per model: the worst case over the gate gradients where several ran, else the one that ran
    preferred = suite.groupby("model")["gate_grad"].agg(lambda g: WORST if WORST in set(g) else sorted(set(g))[0])
    suite = suite[suite["gate_grad"] == suite["model"].map(preferred)]
    epsilons = sorted(e for e in suite["epsilon"].unique() if e > 0)
    lines = ["| model | clean % | clean MFLOPs | " + " | ".join(f"standard suite {_eps(e)} % [95%] (n)" for e in epsilons)
             + " |", "| --- | --- | --- | " + " | ".join("---" for _ in epsilons) + " |"]
    for model, mine in suite.groupby("model", sort=False):
        clean = mine.iloc[0]
        cells = []
        for eps in epsilons:
            at = mine[(mine["epsilon"] - eps).abs() < 1e-9]
            cells.append("-" if at.empty else f"{_pct(at.iloc[0]['robust_acc'])} [{_pct(at.iloc[0]['robust_acc_lo'])}, "
                         f"{_pct(at.iloc[0]['robust_acc_hi'])}] ({int(at.iloc[0]['n'])})")
        lines.append(f"| {model} | {_pct(clean['clean_acc'])} | {clean['clean_flops'] / 1e6:.1f} | " + " | ".join(cells)
                     + " |")
    return lines


def compute_table(rows: pd.DataFrame) -> list[str]:
    """Per dynamic model, epsilon and compute attack (and the noise control): FLOPs clean and attacked, the share of
    the saved FLOPs taken back, the per-image FLOPs ratio's p95 and max, DeepSloth's efficacy."""
    compute = rows[(rows["goal"] == "gates") & (rows["epsilon"] > 0) & (rows["gate_grad"] == "exact")
                   & rows["attack_label"].str.contains("compute-inflation|random-noise", regex=True)]
    lines = ["| model | epsilon | attack | MFLOPs clean -> attacked (ratio) | saved FLOPs taken back | per-image ratio p95 / max "
             "| efficacy clean -> attacked |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in compute.sort_values(["model", "epsilon"], kind="stable").itertuples():
        lines.append(f"| {row.model} | {_eps(row.epsilon)} | {row.attack_label} | {row.clean_flops / 1e6:.1f} -> "
                     f"{row.adv_flops / 1e6:.1f} ({row.flops_ratio:.3f}) | {_pct(row.recovery)}% | "
                     f"{row.flops_ratio_p95:.3f} / {row.flops_ratio_max:.3f} | {row.efficacy_clean:.3f} -> "
                     f"{row.efficacy_adv:.3f} |")
    return lines


def stability_table(rows: pd.DataFrame) -> list[str]:
    """Share of images whose every gate or exit decision stays the same under FGSM and PGD-20 (exact gradient)."""
    attacked = rows[(rows["run"] == "stability") & (rows["epsilon"] > 0) & (rows["gate_grad"] == "exact")
                    & (rows["attack"] != WORST)]
    if attacked.empty:
        return []
    columns = list(dict.fromkeys(zip(attacked["attack_label"], attacked["epsilon"])))
    lines = ["| model | " + " | ".join(f"{label} {_eps(eps)}: same decisions % / robust %" for label, eps in columns)
             + " |", "| --- | " + " | ".join("---" for _ in columns) + " |"]
    for model, mine in attacked.groupby("model", sort=False):
        cells = []
        for label, eps in columns:
            at = mine[(mine["attack_label"] == label) & ((mine["epsilon"] - eps).abs() < 1e-9)]
            cells.append("-" if at.empty else f"{_pct(at.iloc[0]['unchanged_gates'])} / {_pct(at.iloc[0]['robust_acc'])}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def universal_lines(paths: list[Path]) -> list[str]:
    """One line per universal perturbation: the saved FLOPs it takes back on its fitting images, on unseen test
    images, and what random sign noise of the same size takes back there."""
    lines = []
    for path in paths:
        d = json.loads(path.read_text())
        lines.append(f"- {d['model']}: one delta of Linf {_eps(d['epsilon'])}, fitted on {d['fit_data']['n']} training "
                     f"images ({d['steps']} steps, {d['gate_loss']} loss): {_pct(d['fit_recovery'])}% of the saved FLOPs "
                     f"taken back there, **{_pct(d['judge_recovery'])}%** on {d['judge_data']['n']} unseen test images "
                     f"(random sign noise: {_pct(d['noise_recovery'])}%)")
    return lines


@click.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--universal", "universal", multiple=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True)
def main(runs: tuple[Path, ...], universal: tuple[Path, ...], out: Path) -> None:
    """Write the findings tables of the dynamic-networks study."""
    rows = _rows(list(runs))
    parts = ["## Accuracy, robustness and compute per model", "", *robustness_table(rows), "",
             "## Compute under attack (undefended, exact gradient)", "", *compute_table(rows), ""]
    stability = stability_table(rows)
    if stability:
        parts += ["## Decision stability: the share of images whose every gate or exit decision stays the same", "",
                  *stability, ""]
    if universal:
        parts += ["## One perturbation for every image (universal, 8/255)", "", *universal_lines(list(universal)), ""]
    out.write_text("\n".join(parts) + "\n")
    click.echo(f"findings: {out}")


if __name__ == "__main__":
    main()
