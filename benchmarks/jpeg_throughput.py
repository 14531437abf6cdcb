"""JPEG defense throughput: our batched codec versus a per-image Pillow loop on the same images, same outputs.

Usage: python benchmarks/jpeg_throughput.py [--data ../shared/data/cifar10_test_sample.npz] [--quality 75]
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import click
import numpy as np
import torch

from defenses import JPEG, pillow_jpeg_round_trip

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_test_sample.npz"


def best_of(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--quality", type=int, default=75, show_default=True)
@click.option("--repeats", type=int, default=15, show_default=True, help="best of this many timings (the VM is noisy)")
def main(data: Path, quality: int, repeats: int) -> None:
    """Print images/s of both, their ratio, and whether the outputs are identical."""
    if not data.is_file():
        raise click.ClickException(f"{data} not found; pass --data with an .npz of uint8 NHWC images")
    images = np.load(data)["images"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    jpeg = JPEG(quality)
    ours = jpeg(x)  # warm-up
    reference = pillow_jpeg_round_trip(images, quality)
    identical = np.array_equal((ours * 255).round().byte().permute(0, 2, 3, 1).numpy(), reference)
    t_ours = best_of(lambda: jpeg(x), repeats)
    t_pillow = best_of(lambda: pillow_jpeg_round_trip(images, quality), repeats)
    click.echo(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
               f"{len(images)} images {images.shape[1]}x{images.shape[2]}, quality {quality}")
    click.echo(f"pillow loop {len(images) / t_pillow:,.0f} img/s | aigrobust JPEG {len(images) / t_ours:,.0f} img/s | "
               f"ratio {t_pillow / t_ours:.2f}x | identical outputs: {identical}")


if __name__ == "__main__":
    main()
