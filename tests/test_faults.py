"""Faults found by an independent pass, one test per case, each named after the rule it breaks: one name is one
thing, records prove themselves, nothing writes inside a run folder, shipped tags load by their tag."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
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


def test_the_stop_line_offers_resume_only_where_the_command_has_it() -> None:
    """The SIGTERM line offered --resume on check and report, which have none."""
    from aigrobust.cli.commands import RESUMABLE_COMMANDS, _how_to_continue, cli

    for command in ("report", "check", "models", "universal", "eval"):
        assert "--resume" not in _how_to_continue(["-v", command, "x"])
    for command in RESUMABLE_COMMANDS:
        assert "--resume" in _how_to_continue([command, "--out", "x"])
        assert any(p.name == "resume" for p in cli.get_command(None, command).params)
    assert not any(p.name == "resume" for name in ("report", "check", "universal")
                   for p in cli.get_command(None, name).params)


@pytest.mark.parametrize(("option", "value"), [("--weight-decay", "1e39"), ("--gate-lambda", "1e39"),
                                               ("--compute-penalty", "1e39"), ("--gate-lr-factor", "1e39")])
def test_training_numbers_have_ranges(synthetic_npz_dir: Path, tmp_path: Path, option: str, value: str) -> None:
    """``train --weight-decay 1e39`` ended in an overflow traceback."""
    result = CliRunner().invoke(cli, ["train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out",
                                      str(tmp_path / "run"), "--epochs", "1", option, value])
    assert result.exit_code == 2 and "Traceback" not in result.output and "range" in result.output, result.output
    assert not (tmp_path / "run").exists()
    from aigrobust.training.config import TrainConfig

    with pytest.raises(ValueError, match="takes a number in"):
        TrainConfig(model="tiny_aig", weight_decay=1e39)


def test_training_on_one_class_is_refused(tmp_path: Path) -> None:
    import numpy as np

    from aigrobust.data import load_cifar10
    from aigrobust.training.config import TrainConfig, TrainingError
    from aigrobust.training.loop import train

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar10_train.npz", images=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             labels=np.full(20, 3, dtype=np.int64))
    with pytest.raises(TrainingError, match="one class only"):
        train(TrainConfig(model="tiny_aig", epochs=1), load_cifar10("train", tmp_path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_epsilon_floors_agree_between_attack_universal_and_training(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """``--eps 1e-7`` was refused as 'below the resolution 1e-07'; ``universal --eps 0`` ran; training accepted an
    eps that attacks refuse."""
    from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec

    result = CliRunner().invoke(cli, ["attack", "--model", "resnet20", "--eps", "1e-7", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "not above the resolution" in result.output, result.output
    result = CliRunner().invoke(cli, ["universal", "--model", "aig20", "--eps", "0", "--out", str(tmp_path / "u")])
    assert result.exit_code == 2 and "radius 0 changes nothing" in result.output, result.output
    with pytest.raises(InnerSpecError, match="above 1e-07"):
        inner_attack_from_spec("n-fgsm:eps=1e-9")


def test_resume_of_a_finished_run_answers_from_its_sealed_records(synthetic_npz_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``attack --resume`` on a run that had finished attacked everything again (the README's main job, which
    carries --resume, cost its minutes twice)."""
    run = _finished_run(synthetic_npz_dir, tmp_path)
    first = CliRunner().invoke(cli, ["attack", "--data-dir", str(synthetic_npz_dir), "--eps", "4/255", "--attack",
                                     "fgsm", "--n-samples", "12", "--out", str(run), "--checkpoint",
                                     f"tiny={tmp_path / 'tiny.safetensors'}", "--resume"])
    before = (run / "records.csv.gz").read_bytes()

    def no_attack(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a finished run was attacked again")

    monkeypatch.setattr("aigrobust.runs.attack.run_evaluation", no_attack)
    again = CliRunner().invoke(cli, ["attack", "--data-dir", str(synthetic_npz_dir), "--eps", "4/255", "--attack",
                                     "fgsm", "--n-samples", "12", "--out", str(run), "--checkpoint",
                                     f"tiny={tmp_path / 'tiny.safetensors'}", "--resume"])
    assert again.exit_code == 0, again.output
    assert "finished: its sealed records answer" in again.output
    table = [line for line in first.output.splitlines() if "tiny" in line]
    assert table and all(line in again.output for line in table)
    assert (run / "records.csv.gz").read_bytes() == before
    other = CliRunner().invoke(cli, ["attack", "--data-dir", str(synthetic_npz_dir), "--eps", "8/255", "--attack",
                                     "fgsm", "--n-samples", "12", "--out", str(run), "--checkpoint",
                                     f"tiny={tmp_path / 'tiny.safetensors'}", "--resume"])
    assert other.exit_code == 2 and "another spec" in other.output  # a changed command is still refused


class _NaNNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 10), float("nan"))


