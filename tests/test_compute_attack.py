"""The compute-inflation attack at full strength: stronger than the old rule at the same budget on the
shipped aig20, inside its ball in Linf and L2, label kept where asked, canonical settings checked."""

from __future__ import annotations

import pytest
import torch

from aigrobust.models.factory import create_model
from attacks import AttackSpecError, attack_from_spec, get_attack
from tests.conftest import PROJECT_ROOT

EPS = 8 / 255
# the compute attack's earlier rule (20 signed steps on capped log-odds), reachable through its settings
LEGACY = "compute-inflation:steps=20,gate_loss=capped,kappa=2.0,normalize=false,deconflict=false,schedule=fixed"


@pytest.fixture(scope="module")
def aig20_batch(cifar_test):  # type: ignore[no-untyped-def]
    model = create_model("aig20", pretrained=True).eval()
    x = torch.from_numpy(cifar_test.images[:16]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(cifar_test.labels[:16]).long()
    return model, x, y


def _recovery(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor) -> float:
    full = model.flop_profile(tuple(x.shape[1:])).full
    with torch.no_grad():
        clean = model.forward_with_gates(x)[1].flops.double()
        attacked = model.forward_with_gates(adv)[1].flops.double()
    return float((attacked - clean).sum() / (full - clean).sum())


HINGE_APGD = "compute-inflation:steps=20,gate_loss=hinge,p=2,normalize=true,deconflict=true,schedule=apgd"


def test_stronger_than_the_old_rules_at_the_same_budget(aig20_batch) -> None:  # type: ignore[no-untyped-def]
    model, x, y = aig20_batch
    old = attack_from_spec(LEGACY)(model, x, y, [EPS]).clipped[0]
    hinge = attack_from_spec(HINGE_APGD)(model, x, y, [EPS]).clipped[0]
    new = attack_from_spec("compute-inflation:steps=20")(model, x, y, [EPS]).clipped[0]
    # measured on 100 images, 8/255, 100 steps: 0.65 (the first rule), 0.90 (hinge, normalised, APGD), 0.94 (the
    # defaults: GradMDM's probability loss, Adam); gate 3 is the one that resists
    assert _recovery(model, x, new) >= _recovery(model, x, old) + 0.05
    assert _recovery(model, x, new) >= _recovery(model, x, hinge)
    assert float((new - x).abs().amax()) <= EPS + 1e-6 and float(new.min()) >= 0 and float(new.max()) <= 1


def test_l2_stays_in_its_ball_and_raises_flops(aig20_batch) -> None:  # type: ignore[no-untyped-def]
    model, x, y = aig20_batch
    eps = 0.5
    adv = get_attack("compute-inflation-l2", steps=10)(model, x, y, [eps]).clipped[0]
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= eps + 1e-5
    assert _recovery(model, x, adv) > 0.2


def test_keep_label_keeps_the_label_where_it_counts_a_success(aig20_batch) -> None:  # type: ignore[no-untyped-def]
    model, x, y = aig20_batch
    result = get_attack("compute-inflation-keep-label", steps=10)(model, x, y, [EPS])
    success = result.success[0]
    with torch.no_grad():
        kept = model(result.clipped[0]).argmax(1) == y
    assert bool(success.any()) and bool(kept[success].all())


def test_settings_are_checked() -> None:
    for spec, needle in (("compute-inflation:gate_loss=l1", "gate_loss takes prob, hinge, pnorm, capped or uniform"),
                         ("compute-inflation:kappa=0", "kappa takes a number > 0"),
                         ("compute-inflation:schedule=cosine", "schedule takes adam, apgd or fixed"),
                         ("compute-inflation:normalize=1", "normalize takes true or false")):
        with pytest.raises(AttackSpecError, match=needle):
            attack_from_spec(spec)
    spec = attack_from_spec("compute-inflation").spec
    assert spec.startswith("compute-inflation:steps=100,gate_loss=prob,kappa=0.5,p=3.5,normalize=false,"
                           "deconflict=false,schedule=adam,")
    assert attack_from_spec(spec).spec == spec


def test_compute_metrics_by_hand() -> None:
    import numpy as np
    import pandas as pd

    from aigrobust.evaluation.metrics import compute_metrics, saved_compute_recovery

    # three blocks; full cost 10 + 3 x 10 = 40 FLOPs; sample 0 runs one block clean and all three attacked,
    # sample 1 runs two and then three, sample 2 already runs all three
    group = pd.DataFrame({"clean_flops": [20.0, 30.0, 40.0], "adv_flops": [40.0, 40.0, 40.0],
                          "clean_gates": ["100", "110", "111"], "adv_gates": ["111", "111", "111"]})
    m = compute_metrics(group, full_flops=40.0)
    assert m["recovery"] == 1.0 and m["recovery_blocks"] == 1.0 and m["all_open_clean"] == pytest.approx(1 / 3)
    assert m["flops_ratio_max"] == 2.0 and m["flops_ratio_median"] == pytest.approx(4 / 3)
    # DeepSloth's efficacy: the mean saving 1 - F / F_max, (0.5 + 0.25 + 0) / 3 clean, none attacked
    assert m["efficacy_clean"] == pytest.approx(0.25) and m["efficacy_adv"] == 0.0
    half = group.assign(adv_flops=[30.0, 30.0, 40.0], adv_gates=["110", "110", "111"])
    m = compute_metrics(half, full_flops=40.0)
    assert m["recovery"] == pytest.approx(10 / 30) and m["recovery_blocks"] == pytest.approx(1 / 3)
    assert m["recovery_median"] == pytest.approx(0.25) and m["recovery_max"] == pytest.approx(0.5)
    assert compute_metrics(half)["recovery"] != compute_metrics(half)["recovery"]  # NaN without the full FLOPs
    # noise that closes more gates than it opens takes back a negative share (unsigned gate counts wrapped to 1e17)
    closing = group.assign(clean_gates=["110", "110", "111"], adv_gates=["100", "111", "111"],
                           clean_flops=[30.0, 30.0, 40.0], adv_flops=[20.0, 40.0, 40.0])
    m = compute_metrics(closing, full_flops=40.0)
    assert m["recovery_blocks"] == 0.0 and m["recovery"] == 0.0
    closing = closing.assign(adv_gates=["100", "110", "111"], adv_flops=[20.0, 30.0, 40.0])
    m = compute_metrics(closing, full_flops=40.0)
    assert m["recovery_blocks"] == pytest.approx(-0.5) and m["recovery"] == pytest.approx(-0.5)
    # the formula alone (the study's bootstrap resamples it): NaN where the gates saved nothing
    assert saved_compute_recovery(closing["clean_flops"].to_numpy(), closing["adv_flops"].to_numpy(), 40.0) == -0.5
    assert np.isnan(saved_compute_recovery(np.array([40.0]), np.array([40.0]), 40.0))


def test_random_noise_is_the_control_the_attack_must_beat(aig20_batch) -> None:  # type: ignore[no-untyped-def]
    model, x, y = aig20_batch
    noise = get_attack("random-noise", draws=4)(model, x, y, [EPS]).clipped[0]
    delta = (noise - x).abs()
    assert float(delta.amax()) <= EPS + 1e-6 and float(delta.mean()) > 0.5 * EPS  # corners of the ball, clipped
    attacked = attack_from_spec("compute-inflation:steps=10")(model, x, y, [EPS]).clipped[0]
    assert _recovery(model, x, attacked) >= _recovery(model, x, noise) + 0.2
    again = get_attack("random-noise", draws=4)(model, x, y, [EPS]).clipped[0]
    assert torch.equal(noise, again)  # keyed per sample: the same control every time


def test_a_universal_perturbation_is_one_delta_that_raises_flops_on_unseen_images(cifar_test) -> None:  # type: ignore[no-untyped-def]
    from attacks.universal import apply_universal, fit_universal

    model = create_model("aig20", pretrained=True).eval()
    images = torch.from_numpy(cifar_test.images[:96]).permute(0, 3, 1, 2).float() / 255
    fit, judge = images[:64], images[64:]
    delta, fitted_flops = fit_universal(model, fit, EPS, steps=8, batch_size=64)
    assert delta.shape == fit.shape[1:] and float(delta.abs().max()) <= EPS + 1e-7
    again, _ = fit_universal(model, fit, EPS, steps=8, batch_size=64)
    assert torch.equal(delta, again)  # nothing random
    # measured (256 fitting, 500 judged, 30 steps): recovery 0.28 on unseen images against 0.08 for random noise
    assert _recovery(model, judge, apply_universal(judge, delta)) > 0.05


def test_the_joint_table_puts_both_goals_side_by_side() -> None:
    import pandas as pd

    from aigrobust.evaluation.metrics import joint_table

    base = {"model": "aig20", "defense": "none", "defense_grad": "oblivious", "gate_grad": "exact", "epsilon": 8 / 255}
    summary = pd.DataFrame([
        {**base, "attack": "pgd:steps=20", "attack_label": "PGD-20", "goal": "misclassify", "robust_acc": 0.30,
         "flops_ratio": 1.01, "recovery": float("nan")},
        {**base, "attack": "apgd:steps=100", "attack_label": "APGD-CE-100", "goal": "misclassify", "robust_acc": 0.25,
         "flops_ratio": 1.02, "recovery": float("nan")},
        {**base, "attack": "compute-inflation:steps=100", "attack_label": "compute-inflation-100", "goal": "gates",
         "robust_acc": 0.9, "flops_ratio": 1.227, "recovery": 0.892},
    ])
    row = joint_table(summary).iloc[0]
    assert (row["robust acc % (worst)"], row["by"]) == ("25.0", "APGD-CE-100")
    assert (row["FLOPs adv/clean (worst)"], row["recovery %"]) == ("1.227", "89.2")


def test_the_universal_command_fits_on_training_images_and_judges_on_unseen_ones(synthetic_npz_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner
    from safetensors.torch import load_file

    from aigrobust.cli import cli
    from aigrobust.models.checkpoints import save_checkpoint
    from tests.conftest import half_closed

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), checkpoint)
    out = tmp_path / "universal"
    args = ["universal", "--checkpoint", f"tiny={checkpoint}", "--eps", "8/255", "--fit", "32", "--steps", "3",
            "--n-samples", "20", "--data-dir", str(synthetic_npz_dir), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "universal.json").read_text())
    assert len(doc["fit_ids"]) == 32 and doc["judge_ids"] == list(range(20))
    assert doc["fit_data"]["split"] == "train" and doc["judge_data"]["split"] == "test"
    delta = load_file(str(out / "delta.safetensors"))["delta"]
    assert float(delta.abs().max()) <= 8 / 255 + 1e-7 and delta.shape == (3, 32, 32)
    assert 0 <= doc["fit_recovery"] <= 1 and doc["noise_recovery"] <= 1
    again = CliRunner().invoke(cli, args)  # never overwrites a finished one
    assert again.exit_code == 2 and "already holds universal.json" in again.output
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(create_model("tiny_resnet"), plain)
    refused = CliRunner().invoke(cli, [*args[:1], "--checkpoint", str(plain), *args[3:-1], str(tmp_path / "p")])
    assert refused.exit_code == 2 and "has no gates" in refused.output


