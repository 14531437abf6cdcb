"""Per-sample seeds: random starts and Square's draws come from (run seed, sample id), stochastic gates' Gumbel draws
from (run seed, input row, draw name), so a run's records are the same bytes whatever its batch size (and, in
test_reliability, its number of torchrun processes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import attack_from_spec
from attacks.noise import SampleNoise
from tests.test_cli import _tiny_checkpoint, run


def test_a_sample_draws_the_same_numbers_in_any_batch() -> None:
    alone = SampleNoise(7, [42]).uniform("start", (3, 4, 4))
    crowd = SampleNoise(7, [5, 42, 9]).uniform("start", (3, 4, 4))
    assert torch.equal(alone[0], crowd[1])
    assert not torch.equal(crowd[0], crowd[1])  # another sample, other numbers
    assert not torch.equal(alone, SampleNoise(8, [42]).uniform("start", (3, 4, 4)))  # another seed
    assert not torch.equal(alone, SampleNoise(7, [42]).uniform("other", (3, 4, 4)))  # another draw
    subset = SampleNoise(7, [5, 42, 9]).rows(torch.tensor([False, True, False]))
    assert torch.equal(subset.uniform("start", (3, 4, 4))[0], alone[0])
    u = SampleNoise(0, range(2000)).uniform("u", (64,))
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    z = SampleNoise(0, range(2000)).normal("z", (64,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02


def test_rows_named_by_run_draw_what_each_run_draws_alone() -> None:
    from attacks.noise import RUN

    noise = SampleNoise(7, [5, 42, 9])
    rows = noise.rows(torch.tensor([1, 1, 2])).with_runs(["1/0", "2/0", "1/0"])  # sample 42 twice, two runs
    together = rows.uniform(f"start/{RUN}", (2, 3))
    assert torch.equal(together[0], noise.uniform("start/1/0", (2, 3))[1])
    assert torch.equal(together[1], noise.uniform("start/2/0", (2, 3))[1])
    assert torch.equal(together[2], noise.uniform("start/1/0", (2, 3))[2])
    assert torch.equal(rows.rows(torch.tensor([False, True, False])).normal(f"z/{RUN}", (4,))[0],
                       noise.normal("z/2/0", (4,))[1])
    with pytest.raises(ValueError, match="run names"):
        noise.uniform(f"start/{RUN}", (2,))


def test_attacks_give_each_sample_the_same_adversarial_in_any_batch() -> None:
    from aigrobust import create_model
    from tests.conftest import half_closed

    model = half_closed(create_model("tiny_aig")).eval()
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 10
    ids = torch.arange(100, 112)
    for spec in ("pgd:steps=3,restarts=2", "apgd:steps=4", "square:n_queries=25", "pgd-l2:steps=2"):
        attack = attack_from_spec(spec)
        whole = attack(model, x, y, [8 / 255], sample_ids=ids).clipped[0]
        order = torch.tensor([5, 0, 11, 3])
        part = attack(model, x[order], y[order], [8 / 255], sample_ids=ids[order]).clipped[0]
        assert torch.equal(part, whole[order]), spec


def _record_digests(tmp_path: Path, n_images: int, batch_sizes: tuple[int, ...], *options: str) -> set[str]:
    """The sha256 of records.csv.gz of one attack run per batch size, on ``n_images`` random images."""
    rng = np.random.default_rng(n_images)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "cifar10_test.npz", images=rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, n_images).astype(np.int64))
    checkpoint = _tiny_checkpoint(tmp_path)
    digests = set()
    for batch_size in batch_sizes:
        out = tmp_path / f"b{batch_size}"
        code, output = run("attack", "--checkpoint", str(checkpoint), *options, "--data-dir", str(data),
                           "--batch-size", str(batch_size), "--out", str(out))
        assert code == 0, output
        digests.add(hashlib.sha256((out / "records.csv.gz").read_bytes()).hexdigest())
    return digests


def test_records_are_the_same_bytes_for_batch_sizes_7_32_and_256(tmp_path: Path) -> None:
    # 60 images: batches of 7 (the last one short), of 32 (32 and 28), and one batch holding them all
    digests = _record_digests(tmp_path, 60, (7, 32, 256), "--eps", "2/255", "--eps", "8/255", "--attack", "fgsm",
                              "--attack", "pgd:steps=3", "--attack", "apgd:steps=4", "--attack", "square:n_queries=20",
                              "--gate-grad", "exact", "--gate-grad", "straight-through")
    assert len(digests) == 1, digests


def test_random_model_records_are_the_same_bytes_for_batch_sizes_5_and_64(tmp_path: Path) -> None:
    """Gumbel draws of stochastic gates (under EOT, judged on several draws) and a randomised defense's draws do
    not depend on the batch."""
    digests = _record_digests(tmp_path, 18, (5, 64), "--eps", "8/255", "--attack", "pgd:steps=2",
                              "--attack", "apgd:steps=3,eot_draws=2", "--gate-mode", "stochastic", "--eot-draws", "3",
                              "--gate-grad", "straight-through", "--defense", "none", "--defense", "randpad:0.875",
                              "--defense-grad", "bpda", "--defense-grad", "eot")
    assert len(digests) == 1, digests
