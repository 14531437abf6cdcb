"""CLI: each command's output and exit code, and one clear line for user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from aigrobust.cli import cli
from tests.conftest import PRETRAINED, SHARED_DATA, require


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, needle: str) -> None:
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert needle in lines[0], output


def test_models_lists_parameters_and_flops() -> None:
    code, out = run("models", "resnet2*")
    assert code == 0
    assert "resnet20" in out and "269,722" in out and "0.081" in out
    code, out = run("models", "--json", "tiny_*")
    rows = json.loads(out)
    assert [r["model"] for r in rows] == ["tiny_aig", "tiny_resnet"]
    assert rows[0]["gated_blocks"] == 6 and rows[1]["gated_blocks"] == 0
    assert_one_line_error(*run("models", "vgg*"), "no model matches")


def test_unknown_model_is_one_line_with_suggestions() -> None:
    code, out = run("eval", "--model", "aig2")
    assert_one_line_error(code, out, "unknown model 'aig2'")
    assert "aig20" in out


def test_eval_of_the_external_pretrained_resnet20(tmp_path: Path) -> None:
    checkpoint = require(PRETRAINED / "resnet20-12fca82f.th")
    code, out = run("eval", "--checkpoint", str(checkpoint), "--data-dir", str(SHARED_DATA), "--n-samples", "200",
                    "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["model"] == "resnet20" and summary["n_samples"] == 200
    assert summary["accuracy"] >= 0.85
    assert summary["flops_ratio"] == 1.0


def test_eval_reports_gate_rates_on_the_foolbox_demo() -> None:
    result = CliRunner().invoke(cli, ["eval", "--model", "tiny_aig", "--dataset", "foolbox-cifar10"])
    assert result.exit_code == 0, result.output
    assert "20 images" in result.output and "execution rate per block" in result.output
    assert "20-image demo" in result.output  # labelled wherever it is used
    assert "random weights" in result.output


def test_train_then_eval_round_trip(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    code, out = run("train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out", str(out_dir),
                    "--epochs", "1", "--batch-size", "32", "--schedule", "cosine", "--target-rate", "0.5",
                    "--device", "cpu")
    assert code == 0, out
    assert "epoch   1" in out and "held-out acc" in out
    checkpoint = out_dir / "model.safetensors"
    assert checkpoint.is_file()
    code, out = run("eval", "--checkpoint", str(checkpoint), "--data-dir", str(synthetic_npz_dir), "--json")
    assert code == 0, out
    assert json.loads(out)["n_samples"] == 40
    # a second train into the same folder without --resume is refused, and the run is untouched
    before = checkpoint.read_bytes()
    assert_one_line_error(*run("train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out",
                               str(out_dir), "--epochs", "1"), "--resume")
    assert checkpoint.read_bytes() == before


def test_bad_inputs_get_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    assert_one_line_error(*run("eval", "--checkpoint", str(bad)), "truncated or corrupt")
    assert_one_line_error(*run("eval", "--checkpoint", str(tmp_path / "none.safetensors")), "not found")
    assert_one_line_error(*run("eval", "--model", "tiny_aig", "--data-dir", str(tmp_path / "nodata")),
                          "does not exist")
    assert_one_line_error(*run("eval", "--model", "aig50"), "imagenet needs --data-dir")
    if not __import__("torch").cuda.is_available():
        assert_one_line_error(*run("eval", "--model", "tiny_aig", "--device", "cuda"), "no CUDA device")


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "aigrobust", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for command in ("models", "train", "eval"):
        assert command in done.stdout
