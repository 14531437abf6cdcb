"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent) and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aigrobust.models.gates import randomize_gates as half_closed  # noqa: F401  (the tests' name for it)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TEST_SAMPLE = SHARED_DATA / "cifar10_test_sample.npz"
TRAIN_JPEG = SHARED_DATA / "cifar10_train_jpeg75.npz"
PRETRAINED = SHARED_DATA / "pretrained"


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar_test():
    """The 1000 exact CIFAR-10 test images."""
    from aigrobust.data import load_npz

    return load_npz(require(TEST_SAMPLE))


@pytest.fixture(scope="session")
def cifar_train():
    """The 50,000 JPEG-75 CIFAR-10 training images."""
    from aigrobust.data import load_npz

    return load_npz(require(TRAIN_JPEG))


def write_synthetic_npz(folder: Path) -> Path:
    """Write tiny train/test .npz files in the shared format (random images, fixed seed) into ``folder``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 40)):
        np.savez(folder / f"cifar10_{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.int64))
    return folder


@pytest.fixture
def synthetic_npz_dir(tmp_path: Path) -> Path:
    """A folder with tiny train/test .npz files in the shared format (random images)."""
    return write_synthetic_npz(tmp_path)


def varied_images(n: int, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> torch.Tensor:
    """[0, 1] images that differ in brightness and colour per sample, so gates decide differently per sample."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((n, *shape), generator=g)
    scale = torch.rand((n, shape[0], 1, 1), generator=g)
    return (base * scale).clamp(0, 1)
