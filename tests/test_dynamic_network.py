"""Any dynamic network in: a SkipNet-style network written in the tests, not with aigrobust's classes,
goes through GatedAdapter and gets gate stability, gate flips and compute inflation with real numbers, through the
API and the CLI; what it does not offer (other gate modes, other gradients) is refused, never ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import aigrobust
from aigrobust.cli import cli
from aigrobust.runs.folder import FinishedRun
from tests.conftest import varied_images
from tests.user_nets import build_skipnet


@pytest.fixture(scope="module")
def skipnet() -> aigrobust.GatedAdapter:
    return build_skipnet()


def test_the_adapter_meets_the_protocol_and_counts_executed_flops(skipnet: aigrobust.GatedAdapter) -> None:
    assert isinstance(skipnet, aigrobust.DynamicNetwork)
    assert not isinstance(torch.nn.Linear(2, 2), aigrobust.DynamicNetwork)
    x = varied_images(32)
    logits, trace = skipnet.forward_with_gates(x)
    profile = skipnet.flop_profile((3, 32, 32))
    assert logits.shape == (32, 10) and trace.decisions.shape == (32, 4)
    assert 0.1 < float(trace.decisions.float().mean()) < 0.9  # gates near their thresholds: some run, some not
    expected = profile.fixed + trace.decisions.double() @ torch.tensor(profile.residual, dtype=torch.float64)
    assert torch.equal(trace.flops, expected)
    assert len(set(trace.flops.tolist())) > 1  # the cost really varies per image
    # the skipped blocks are skipped: a blank image's pass measures the fixed part plus the blocks it ran
    assert profile.fixed > 0 and profile.full == pytest.approx(profile.fixed + sum(profile.residual))


def test_gate_attacks_and_stability_give_real_numbers(skipnet: aigrobust.GatedAdapter) -> None:
    x = varied_images(32)
    y = skipnet(x).argmax(1)  # labels the network gets right: robust accuracy starts at 1
    summary = aigrobust.evaluate({"skip": skipnet}, x, y, attacks=["fgsm", "compute-inflation:steps=20",
                                                                  "gate-flip:steps=20", "random-noise"],
                                 epsilons=["8/255"], gate_grads=["exact", "straight-through", "soft"])
    rows = summary.table[summary.table["epsilon"] > 0]
    assert set(rows["gate_grad"]) == {"exact"}  # 'all' is all the network offers
    by_attack = {label: row for label, row in zip(rows["attack_label"], rows.itertuples())}
    compute = next(r for k, r in by_attack.items() if k.startswith("compute-inflation"))
    flip = next(r for k, r in by_attack.items() if k.startswith("gate-flip"))
    noise = by_attack["random-noise"]
    # the attacks, not any perturbation of that size, open blocks and flip gates
    assert compute.adv_flops > compute.clean_flops and compute.recovery > noise.recovery + 0.05
    assert compute.recovery_blocks > 0.05
    assert flip.hamming_mean > noise.hamming_mean + 0.03 and flip.unchanged_gates < noise.unchanged_gates
    assert 0 < by_attack["FGSM"].unchanged_gates < 1  # gate stability under an accuracy attack, measured


def test_what_the_network_does_not_offer_is_refused(skipnet: aigrobust.GatedAdapter) -> None:
    x = varied_images(4)
    with pytest.raises(ValueError, match="offers gate gradient exact only, not soft"):
        aigrobust.evaluate([skipnet], x, torch.zeros(4, dtype=torch.int64), gate_grads=["soft"])
    with pytest.raises(ValueError, match="gate mode 'stochastic' is not offered"):
        aigrobust.evaluate([skipnet], x, torch.zeros(4, dtype=torch.int64), gate_mode="stochastic")


def test_the_cli_runs_a_users_dynamic_network_by_import_path(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model-code", "tests.user_nets:build_skipnet", "--data-dir",
                                      str(synthetic_npz_dir), "--eps", "8/255", "--attack", "compute-inflation:steps=5",
                                      "--gate-grad", "all", "--n-samples", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for r in summary["summary"] if r["epsilon"] > 0]
    assert [r["gate_grad"] for r in rows] == ["exact"]
    assert rows[0]["flops_ratio"] > 1.0 and rows[0]["recovery"] > 0
    code = {"tests.user_nets:build_skipnet": "tests.user_nets:build_skipnet"}  # named again: never from run.json
    assert isinstance(FinishedRun.open(out).models(code)["tests.user_nets:build_skipnet"], aigrobust.GatedAdapter)
