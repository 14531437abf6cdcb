"""Evaluation pipeline: early exit keeps the worst case, defenses and gate modes reach the records."""

from __future__ import annotations

import numpy as np
import pytest

from aigrobust import create_model
from aigrobust.evaluation import EvalSpec, ModelEntry, run_evaluation
from aigrobust.evaluation.metrics import summarize
from tests.conftest import half_closed, varied_images


def _worst(records):  # type: ignore[no-untyped-def]
    summary = summarize(records)
    rows = summary[summary["attack"] == "worst-case"]
    return rows.set_index(["defense", "defense_grad", "gate_grad", "epsilon"])["robust_acc"].sort_index()


@pytest.mark.parametrize("model_name", ["tiny_aig", "tiny_resnet"])
def test_early_exit_keeps_the_worst_case_and_skips_work(model_name: str) -> None:
    model = half_closed(create_model(model_name)).eval()
    x = varied_images(40)
    with_logits = model(x)
    y = with_logits.argmax(1)  # every sample right on the clean input, so there is something to attack
    y[:5] = (y[:5] + 1) % 10  # and a few clean mistakes
    spec_args = dict(attacks=("fgsm", "pgd:steps=3", "mifgsm:steps=3"), epsilons=(1 / 255, 4 / 255),
                     gate_grads=("exact", "straight-through") if model.is_gated else ("exact",))
    full = run_evaluation([ModelEntry("m", model)], EvalSpec(**spec_args), x, y, np.arange(40), batch_size=16)
    early = run_evaluation([ModelEntry("m", model)], EvalSpec(**spec_args, early_exit=True), x, y, np.arange(40),
                           batch_size=16)
    assert _worst(full.records).equals(_worst(early.records))
    assert len(early.records) == len(full.records)  # skipped samples still have their rows
    assert early.records["evaluated"].sum() < full.records["evaluated"].sum()
    assert full.records["evaluated"].all()


def test_defense_rows_and_stochastic_gates_reach_the_records() -> None:
    model = half_closed(create_model("tiny_aig")).eval()
    x = varied_images(12)
    y = model(x).argmax(1)
    spec = EvalSpec(attacks=("fgsm",), epsilons=(4 / 255,), defenses=("jpeg:75",), defense_grads=("bpda", "diff"),
                    gate_mode="stochastic")
    run = run_evaluation([ModelEntry("m", model)], spec, x, y, np.arange(12), batch_size=12)
    settings = set(zip(run.records["defense"], run.records["defense_grad"]))
    assert settings == {("none", "none"), ("jpeg:75", "bpda"), ("jpeg:75", "diff")}
    again = run_evaluation([ModelEntry("m", model)], spec, x, y, np.arange(12), batch_size=12)
    assert run.records.equals(again.records)  # seeded stochastic gates and defenses repeat
    with pytest.raises(ValueError, match="unknown defense"):
        EvalSpec(attacks=("fgsm",), epsilons=(0.1,), defenses=("blur",))


def test_one_call_api_matches_the_pipeline_and_checks_its_input() -> None:
    import torch

    import aigrobust

    gated = half_closed(create_model("tiny_aig")).eval()
    plain = create_model("tiny_resnet").eval()
    x = varied_images(12, seed=7)
    y = torch.arange(12) % 10
    summary = aigrobust.evaluate({"gated": gated, "plain": plain}, x, y, attacks=["fgsm", "pgd:steps=3"],
                                 epsilons=["2/255", 0.03], batch_size=5)
    spec = EvalSpec(attacks=("fgsm", "pgd:steps=3"), epsilons=(2 / 255, 0.03))
    direct = run_evaluation([ModelEntry("gated", gated), ModelEntry("plain", plain)], spec, x, y, np.arange(12),
                            batch_size=5)
    assert summary.records.equals(direct.records)
    assert set(summary.table["model"]) == {"gated", "plain"} and "worst-case" in set(summary.table["attack"])
    worst = summary.robust_accuracy("plain", 0.03)
    assert 0.0 <= worst <= summary.robust_accuracy("plain", 0.03, attack="fgsm")
    for bad, message in (({"images": x * 2}, "lie in \\[0, 1\\]"), ({"labels": y[:5]}, "as many labels"),
                         ({"attacks": ["pgd:steps=0"]}, "steps takes a positive integer"),
                         ({"epsilons": ["abc"]}, "not a number"),
                         # each of these ran, or failed deep inside torch, before
                         ({"images": torch.where(x > 0.5, float("nan"), x)}, "NaN or infinite"),
                         ({"labels": y.float() + 0.7}, "integer class indices"),
                         ({"labels": y[:, None]}, "1-D tensor"),
                         ({"labels": y + 5}, "labels must lie in 0..9 \\(tiny_resnet predicts 10 classes\\)"),
                         ({"images": x.permute(0, 2, 3, 1).contiguous()}, "channels last\\? permute")):
        kwargs = {"images": x, "labels": y, "attacks": ["fgsm"], **bad}
        with pytest.raises(ValueError, match=message):
            aigrobust.evaluate(plain, kwargs.pop("images"), kwargs.pop("labels"), **kwargs)
    with pytest.raises(ValueError, match="aig50's gates have no published weights"):  # never untrained gates
        aigrobust.evaluate("aig50", x, y)


