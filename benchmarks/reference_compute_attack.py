"""Our compute attack beside a port of GradMDM's (Pan et al., TPAMI 2023), same model, images, norm and
step budget.

The port follows the authors' public code (github.com/lingengfoo/GradMDM, ``train_gradmdm.py``) for everything that
defines the attack: an additive perturbation optimised with Adam; the loss on the gate probabilities
``-|| clamp(p_on, max=0.5) ||_p`` per image (pushes every gate below the threshold up, the largest, i.e. nearest to
opening, hardest: GradMDM's "magnitude" part), with ``p = 1`` for the first 10 iterations and ``p = 3.5`` after;
the gate gradient scaled by 1.5e5; 100 iterations. Two changes put it under the same threat model as ours, and both
are stated in the output: the authors' L2-distance penalty (gamma) and tanh rescaling are replaced by a projection
onto the Linf or L2 ball and onto [0, 1] after every step; and the learning rate is given in pixel units, with the best
of a small grid kept per setting (the authors' 0.01 was for ImageNet-normalised inputs, about 0.002 in pixels), so the
port is not judged at a learning rate chosen for another input scale. Like ours, it keeps each image's iterate with
the most executed FLOPs (the authors keep the last one; keeping the best can only help the port).

Recovery is FLOPs-weighted, ``sum(F_adv - F_clean) / sum(F_max - F_clean)``, and GradMDM's block-counted version
(executed blocks instead of FLOPs) beside it.

Usage: python -m benchmarks.reference_compute_attack [--n 200] [--eps 8/255 --eps 2/255] [--distance linf]
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import click
import torch
from torch import Tensor

from aigrobust import create_model
from aigrobust.data import load_npz
from attacks.compute_attack import ComputeInflation
from attacks.distances import DISTANCES
from attacks.noise import SampleNoise
from benchmarks.common import SHARED, machine_line


def gradmdm_loss(p_on: Tensor, p: float, threshold: float = 0.5) -> Tensor:
    """GradMDM's 'negative' gate loss, summed over images: minus the p-norm over gates of the probabilities of the
    gates still below the threshold (clamped there, so open gates add a constant and no gradient)."""
    return -p_on.float().clamp(max=threshold).norm(p=p, dim=1).sum()


def gradmdm_port(model: Any, images: Tensor, eps: float, distance: str = "linf", steps: int = 100,
                 lr: float = 0.002, warmup: int = 10, p: float = 3.5, scale: float = 1.5e5) -> Tensor:
    """The GradMDM port: Adam on an additive perturbation, projected to the ball after every step; the per-image
    iterate with the most executed FLOPs is returned."""
    ball = DISTANCES[distance]
    delta = torch.zeros_like(images, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    best = images.clone()
    with torch.no_grad():
        best_flops = model.forward_with_gates(images)[1].flops.clone()
    for step in range(steps):
        x = (images + delta).clamp(0, 1)
        with torch.enable_grad():
            _, trace = model.forward_with_gates(x)
            loss = gradmdm_loss(trace.p_on, p=1.0 if step < warmup else p)
            (grad,) = torch.autograd.grad(loss, delta)
        delta.grad = scale * grad
        optimizer.step()
        with torch.no_grad():
            projected = ball.project(images, images + delta, eps)
            delta.copy_(projected.clamp(0, 1) - images)
            x = images + delta
            flops = model.forward_with_gates(x)[1].flops
            better = flops > best_flops
            best[better], best_flops = x[better], torch.where(better, flops, best_flops)
    return best


def recoveries(model: Any, clean: Tensor, attacked: Tensor) -> tuple[float, float]:
    """FLOPs-weighted and block-counted recovery of the attacked batch over the clean one."""
    full = model.flop_profile(tuple(clean.shape[1:])).full
    with torch.no_grad():
        before = model.forward_with_gates(clean)[1]
        after = model.forward_with_gates(attacked)[1]
    flops = float((after.flops.double() - before.flops.double()).sum() / (full - before.flops.double()).sum())
    blocks_before = before.decisions.double().sum(1)
    blocks_after = after.decisions.double().sum(1)
    total = before.decisions.shape[1]
    blocks = float((blocks_after - blocks_before).sum() / (total - blocks_before).sum())
    return flops, blocks


def ours(model: Any, images: Tensor, labels: Tensor, eps: float, distance: str, steps: int) -> Tensor:
    """Our compute-inflation attack at its defaults (hinge loss, per-gate normalisation, deconfliction, APGD)."""
    attack = ComputeInflation(steps=steps, distance=distance)
    noise = SampleNoise(0, list(range(len(images))))
    return attack.run_one(model, model, images, labels, eps, noise)


@click.command()
@click.option("--n", "n_images", type=int, default=200, show_default=True, help="First test images attacked.")
@click.option("--eps", "epsilons", multiple=True, default=("8/255", "2/255"), show_default=True)
@click.option("--distance", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--lr", "learning_rates", type=float, multiple=True, default=(0.002, 0.005, 0.01), show_default=True,
              help="The port's Adam learning rates (pixel units); the best per setting is reported.")
@click.option("--batch-size", type=int, default=100, show_default=True)
def main(n_images: int, epsilons: tuple[str, ...], distance: str, steps: int, learning_rates: tuple[float, ...],
         batch_size: int) -> None:
    """Run both attacks on the shipped aig20 and print recovery side by side."""
    model = create_model("aig20", pretrained=True).eval()
    images, labels = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_images)).tensors()
    click.echo(machine_line())
    click.echo(f"aig20 (shipped), first {n_images} test images, {distance}, {steps} steps each; recovery "
               "FLOPs-weighted / block-counted")
    for eps_text in epsilons:
        eps = float(Fraction(eps_text))
        start = time.perf_counter()
        adv = torch.cat([ours(model, x, y, eps, distance, steps)
                         for x, y in zip(images.split(batch_size), labels.split(batch_size))])
        ours_time = time.perf_counter() - start
        ours_flops, ours_blocks = recoveries(model, images, adv)
        click.echo(f"{eps_text}: ours {ours_flops:.3f} / {ours_blocks:.3f} ({ours_time:.0f} s)")
        for lr in learning_rates:
            start = time.perf_counter()
            adv = torch.cat([gradmdm_port(model, x, eps, distance, steps, lr=lr) for x in images.split(batch_size)])
            port_time = time.perf_counter() - start
            port_flops, port_blocks = recoveries(model, images, adv)
            click.echo(f"{eps_text}: GradMDM port, Adam lr {lr:g}: {port_flops:.3f} / {port_blocks:.3f} "
                       f"({port_time:.0f} s)")


if __name__ == "__main__":
    main()
