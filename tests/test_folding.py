"""BatchNorm folded into the convolutions: the same network up to float rounding, asked for, recorded, and refused
where it could be wrong."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.factory import create_model
from aigrobust.models.folding import fold_batchnorm, why_not_foldable
from tests.conftest import half_closed


@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_aig", "tiny_sdn"])
def test_a_folded_copy_has_the_logits_and_decisions_of_its_network_and_leaves_it_as_it_was(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    if name == "tiny_aig":
        half_closed(model)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding has something to do
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(model, x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        logits, trace = model.forward_with_gates(x)
        folded_logits, folded_trace = folded.forward_with_gates(x)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(folded_trace.decisions, trace.decisions)
    torch.testing.assert_close(folded_trace.flops, trace.flops)


def test_a_network_that_is_not_ours_is_not_folded() -> None:
    from tests.user_nets import build

    assert "own model families" in str(why_not_foldable(build()))
    with pytest.raises(ValueError, match="own model families"):
        fold_batchnorm(build())


def _records(run: Path) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(gzip.decompress((run / "records.csv.gz").read_bytes())))


def test_attack_fold_batchnorm_is_recorded_agrees_in_outcome_and_cannot_resume_an_unfolded_run(
        synthetic_npz_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), weights)
    common = ["attack", "--checkpoint", f"tiny={weights}", "--data-dir", str(synthetic_npz_dir), "--eps", "8/255",
              "--attack", "pgd:steps=5", "--n-samples", "24", "--batch-size", "8"]
    plain, folded = tmp_path / "plain", tmp_path / "folded"
    first = CliRunner().invoke(cli, [*common, "--out", str(plain)])
    second = CliRunner().invoke(cli, [*common, "--out", str(folded), "--fold-batchnorm"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "fold_batchnorm" not in json.loads((plain / "run.json").read_text())["spec"]  # unfolded run.json as before
    assert json.loads((folded / "run.json").read_text())["spec"]["fold_batchnorm"] is True
    a, b = _records(plain), _records(folded)
    assert (a["adv_correct"] == b["adv_correct"]).mean() >= 0.95 and (a["clean_pred"] == b["clean_pred"]).all()
    again = CliRunner().invoke(cli, [*common, "--out", str(plain), "--fold-batchnorm", "--resume"])
    assert again.exit_code == 2 and "fold_batchnorm" in again.output, again.output
    # a baseline made from the folded run reruns it folded, and holds
    baseline = tmp_path / "baseline.json"
    made = CliRunner().invoke(cli, ["check", "--baseline", str(baseline), "--init-from", str(folded)])
    assert made.exit_code == 0, made.output
    assert json.loads(baseline.read_text())["spec"]["fold_batchnorm"] is True
    held = CliRunner().invoke(cli, ["check", "--baseline", str(baseline), "--allow-root", str(tmp_path),
                                    "--allow-root", str(synthetic_npz_dir)])
    assert held.exit_code == 0, held.output
    document = json.loads(baseline.read_text())
    document["spec"]["fold_batchnorm"] = "yes"
    baseline.write_text(json.dumps(document))
    refused = CliRunner().invoke(cli, ["check", "--baseline", str(baseline), "--allow-root", str(tmp_path),
                                       "--allow-root", str(synthetic_npz_dir)])
    assert refused.exit_code == 2 and "fold_batchnorm is 'yes': give true or false" in refused.output, refused.output


def test_fold_batchnorm_refuses_a_users_network_in_one_line(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model-code", "tests.user_nets:build", "--fold-batchnorm",
                                      "--eps", "8/255", "--data-dir", str(synthetic_npz_dir), "--n-samples", "8", "--out",
                                      str(out)])
    assert result.exit_code == 2 and "--fold-batchnorm" in result.output and "Traceback" not in result.output
    assert not out.exists()
    import aigrobust

    with pytest.raises(ValueError, match="fold_batchnorm"):
        aigrobust.evaluate({"net": create_model("tiny_resnet"), "user": aigrobust.as_evaluable(
            __import__("tests.user_nets", fromlist=["build"]).build())}, torch.rand(2, 3, 32, 32),
            torch.tensor([0, 1]), fold_batchnorm=True)
