"""Early-exit networks (SDN on the CIFAR ResNet backbone): exits as gates in the trace, FLOPs per exit taken, the
three gate gradients, threshold calibration, exits-only training, and the same attacks, records and reports as
gated networks (the compute attack with DeepSloth's objective)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import aigrobust
from aigrobust.cli import cli
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.early_exit import EarlyExitResNet, sdn_exit_positions
from aigrobust.models.factory import create_model, load_checkpoint
from tests.conftest import varied_images


def _sdn(threshold_quantile: float = 0.5) -> EarlyExitResNet:
    """tiny_sdn with random weights and a threshold at a quantile of the first exit's confidence on varied images,
    so that some images leave there and some go on."""
    torch.manual_seed(0)
    model = create_model("tiny_sdn").eval()
    with torch.no_grad(), model.gate_settings(mode="open"):
        first = torch.softmax(model.forward_with_gates(varied_images(64))[1].exit_logits[:, 0], 1).amax(1)
    model.exit_threshold.fill_(float(first.quantile(threshold_quantile)))
    return model


def test_exits_sit_where_sdn_puts_them() -> None:
    assert sdn_exit_positions(9) == (1, 3, 4, 5, 7, 8)  # ResNet-20
    assert sdn_exit_positions(27) == (4, 8, 12, 16, 20, 24)  # ResNet-56, SDN's own placement
    assert create_model("sdn20").exit_after == (1, 3, 4, 5, 7, 8)
    with pytest.raises(ValueError, match="exit_after must name increasing blocks"):
        create_model("sdn20", exit_after=[3, 9])


def test_the_trace_is_the_exit_taken_and_flops_count_what_ran() -> None:
    model = _sdn()
    x = varied_images(64)
    logits, trace = model.forward_with_gates(x)
    with model.gate_settings(mode="open"):
        _, full = model.forward_with_gates(x)
    ran = trace.decisions.int()
    assert torch.equal(ran, ran.cummin(1).values)  # a run of ones, then zeros: the exit taken
    assert ran[:, 0].all()  # the block before the first exit always runs
    lengths = set(ran.sum(1).tolist())
    assert len(lengths) > 1  # images leave at different exits
    profile = model.flop_profile((3, 32, 32))
    assert torch.equal(trace.flops, profile.fixed + trace.decisions.double() @ torch.tensor(profile.residual,
                                                                                             dtype=torch.float64))
    assert float(trace.flops.min()) < profile.full and full.flops.eq(profile.full).all()
    assert profile.full == pytest.approx(profile.measured_total)
    # each image's logits are those of the exit it took: after block b, where b is the length of its run of ones
    with model.gate_settings(mode="open"):
        final = model(x)
    for n in range(64):
        blocks = int(ran[n].sum())
        expected = final[n] if blocks == model.num_blocks else full.exit_logits[n, model.exit_after.index(blocks)]
        assert torch.allclose(logits[n], expected, atol=1e-5)
        # the blocks it ran had their exit's probability of continuing above one half; the next one below
        assert bool((trace.p_on[n, :blocks].detach() > 0.5).all())
        if blocks < model.num_blocks:
            assert float(trace.p_on[n, blocks].detach()) <= 0.5


def test_rows_do_not_depend_on_their_batch_and_batch_one_works() -> None:
    model = _sdn()
    x = varied_images(16)
    logits, trace = model.forward_with_gates(x)
    for n in (0, 5, 15):
        one, one_trace = model.forward_with_gates(x[n:n + 1])
        assert torch.allclose(one[0], logits[n], atol=1e-5) and torch.equal(one_trace.decisions[0], trace.decisions[n])


def test_the_three_gate_gradients() -> None:
    model = _sdn()
    x = varied_images(16)
    exact, _ = model.forward_with_gates(x)
    with model.gate_settings(grad="straight-through"):
        xs = x.clone().requires_grad_(True)
        straight, _ = model.forward_with_gates(xs)
        straight.gather(1, straight.argmax(1, keepdim=True)).sum().backward()
    assert torch.allclose(straight, exact, atol=1e-5)  # the same forward
    assert float(xs.grad.abs().sum()) > 0
    with model.gate_settings(grad="soft"):
        soft, soft_trace = model.forward_with_gates(x)
    assert not torch.allclose(soft, exact, atol=1e-3)  # the surrogate's forward is the mixture
    assert soft_trace.decisions.all()
    with pytest.raises(ValueError, match="gate mode 'stochastic' is not offered by tiny_sdn"):
        model.set_gate_mode("stochastic")


def test_calibration_keeps_accuracy_within_the_loss_it_was_given() -> None:
    model = _sdn()
    x = varied_images(200, seed=3)
    with model.gate_settings(mode="open"):
        labels = model(x).argmax(1)  # the full network is right on every image
    threshold = model.calibrate_exits(x, labels, accuracy_loss=0.1)
    assert float(model.exit_threshold) == threshold
    logits, trace = model.forward_with_gates(x)
    accuracy = float((logits.argmax(1) == labels).float().mean())
    assert accuracy >= 0.9 - 1e-9
    assert float(trace.flops.mean()) < model.flop_profile((3, 32, 32)).full  # the loss allowed was used to save
    assert model.calibrate_exits(x, labels, accuracy_loss=0.0) >= threshold  # no loss allowed: at most as permissive


def test_the_compute_attack_takes_exits_back_with_deepsloths_objective() -> None:
    model = _sdn(threshold_quantile=0.2)  # most images leave at the first exit
    x = varied_images(32)
    y = model(x).argmax(1)
    summary = aigrobust.evaluate({"sdn": model}, x, y, attacks=["compute-inflation:steps=30,gate_loss=uniform",
                                                                "compute-inflation:steps=30", "random-noise", "fgsm"],
                                 epsilons=["8/255"], gate_grads=["exact", "straight-through"])
    rows = summary.table[summary.table["epsilon"] > 0]
    deepsloth = rows[rows["attack_label"].str.contains("uniform")]
    noise = rows[rows["attack_label"] == "random-noise"]
    assert {"exact", "straight-through"} <= set(rows["gate_grad"])
    for grad in ("exact", "straight-through"):
        attacked = deepsloth[deepsloth["gate_grad"] == grad].iloc[0]
        control = noise[noise["gate_grad"] == grad].iloc[0]
        assert attacked.adv_flops > attacked.clean_flops and attacked.recovery > control.recovery + 0.2
    gated = create_model("tiny_aig").eval()
    with pytest.raises(ValueError, match="gate_loss=uniform pushes an early-exit network's exits"):
        aigrobust.evaluate([gated], x[:2], y[:2], attacks=["compute-inflation:steps=2,gate_loss=uniform"],
                           epsilons=["8/255"])


def test_exits_only_training_keeps_the_backbone_and_ships_a_calibrated_threshold(synthetic_npz_dir: Path,
                                                                                  tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = create_model("tiny_resnet")
    save_checkpoint(backbone, tmp_path / "backbone.safetensors")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--model", "tiny_sdn", "--init", str(tmp_path / "backbone.safetensors"),
                                      "--exits-only", "--epochs", "2", "--val-samples", "32", "--batch-size", "32",
                                      "--lr", "0.05", "--data-dir", str(synthetic_npz_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    trained, _ = load_checkpoint(out / "model.safetensors")
    for name, weight in backbone.state_dict().items():
        assert torch.equal(trained.state_dict()[name], weight), name  # BatchNorm statistics included
    fresh = create_model("tiny_sdn")
    assert not torch.equal(trained.exits[0].linear.weight, fresh.exits[0].linear.weight)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and log[-1]["heldout_flops_ratio"] is not None
    refused = CliRunner().invoke(cli, ["train", "--model", "tiny_resnet", "--exits-only", "--epochs", "1",
                                       "--data-dir", str(synthetic_npz_dir), "--out", str(tmp_path / "plain")])
    assert refused.exit_code == 2 and "--exits-only trains an early-exit network's exits" in refused.output


def test_records_and_reports_take_an_early_exit_network_as_they_are(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    model = _sdn(threshold_quantile=0.5)
    save_checkpoint(model, tmp_path / "sdn.safetensors")
    out = tmp_path / "attack"
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", f"sdn={tmp_path / 'sdn.safetensors'}",
                                      "--attack", "fgsm", "--attack",
                                      "compute-inflation:steps=5,gate_loss=uniform", "--eps", "8/255",
                                      "--data-dir", str(synthetic_npz_dir), "--n-samples", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())["summary"]
    sdn_rows = [r for r in summary if r["model"] == "sdn"]
    assert sdn_rows and all(r["clean_flops"] is not None for r in sdn_rows)
    report = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "report"), "--no-probe"])
    assert report.exit_code == 0, report.output
    assert "sdn" in (tmp_path / "report" / "index.md").read_text()


def test_a_users_early_exit_network_goes_in_through_the_adapter(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    from tests.user_nets import build_branchy

    net = build_branchy()
    assert isinstance(net, aigrobust.DynamicNetwork)
    x = varied_images(32)
    logits, trace = net.forward_with_gates(x)
    assert trace.decisions.shape == (32, 2) and 0 < float(trace.decisions[:, 0].float().mean()) < 1
    profile = net.flop_profile((3, 32, 32))
    assert profile.fixed > 0 and len(set(trace.flops.tolist())) > 1
    y = logits.argmax(1)
    summary = aigrobust.evaluate({"branchy": net}, x, y, attacks=["compute-inflation:steps=20,gate_loss=uniform",
                                                                  "random-noise", "fgsm"],
                                 epsilons=["8/255"], gate_grads=["exact", "straight-through", "soft"])
    rows = summary.table[summary.table["epsilon"] > 0]
    assert {"exact", "straight-through", "soft"} <= set(rows["gate_grad"])
    attacked = rows[rows["attack_label"].str.contains("uniform") & (rows["gate_grad"] == "exact")].iloc[0]
    control = rows[(rows["attack_label"] == "random-noise") & (rows["gate_grad"] == "exact")].iloc[0]
    assert attacked.adv_flops > attacked.clean_flops and attacked.recovery > control.recovery + 0.2
    with pytest.raises(ValueError, match="gate mode 'stochastic' is not offered by branchy-style"):
        net.set_gate_mode("stochastic")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model-code", "tests.user_nets:build_branchy", "--data-dir",
                                      str(synthetic_npz_dir), "--eps", "8/255", "--attack",
                                      "compute-inflation:steps=5,gate_loss=uniform", "--n-samples", "16", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
