"""Adversarial training: inner attacks against the evaluation attacks, robustness gained on real images,
the catastrophic-overfitting detector, the best checkpoint, EMA and resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.data import load_cifar10
from aigrobust.models.checkpoints import read_checkpoint
from aigrobust.models.factory import create_model, load_checkpoint
from aigrobust.training.config import BEST_FILE, LOG_FILE, TrainConfig, overfitting_warning
from aigrobust.training.inner_attacks import FGSMRS, NFGSM, TRADES, PGDTraining, inner_attack_from_spec
from aigrobust.training.loop import train
from aigrobust.training.state import update_average
from aigrobust.training.validation import validate_robust
from attacks import FGSM
from attacks.gradient import IterativeAttack
from tests.conftest import varied_images

EPS = 8 / 255


def _forward(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, trace = model.forward_with_gates(x)
        return logits, trace.p_on

    return forward


@pytest.fixture
def plain_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model("tiny_resnet").eval()


def _right_rows(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def test_n_fgsm_without_noise_is_fgsm(plain_model: torch.nn.Module) -> None:
    x = varied_images(32)
    with torch.no_grad():
        y = plain_model(x).argmax(1)  # every row is classified right: FGSM moves all of them
    ours = NFGSM(eps=EPS, k=0.0).perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(0))
    theirs = FGSM()(plain_model, x, y, [EPS]).clipped[0]
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_pgd_training_steps_are_the_evaluation_pgd_steps(plain_model: torch.nn.Module) -> None:
    x = varied_images(32, seed=1)
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(0))
    inner = PGDTraining(eps=EPS, steps=5)
    ours = inner.iterate(_forward(plain_model), x, x.clone(), y, None)
    reference = IterativeAttack(steps=5, abs_stepsize=EPS / 4, random_start=False, stop_at_success=False)
    theirs = reference(plain_model, x, y, [EPS]).clipped[0]
    right = _right_rows(plain_model, x, y)  # the evaluation attack leaves rows already wrong at the clean input
    assert right.sum() >= 2
    assert torch.allclose(ours[right], theirs[right], atol=1e-6)


def test_every_method_stays_in_its_ball_and_in_the_image_range(plain_model: torch.nn.Module) -> None:
    x = varied_images(16, seed=2)
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    bounds = {"n-fgsm": 3 * EPS, "fgsm-rs": EPS, "pgd": EPS, "trades": EPS}
    for method, bound in bounds.items():
        inner = inner_attack_from_spec(f"{method}:eps=8/255,steps=3" if method in ("pgd", "trades")
                                       else f"{method}:eps=8/255")
        adv = inner.perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(0))
        delta = (adv - x).abs().amax()
        assert 0 < float(delta) <= bound + 1e-6, method
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1, method
    # N-FGSM is not projected: its noise alone reaches past eps
    adv = NFGSM(eps=EPS).perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(0))
    assert float((adv - x).abs().amax()) > 1.5 * EPS


def test_the_same_generator_draws_the_same_batch(plain_model: torch.nn.Module) -> None:
    x = varied_images(8)
    y = torch.zeros(8, dtype=torch.long)
    for inner in (NFGSM(), FGSMRS(), PGDTraining(steps=2), TRADES(steps=2)):
        a = inner.perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(5))
        b = inner.perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(5))
        assert torch.equal(a, b), inner.method


def test_trades_raises_the_divergence_it_ascends(plain_model: torch.nn.Module) -> None:
    x = varied_images(16, seed=3)
    y = torch.zeros(16, dtype=torch.long)
    adv = TRADES(eps=EPS, steps=5).perturb(_forward(plain_model), x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = torch.softmax(plain_model(x), 1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(plain_model(adv), 1), clean, reduction="batchmean")
        noise = torch.nn.functional.kl_div(torch.log_softmax(plain_model((x + 0.001).clamp(0, 1)), 1), clean,
                                           reduction="batchmean")
    assert float(kl) > 10 * float(noise)


def test_the_compute_objective_opens_gates(cifar_test) -> None:
    model = create_model("aig20", pretrained=True).eval()
    x = torch.from_numpy(cifar_test.images[:48]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(cifar_test.labels[:48]).long()
    costs = torch.ones(model.num_blocks)
    executed = {}
    for weight in (0.0, 1.0, 100.0):
        adv = PGDTraining(eps=EPS, steps=5, compute=weight).perturb(_forward(model), x, y,
                                                                    torch.Generator().manual_seed(0), costs)
        with torch.no_grad():
            executed[weight] = float(model.forward_with_gates(adv)[1].decisions.float().mean())
    # measured: 0.79 (accuracy only), 0.88 (compute=1), 0.93 (compute=100) with 10 steps
    assert executed[1.0] >= executed[0.0] + 0.04 and executed[100.0] >= executed[1.0], executed


def test_canonical_specs_parse_back_and_whole_numbers_read_as_floats() -> None:
    a = inner_attack_from_spec("trades:beta=6,compute=1")
    assert a.spec == "trades:eps=0.03137254901960784,compute=1.0,steps=10,step=auto,beta=6.0"
    assert inner_attack_from_spec(a.spec) == a
    assert TrainConfig(model="tiny_aig", adversarial="n-fgsm").adversarial == (
        "n-fgsm:eps=0.03137254901960784,compute=0.0,k=2.0,step=auto")


def test_overfitting_warning_fires_on_a_collapse_and_not_on_a_dip() -> None:
    # a recorded validation history of FGSM training without random start at 16/255: robust accuracy collapses
    history = [0.21, 0.27, 0.31, 0.05]
    warnings = [overfitting_warning(history[i - 1] if i else None, history[i]) for i in range(len(history))]
    assert warnings[:3] == [None, None, None]
    assert warnings[3] is not None and "catastrophic overfitting" in warnings[3] and "0.3100 to 0.0500" in warnings[3]
    assert overfitting_warning(0.31, 0.12) is None  # 19 points: a dip, not a collapse


@pytest.mark.slow  # about 80 s on 2 free cores, four times that beside training runs
def test_adversarial_training_buys_robustness_on_real_images(cifar_train, tmp_path: Path) -> None:
    picks = np.random.default_rng(0).permutation(len(cifar_train))[:2400]
    data, validation = cifar_train.subset(picks[:2000]), cifar_train.subset(picks[2000:])
    eps = 8 / 255  # measured (4 epochs, tiny_resnet): PGD-10 accuracy 10.5% after N-FGSM, 2.5% after standard training
    common = dict(model="tiny_resnet", epochs=4, batch_size=64, lr=0.2, schedule="onecycle", weight_decay=5e-4,
                  seed=0)
    standard = train(TrainConfig(**common), data, tmp_path / "standard")
    robust = train(TrainConfig(**common, adversarial=f"n-fgsm:eps={eps}"), data, tmp_path / "robust",
                   heldout=validation)
    standard_figures = validate_robust(standard.model, validation, eps)
    robust_figures = validate_robust(robust.model, validation, eps)
    assert robust_figures.robust_accuracy >= standard_figures.robust_accuracy + 0.05, (robust_figures,
                                                                                       standard_figures)
    # N-FGSM stays clear of catastrophic overfitting: no warning in the log
    log = [json.loads(line) for line in (tmp_path / "robust" / LOG_FILE).read_text().splitlines()]
    assert all(r["warning"] is None for r in log)
    assert [r["heldout_robust_accuracy"] for r in log] == [r.heldout_robust_accuracy for r in robust.history]
    # the best checkpoint is the epoch the log marks best, with the log's figures
    best = [r for r in log if r["best"]][-1]
    assert best["heldout_robust_accuracy"] == max(r["heldout_robust_accuracy"] for r in log)
    _, meta = read_checkpoint(tmp_path / "robust" / BEST_FILE)
    assert meta["epoch"] == best["epoch"] and meta["robust_accuracy"] == best["heldout_robust_accuracy"]
    assert meta["recipe"]["adversarial"] == f"n-fgsm:eps={eps!r},compute=0.0,k=2.0,step=auto"
    reloaded, _ = load_checkpoint(tmp_path / "robust" / BEST_FILE)
    assert validate_robust(reloaded, validation, eps).robust_accuracy == best["heldout_robust_accuracy"]


def test_the_weight_average_averages_batchnorm_statistics_with_the_weights() -> None:
    # statistics copied from the live network describe its features, not the averaged weights' ones
    live = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    average = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    average.load_state_dict(live.state_dict())
    live.train()(torch.rand(8, 3, 6, 6) * 5)  # moves the live statistics and its batch counter
    with torch.no_grad():
        live[0].weight.add_(1.0)
    before = {k: v.clone() for k, v in average.state_dict().items()}
    update_average(average, live, decay=0.75)
    after, now = average.state_dict(), live.state_dict()
    for key in ("0.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(after[key], 0.75 * before[key] + 0.25 * now[key]), key
        assert not torch.allclose(after[key], now[key]), key
    assert int(after["1.num_batches_tracked"]) == int(now["1.num_batches_tracked"]) == 1


class _Killed(Exception):
    pass


@pytest.mark.parametrize("spec", ["n-fgsm:compute=0.5", "trades:steps=1"])
def test_resume_after_a_kill_gives_the_same_weights(spec: str, synthetic_npz_dir: Path, tmp_path: Path) -> None:
    data = load_cifar10("train", synthetic_npz_dir)
    heldout = load_cifar10("test", synthetic_npz_dir)
    config = TrainConfig(model="tiny_aig", model_kwargs={"target_rate": 0.6}, epochs=2, batch_size=16, lr=0.05,
                         schedule="onecycle", seed=3, adversarial=spec, ema=0.9)
    straight = train(config, data, tmp_path / "straight", heldout=heldout)

    def kill_mid_epoch_2(epoch: int, step: int, steps: int, loss: float) -> None:
        if epoch == 2 and step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train(config, data, tmp_path / "resumed", heldout=heldout, on_batch=kill_mid_epoch_2, checkpoint_every=2)
    resumed = train(config, data, tmp_path / "resumed", heldout=heldout, resume=True, checkpoint_every=2)
    for name in ("model.safetensors", BEST_FILE):
        a, _ = read_checkpoint(tmp_path / "straight" / name)
        b, _ = read_checkpoint(tmp_path / "resumed" / name)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert [r.train_loss for r in straight.history] == [r.train_loss for r in resumed.history]
    # the EMA model is what is saved: it differs from the raw weights the state file holds
    state = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    final, _ = read_checkpoint(straight.checkpoint)
    assert not torch.equal(state["model"]["conv1.weight"], final["conv1.weight"])


def test_cli_adversarial_training_logs_validation_figures(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out",
                                      str(out), "--epochs", "1", "--batch-size", "32", "--adversarial",
                                      "fgsm-rs:eps=4/255", "--val-samples", "24"])
    assert result.exit_code == 0, result.output
    assert "PGD-10 acc" in result.output and "best" in result.output
    _, meta = read_checkpoint(out / "model.safetensors")
    assert meta["train_data"]["n"] == 96 - 24 and meta["heldout_data"]["n"] == 24
    assert meta["recipe"]["adversarial"].startswith("fgsm-rs:eps=0.0156862745098039")
    refused = CliRunner().invoke(cli, ["train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir),
                                       "--out", str(tmp_path / "other"), "--adversarial", "n-fgsm",
                                       "--val-samples", "96"])
    assert refused.exit_code == 2 and "leaves nothing to train on" in refused.output


@pytest.mark.parametrize("network", ["training", "deployed", "running-statistics"])
def test_the_inner_attack_runs_on_the_network_asked_for(network: str, synthetic_npz_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """'deployed': the inner attack sees hard gates with a straight-through gradient and running statistics (what
    evaluation attacks); the training step still sees sampled gates in training mode."""
    from aigrobust.models.base import ResNetBase
    from aigrobust.models.gates import GateGrad, GateMode

    seen: list[tuple[bool, GateGrad, bool]] = []
    seen_modes: list[tuple[bool, GateGrad, bool, GateMode]] = []
    original = ResNetBase.forward_with_gates

    def spy(self: ResNetBase, x: torch.Tensor):  # type: ignore[no-untyped-def]
        seen.append((self.training, self.gate_config.grad, torch.is_grad_enabled() and x.requires_grad))
        seen_modes.append((*seen[-1], self.gate_config.mode))
        return original(self, x)

    monkeypatch.setattr(ResNetBase, "forward_with_gates", spy)
    config = TrainConfig(model="tiny_aig", model_kwargs={"target_rate": 0.6}, epochs=1, batch_size=32, lr=0.05,
                         seed=1, adversarial="n-fgsm", inner_network=network)
    train(config, load_cifar10("train", synthetic_npz_dir), tmp_path / network)
    attacked = [(training, grad) for training, grad, wants_input_grad in seen if wants_input_grad]
    expected = (True, GateGrad.EXACT) if network == "training" else (False, GateGrad.STRAIGHT_THROUGH)
    assert attacked and set(attacked) == {expected}
    modes = {mode for training, _, _, mode in seen_modes if not training}
    assert modes == {"training": set(), "deployed": {GateMode.HARD}, "running-statistics": {GateMode.STOCHASTIC}}[network]
    assert any(training for training, _, _ in seen)  # the step itself trains on sampled gates
    assert seen[-1][:2] == (True, GateGrad.EXACT)  # after an inner attack on the deployed network, as before
    with pytest.raises(ValueError, match="inner_network"):
        TrainConfig(model="tiny_aig", adversarial="n-fgsm", inner_network="deploy")
