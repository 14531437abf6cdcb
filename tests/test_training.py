"""Training: a short real run learns, gates move toward their target, resume equals an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aigrobust.data import load_cifar10
from aigrobust.models.checkpoints import read_checkpoint
from aigrobust.models.factory import load_checkpoint
from aigrobust.training.config import LOG_FILE, TrainConfig, TrainingError, learning_rate, warmed_up_targets
from aigrobust.training.loop import augment_batch, resolve_device, train


def test_short_real_training_run_learns_and_moves_gates_toward_target(cifar_train, cifar_test, tmp_path: Path) -> None:
    picks = np.random.default_rng(0).permutation(len(cifar_train))[:5000]
    config = TrainConfig(model="tiny_aig", model_kwargs={"target_rate": 0.5}, epochs=1, batch_size=64, lr=0.2,
                         schedule="cosine", weight_decay=5e-4, seed=0)
    result = train(config, cifar_train.subset(picks), tmp_path, heldout=cifar_test)
    record = result.history[-1]
    assert record.heldout_accuracy is not None and record.heldout_accuracy >= 0.17  # chance is 0.10 (+-0.01)
    # Gates start ~87% open (every hard decision 'on'); after one epoch they sit near the 0.5 target.
    rate = float(np.mean(record.heldout_execution_rates))
    assert abs(rate - 0.5) < 0.2
    assert record.heldout_flops_ratio is not None and record.heldout_flops_ratio < 0.85
    model, meta = load_checkpoint(result.checkpoint)
    assert meta["accuracy"] == record.heldout_accuracy
    assert meta["train_data"]["n"] == 5000 and len(meta["train_data"]["sha256"]) == 64
    assert meta["recipe"]["schedule"] == "cosine"
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert json.loads(lines[0])["epoch"] == 1


def _small_config(**overrides: object) -> TrainConfig:
    base = dict(model="tiny_aig", model_kwargs={"target_rate": 0.6}, epochs=3, batch_size=32, lr=0.05,
                schedule="onecycle", seed=3)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


class _Killed(Exception):
    pass


def test_resume_after_epoch_k_ends_with_the_same_weights(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    data = load_cifar10("train", synthetic_npz_dir)
    heldout = load_cifar10("test", synthetic_npz_dir)
    config = _small_config()
    straight = train(config, data, tmp_path / "straight", heldout=heldout)

    def kill_after_first(record) -> None:  # type: ignore[no-untyped-def]
        if record.epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(config, data, tmp_path / "resumed", heldout=heldout, on_epoch=kill_after_first)
    with pytest.raises(TrainingError, match="--resume"):
        train(config, data, tmp_path / "resumed", heldout=heldout)
    resumed = train(config, data, tmp_path / "resumed", heldout=heldout, resume=True)
    a, _ = read_checkpoint(straight.checkpoint)
    b, _ = read_checkpoint(resumed.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r.train_loss for r in straight.history] == [r.train_loss for r in resumed.history]
    with pytest.raises(TrainingError, match="another configuration \\(lr 0.05 -> 0.1\\)"):
        train(_small_config(lr=0.1), data, tmp_path / "resumed", resume=True)


@pytest.mark.parametrize("target_warmup", [0.0, 0.75], ids=["fixed-target", "target-warm-up"])
def test_resume_mid_epoch_ends_with_the_same_weights(synthetic_npz_dir: Path, tmp_path: Path,
                                                     target_warmup: float) -> None:
    data = load_cifar10("train", synthetic_npz_dir)
    # 6 steps per epoch; under a warm-up the targets depend on the step, which the resumed run must continue from
    config = _small_config(epochs=2, batch_size=16, target_warmup=target_warmup)
    straight = train(config, data, tmp_path / "straight")

    def kill_at_step_5_of_epoch_2(epoch: int, step: int, steps: int, loss: float) -> None:
        if epoch == 2 and step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train(config, data, tmp_path / "resumed", on_batch=kill_at_step_5_of_epoch_2, checkpoint_every=2)
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4)  # the last checkpoint before the kill
    resumed = train(config, data, tmp_path / "resumed", resume=True, checkpoint_every=2)
    a, _ = read_checkpoint(straight.checkpoint)
    b, _ = read_checkpoint(resumed.checkpoint)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r.train_loss for r in straight.history] == [r.train_loss for r in resumed.history]


def test_same_seed_same_weights_and_other_seed_differs(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    data = load_cifar10("train", synthetic_npz_dir)
    runs = [train(_small_config(epochs=1, seed=s), data, tmp_path / f"r{i}") for i, s in enumerate((1, 1, 2))]
    weights = [read_checkpoint(r.checkpoint)[0]["conv1.weight"] for r in runs]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_schedules() -> None:
    step = _small_config(schedule="step", lr=0.1, milestones=(0.5, 0.75))
    assert learning_rate(step, 0, 100) == pytest.approx(0.1)
    assert learning_rate(step, 60, 100) == pytest.approx(0.01)
    assert learning_rate(step, 80, 100) == pytest.approx(0.001)
    cosine = _small_config(schedule="cosine", lr=0.1)
    assert learning_rate(cosine, 50, 100) == pytest.approx(0.05)
    one = _small_config(schedule="onecycle", lr=0.1)
    values = [learning_rate(one, s, 100) for s in range(100)]
    assert max(values) == pytest.approx(0.1, rel=0.05) and values[0] < 0.01 and values[-1] < 0.001


def _is_crop_of(image: torch.Tensor, crop: torch.Tensor, pad: int = 4) -> bool:
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    for candidate in (padded, padded.flip(2)):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if torch.equal(candidate[:, dy : dy + 32, dx : dx + 32], crop):
                    return True
    return False


def test_augmentation_crops_and_flips_within_the_padded_image() -> None:
    images = torch.rand(16, 3, 32, 32)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert all(_is_crop_of(images[i], out[i]) for i in range(16))
    assert sum(torch.equal(images[i], out[i]) for i in range(16)) < 8  # most samples actually moved


def test_cuda_asked_where_there_is_none() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainingError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_init_takes_a_checkpoint_of_the_same_model_or_the_plain_twin_with_its_normalisation(tmp_path: Path) -> None:
    """--init: the same architecture gives every weight (a gated model keeps its gates, for fine-tuning); the plain
    twin gives the residual branches, the gates keep their fresh initialisation; the source's input normalisation
    comes along; another architecture is refused naming what does not fit. Regression: a checkpoint of ours holding
    a gated model was read as the ConvNet-AIG reference layout and refused."""
    from aigrobust.models.checkpoints import save_checkpoint
    from aigrobust.models.factory import create_model
    from aigrobust.training.config import TrainingError
    from aigrobust.training.state import initialise_from

    torch.manual_seed(1)
    plain, gated = create_model("tiny_resnet"), create_model("tiny_aig")
    plain.normalize.set_statistics([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    save_checkpoint(plain, tmp_path / "plain.safetensors")
    save_checkpoint(gated, tmp_path / "gated.safetensors")

    torch.manual_seed(2)
    fresh = create_model("tiny_aig")
    fresh_gates = {k: v.clone() for k, v in fresh.state_dict().items() if ".gate." in k}
    initialise_from(fresh, str(tmp_path / "plain.safetensors"))
    state = fresh.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(state[k], v), k
    assert fresh_gates and all(torch.equal(state[k], v) for k, v in fresh_gates.items())
    assert fresh.normalize.as_dict() == plain.normalize.as_dict()

    torch.manual_seed(3)
    again = create_model("tiny_aig")
    initialise_from(again, str(tmp_path / "gated.safetensors"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in gated.state_dict().items())

    with pytest.raises(TrainingError, match="holds tiny_aig weights, which do not fit tiny_resnet"):
        initialise_from(create_model("tiny_resnet"), str(tmp_path / "gated.safetensors"))
    with pytest.raises(TrainingError, match="no such file, and unknown model"):
        initialise_from(create_model("tiny_aig"), str(tmp_path / "missing.safetensors"))


def test_init_from_a_shipped_name() -> None:
    """--init resnet20.at starts aig20 from the shipped robust twin's residual branches."""
    from aigrobust.models.factory import create_model
    from aigrobust.training.state import initialise_from

    model = create_model("aig20")
    initialise_from(model, "resnet20.at")
    source = create_model("resnet20.at", pretrained=True).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


