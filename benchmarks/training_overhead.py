"""Target 6: the gates' training overhead: aig20 epoch time over resnet20's on the same data and batch.

Usage: python benchmarks/training_overhead.py [--n 2560] [--batch 128]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np

from aigrobust.data import CIFAR10_CLASSES, ArrayDataset, load_npz
from aigrobust.training.config import TrainConfig
from aigrobust.training.loop import train
from benchmarks.common import SHARED, machine_line


def training_data(n: int) -> ArrayDataset:
    path = SHARED / "cifar10_train_jpeg75.npz"
    if path.is_file():
        data = load_npz(path)
        return data.subset(np.random.default_rng(0).permutation(len(data))[:n])
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
                        CIFAR10_CLASSES, "noise", "random")


@click.command()
@click.option("--n", type=int, default=2560, show_default=True)
@click.option("--batch", type=int, default=128, show_default=True)
@click.option("--repeats", type=int, default=2, show_default=True)
def main(n: int, batch: int, repeats: int) -> None:
    """Print images/s of one training epoch for each model and the ratio."""
    data = training_data(n)
    seconds = {}
    for name in ("resnet20", "aig20", "resnet20", "aig20")[: 2 * repeats]:
        config = TrainConfig(model=name, epochs=1, batch_size=batch, schedule="cosine", seed=0, device="cpu")
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            train(config, data, Path(out))
            elapsed = time.perf_counter() - start
        seconds[name] = min(seconds.get(name, float("inf")), elapsed)
    click.echo(machine_line())
    click.echo(f"{n} training images, batch {batch}, one epoch (best of {repeats})")
    for name, s in seconds.items():
        click.echo(f"{name:>9}: {n / s:6.0f} img/s ({s:.1f} s)")
    click.echo(f"aig20/resnet20 epoch time {seconds['aig20'] / seconds['resnet20']:.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
