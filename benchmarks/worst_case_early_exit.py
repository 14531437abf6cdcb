"""Target 4: in a worst case over attacks, samples already fooled are not attacked again.

Runs the same sweep with and without early exit and prints the time saved; the worst-case robust accuracy must be
identical (per-attack figures then only cover the samples each attack saw).
Usage: python benchmarks/worst_case_early_exit.py [--n 256]
"""

from __future__ import annotations

import time

import click
import numpy as np

from aigrobust.evaluation import EvalSpec, ModelEntry, run_evaluation
from aigrobust.evaluation.metrics import summarize
from benchmarks.common import benchmark_batch, benchmark_model, machine_line

ATTACKS = ("fgsm", "pgd:steps=10", "apgd:steps=20")


@click.command()
@click.option("--n", type=int, default=256, show_default=True)
def main(n: int) -> None:
    """Print the wall-clock of both modes and the worst-case accuracies side by side."""
    model, model_desc = benchmark_model()
    x, y, data_desc = benchmark_batch(n)
    results = {}
    for early in (False, True):
        spec = EvalSpec(attacks=ATTACKS, epsilons=(2 / 255, 8 / 255), early_exit=early)
        start = time.perf_counter()
        run = run_evaluation([ModelEntry("resnet20", model)], spec, x, y, np.arange(n), batch_size=n)
        seconds = time.perf_counter() - start
        summary = summarize(run.records)
        worst = summary[summary["attack"] == "worst-case"].set_index("epsilon")["robust_acc"]
        results[early] = (seconds, worst)
    click.echo(machine_line())
    click.echo(f"{model_desc}, {data_desc}, attacks {', '.join(ATTACKS)} at 0, 2/255, 8/255")
    (t_all, w_all), (t_early, w_early) = results[False], results[True]
    click.echo(f"every attack on every sample: {t_all:.1f} s | early exit: {t_early:.1f} s | saving "
               f"{100 * (1 - t_early / t_all):.0f}% ({t_all / t_early:.2f}x)")
    click.echo("worst-case robust accuracy: " + ", ".join(
        f"eps {e:.4f}: {100 * w_all[e]:.1f}% vs {100 * w_early[e]:.1f}%" for e in w_all.index))
    click.echo("identical: " + str(bool((w_all == w_early).all())))


if __name__ == "__main__":
    main()
