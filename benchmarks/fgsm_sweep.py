"""Target 2: FGSM over 6 epsilons costs at most 1.3x one epsilon (one shared gradient); foolbox repeats the
attack per epsilon, so ours should be at least 3x faster on the sweep.

Usage: python benchmarks/fgsm_sweep.py [--batch 256]
"""

from __future__ import annotations

import click

from attacks import get_attack
from benchmarks.common import benchmark_batch, benchmark_model, best_time, machine_line

SWEEP = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]


@click.command()
@click.option("--batch", type=int, default=256, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
def main(batch: int, repeats: int) -> None:
    """Print sweep/single ratio for ours and the ratio to foolbox's FGSM on the same sweep."""
    model, model_desc = benchmark_model()
    x, y, data_desc = benchmark_batch(batch)
    ours = get_attack("fgsm")
    theirs = get_attack("foolbox:FGSM")
    t_one = best_time(lambda: ours(model, x, y, SWEEP[3:4]), repeats)
    t_sweep = best_time(lambda: ours(model, x, y, SWEEP), repeats)
    t_foolbox = best_time(lambda: theirs(model, x, y, SWEEP), repeats)
    t_judged = best_time(lambda: ours(model, x, y, SWEEP).success, repeats)
    click.echo(machine_line())
    click.echo(f"{model_desc}, {data_desc}, {len(SWEEP)} epsilons")
    click.echo(f"aigrobust FGSM: one eps {t_one * 1000:.0f} ms, sweep {t_sweep * 1000:.0f} ms -> sweep/one "
               f"{t_sweep / t_one:.2f}x (target <= 1.3x)")
    click.echo(f"foolbox FGSM sweep {t_foolbox * 1000:.0f} ms -> foolbox/aigrobust {t_foolbox / t_sweep:.2f}x "
               "(target >= 3x)")
    click.echo(f"with our (K, N) success matrix materialised as foolbox always does: {t_judged * 1000:.0f} ms -> "
               f"foolbox/aigrobust {t_foolbox / t_judged:.2f}x")


if __name__ == "__main__":
    main()
