"""Does wall clock follow FLOPs? Per-image latency at batch 1 on clean and on compute-attacked images.

Our gates really skip (hard mode, skipping execution: a closed block's residual branch is never run), so an attack
that opens gates should cost time in proportion to the FLOPs it adds. For each model this benchmark attacks the
first test images with the compute attack, then times every image alone (batch 1, inference mode, best of
``--repeats`` calls, clean and attacked interleaved image by image so a slow spell of the machine hits both) and
prints, per round, the mean latency ratio attacked / clean beside the FLOPs ratio, and how far apart they are.

Models: the shipped aig20 and sdn20 (early exit: an image's blocks after its exit never run), and aig110 (54 gates;
no shipped weights, so random weights, each gate's bias set so that it opens for half of the images: latency against
FLOPs does not depend on what the weights learned). Early-exit networks are attacked with DeepSloth's objective.
The attack here is the compute attack with a single gradient per step (no per-gate normalisation), enough to move
the FLOPs: this benchmark is about time following FLOPs, not about the attack's strength.

Pause other work on the machine while it runs (it times small calls).
Usage: python -m benchmarks.compute_latency [--n 100] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import time
from typing import Any

import click
import torch
from torch import Tensor

from aigrobust import create_model
from aigrobust.data import load_npz
from aigrobust.models.facts import weights_available
from aigrobust.models.gates import Gate
from attacks.compute_attack import ComputeInflation
from attacks.noise import SampleNoise
from benchmarks.common import SHARED, machine_line


def calibrate_half_open(model: Any, images: Tensor, seed: int = 0) -> None:
    """Random gate weights, then each gate's 'on' bias shifted (in order, first gate first) so that it opens for
    half of ``images``: every gate sits at its threshold for some image, as a trained gate does, instead of being
    saturated open or closed by random weights."""
    g = torch.Generator().manual_seed(seed)
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    with torch.no_grad():
        for gate in gates:
            gate.fc2.weight.copy_(torch.randn(gate.fc2.weight.shape, generator=g))
        for index, gate in enumerate(gates):
            p_on = model.forward_with_gates(images)[1].p_on[:, index].double().clamp(1e-12, 1 - 1e-12)
            gate.fc2.bias[1] -= float(torch.logit(p_on).median())


def attacked_images(model: Any, images: Tensor, labels: Tensor, eps: float, steps: int) -> Tensor:
    """The compute attack's images (single-gradient variant; DeepSloth's objective for exits), in batches of 50."""
    exits = hasattr(model, "calibrate_exits")
    attack = ComputeInflation(steps=steps, normalize=False, deconflict=False,
                              gate_loss="uniform" if exits else "prob")
    out = []
    for start in range(0, len(images), 50):
        x, y = images[start:start + 50], labels[start:start + 50]
        noise = SampleNoise(0, list(range(start, start + len(x))))
        out.append(attack.run_one(model, model, x, y, eps, noise))
    return torch.cat(out)


def latency(model: torch.nn.Module, image: Tensor, repeats: int) -> float:
    """Best wall clock of ``repeats`` batch-1 calls (after one warm-up)."""
    x = image.unsqueeze(0)
    model(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - start)
    return best


def one_round(model: torch.nn.Module, clean: Tensor, attacked: Tensor, repeats: int) -> tuple[float, float]:
    """Mean batch-1 latency (seconds) on the clean and on the attacked images, interleaved image by image."""
    clean_total = attacked_total = 0.0
    with torch.inference_mode():
        for c, a in zip(clean, attacked):
            clean_total += latency(model, c, repeats)
            attacked_total += latency(model, a, repeats)
    return clean_total / len(clean), attacked_total / len(clean)


def flops_ratio(model: Any, clean: Tensor, attacked: Tensor) -> tuple[float, float, float]:
    """Mean executed FLOPs clean and attacked, relative to every block open, and their ratio."""
    full = model.flop_profile(tuple(clean.shape[1:])).full
    with torch.no_grad():
        before = float(model.forward_with_gates(clean)[1].flops.double().mean())
        after = float(model.forward_with_gates(attacked)[1].flops.double().mean())
    return before / full, after / full, after / before


@click.command()
@click.option("--n", "n_images", type=int, default=100, show_default=True, help="First test images timed.")
@click.option("--eps", default=8 / 255, show_default=True, type=float)
@click.option("--steps", type=int, default=50, show_default=True, help="Compute-attack steps.")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--repeats", type=int, default=5, show_default=True, help="Calls per image per round; the best counts.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--model", "model_names", multiple=True, default=("aig20", "sdn20", "aig110"), show_default=True)
def main(n_images: int, eps: float, steps: int, rounds: int, repeats: int, threads: int,
         model_names: tuple[str, ...]) -> None:
    """Attack, then time batch-1 latency clean against attacked, per model and round."""
    torch.set_num_threads(threads)
    images, labels = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(n_images)).tensors()
    click.echo(machine_line())
    for name in model_names:
        shipped = weights_available(name) == "shipped"
        torch.manual_seed(0)
        model = create_model(name, pretrained=shipped).eval()
        if not shipped:
            calibrate_half_open(model, images)
        adv = attacked_images(model, images, labels, eps, steps)
        clean_share, adv_share, ratio = flops_ratio(model, images, adv)
        click.echo(f"{name} ({'shipped' if shipped else 'random weights, gates calibrated to open for half the images'}), "
                   f"{n_images} images, Linf {eps:.4f}: FLOPs {clean_share:.3f} -> {adv_share:.3f} of every block "
                   f"open, ratio {ratio:.3f}")
        for r in range(rounds):
            clean_s, adv_s = one_round(model, images, adv, repeats)
            latency_ratio = adv_s / clean_s
            click.echo(f"  round {r + 1}: batch-1 latency {clean_s * 1e3:.2f} ms -> {adv_s * 1e3:.2f} ms, ratio "
                       f"{latency_ratio:.3f}; latency ratio / FLOPs ratio {latency_ratio / ratio:.3f}")


if __name__ == "__main__":
    main()
