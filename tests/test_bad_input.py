"""Bad input: every case gets a non-zero exit, one clear line, no traceback, and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aigrobust import create_model
from aigrobust.checkpoints import save_checkpoint
from aigrobust.cli import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    paths: dict[str, Path] = {}
    good = root / "good.safetensors"
    save_checkpoint(create_model("tiny_aig"), good)
    paths["good"] = good
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:500])
    paths["truncated"] = truncated
    corrupt = root / "corrupt.th"
    corrupt.write_bytes(b"\x80\x02garbage" * 10)
    paths["corrupt"] = corrupt
    hundred = root / "hundred.safetensors"
    save_checkpoint(create_model("tiny_aig", num_classes=100), hundred)
    paths["hundred"] = hundred
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    np.savez(data / "cifar10_test.npz", images=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, 8))
    paths["data"] = data
    empty = root / "empty"
    empty.mkdir()
    paths["empty"] = empty
    wrong_size = root / "wrong_size"
    wrong_size.mkdir()
    np.savez(wrong_size / "cifar10_test.npz", images=np.zeros((4, 28, 28, 3), np.uint8), labels=np.zeros(4, np.int64))
    paths["wrong_size"] = wrong_size
    bad_labels = root / "bad_labels"
    bad_labels.mkdir()
    np.savez(bad_labels / "cifar10_test.npz", images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 1, 2, 12]))
    paths["bad_labels"] = bad_labels
    blocker = root / "a_file"
    blocker.write_text("x")
    paths["blocker"] = blocker
    baseline = root / "baseline.json"
    baseline.write_text('{"format": "aigrobust-baseline", "spec": ')
    paths["baseline"] = baseline
    return paths


def cases(p: dict[str, Path], out: Path) -> list[tuple[str, list[str], str]]:
    attack = ["attack", "--checkpoint", str(p["good"]), "--data-dir", str(p["data"]), "--out", str(out)]
    return [
        ("unknown model", ["attack", "--model", "aig2O", "--eps", "0.1", "--out", str(out)], "did you mean"),
        ("unknown attack", [*attack, "--eps", "0.1", "--attack", "fgsn"], "unknown attack 'fgsn'"),
        ("unknown defense", [*attack, "--eps", "0.1", "--defense", "blur:3"], "unknown defense 'blur'"),
        ("negative epsilon", [*attack, "--eps", "-0.1"], "outside [0, 1]"),
        ("NaN epsilon", [*attack, "--eps", "nan"], "outside [0, 1]"),
        ("epsilon above 1", [*attack, "--eps", "1.5"], "outside [0, 1]"),
        ("epsilon 'abc'", [*attack, "--eps", "abc"], "not a number"),
        ("epsilon '8/0'", [*attack, "--eps", "8/0"], "not a number"),
        ("no epsilon", attack, "at least one --eps"),
        ("n-samples 0", [*attack, "--eps", "0.1", "--n-samples", "0"], "--n-samples"),
        ("n-samples negative", [*attack, "--eps", "0.1", "--n-samples", "-5"], "--n-samples"),
        ("batch size 0", [*attack, "--eps", "0.1", "--batch-size", "0"], "--batch-size"),
        ("checkpoint missing", ["eval", "--checkpoint", str(out / "none.safetensors")], "not found"),
        ("checkpoint truncated", ["eval", "--checkpoint", str(p["truncated"])], "truncated or corrupt"),
        ("checkpoint corrupt", ["eval", "--checkpoint", str(p["corrupt"])], "could not be loaded safely"),
        ("checkpoint of another architecture", ["eval", "--model", "resnet20", "--checkpoint", str(p["good"])],
         "holds a tiny_aig, not a resnet20"),
        ("checkpoint of another number of classes",
         ["eval", "--checkpoint", str(p["hundred"]), "--data-dir", str(p["data"])], "predicts 100 classes"),
        ("dataset path missing", [*attack[:3], "--data-dir", str(out / "nodata"), "--eps", "0.1", "--out", str(out)],
         "does not exist"),
        ("dataset folder empty", [*attack[:3], "--data-dir", str(p["empty"]), "--eps", "0.1", "--out", str(out)],
         "no .npz file"),
        ("wrong image size", [*attack[:3], "--data-dir", str(p["wrong_size"]), "--eps", "0.1", "--out", str(out)],
         "32x32"),
        ("labels out of range", [*attack[:3], "--data-dir", str(p["bad_labels"]), "--eps", "0.1", "--out", str(out)],
         "labels must lie in 0..9"),
        ("output folder not writable", [*attack[:5], "--eps", "0.1", "--out", str(p["blocker"] / "run")],
         "not writable"),
        ("baseline JSON malformed", ["check", "--baseline", str(p["baseline"])], "not valid JSON"),
        ("CUDA where there is none", ["eval", "--model", "tiny_aig", "--device", "cuda"], "no CUDA device"),
    ]


def test_every_bad_input_gets_one_clear_line(files: dict[str, Path], tmp_path: Path) -> None:
    import torch

    out = tmp_path / "out"
    for name, args, needle in cases(files, out):
        if name.startswith("CUDA") and torch.cuda.is_available():
            continue
        result = CliRunner().invoke(cli, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code != 0, name
        assert "Traceback" not in result.output, name
        assert len(lines) == 1, f"{name}: {result.output}"
        assert needle in lines[0], f"{name}: {lines[0]}"
    assert not out.exists()  # no case wrote anything
