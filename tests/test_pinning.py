"""A run pins what it is made of: shipped weights are pinned by the package; a run records each
model's weights hash, and a resume or a report on weights changed in between is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import aigrobust.models.registry as registry
from aigrobust.cli import cli
from aigrobust.models.checkpoints import CheckpointError, save_checkpoint
from aigrobust.models.factory import create_model
from aigrobust.runs.folder import FinishedRun, RunFolderError
from tests.conftest import half_closed


def test_every_shipped_file_is_pinned() -> None:
    shipped = sorted(p.name for p in registry.PRETRAINED_DIR.glob("*.safetensors"))
    assert shipped and shipped == sorted(registry.PINNED_SHA256)


def test_tampered_shipped_weights_are_refused_even_with_recomputed_hashes(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    folder = tmp_path / "pretrained"
    shutil.copytree(registry.PRETRAINED_DIR, folder, ignore=shutil.ignore_patterns("*.md"))
    model = create_model("resnet20", pretrained=True)
    with torch.no_grad():
        model.linear.bias.add_(1.0)
    save_checkpoint(model, folder / "resnet20.safetensors", dataset="cifar10")  # valid, self-consistent hashes
    monkeypatch.setattr(registry, "PRETRAINED_DIR", folder)
    with pytest.raises(CheckpointError, match="were changed on disk"):
        create_model("resnet20", pretrained=True)
    result = CliRunner().invoke(cli, ["attack", "--model", "resnet20", "--eps", "0.1"])
    assert result.exit_code == 2 and result.output.startswith("Error: resnet20: shipped weights"), result.output


def test_a_resume_and_a_report_on_changed_weights_are_refused(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), checkpoint)
    out = tmp_path / "run"
    args = ["attack", "--checkpoint", f"mine={checkpoint}", "--data-dir", str(synthetic_npz_dir), "--eps", "4/255",
            "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    pinned = json.loads((out / "run.json").read_text())["models"]["mine"]["weights_sha256"]
    assert len(pinned) == 64
    save_checkpoint(half_closed(create_model("tiny_aig"), seed=1), checkpoint)  # the file replaced
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 2 and "weights_sha256" in resumed.output, resumed.output
    with pytest.raises(RunFolderError, match="mine's weights .* changed since the run"):
        FinishedRun.open(out).models()