def test_an_attack_with_its_own_eot_gets_one_draw_per_call_not_nested_averages() -> None:
    """Under stochastic gates the attacker's view averages --eot-draws draws; an attack that averages its own draws
    (APGD's eot_draws) gets the one-draw view instead, so a gradient costs eot_draws forwards, not their product."""
    model = half_closed(create_model("tiny_aig")).eval()
    x = varied_images(6)
    y = model(x).argmax(1)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))

    def forwards(attack: str) -> int:
        calls.clear()
        spec = EvalSpec(attacks=(attack,), epsilons=(8 / 255,), gate_mode="stochastic", eot_draws=5, judge_draws=1,
                        gate_grads=("straight-through",))
        run_evaluation([ModelEntry("m", model)], spec, x, y, np.arange(6), batch_size=6)
        return len(calls)

    try:
        own = forwards("apgd:steps=4,eot_draws=3,stop_at_success=false")
        view = forwards("apgd:steps=4,stop_at_success=false")
    finally:
        handle.remove()
    # the same steps: 3 forwards per gradient against the view's 5 (nested, it would be 15)
    assert own < view


@pytest.mark.parametrize("gate_mode", ["hard", "stochastic"])
def test_one_eot_average_per_gradient_over_every_random_part(gate_mode: str) -> None:
    """A randomised defense under eot averages --eot-draws draws (it took a fixed 8); with random gates the gates'
    EOT draws the defense too (no 20 x 20 nesting); an attack with its own eot_draws gets a single-draw view."""
    import torch

    from aigrobust.evaluation import EOTView
    from aigrobust.evaluation.engine import _prepare_setting
    from attacks import attack_from_spec
    from defenses import AttackerDefenseView, DefenseGrad

    model = half_closed(create_model("tiny_aig")).eval()
    x = varied_images(4)
    y = torch.zeros(4, dtype=torch.long)
    spec = EvalSpec(attacks=("pgd:steps=2",), epsilons=(8 / 255,), gate_mode=gate_mode, eot_draws=5,
                    defenses=("randpad:0.875",), defense_grads=("eot",))
    setting = _prepare_setting(model, spec, "randpad:0.875", "eot", "exact", x, y, {})
    own_eot = setting.gradient_view(attack_from_spec("apgd:steps=2,eot_draws=3"))
    if gate_mode == "hard":
        assert isinstance(setting.view, AttackerDefenseView)
        assert setting.view.grad is DefenseGrad.EOT and setting.view.eot_samples == 5
    else:
        assert isinstance(setting.view, EOTView) and setting.view.draws == 5
        assert setting.view.model.grad is DefenseGrad.BPDA  # one draw of the defense per draw of the gates
    assert isinstance(own_eot, AttackerDefenseView) and own_eot.grad is DefenseGrad.BPDA
    assert setting.gradient_view(attack_from_spec("pgd:steps=2")) is setting.view


def test_progress_shows_the_command_lines_bar(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    import aigrobust

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    aigrobust.evaluate(create_model("tiny_resnet"), x, y, attacks=["fgsm"], epsilons=["8/255"], progress=True)
    shown = capsys.readouterr().err
    assert "8/8" in shown and "img" in shown
    aigrobust.evaluate(create_model("tiny_resnet"), x, y, attacks=["fgsm"], epsilons=["8/255"])
    assert capsys.readouterr().err == ""  # quiet unless asked
