"""A universal compute perturbation for the shipped aig20, fitted on training images and judged on the
first test images it never saw; prints the FLOPs-weighted recovery on both sets and on random noise of the same norm.

Usage: python -m benchmarks.universal_compute [--fit 512] [--judge 1000] [--eps 8/255] [--steps 50]
"""

from __future__ import annotations

from fractions import Fraction

import click
import numpy as np

from aigrobust import create_model
from aigrobust.data import load_npz
from aigrobust.runs.universal import universal_compute
from benchmarks.common import SHARED, machine_line


@click.command()
@click.option("--fit", "n_fit", type=int, default=512, show_default=True, help="Training images the delta is fitted on.")
@click.option("--judge", "n_judge", type=int, default=1000, show_default=True, help="First test images it is judged on.")
@click.option("--eps", default="8/255", show_default=True)
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--gate-loss", default="hinge", show_default=True, type=click.Choice(["hinge", "prob"]))
def main(n_fit: int, n_judge: int, eps: str, steps: int, gate_loss: str) -> None:
    """Fit, judge, print (the measurement is aigrobust.runs.universal's, as `aigrobust universal` makes it)."""
    model = create_model("aig20", pretrained=True).eval()
    train = load_npz(SHARED / "cifar10_train_jpeg75.npz")
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:n_fit])
    fit_images, _ = train.subset(pick).tensors()
    judge_images, _ = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_judge)).tensors()
    result = universal_compute(model, fit_images, list(pick), judge_images, list(range(n_judge)), float(Fraction(eps)),
                               steps=steps, gate_loss=gate_loss)
    click.echo(machine_line())
    click.echo(f"aig20, universal Linf {eps}, {steps} steps, {gate_loss} gate loss, fitted on {n_fit} training images "
               f"(seeded pick), judged on the first {n_judge} test images")
    click.echo(f"recovery on the fitting images: {result.fit_recovery:.3f}")
    click.echo(f"recovery on unseen test images: {result.judge_recovery:.3f} (goal >= 0.40)")
    click.echo(f"random sign noise of the same norm on them: {result.noise_recovery:.3f}")


if __name__ == "__main__":
    main()
