"""Attack identity: every attack carries a canonical spec (every setting, defaults filled in); two different specs
never merge, one spec given twice is refused, and records written before specs were canonical are upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from attacks import attack_from_spec, attack_label, list_attacks
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


def test_one_attack_given_twice_is_refused_before_any_work(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path)
    code, out = run("attack", "--checkpoint", str(checkpoint), "--eps", "8/255", "--attack", "pgd",
                    "--attack", "pgd:steps=20", "--data-dir", str(synthetic_npz_dir), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, out, "repeats 'pgd'")
    assert not (tmp_path / "run").exists()


def test_records_with_short_attack_names_get_the_canonical_spec_of_their_run(tmp_path: Path) -> None:
    from aigrobust.runs import upgrade_attack_names

    records = pd.DataFrame({"attack": ["fgsm", "pgd", "apgd-ce"], "model": ["m"] * 3})
    upgraded = upgrade_attack_names(records, ["fgsm", "pgd:steps=20,stop_at_success=false", "apgd:steps=50"])
    assert upgraded["attack"].tolist() == [attack_from_spec("fgsm").spec,
                                           attack_from_spec("pgd:steps=20,stop_at_success=false").spec,
                                           attack_from_spec("apgd:steps=50").spec]
    # a short name two of the run's specs share cannot be told apart: left as it was
    ambiguous = upgrade_attack_names(records, ["pgd:steps=1", "pgd:steps=10"])
    assert ambiguous["attack"].tolist()[1] == "pgd"
