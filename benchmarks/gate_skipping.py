"""Wall-clock of a hard-mode gated ResNet with about half its gates closed versus every gate open.

Prints throughput for: every gate open (the plain network's work), hard mode with real skipping, and hard mode
with masking (multiply by zero: the reference code's behaviour), next to the FLOPs ratio the gates promise.
Usage: python benchmarks/gate_skipping.py [--model aig56] [--batch 1 --batch 256] [--threads 2]
"""

from __future__ import annotations

import platform
import time

import click
import torch

from aigrobust import create_model
from aigrobust.models.gates import randomize_gates


def images_per_second(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    """Throughput of ``model`` on ``x`` over about ``seconds`` (after one warm-up call)."""
    with torch.inference_mode():
        model(x)  # warm-up
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            runs += 1
    return runs * x.shape[0] / (time.perf_counter() - start)


def best_rates(model: torch.nn.Module, x: torch.Tensor, seconds: float, rounds: int) -> dict[str, float]:
    """Best throughput of each execution over ``rounds`` interleaved rounds: the three settings take turns, so a
    slow spell of a shared machine hits them alike instead of one of them."""
    settings = (("open", "open", "skip"), ("skip", "hard", "skip"), ("mask", "hard", "mask"))
    best = dict.fromkeys((label for label, _, _ in settings), 0.0)
    for _ in range(rounds):
        for label, mode, execution in settings:
            with model.gate_settings(mode=mode, execution=execution):
                best[label] = max(best[label], images_per_second(model, x, seconds / rounds))
    return best


@click.command()
@click.option("--model", "model_name", default="aig56", show_default=True)
@click.option("--batch", "batches", type=int, multiple=True, default=(1, 256), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--seconds", type=float, default=5.0, show_default=True, help="Timing per setting, over all rounds.")
@click.option("--rounds", type=int, default=5, show_default=True, help="Interleaved rounds; the best of each counts.")
def main(model_name: str, batches: tuple[int, ...], threads: int, seconds: float, rounds: int) -> None:
    """Print throughput of open, skipping and masking execution and the FLOPs-promised speedup."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)  # the same random trunk and gates on every run, so runs compare
    model = create_model(model_name).eval()
    randomize_gates(model)
    g = torch.Generator().manual_seed(1)
    click.echo(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {threads} threads")
    for batch in batches:
        x = torch.rand(batch, 3, 32, 32, generator=g) * torch.rand(batch, 3, 1, 1, generator=g)
        with torch.inference_mode():
            _, trace = model.forward_with_gates(x)
        profile = model.flop_profile((3, 32, 32))
        flops_ratio = profile.full / float(trace.flops.mean())
        rates = best_rates(model, x, seconds, rounds)
        speedup = rates["skip"] / rates["open"]
        click.echo(f"{model_name} batch {batch}: execution rate {trace.decisions.float().mean():.2f}, "
                   f"FLOPs promise {flops_ratio:.2f}x | img/s open {rates['open']:.0f}, skip {rates['skip']:.0f}, "
                   f"mask {rates['mask']:.0f} | skip/open {speedup:.2f}x = {speedup / flops_ratio:.2f} of the promise; "
                   f"mask/open {rates['mask'] / rates['open']:.2f}x")


if __name__ == "__main__":
    main()