STUDY_GATES = PROJECT_ROOT / "reports" / "cifar10" / "records" / "gates"  # written before records held canonical specs


def test_records_of_short_names_read_as_the_attack_that_made_them() -> None:
    from aigrobust.runs.folder import FinishedRun
    from aigrobust.runs.migrate import short_name_spec

    attacks = set(FinishedRun.open(STUDY_GATES).records()["attack"])
    legacy = attack_from_spec(LEGACY).spec
    assert short_name_spec("compute-inflation") == legacy  # not today's 100-step defaults
    assert legacy in attacks and attack_from_spec("compute-inflation").spec not in attacks


def test_the_earlier_rule_reproduces_the_committed_study_records(aig20_batch) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from aigrobust.runs.migrate import short_name_spec

    model, x, y = aig20_batch
    adv = attack_from_spec(short_name_spec("compute-inflation"))(model, x, y, [EPS]).clipped[0]
    with torch.no_grad():
        flops = model.forward_with_gates(adv)[1].flops.double().numpy()
    rows = pd.read_csv(STUDY_GATES / "records.csv.gz")
    rows = rows[(rows["attack"] == "compute-inflation") & (rows["gate_grad"] == "exact")
                & ((rows["epsilon"] - EPS).abs() < 1e-9)].set_index("sample").sort_index()
    assert rows.loc[range(len(x)), "adv_flops"].to_numpy() == pytest.approx(flops)


