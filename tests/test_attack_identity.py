"""Attack identity: every attack carries a canonical spec (every setting, defaults filled in); two different specs
never merge, one spec given twice is refused, and records written before specs were canonical are upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from attacks import attack_from_spec, attack_label, list_attacks
from tests.conftest import PROJECT_ROOT, SHARED_DATA, require
from tests.test_cli import _tiny_checkpoint, assert_one_line_error, run


@pytest.mark.parametrize("name", list_attacks())
def test_canonical_spec_parses_back_to_itself(name: str) -> None:
    spec = attack_from_spec(name).spec
    assert spec.startswith(name + ":") or spec == name
    assert attack_from_spec(spec).spec == spec


def test_spellings_of_one_attack_share_a_spec_and_different_settings_do_not() -> None:
    assert attack_from_spec("pgd").spec == attack_from_spec("pgd:steps=20,restarts=1").spec
    assert attack_from_spec("pgd:steps=1").spec != attack_from_spec("pgd:steps=10").spec
    assert attack_from_spec("pgd:steps=10").spec == ("pgd:steps=10,rel_stepsize=auto,abs_stepsize=auto,restarts=1,"
                                                      "distance=linf,stop_at_success=true")
    assert attack_label(attack_from_spec("apgd:steps=50").spec) == "APGD-CE-50"
    assert attack_label(attack_from_spec("pgd:steps=10,rel_stepsize=0.1").spec) == "PGD-10 (rel_stepsize=0.1)"


def test_two_pgd_budgets_stay_two_groups_of_n(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    code, out = run("attack", "--checkpoint", str(checkpoint), "--eps", "8/255", "--attack", "pgd:steps=1",
                    "--attack", "pgd:steps=10", "--data-dir", str(synthetic_npz_dir), "--n-samples", "32",
                    "--out", str(tmp_path / "run"), "--table", "full")
    assert code == 0, out
    summary = pd.DataFrame(json.loads((tmp_path / "run" / "summary.json").read_text())["summary"])
    attacked = summary[(summary["epsilon"] > 0) & summary["attack"].str.startswith("pgd:")]
    assert sorted(attacked["attack_label"]) == ["PGD-1", "PGD-10"]
    assert attacked["n"].tolist() == [32, 32]
    assert "PGD-1 " in out and "PGD-10 " in out
    assert "early exit" not in out  # each attack ran on every sample: its row is its own


def test_one_attack_given_twice_is_refused_before_any_work(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    code, out = run("attack", "--checkpoint", str(checkpoint), "--eps", "8/255", "--attack", "pgd",
                    "--attack", "pgd:steps=20", "--data-dir", str(synthetic_npz_dir), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, out, "repeats 'pgd'")
    assert not (tmp_path / "run").exists()


def test_records_with_short_attack_names_get_the_canonical_spec_of_their_run(tmp_path: Path) -> None:
    from aigrobust.runs.migrate import upgrade_attack_names

    records = pd.DataFrame({"attack": ["fgsm", "pgd", "apgd-ce"], "model": ["m"] * 3})
    upgraded = upgrade_attack_names(records, ["fgsm", "pgd:steps=20,stop_at_success=false", "apgd:steps=50"])
    assert upgraded["attack"].tolist() == [attack_from_spec("fgsm").spec,
                                           attack_from_spec("pgd:steps=20,stop_at_success=false").spec,
                                           attack_from_spec("apgd:steps=50").spec]
    # a short name two of the run's specs share cannot be told apart: left as it was
    ambiguous = upgrade_attack_names(records, ["pgd:steps=1", "pgd:steps=10"])
    assert ambiguous["attack"].tolist()[1] == "pgd"


def test_stochastic_gates_average_draws_and_are_judged_on_fresh_ones(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    from aigrobust.reporting.sanity import record_checks
    from aigrobust.runs.folder import read_records

    # the shipped aig20 on real images: its stochastic gates change some predictions from draw to draw
    checkpoint = PROJECT_ROOT / "aigrobust" / "pretrained" / "aig20.safetensors"
    code, out = run("attack", "--checkpoint", str(checkpoint), "--eps", "2/255", "--attack", "pgd:steps=2",
                    "--gate-mode", "stochastic", "--eot-draws", "3", "--data-dir", str(require(SHARED_DATA)),
                    "--n-samples", "48", "--out", str(tmp_path / "random"))
    assert code == 0, out
    assert json.loads((tmp_path / "random" / "run.json").read_text())["spec"]["eot_draws"] == 3
    records = read_records(tmp_path / "random")
    draws = records["adv_draw_acc"]
    assert draws.between(0, 1).all() and ((draws > 0) & (draws < 1)).any()  # draws disagree on some inputs
    assert (draws * 10).round(6).eq((draws * 10).round()).all()  # ten judged draws per input
    summary = pd.DataFrame(json.loads((tmp_path / "random" / "summary.json").read_text())["summary"])
    assert (summary["robust_every_draw"] <= summary["robust_acc_draws"] + 1e-12).all()
    assert any(f.check == "random-model" and f.status == "warn" for f in record_checks(records))
    # a deterministic model: one judged draw, the same as adv_correct, and no random-model flag
    code, out = run("attack", "--checkpoint", str(checkpoint), "--eps", "2/255", "--attack", "pgd:steps=2",
                    "--data-dir", str(SHARED_DATA), "--n-samples", "48", "--out", str(tmp_path / "hard"))
    assert code == 0, out
    hard = read_records(tmp_path / "hard")
    assert (hard["adv_draw_acc"] == hard["adv_correct"].astype(float)).all()
    assert not any(f.check == "random-model" for f in record_checks(hard))


def test_a_plain_model_beside_stochastic_gates_gets_no_noise_floor(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    """A plain ResNet has no gates to draw: no 'stochastic gates flip 0.000' line for it (a gated model gets one)."""
    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint

    plain = tmp_path / "plain.safetensors"
    save_checkpoint(create_model("tiny_resnet"), plain, dataset="cifar10")
    code, out = run("attack", "--checkpoint", f"plain={plain}", "--checkpoint", f"gated={_tiny_checkpoint(tmp_path)}",
                    "--eps", "8/255", "--gate-mode", "stochastic", "--eot-draws", "2", "--data-dir",
                    str(synthetic_npz_dir), "--n-samples", "8", "--out", str(tmp_path / "run"))
    assert code == 0, out
    assert "gated: stochastic gates flip" in out and "plain: stochastic gates flip" not in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["noise_floor_hamming"]) == {"gated"}


def test_an_attack_has_one_name_its_registration() -> None:
    from attacks import get_attack, list_attacks

    assert {name: get_attack(name).name for name in list_attacks()} == {name: name for name in list_attacks()}
    assert attack_from_spec("apgd:steps=5").name == "apgd"  # records of the time said 'apgd-ce': read in migration


def test_a_committed_run_of_the_short_name_era_reads_as_the_attacks_it_ran() -> None:
    from aigrobust.runs.folder import FinishedRun

    run = FinishedRun.open(PROJECT_ROOT / "reports" / "cifar10" / "records" / "strong-ours")
    typed = ["fgsm", "pgd:steps=20,stop_at_success=false", "apgd:steps=50"]
    assert run.spec["attacks"] == typed  # as typed, before run.json held canonical specs
    assert run.attack_specs() == [attack_from_spec(text).spec for text in typed]
