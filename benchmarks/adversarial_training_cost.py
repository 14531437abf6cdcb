"""The cost of an N-FGSM (or other --adversarial) training epoch over a standard one, same model, data,
batch and seed; each round times both back to back, so a slow spell of the machine hits both alike.

Usage: python -m benchmarks.adversarial_training_cost [--n 2560] [--batch 128] [--rounds 3] [--method n-fgsm]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from aigrobust.training.config import TrainConfig
from aigrobust.training.loop import train
from benchmarks.common import machine_line
from benchmarks.training_overhead import training_data


def epoch_seconds(model: str, data: object, batch: int, adversarial: str | None) -> float:
    """Wall-clock seconds of one training epoch (no validation pass: that is the same for every method)."""
    kwargs = {"model_kwargs": {"target_rate": 0.6}} if model.startswith("aig") else {}
    config = TrainConfig(model=model, epochs=1, batch_size=batch, schedule="onecycle", seed=0, device="cpu",
                         adversarial=adversarial, **kwargs)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(config, data, Path(out))  # type: ignore[arg-type]
        return time.perf_counter() - start


@click.command()
@click.option("--n", type=int, default=2560, show_default=True)
@click.option("--batch", type=int, default=128, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--method", default="n-fgsm:eps=8/255", show_default=True)
@click.option("--model", "models", multiple=True, default=("resnet20", "aig20"), show_default=True)
def main(n: int, batch: int, rounds: int, method: str, models: tuple[str, ...]) -> None:
    """Print each round's standard and adversarial epoch times and their ratio, then the range per model."""
    data = training_data(n)
    click.echo(machine_line())
    click.echo(f"{n} training images, batch {batch}, one epoch each, {method} against standard training")
    for model in models:
        epoch_seconds(model, data, batch, method)  # warm-up: the first epoch of a process pays one-off costs
        ratios = []
        for r in range(rounds):
            standard = epoch_seconds(model, data, batch, None)
            adversarial = epoch_seconds(model, data, batch, method)
            ratios.append(adversarial / standard)
            click.echo(f"{model:>9} round {r + 1}: standard {standard:6.1f} s, adversarial {adversarial:6.1f} s, "
                       f"ratio {ratios[-1]:.2f}x")
        click.echo(f"{model:>9}: ratio {min(ratios):.2f}-{max(ratios):.2f}x over {rounds} rounds (target <= 2.3x)")


if __name__ == "__main__":
    main()
