"""--model-code MODULE:CALLABLE (issue 31): a user's own network through the CLI, named by its import path and
its weights file's sha256, reloaded by reports; a (logits, extra) network refused with one line or unwrapped."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.runs import FinishedRun
from tests.user_nets import build


def _attack(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["attack", "--data-dir", str(data), "--eps", "4/255", "--attack", "fgsm",
                                      "--out", str(out), *extra])
    return result.exit_code, result.output


def test_a_users_network_runs_and_is_named_by_its_import_path(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    trained = build()
    with torch.no_grad():
        trained.head.bias.add_(0.5)  # not the callable's own initialisation: the file must be loaded
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "run"
    code, output = _attack(synthetic_npz_dir, out, "--model-code", "tests.user_nets:build", "--checkpoint",
                           str(weights))
    assert code == 0, output
    entry = json.loads((out / "run.json").read_text())["models"]["tests.user_nets:build"]
    assert entry["model"] == "code:tests.user_nets:build" and entry["source"] == str(weights.resolve())
    reloaded = FinishedRun.open(out).models()["tests.user_nets:build"]
    assert torch.equal(reloaded.module.head.bias, trained.head.bias)


def test_logits_and_extra_refused_or_unwrapped(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    code, output = _attack(synthetic_npz_dir, tmp_path / "a", "--model-code", "tests.user_nets:build_with_extra")
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("warning")]
    assert code == 2 and len(lines) == 1 and "--output-index" in lines[0], output
    code, output = _attack(synthetic_npz_dir, tmp_path / "b", "--model-code", "tests.user_nets:build_with_extra",
                           "--output-index", "0")
    assert code == 0, output


def test_bad_import_paths_get_one_line(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    for target, needle in (("nosuch_module_xyz:build", "cannot import nosuch_module_xyz"),
                           ("tests.user_nets:nothing", "has no callable 'nothing'"),
                           ("tests.user_nets", "give MODULE:CALLABLE")):
        code, output = _attack(synthetic_npz_dir, tmp_path / "c", "--model-code", target)
        assert code == 2 and needle in output and "Traceback" not in output, output
        assert not (tmp_path / "c").exists()
