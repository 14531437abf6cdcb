"""Faults found by an independent pass, one test per case, each named after the rule it breaks: one name is one
thing, records prove themselves, nothing writes inside a run folder, shipped tags load by their tag."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.factory import create_model


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_checkpoint(create_model("tiny_aig"), first)
    save_checkpoint(create_model("tiny_resnet"), second)
    return first, second


def _attack(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["attack", "--data-dir", str(data), "--eps", "4/255", "--attack", "fgsm",
                                      "--n-samples", "12", "--out", str(out), *extra])
    return result.exit_code, result.output


def test_labels_that_differ_only_in_unsafe_characters_are_two_models(synthetic_npz_dir: Path, tmp_path: Path,
                                                                     two_checkpoints: tuple[Path, Path]) -> None:
    """'a b' and 'a_b' once shared one parts file: the second model was never evaluated and the first counted
    twice."""
    first, second = two_checkpoints
    out = tmp_path / "run"
    code, output = _attack(synthetic_npz_dir, out, "--checkpoint", f"a b={first}", "--checkpoint", f"a_b={second}")
    assert code == 0, output
    records = pd.read_csv(out / "records.csv.gz")
    assert sorted(records["model"].unique()) == ["a b", "a_b"]
    assert records.groupby("model")["sample"].nunique().tolist() == [12, 12]


def test_a_parts_file_holding_another_models_rows_is_refused(tmp_path: Path) -> None:
    from aigrobust.runs.folder import RunFolder, label_folder
    from aigrobust.runs.records import RunFolderError

    assert label_folder("a b") != label_folder("a_b") and label_folder("resnet20.at") == "resnet20.at"
    assert "/" not in label_folder("../x") and not label_folder("..").startswith(".")
    folder = RunFolder.__new__(RunFolder)
    folder.root = tmp_path
    part = folder._part("m", 0)
    part.parent.mkdir(parents=True)
    row = {"model": "other", "defense": "none", "defense_grad": "none", "attack": "fgsm", "gate_grad": "none",
           "epsilon": 0.0, "sample": 0}
    part.write_bytes(gzip.compress(pd.DataFrame([row]).to_csv(index=False).encode()))
    with pytest.raises(RunFolderError, match="holds records of 'other'"):
        folder.done_batch("m", 0)


def _finished_run(data: Path, tmp_path: Path) -> Path:
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("tiny_aig"), weights)
    out = tmp_path / "run"
    code, output = _attack(data, out, "--checkpoint", f"tiny={weights}")
    assert code == 0, output
    return out


def test_repeated_sample_ids_are_refused_with_one_line(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """Forged records whose every sample id is 0 once collapsed n to 1 without a word."""
    run = _finished_run(synthetic_npz_dir, tmp_path)
    forged = tmp_path / "forged"
    forged.mkdir()
    records = pd.read_csv(run / "records.csv.gz", dtype={"clean_gates": str, "adv_gates": str})
    records["sample"] = 0
    records.to_csv(forged / "records.csv.gz", index=False)
    result = CliRunner().invoke(cli, ["report", str(forged), "--no-probe", "--unsealed", "--out",
                                      str(tmp_path / "rep")])
    assert result.exit_code == 2 and "repeat a setting and sample" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_records_with_fewer_samples_than_run_json_are_refused(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    from aigrobust.runs.records import RunFolderError, read_records

    run = _finished_run(synthetic_npz_dir, tmp_path)
    document = json.loads((run / "run.json").read_text())
    document["dataset"]["n"] = 13
    (run / "run.json").write_text(json.dumps(document))
    with pytest.raises(RunFolderError, match="run.json says the run attacked 13"):
        read_records(run)


@pytest.mark.parametrize("inside", [".parts", ".parts/sub", "sub"])
def test_no_report_inside_a_run_folder(synthetic_npz_dir: Path, tmp_path: Path, inside: str) -> None:
    """``report --out RUN/.parts`` was accepted, and the next ``attack --resume`` deleted the report."""
    run = _finished_run(synthetic_npz_dir, tmp_path)
    result = CliRunner().invoke(cli, ["report", str(run), "--no-probe", "--out", str(run / inside)])
    assert result.exit_code == 2 and "inside the attack run folder" in result.output, result.output
    assert not (run / inside / "index.md").exists()


def test_a_shipped_tag_loads_by_its_tag() -> None:
    """``--model resnet20.std`` was refused as having no shipped weights while ``models`` listed the tag."""
    from aigrobust.cli.inputs import require_weights
    from aigrobust.models.facts import weights_available

    assert weights_available("resnet20.std") == "shipped" == weights_available("resnet20")
    assert weights_available("aig20.at") == "shipped"
    require_weights(("resnet20.std", "aig20.at"))  # no BadInput


def test_records_without_run_json_are_refused_unless_unsealed(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """``report --no-probe`` accepted truncated records without run.json (n = 64, 64, 21)."""
    run = _finished_run(synthetic_npz_dir, tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    records = pd.read_csv(run / "records.csv.gz", dtype={"clean_gates": str, "adv_gates": str})
    records.iloc[: len(records) - 3].to_csv(bare / "records.csv.gz", index=False)  # cut: nothing can tell
    for command in (["report", str(bare), "--no-probe", "--out", str(tmp_path / "rep")], ["check", "--sanity", str(bare)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2 and "has no run.json" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()
    result = CliRunner().invoke(cli, ["report", str(bare), "--no-probe", "--unsealed", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "Unsealed records" in (tmp_path / "rep" / "index.md").read_text()
