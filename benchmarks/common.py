"""Shared bits of the benchmark scripts: machine line, the benchmark model and data, a timer."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def machine_line() -> str:
    """CPU, torch version and threads, printed at the top of every benchmark."""
    return (f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def benchmark_model(name: str = "resnet20") -> tuple[torch.nn.Module, str]:
    """The external pretrained model where ../shared/data has it, else randomly initialised weights."""
    from aigrobust import create_model
    from aigrobust.models.factory import load_checkpoint

    path = SHARED / "pretrained" / "resnet20-12fca82f.th"
    if name == "resnet20" and path.is_file():
        model, _ = load_checkpoint(path)
        return model.eval(), "resnet20 (akamaster weights)"
    return create_model(name).eval(), f"{name} (random weights)"


def benchmark_batch(n: int = 256) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` real CIFAR-10 test images where available, else uniform noise with random labels."""
    from aigrobust.data import load_npz

    path = SHARED / "cifar10_test_sample.npz"
    if path.is_file():
        x, y = load_npz(path).subset(range(n)).tensors()
        return x, y, f"{n} real CIFAR-10 test images"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), f"{n} noise images"


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall-clock of ``repeats`` runs (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
