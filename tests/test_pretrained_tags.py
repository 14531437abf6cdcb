"""Pretrained tags, timm's way: 'resnet20.std' and a bare 'resnet20' are the same weights; 'aig20.at' loads
aig20.at.safetensors; an unknown tag is one clear error; a run names the tag so a reload takes the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import aigrobust.models.registry as registry
from aigrobust.cli import cli
from aigrobust.models.factory import create_model
from aigrobust.models.registry import UnknownModelError, list_pretrained, pretrained_tags
from aigrobust.runs.folder import FinishedRun


def test_std_is_the_bare_name() -> None:
    bare, tagged = create_model("resnet20", pretrained=True), create_model("resnet20.std", pretrained=True)
    assert tagged.registry_name == "resnet20" and tagged.pretrained_name == "resnet20.std"
    for (k, a), b in zip(bare.state_dict().items(), tagged.state_dict().values()):
        assert torch.equal(a, b), k
    assert {"resnet20.std", "aig20.std"} <= set(list_pretrained())


def test_an_unknown_tag_is_one_clear_error() -> None:
    with pytest.raises(UnknownModelError, match="unknown pretrained tag 'nope' for aig20; shipped tags: std"):
        create_model("aig20.nope", pretrained=True)
    result = CliRunner().invoke(cli, ["attack", "--model", "aig20.nope", "--eps", "0.1"])
    assert result.exit_code == 2 and "unknown pretrained tag 'nope'" in result.output


def test_a_tagged_file_loads_and_runs_name_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = tmp_path / "pretrained"
    shutil.copytree(registry.PRETRAINED_DIR, shipped, ignore=shutil.ignore_patterns("*.md"))
    # a second set of weights under a tag: the std weights with the last layer's bias shifted
    from aigrobust.models.checkpoints import read_checkpoint, save_checkpoint

    model = create_model("tiny_resnet")
    save_checkpoint(model, shipped / "tiny_resnet.at.safetensors", dataset="cifar10")
    monkeypatch.setattr(registry, "PRETRAINED_DIR", shipped)
    import hashlib

    pins = {**registry.PINNED_SHA256,
            "tiny_resnet.at.safetensors": hashlib.sha256((shipped / "tiny_resnet.at.safetensors").read_bytes()).hexdigest()}
    monkeypatch.setattr(registry, "PINNED_SHA256", pins)
    assert pretrained_tags("tiny_resnet") == ["at"]
    loaded = create_model("tiny_resnet.at", pretrained=True)
    state, _ = read_checkpoint(shipped / "tiny_resnet.at.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(Exception, match="no pretrained weights are shipped for tiny_resnet"):
        create_model("tiny_resnet", pretrained=True)
    out = tmp_path / "run"
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "cifar10_test_sample.npz").exists():
        pytest.skip(f"real data not available: {data} is absent")
    result = CliRunner().invoke(cli, ["attack", "--model", "tiny_resnet.at", "--data-dir", str(data), "--n-samples",
                                      "8", "--eps", "2/255", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "run.json").read_text())
    assert document["models"]["tiny_resnet.at"]["model"] == "tiny_resnet.at"
    reloaded = FinishedRun.open(out).models()["tiny_resnet.at"]
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in state.items())
