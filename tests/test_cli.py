"""CLI: each command's output and exit code, and one clear line for user errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from aigrobust.cli import cli
from tests.conftest import PRETRAINED, PROJECT_ROOT, SHARED_DATA, require


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
    assert [r["model"] for r in rows] == ["tiny_aig", "tiny_resnet", "tiny_sdn"]
    # blocks a per-image decision may skip: every gated block; every block after an early-exit network's first exit
    assert [r["gated_blocks"] for r in rows] == [6, 0, 5]
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


def test_eval_of_a_model_name_uses_its_shipped_weights() -> None:
    require(SHARED_DATA / "cifar10_test_sample.npz")
    code, out = run("eval", "--model", "resnet20", "--data-dir", str(SHARED_DATA), "--n-samples", "100", "--json")
    assert code == 0, out
    assert "random weights" not in out
    assert json.loads(out)["accuracy"] >= 0.85  # the shipped resnet20, not a random one (about 0.1)


def test_eval_reports_gate_rates_on_the_foolbox_demo() -> None:
    result = CliRunner().invoke(cli, ["eval", "--model", "tiny_aig", "--dataset", "foolbox-cifar10",
                                      "--random-weights"])
    assert result.exit_code == 0, result.output
    assert "20 images" in result.output and "execution rate per block" in result.output
    assert "20-image demo" in result.output  # labelled wherever it is used
    assert "random weights" in result.output


def test_train_then_eval_round_trip(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    code, out = run("train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out", str(out_dir),
                    "--epochs", "1", "--batch-size", "32", "--schedule", "cosine", "--target-rate", "0.5",
                    "--device", "cpu", "--max-train-samples", "500")
    assert code == 0, out
    assert "epoch   1" in out and "held-out acc" in out
    assert "--max-train-samples 500 asks for more images than the training split holds; all 96 are used" in out
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
    assert_one_line_error(*run("eval", "--model", "tiny_aig", "--random-weights", "--data-dir",
                               str(tmp_path / "nodata")), "does not exist")
    assert_one_line_error(*run("eval", "--model", "aig50", "--random-weights"), "--data-dir IMAGENET")
    # a model without weights is refused, as by `attack`, not evaluated at random unasked
    assert_one_line_error(*run("eval", "--model", "aig50"), "gates have no published weights")
    assert_one_line_error(*run("eval", "--model", "tiny_aig"), "or --random-weights for an untrained one")
    assert_one_line_error(*run("eval", "--checkpoint", str(bad), "--random-weights"), "contradict")
    if not __import__("torch").cuda.is_available():
        assert_one_line_error(*run("eval", "--model", "tiny_aig", "--device", "cuda"), "no CUDA device")


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "aigrobust", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for command in ("models", "train", "eval"):
        assert command in done.stdout


def _tiny_checkpoint(tmp_path: Path) -> Path:
    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint
    from tests.conftest import half_closed

    path = tmp_path / "tiny_aig.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), path)
    return path


def _attack_args(checkpoint: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["attack", "--checkpoint", str(checkpoint), "--eps", "2/255", "--eps", "8/255", "--attack", "fgsm",
            "--attack", "pgd:steps=2", "--gate-grad", "straight-through", "--data-dir", str(data_dir),
            "--n-samples", "24", "--batch-size", "10", "--out", str(out), *extra]


def test_attack_writes_records_summary_and_prints_the_table(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    from aigrobust.runs.folder import read_records

    checkpoint = _tiny_checkpoint(tmp_path)
    code, out = run(*_attack_args(checkpoint, synthetic_npz_dir, tmp_path / "run", "--table", "full"))
    assert code == 0, out
    header = out.splitlines()[0]
    for column in ("clean", "robust", "same gates", "hamming", "FLOPs adv/clean"):
        assert column in header
    assert "tiny_aig" in out and "8/255" in out and "worst-case" in out
    records = read_records(tmp_path / "run")
    # 24 samples x 2 attacks x 3 epsilons (0 added) x 1 gate-grad mode
    assert len(records) == 24 * 2 * 3
    assert set(records["epsilon"].round(6)) == {0.0, round(2 / 255, 6), round(8 / 255, 6)}
    assert (records["linf"] <= records["epsilon"] + 1e-6).all()
    assert (records["adv_correct"] <= records["clean_correct"] | (records["epsilon"] > 0)).all()
    assert records["clean_gates"].str.len().eq(6).all()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["spec"]["spec"]["gate_grads"] == ["straight-through"]
    rows = pd.DataFrame(summary["summary"])
    assert (rows["robust_acc"] <= rows["clean_acc"] + 1e-12).all()
    assert not (tmp_path / "run" / ".parts").exists()


def test_two_runs_with_the_same_seed_give_byte_identical_records(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    for name in ("a", "b"):
        code, out = run(*_attack_args(checkpoint, synthetic_npz_dir, tmp_path / name))
        assert code == 0, out
    assert (tmp_path / "a" / "records.csv.gz").read_bytes() == (tmp_path / "b" / "records.csv.gz").read_bytes()


def test_resume_reuses_finished_batches(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    code, _ = run(*_attack_args(checkpoint, synthetic_npz_dir, tmp_path / "full"))
    assert code == 0
    # simulate an interrupted run: spec written, first batch done, nothing final
    from aigrobust.runs.folder import RunFolder

    partial = tmp_path / "partial"
    code, _ = run(*_attack_args(checkpoint, synthetic_npz_dir, partial))
    assert code == 0
    spec = json.loads((partial / "run.json").read_text())
    (partial / "records.csv.gz").unlink()
    folder = RunFolder(partial, spec, resume=True)
    from aigrobust.runs.folder import read_records

    first = read_records(tmp_path / "full")
    folder.save_batch("tiny_aig", 0, first[first["sample"] < 10].reset_index(drop=True))
    assert_one_line_error(*run(*_attack_args(checkpoint, synthetic_npz_dir, partial)), "--resume")
    code, out = run(*_attack_args(checkpoint, synthetic_npz_dir, partial, "--resume"))
    assert code == 0, out
    assert (partial / "records.csv.gz").read_bytes() == (tmp_path / "full" / "records.csv.gz").read_bytes()


def test_attack_bad_inputs(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    base = ["attack", "--checkpoint", str(checkpoint), "--data-dir", str(synthetic_npz_dir), "--out",
            str(tmp_path / "x")]
    for eps in ("-0.1", "nan", "1.5", "abc", "8/0"):
        code, out = run(*base, "--eps", eps)
        assert code == 2 and "Traceback" not in out and "--eps" in out, out
    code, out = run(*base)
    assert code == 2 and "at least one --eps" in out
    assert_one_line_error(*run(*base, "--eps", "0.1", "--attack", "pgdd"), "did you mean pgd")
    code, out = run(*base, "--eps", "0.1", "--n-samples", "0")
    assert code == 2 and "--n-samples" in out
    code, out = run(*base, "--eps", "0.1", "--batch-size", "0")
    assert code == 2 and "--batch-size" in out
    # the card's command as typed: one line says what to pass (the weights first, then the images)
    assert_one_line_error(*run("attack", "--model", "aig50", "--eps", "0.03"), "pass --checkpoint aig50=PATH")
    assert_one_line_error(*run("attack", "--checkpoint", f"my-aig50={_tiny_checkpoint(tmp_path)}", "--dataset",
                               "imagenet", "--eps", "0.03", "--out", str(tmp_path / "y")), "--data-dir IMAGENET")
    assert_one_line_error(*run("attack", "--model", "aig110", "--eps", "0.03", "--data-dir", str(synthetic_npz_dir),
                               "--out", str(tmp_path / "z")), "pass --checkpoint aig110=PATH")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_compact_table_by_default_full_on_request(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    code, compact = run(*_attack_args(checkpoint, synthetic_npz_dir, tmp_path / "compact"))
    assert code == 0, compact
    lines = compact.splitlines()
    header = lines[0].split()
    assert header[:3] == ["model", "defense", "clean"] and "2/255" in header and "8/255" in header
    assert "2.0/255" not in compact  # epsilons print one way everywhere
    rows = [line for line in lines[1:] if line.startswith("tiny_aig")]
    assert len(rows) == 1 and re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", rows[0])  # worst case with its interval
    assert "summary.csv" in lines[-1] and "--table full" in lines[-1]
    code, full = run(*_attack_args(checkpoint, synthetic_npz_dir, tmp_path / "full", "--table", "full"))
    assert code == 0, full
    assert len(full.splitlines()) > len(lines) and "worst-case" in full and "2/255" in full


def test_attacks_lists_every_attack_with_its_settings() -> None:
    from attacks import list_attacks

    code, output = run("attacks")
    assert code == 0
    for name in list_attacks():
        assert any(line.startswith(name + " ") for line in output.splitlines()), name
    assert "steps=20, rel_stepsize=auto" in output and "n_queries=1000" in output
    lines = {line.split()[0]: line for line in output.splitlines() if line.split()[0] in list_attacks()}
    norm = {name: line[31:41].strip() for name, line in lines.items()}  # each attack's ball, beside its name
    assert (norm["apgd-l2"], norm["square"], norm["gate-flip"], norm["pgd"]) == ("L2", "Linf", "Linf", "Linf or L2")


def test_attack_without_out_writes_a_dated_run_folder_and_prints_it(synthetic_npz_dir: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", f"mine={checkpoint}", "--eps", "8/255",
                                      "--data-dir", str(synthetic_npz_dir), "--n-samples", "4"])
    assert result.exit_code == 0, result.output
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"\d{8}-\d{6}-mine", folders[0].name)
    assert (folders[0] / "records.csv.gz").is_file()
    assert f"run folder: {folders[0].resolve()}" in result.output


def test_model_names_and_a_labelled_checkpoint_mix(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    # resnet20 loads its shipped weights; aig20 comes from the file its label names
    checkpoint = PROJECT_ROOT / "aigrobust" / "pretrained" / "aig20.safetensors"
    code, out = run("attack", "--model", "resnet20", "--model", "aig20", "--checkpoint", f"aig20={checkpoint}",
                    "--eps", "8/255", "--data-dir", str(synthetic_npz_dir), "--n-samples", "4", "--out",
                    str(tmp_path / "run"))
    assert code == 0, out
    models = json.loads((tmp_path / "run" / "run.json").read_text())["models"]
    assert models["resnet20"]["source"] == "pretrained" and models["aig20"]["source"] == str(checkpoint.resolve())
