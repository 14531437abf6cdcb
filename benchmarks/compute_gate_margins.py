"""Issue 30: why the compute attack stops short at small epsilons, per gate. For the first test images, the compute
attack (defaults, 100 steps) at each epsilon; per gated block: the share open clean and attacked, and for the
images whose gate stays closed, how far its log-odds stay below the threshold (0) clean and attacked (median).

Usage: python -m benchmarks.compute_gate_margins [--n 100] [--eps 2/255 --eps 8/255]
"""

from __future__ import annotations

from fractions import Fraction

import click
import torch

from aigrobust import create_model
from aigrobust.data import load_npz
from attacks.compute_attack import ComputeInflation, gate_log_odds
from attacks.noise import SampleNoise
from benchmarks.common import SHARED, machine_line


@click.command()
@click.option("--n", "n_images", type=int, default=100, show_default=True)
@click.option("--eps", "epsilons", multiple=True, default=("2/255", "8/255"), show_default=True)
def main(n_images: int, epsilons: tuple[str, ...]) -> None:
    """Attack, then print each gate's open share and the margins of the gates that stay closed."""
    model = create_model("aig20", pretrained=True).eval()
    x, y = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_images)).tensors()
    click.echo(machine_line())
    with torch.no_grad():
        clean = model.forward_with_gates(x)[1]
    clean_margin = gate_log_odds(clean.p_on)
    for eps_text in epsilons:
        adv = ComputeInflation().run_one(model, model, x, y, float(Fraction(eps_text)), SampleNoise(0, range(n_images)))
        with torch.no_grad():
            attacked = model.forward_with_gates(adv)[1]
        margin = gate_log_odds(attacked.p_on)
        click.echo(f"aig20, {n_images} images, Linf {eps_text}: block, open clean -> attacked, median log-odds of the "
                   "gates still closed (clean -> attacked)")
        for block in range(margin.shape[1]):
            shut = ~attacked.decisions[:, block]
            medians = (f"{float(clean_margin[shut, block].median()):+.2f} -> {float(margin[shut, block].median()):+.2f}"
                       if bool(shut.any()) else "none closed")
            click.echo(f"  block {block}: {float(clean.decisions[:, block].float().mean()):.2f} -> "
                       f"{float(attacked.decisions[:, block].float().mean()):.2f}; {int(shut.sum())} closed: {medians}")


if __name__ == "__main__":
    main()