class _CountingNet(torch.nn.Module):
    """Its output depends on how often it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x.flatten(1)) + self.calls


class _TrainingNet(torch.nn.Module):
    """Forces its batch norm into training mode inside forward."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(3)
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.train()
        return self.linear(self.norm(x).flatten(1))


class _ElsewhereNet(torch.nn.Module):
    """Logits on another device than its parameters and inputs ('meta' stands for any other device)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.empty(len(x), 10, device="meta")


class _IntegerNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).round().long()


@pytest.mark.parametrize(("model", "message"), [
    (_NaNNet(), "non-finite logits"), (_CountingNet(), "different logits in two passes"),
    (_TrainingNet(), "training mode"), (_IntegerNet(), "floating-point logits"), ([5], "nn.Module"),
    (_ElsewhereNet(), "logits on meta"),
])
def test_a_network_is_checked_before_it_is_believed(model: object, message: str) -> None:
    """NaN logits once gave robust = clean accuracy; a call-counting or training-mode network gave figures that
    depend on order and batch size; [5] and integer logits failed deep inside the engine."""
    import aigrobust

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=message):
        aigrobust.evaluate({"net": model}, x, torch.arange(4))  # type: ignore[dict-item]


def test_evaluate_checks_shapes_and_epsilons_and_leaves_modules_as_given() -> None:
    """64x64 or one-channel images once ran on a 32x32 RGB network; epsilons=[] said nothing; images with
    requires_grad raised inside the engine; the caller's module came back in eval mode."""
    import aigrobust

    model = create_model("tiny_resnet")
    model.train()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4)
    for images, message in ((torch.rand(4, 3, 64, 64), "do not fit"), (torch.rand(4, 1, 32, 32), "do not fit")):
        with pytest.raises(ValueError, match=message):
            aigrobust.evaluate({"tiny": model}, images, y)
    with pytest.raises(ValueError, match="non-empty list"):
        aigrobust.evaluate({"tiny": model}, x, y, epsilons=[])
    summary = aigrobust.evaluate({"tiny": model}, x.clone().requires_grad_(True), y, epsilons=[4 / 255])
    assert len(summary.records) == 8
    assert model.training and all(m.training for m in model.modules())  # as it was given


