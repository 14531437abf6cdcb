"""Why the compute attack stops short at small epsilons, per gate. For the first test images, the compute
attack (defaults, 100 steps) at each epsilon; per gated block: the share open clean and attacked, and for the
images whose gate stays closed, how far its log-odds stay below the threshold (0) clean and attacked (median).

Usage: python -m benchmarks.compute_gate_margins [--n 100] [--eps 2/255 --eps 8/255] [--single-gate]
       python -m benchmarks.compute_gate_margins --n 500 --delta reports/cifar10-robust/universal-aig20-8/delta.safetensors
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
@click.option("--delta", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instead of attacking, add this universal perturbation (aigrobust universal's delta.safetensors) "
                   "to every image: which gates one shared delta opens and which it closes.")
@click.option("--single-gate", is_flag=True,
              help="Also attack each gate the joint attack left closed on its own (its log-odds alone, 100 signed "
                   "steps): how many of them any attack could open one at a time.")
def main(n_images: int, epsilons: tuple[str, ...], single_gate: bool, delta: str | None) -> None:
    """Attack, then print each gate's open share and the margins of the gates that stay closed."""
    if delta is not None:
        universal_gates(n_images, delta)
        return
    model = create_model("aig20", pretrained=True).eval()
    x, y = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_images)).tensors()
    click.echo(machine_line())
    with torch.no_grad():
        clean = model.forward_with_gates(x)[1]
    clean_margin = gate_log_odds(clean.p_on)
    profile = model.flop_profile(tuple(x.shape[1:]))
    costs, full = profile.residual, profile.full
    for eps_text in epsilons:
        adv = ComputeInflation().run_one(model, model, x, y, float(Fraction(eps_text)), SampleNoise(0, range(n_images)))
        with torch.no_grad():
            attacked = model.forward_with_gates(adv)[1]
        margin = gate_log_odds(attacked.p_on)
        extra = 0.0  # FLOPs of the gates a single-gate attack opens that the joint one left closed
        click.echo(f"aig20, {n_images} images, Linf {eps_text}: block, open clean -> attacked, median log-odds of the "
                   "gates still closed (clean -> attacked)")
        for block in range(margin.shape[1]):
            shut = ~attacked.decisions[:, block]
            medians = (f"{float(clean_margin[shut, block].median()):+.2f} -> {float(margin[shut, block].median()):+.2f}"
                       if bool(shut.any()) else "none closed")
            click.echo(f"  block {block}: {float(clean.decisions[:, block].float().mean()):.2f} -> "
                       f"{float(attacked.decisions[:, block].float().mean()):.2f}; {int(shut.sum())} closed: {medians}")
            if single_gate and bool(shut.any()):
                opened = open_one_gate(model, x[shut], block, float(Fraction(eps_text)))
                extra += float(opened.sum()) * costs[block]
                click.echo(f"    alone: {int(opened.sum())} of these {int(shut.sum())} open when only this gate is "
                           "attacked")
        clean_total, attacked_total = float(clean.flops.double().sum()), float(attacked.flops.double().sum())
        saved = full * n_images - clean_total
        click.echo(f"  recovery {(attacked_total - clean_total) / saved:.3f}"
                   + (f"; ceiling if every gate that opens alone opened together: "
                      f"{(attacked_total + extra - clean_total) / saved:.3f}" if single_gate else ""))


def universal_gates(n_images: int, delta_path: str) -> None:
    """Per gated block under one universal delta: open share clean -> perturbed, and how many images the delta
    opens it for and closes it for (a shared delta pushes some gates the wrong way on some images)."""
    from safetensors.torch import load_file

    model = create_model("aig20", pretrained=True).eval()
    x, _ = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_images)).tensors()
    delta = load_file(delta_path)["delta"]
    click.echo(machine_line())
    with torch.no_grad():
        clean = model.forward_with_gates(x)[1].decisions.bool()
        moved = model.forward_with_gates((x + delta).clamp(0, 1))[1].decisions.bool()
    click.echo(f"aig20, first {n_images} test images, universal delta {delta_path} (Linf {float(delta.abs().max()):.4f})")
    for block in range(clean.shape[1]):
        click.echo(f"  block {block}: open {float(clean[:, block].float().mean()):.2f} -> "
                   f"{float(moved[:, block].float().mean()):.2f}; opened for {int((moved & ~clean)[:, block].sum())}, "
                   f"closed for {int((clean & ~moved)[:, block].sum())}")


def open_one_gate(model: torch.nn.Module, x: torch.Tensor, block: int, eps: float, steps: int = 100) -> torch.Tensor:
    """Per image, whether some point of the Linf ball opens gate ``block`` when its log-odds alone are ascended
    (signed steps of eps/4, then eps/16 for the second half); the gate's own ceiling, ignoring every other gate."""
    delta = torch.zeros_like(x)
    ever = torch.zeros(len(x), dtype=torch.bool)
    for step in range(steps):
        delta.requires_grad_(True)
        margin = gate_log_odds(model.forward_with_gates((x + delta).clamp(0, 1))[1].p_on)[:, block]
        (grad,) = torch.autograd.grad(margin.clamp(max=1.0).sum(), delta)
        size = eps / 4 if step < steps // 2 else eps / 16
        delta = ((delta.detach() + size * grad.sign()).clamp(-eps, eps) + x).clamp(0, 1) - x
        with torch.no_grad():
            ever |= model.forward_with_gates(x + delta)[1].decisions[:, block].bool()
    return ever


if __name__ == "__main__":
    main()
