"""--reuse-from: a run copies the settings an earlier run of the same model, images, seed and attacks holds (say its
undefended reference) and its records are the bytes computing them would have given; an earlier run that cannot
supply it is refused with one line before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aigrobust.evaluation import UnitRequest
from aigrobust.runs.folder import RunFolderError
from tests.test_cli import _tiny_checkpoint, assert_one_line_error, run


def _attack(checkpoint: Path, data_dir: Path, out: Path, *extra: str) -> tuple[int, str]:
    return run("attack", "--checkpoint", f"tiny={checkpoint}", "--eps", "2/255", "--eps", "8/255",
               "--attack", "pgd:steps=2", "--attack", "apgd:steps=3", "--early-exit", "--data-dir", str(data_dir),
               "--n-samples", "20", "--out", str(out), *extra)


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "records.csv.gz").read_bytes()).hexdigest()


def test_a_jpeg_run_reusing_the_undefended_run_writes_the_records_it_would_compute(synthetic_npz_dir: Path,
                                                                                 tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    undefended = tmp_path / "undefended"
    code, output = _attack(checkpoint, synthetic_npz_dir, undefended, "--batch-size", "16")
    assert code == 0, output
    jpeg = ("--defense", "jpeg:75", "--defense-grad", "bpda", "--batch-size", "7")
    code, output = _attack(checkpoint, synthetic_npz_dir, tmp_path / "computed", *jpeg)
    assert code == 0, output
    code, output = _attack(checkpoint, synthetic_npz_dir, tmp_path / "reused", *jpeg,
                           "--reuse-from", str(undefended))
    assert code == 0, output
    # 20 images in batches of 7: 3 batches x 2 attacks of the undefended setting were copied, none of jpeg's
    assert f"6 units (one setting x one attack x one batch) copied from {undefended.resolve()}" in output
    assert _digest(tmp_path / "reused") == _digest(tmp_path / "computed")
    # summary.json says which units were computed here (on what) and which were copied (from where)
    origins = json.loads((tmp_path / "reused" / "summary.json").read_text())["unit_origins"]
    assert origins == {f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads)": 6,
                       f"copied from {undefended.resolve()}": 6}
    computed = json.loads((tmp_path / "computed" / "summary.json").read_text())["unit_origins"]
    assert list(computed.values()) == [12] and list(computed)[0].startswith("cpu (torch")
    # the other way round: the undefended run copies its whole work from the JPEG run's reference setting,
    # in other batches (16, not 7)
    code, output = _attack(checkpoint, synthetic_npz_dir, tmp_path / "back", "--batch-size", "16",
                           "--reuse-from", str(tmp_path / "computed"))
    assert code == 0, output
    assert f"4 units (one setting x one attack x one batch) copied from {(tmp_path / 'computed').resolve()}" in output
    assert _digest(tmp_path / "back") == _digest(undefended)


def test_an_earlier_run_that_cannot_supply_this_one_is_refused_before_anything_is_written(
        synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    other_seed = tmp_path / "seed1"
    assert _attack(checkpoint, synthetic_npz_dir, other_seed, "--seed", "1")[0] == 0
    out = tmp_path / "new"
    code, output = _attack(checkpoint, synthetic_npz_dir, out, "--reuse-from", str(other_seed))
    assert_one_line_error(code, output, "its seed is 1, this run's 0")
    assert not out.exists()
    code, output = _attack(checkpoint, synthetic_npz_dir, out, "--reuse-from", str(tmp_path / "nowhere"))
    assert_one_line_error(code, output, "not a finished run folder")
    assert not out.exists()
    # another checkpoint under the same label
    other = tmp_path / "other"
    other.mkdir()
    code, output = _attack(_tiny_checkpoint(other), synthetic_npz_dir, out, "--seed", "1",
                           "--reuse-from", str(other_seed))
    assert_one_line_error(code, output, "its model 'tiny' is")
    assert not out.exists()


def test_copied_rows_must_reproduce_the_batch_clean_outcome(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """The per-unit check behind the folder-level one: rows whose labels or clean predictions differ from what this
    run computed are refused, not mixed in."""
    from aigrobust.runs.earlier_runs import open_earlier_run
    from aigrobust.runs.folder import FinishedRun

    checkpoint = _tiny_checkpoint(tmp_path)
    earlier = tmp_path / "earlier"
    assert _attack(checkpoint, synthetic_npz_dir, earlier, "--batch-size", "16")[0] == 0
    earlier_run = open_earlier_run(earlier, FinishedRun.open(earlier).document)
    records = FinishedRun.open(earlier).records()
    rows = records[(records["attack"] == records["attack"].iloc[0]) & (records["epsilon"] == 0)].head(4)
    epsilons = tuple(FinishedRun.open(earlier).spec["epsilons"])
    request = UnitRequest(model="tiny", defense="none", defense_grad="none", gate_grad="exact",
                          attack=str(rows["attack"].iloc[0]), epsilons=epsilons,
                          sample_ids=tuple(int(s) for s in rows["sample"]), labels=rows["label"].to_numpy(),
                          clean_pred=rows["clean_pred"].to_numpy(), clean_gates=tuple(rows["clean_gates"]))
    frame = earlier_run.unit(request)
    assert frame is not None and len(frame) == 4 * len(epsilons)
    assert list(frame["sample"].iloc[:4]) == list(request.sample_ids)
    assert earlier_run.unit(UnitRequest(**{**request.__dict__, "sample_ids": (10_000,) * 4})) is None  # not held: compute
    wrong = np.asarray(request.clean_pred).copy()
    wrong[0] = (wrong[0] + 1) % 10
    with pytest.raises(RunFolderError, match="clean_pred .* differ from this run's"):
        earlier_run.unit(UnitRequest(**{**request.__dict__, "clean_pred": wrong}))


def test_a_report_says_when_a_run_was_computed_on_more_than_one_device(synthetic_npz_dir: Path,
                                                                       tmp_path: Path) -> None:
    """A run resumed on another device mixes float rounding; the report names the devices beside its figures."""
    checkpoint = _tiny_checkpoint(tmp_path)
    folder = tmp_path / "mixed"
    assert _attack(checkpoint, synthetic_npz_dir, folder, "--batch-size", "10")[0] == 0
    summary = json.loads((folder / "summary.json").read_text())
    (cpu, count), = summary["unit_origins"].items()
    code, output = run("report", str(folder), "--out", str(tmp_path / "one"))
    assert code == 0, output
    assert "more than one device" not in (tmp_path / "one" / "index.md").read_text()
    # as if the first half of the units had been computed on a GPU before a resume on the CPU
    summary["unit_origins"] = {"cuda NVIDIA H100 80GB HBM3 (torch 2.11)": count // 2, cpu: count - count // 2}
    (folder / "summary.json").write_text(json.dumps(summary))
    code, output = run("report", str(folder), "--out", str(tmp_path / "two"))
    assert code == 0, output
    text = (tmp_path / "two" / "index.md").read_text()
    assert (f"mixed was computed on more than one device (cuda NVIDIA H100 80GB HBM3 (torch 2.11): {count // 2} units; "
            f"{cpu}: {count - count // 2} units)") in text


def test_a_donor_written_before_run_json_held_canonical_specs_still_supplies(synthetic_npz_dir: Path,
                                                                            tmp_path: Path) -> None:
    """run.json once named attacks as typed ('fgsm'); such an earlier run is compared by the specs its records ran."""
    from aigrobust.runs.earlier_runs import open_earlier_run
    from aigrobust.runs.folder import FinishedRun

    checkpoint = _tiny_checkpoint(tmp_path)
    earlier = tmp_path / "earlier"
    assert _attack(checkpoint, synthetic_npz_dir, earlier, "--batch-size", "16")[0] == 0
    ours = FinishedRun.open(earlier).document.to_dict()  # canonical, as a run of today writes it
    spec_path = earlier / "run.json"
    old = json.loads(spec_path.read_text())
    typed = [spec.split(":")[0] for spec in old["spec"]["attacks"]]  # as an older version stored them
    spec_path.write_text(json.dumps({**old, "spec": {**old["spec"], "attacks": typed}}))
    assert FinishedRun.open(earlier).attack_specs() == ours["spec"]["attacks"]
    assert open_earlier_run(earlier, ours) is not None