def test_resume_restores_the_best_model_a_kill_left_unwritten(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """A kill -9 right after the resume point of the best epoch lost best.safetensors for good (the log said epoch 1
    was best; the file never appeared). The resume point is now written last, and a resume restores what it names."""
    from aigrobust.data import load_cifar10
    from aigrobust.models.checkpoints import read_checkpoint
    from aigrobust.training.config import BEST_FILE, STATE_FILE, TrainConfig
    from aigrobust.training.loop import train

    data = load_cifar10("train", synthetic_npz_dir)
    heldout = load_cifar10("test", synthetic_npz_dir)
    config = TrainConfig(model="tiny_aig", epochs=1, batch_size=32, adversarial="fgsm-rs:eps=4/255")
    out = tmp_path / "run"
    train(config, data, out, heldout=heldout)
    written = sorted(p.name for p in out.iterdir())
    assert BEST_FILE in written and STATE_FILE in written
    original, _ = read_checkpoint(out / BEST_FILE)
    (out / BEST_FILE).unlink()  # as a kill between the state and the best model left it
    train(config, data, out, heldout=heldout, resume=True)
    restored, _ = read_checkpoint(out / BEST_FILE)
    assert original.keys() == restored.keys() and all(torch.equal(original[k], restored[k]) for k in original)


def test_the_resume_point_is_written_after_every_file_it_implies(synthetic_npz_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrobust.data import load_cifar10
    from aigrobust.training import state
    from aigrobust.training.config import TrainConfig
    from aigrobust.training.loop import train

    order: list[str] = []
    original_save_state, original_checkpoint = state.save_state, state.save_checkpoint
    monkeypatch.setattr(state, "save_state", lambda path, s: (order.append(path.name), original_save_state(path, s)))
    monkeypatch.setattr(state, "save_checkpoint", lambda model, path, **m: (order.append(path.name),
                                                                           original_checkpoint(model, path, **m))[1])
    train(TrainConfig(model="tiny_aig", epochs=1, batch_size=32, adversarial="fgsm-rs:eps=4/255"),
          load_cifar10("train", synthetic_npz_dir), tmp_path / "run", heldout=load_cifar10("test", synthetic_npz_dir))
    assert order[-1] == "train_state.pt" and "best.safetensors" in order[:-1]


HOSTILE_JSON = ["[" * 100_000 + "]" * 100_000, '{"seed": ' + str(2**70) + "}", "9" * 5000, '{"a": NaN}',
                '{"a": 1e999}', "{", "\xff", '{"model": {"a": ' * 80 + "1" + "}" * 80 + "}"]


def test_every_reader_is_bounded_for_hostile_json(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """A baseline nested 100,000 deep, holding a 5,000-digit integer or "seed": 2**70, and a run.json nested
    100,000 deep gave tracebacks: one JSON reader with depth, size and integer limits now reads every file."""
    run = _finished_run(synthetic_npz_dir, tmp_path)
    for i, text in enumerate(HOSTILE_JSON):
        (run / "run.json").write_text(text)
        result = CliRunner().invoke(cli, ["report", str(run), "--no-probe", "--out", str(tmp_path / f"r{i}")])
        assert result.exit_code == 2 and "Traceback" not in result.output, (text[:40], result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        baseline = tmp_path / f"baseline{i}.json"
        baseline.write_text(text)
        result = CliRunner().invoke(cli, ["check", "--baseline", str(baseline)])
        assert result.exit_code == 2 and "Traceback" not in result.output, (text[:40], result.output)


def test_a_baseline_cannot_ask_for_unbounded_work() -> None:
    """A baseline attack 'pgd:steps=1000000000' ran without bound."""
    from attacks import AttackSpecError, attack_from_spec

    for spec in ("pgd:steps=1000000000", "square:n_queries=100000000000", "apgd:restarts=100000",
                 "pgd:seed=" + str(2**70)):
        with pytest.raises(AttackSpecError, match="up to|in \\[0, 2\\*\\*63\\)"):
            attack_from_spec(spec)


def test_random_json_reaches_readers_only_as_their_documented_errors() -> None:
    """Property: whatever JSON (or near-JSON) a file holds, the readers answer with a value or their one error type."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from aigrobust.files import JSONLimitError, parse_json

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=30)

    @settings(max_examples=150, deadline=None)
    @given(documents, st.integers(min_value=0, max_value=12), st.text(max_size=4))
    def check(document: object, cut: int, noise: str) -> None:
        text = json.dumps(document)
        for candidate in (text, text[: max(0, len(text) - cut)] + noise):
            try:
                parse_json(candidate)
            except JSONLimitError as err:
                assert "\n" not in str(err)

    check()


def test_image_folders_are_walked_without_links_and_with_a_bound(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink loop in an image folder turned 10 images into 410; a data folder of '/' walked the whole disk."""
    import os

    from PIL import Image

    from aigrobust import data
    from aigrobust.errors import DataError

    root = tmp_path / "val"
    for cls in ("0", "1"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / cls / f"{i}.JPEG")
    os.symlink(root, root / "0" / "loop")  # a loop back to the root
    outside = tmp_path / "outside.JPEG"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, root / "1" / "out.JPEG")  # a link out of the data root
    dataset = data.ImageFolderDataset(tmp_path, "val")
    assert len(dataset) == 10
    monkeypatch.setattr(data, "MAX_FOLDER_ENTRIES", 6)
    with pytest.raises(DataError, match="more than 6 entries"):
        data.ImageFolderDataset(tmp_path, "val")


def test_an_output_index_past_the_outputs_is_one_line_and_leaves_nothing(synthetic_npz_dir: Path,
                                                                          tmp_path: Path) -> None:
    """``--output-index`` past a user network's outputs ended with exit 1 and a traceback behind it."""
    out = tmp_path / "run"
    code, output = _attack(synthetic_npz_dir, out, "--model-code", "tests.user_nets:build_with_extra",
                           "--output-index", "5")
    assert code == 2 and "names none of them" in output, output
    assert not out.exists()


def test_a_diverged_loss_names_every_weight_it_may_come_from() -> None:
    from aigrobust.training.loop import _EpochRunner

    loop = _EpochRunner.__new__(_EpochRunner)
    loop.config = type("C", (), {"gate_lambda": 2.0, "compute_penalty": 40.0})()
    loop.targets = torch.ones(3)
    loop.inner = type("I", (), {"compute": 1.0})()
    assert loop._other_weights() == ", or --gate-lambda 2 or --compute-penalty 40"
    loop.targets, loop.inner = None, None
    assert loop._other_weights() == ""


def test_universal_refuses_to_call_training_images_unseen(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """``universal`` called the test images unseen without checking that they differ from the fitting ones."""
    import shutil

    from tests.conftest import half_closed

    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(synthetic_npz_dir / "cifar10_train.npz", same / "cifar10_train.npz")
    shutil.copy(synthetic_npz_dir / "cifar10_train.npz", same / "cifar10_test.npz")  # the test split is the train one
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), checkpoint)
    result = CliRunner().invoke(cli, ["universal", "--checkpoint", f"tiny={checkpoint}", "--eps", "8/255", "--fit",
                                      "32", "--steps", "1", "--n-samples", "20", "--data-dir", str(same), "--out",
                                      str(tmp_path / "u")])
    assert result.exit_code == 2 and "would not be unseen" in result.output, result.output
    assert not (tmp_path / "u" / "universal.json").exists()


def test_a_runs_images_must_be_the_ones_it_attacked_before_probes_decode_them(synthetic_npz_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A run.json naming other data (a moved or edited data folder) had its probes run on whatever was there."""
    import numpy as np

    run = _finished_run(synthetic_npz_dir, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(1)
    np.savez(other / "cifar10_test.npz", images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, 40).astype(np.int64))
    document = json.loads((run / "run.json").read_text())
    document["data"]["data_dir"] = str(other)
    (run / "run.json").write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["check", "--sanity", str(run)])
    assert result.exit_code == 2 and "are not the ones" in result.output, result.output


def test_random_option_values_get_only_documented_exit_codes(tmp_path: Path) -> None:
    """Property: any value for any option of attack, train, universal, report, check, eval and models (a flag is
    followed by a stray argument, read as models' pattern) ends in exit 0, 1 or 2 with no traceback (the data folder
    is absent, so nothing heavy runs)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = (st.integers(-(2**70), 2**70).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(str)
              | st.sampled_from(["", "-", "8/255", "1/0", "nan", "abc", "pgd:steps=0", "jpeg:1e9", "a=b=c", "0x10",
                                 "1e39", "-0", "∞", "n-fgsm:eps=2", "tiny_aig.zz"]))
    options = {
        "attack": ["--eps", "--attack", "--defense", "--batch-size", "--n-samples", "--seed", "--eot-draws",
                   "--gate-grad", "--suite", "--table", "--model"],
        "train": ["--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay", "--target-rate",
                  "--gate-lambda", "--adversarial", "--ema", "--val-samples", "--checkpoint-every", "--target-warmup"],
        "universal": ["--eps", "--fit", "--n-samples", "--steps", "--seed"],
        "report": ["--n-probe", "--title", "--model-code"],
        "check": ["--n-probe", "--baseline", "--sanity"],
        "eval": ["--n-samples", "--batch-size", "--gate-mode", "--model", "--dataset"],
        "models": ["--details", "--json"],
    }
    base = {"attack": ["attack", "--model", "tiny_aig", "--data-dir", str(tmp_path / "absent"), "--out",
                       str(tmp_path / "run")],
            "train": ["train", "--model", "tiny_aig", "--data-dir", str(tmp_path / "absent"), "--out",
                      str(tmp_path / "train")],
            "universal": ["universal", "--model", "aig20", "--data-dir", str(tmp_path / "absent"), "--out",
                          str(tmp_path / "u"), "--eps", "8/255"],
            "report": ["report", str(tmp_path / "absent-run"), "--out", str(tmp_path / "rep")],
            "check": ["check"],
            "eval": ["eval", "--model", "tiny_aig", "--random-weights", "--data-dir", str(tmp_path / "absent")],
            "models": ["models"]}

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(sorted(options)), st.data())
    def check(command: str, data: st.DataObject) -> None:
        option = data.draw(st.sampled_from(options[command]))
        value = data.draw(values)
        result = CliRunner().invoke(cli, [*base[command], option, value])
        assert result.exit_code in (0, 1, 2), (command, option, value, result.exit_code, result.output)
        assert "Traceback" not in result.output, (command, option, value, result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError((command, option, value, repr(result.exception)))

    check()


@pytest.mark.parametrize(("network", "after"), [("build_failing_soon", "was removed"),
                                                ("build_failing_late", "with --resume")])
def test_a_run_that_fails_later_says_whether_resume_or_a_rerun_continues(synthetic_npz_dir: Path, tmp_path: Path,
                                                                         network: str, after: str) -> None:
    """A user network raising mid-run ended in a traceback and left a folder that refused the rerun."""
    out = tmp_path / "run"
    args = ["attack", "--data-dir", str(synthetic_npz_dir), "--eps", "4/255", "--attack", "pgd:steps=5",
            "--n-samples", "40", "--batch-size", "4", "--out", str(out), "--model-code", f"tests.user_nets:{network}"]
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and "a bug in the user's forward" in lines[0] and after in lines[0], result.output
    if after == "was removed":
        assert not out.exists()
    else:
        assert any(out.joinpath(".parts").rglob("*.csv.gz"))
        again = CliRunner().invoke(cli, [*args, "--resume"])
        assert again.exit_code == 1 and "with --resume" in again.output, again.output
