"""Target 3: PGD-10 throughput against foolbox's LinfPGD and torchattacks' PGD (same steps, step size, eps).

Usage: python benchmarks/pgd_throughput.py [--batch 256] [--steps 10]
torchattacks is optional (pip install torchattacks; it pins an old requests, so it is not a dev dependency).
"""

from __future__ import annotations

import click

from attacks import get_attack
from benchmarks.common import benchmark_batch, benchmark_model, best_time, machine_line

EPS = 8 / 255


@click.command()
@click.option("--batch", type=int, default=256, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True)
@click.option("--repeats", type=int, default=2, show_default=True)
def main(batch: int, steps: int, repeats: int) -> None:
    """Print images/s of each implementation and our ratios."""
    model, model_desc = benchmark_model()
    x, y, data_desc = benchmark_batch(batch)
    rel = 2.5 / steps
    ours = get_attack("pgd", steps=steps, rel_stepsize=rel)
    foolbox_pgd = get_attack("foolbox:LinfPGD", steps=steps, rel_stepsize=rel)
    times = {"aigrobust": best_time(lambda: ours(model, x, y, [EPS]), repeats),
             "foolbox": best_time(lambda: foolbox_pgd(model, x, y, [EPS]), repeats)}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=rel * EPS, steps=steps, random_start=True)
        times["torchattacks"] = best_time(lambda: ta(x, y), repeats)
    except ImportError:
        pass
    click.echo(machine_line())
    click.echo(f"{model_desc}, {data_desc}, PGD-{steps} Linf eps 8/255 step {rel:.3f} eps, random start")
    for name, seconds in times.items():
        click.echo(f"{name:>12}: {batch / seconds:8.0f} img/s")
    click.echo(f"aigrobust/foolbox {times['foolbox'] / times['aigrobust']:.2f}x (target >= 1.3x)")
    if "torchattacks" in times:
        click.echo(f"aigrobust/torchattacks {times['torchattacks'] / times['aigrobust']:.2f}x (target >= 1.0x)")
    else:
        click.echo("torchattacks not installed: pip install torchattacks to compare")


if __name__ == "__main__":
    main()