def test_a_resumed_run_keeps_the_input_statistics_it_trained_under(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """The input normalisation is not in the weights: --init sets it from the source, the state file pins it, and a
    resume restores it even when the source has changed since (a state from before it was pinned resumes with the
    model's own defaults, as --init then left them)."""
    from aigrobust.models.checkpoints import save_checkpoint
    from aigrobust.models.factory import create_model

    data = load_cifar10("train", synthetic_npz_dir)
    source = create_model("tiny_resnet")
    source.normalize.set_statistics([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    init = tmp_path / "source.safetensors"
    save_checkpoint(source, init)
    config = _small_config(epochs=2, init=str(init))

    def kill_after_first(record) -> None:  # type: ignore[no-untyped-def]
        if record.epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(config, data, tmp_path / "run", on_epoch=kill_after_first)
    changed = create_model("tiny_resnet")  # the source file is replaced by weights with other statistics
    save_checkpoint(changed, init)
    resumed = train(config, data, tmp_path / "run", resume=True)
    _, meta = read_checkpoint(resumed.checkpoint)
    assert meta["normalization"] == source.normalize.as_dict()

    state_path = tmp_path / "run" / "train_state.pt"
    state = torch.load(state_path, weights_only=False)
    state.pop("normalization")
    state["epoch"] = 1
    torch.save(state, state_path)
    older = train(_small_config(epochs=2, init=str(init)), data, tmp_path / "run", resume=True)
    _, meta = read_checkpoint(older.checkpoint)
    assert meta["normalization"] == create_model("tiny_aig").normalize.as_dict()

    init.unlink()  # a resume reads its state, not the source it began from
    state = torch.load(state_path, weights_only=False)
    state["epoch"] = 1
    torch.save(state, state_path)
    train(config, data, tmp_path / "run", resume=True)


def test_target_warm_up_falls_linearly_from_all_blocks_to_the_targets() -> None:
    targets = torch.tensor([0.6, 0.2])
    assert torch.equal(warmed_up_targets(targets, 0.0, 0, 100), targets)
    assert torch.allclose(warmed_up_targets(targets, 0.5, 0, 100), torch.ones(2))
    assert torch.allclose(warmed_up_targets(targets, 0.5, 25, 100), torch.tensor([0.8, 0.6]))
    for step in (50, 99):
        assert torch.allclose(warmed_up_targets(targets, 0.5, step, 100), targets)


def test_target_warm_up_keeps_the_gates_open_early_in_the_run(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """Same seed and budget: with the targets starting at 1.0 the gates execute more in the first epoch than with
    the targets at 0.3 from the first step; a warm-up is stored in the checkpoint's recipe."""
    data = load_cifar10("train", synthetic_npz_dir)
    rates = {}
    for warmup in (0.0, 1.0):
        config = _small_config(model_kwargs={"target_rate": 0.3}, epochs=2, batch_size=16, gate_lambda=20.0,
                               gate_lr_factor=10.0, target_warmup=warmup)
        result = train(config, data, tmp_path / f"warmup-{warmup}")
        rates[warmup] = float(np.mean(result.history[0].train_execution_rates))
        assert read_checkpoint(result.checkpoint)[1]["recipe"]["target_warmup"] == warmup
    assert rates[1.0] > rates[0.0] + 0.2, rates
    with pytest.raises(ValueError, match="target_warmup"):
        _small_config(target_warmup=1.5)