def test_a_folder_started_under_other_defaults_resumes_only_as_what_it_ran(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import pandas as pd

    from aigrobust.runs.folder import RunFolder
    from aigrobust.runs.records import PARTS_DIR, RunFolderError

    intermediate = attack_from_spec(HINGE_APGD.replace("steps=20", "steps=100")).spec  # an intermediate set of defaults
    root = tmp_path / "run"
    (root / PARTS_DIR / "aig20").mkdir(parents=True)
    old = {"spec": {"attacks": ["fgsm", "compute-inflation"], "seed": 0}}  # as run.json named attacks then: typed
    (root / "run.json").write_text(json.dumps(old))
    pd.DataFrame({"attack": ["fgsm:distance=linf", intermediate], "sample": [0, 0]}).to_csv(
        root / PARTS_DIR / "aig20" / "batch-00000.csv.gz", index=False)
    with pytest.raises(RunFolderError, match="spec.attacks"):
        RunFolder(root, old, resume=True)  # the same words now mean today's defaults: refused, not mixed
    folder = RunFolder(root, {"spec": {"attacks": ["fgsm", intermediate], "seed": 0}}, resume=True)
    folder.release()
    (root / PARTS_DIR / "aig20" / "batch-00000.csv.gz").unlink()  # nothing ran yet: today's meaning is the run's
    RunFolder(root, old, resume=True).release()


def test_a_baseline_reruns_the_attack_its_metrics_were_measured_with(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from aigrobust.checks.baseline_document import load_baseline

    data = json.loads((PROJECT_ROOT / "reports" / "ci" / "baseline.json").read_text())
    text = next(a for a in data["spec"]["attacks"] if a.startswith("compute-inflation"))
    earlier = attack_from_spec(text + ",gate_loss=hinge,schedule=apgd").spec  # as if measured under other defaults
    for row in data["metrics"]:
        if row["attack"].startswith("compute-inflation"):
            row["attack"] = earlier
    (tmp_path / "baseline.json").write_text(json.dumps(data))
    attacks = load_baseline(tmp_path / "baseline.json")["spec"]["attacks"]
    assert earlier in attacks and attack_from_spec(text).spec not in attacks
    assert attack_from_spec("fgsm").spec in attacks  # the others: today's canonical specs, as measured


def test_the_perturbation_size_by_hand() -> None:
    import math

    import pandas as pd

    from aigrobust.evaluation.metrics import perturbation_size

    group = pd.DataFrame({"l2": [0.0, 0.5, 1.0]})  # the unperturbed sample is left out
    size = perturbation_size(group, input_values=100)
    assert size["mse_mean"] == pytest.approx((0.25 / 100 + 1 / 100) / 2)
    assert size["psnr_mean"] == pytest.approx((10 * math.log10(400) + 10 * math.log10(100)) / 2)
    assert math.isnan(perturbation_size(group, None)["psnr_mean"])


def test_a_run_reports_the_psnr_of_its_perturbations(synthetic_npz_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner

    from aigrobust.cli import cli
    from aigrobust.models.checkpoints import save_checkpoint

    save_checkpoint(create_model("tiny_aig"), tmp_path / "tiny.safetensors")
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", str(tmp_path / "tiny.safetensors"),
                                      "--attack", "compute-inflation-l2:steps=2",
                                      "--eps", "0.5", "--n-samples", "4", "--data-dir", str(synthetic_npz_dir),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert document["input_values"] == 3 * 32 * 32
    attacked = [row for row in document["summary"] if row["epsilon"] > 0]
    assert attacked and all(0 < row["psnr_mean"] < 100 for row in attacked if row["l2_mean"] > 0)
