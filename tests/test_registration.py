"""One place to add a part: a toy attack is its class and one register_attack call, and the parser, the
canonical spec, the label, the setting rules and `aigrobust attacks` all know it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from click.testing import CliRunner

import attacks
from aigrobust.cli import cli
from attacks import Attack, AttackSpecError, attack_from_spec, attack_label, register_attack
from attacks.distances import DISTANCES
from tests.conftest import half_closed


class ToyShift(Attack):
    """Moves every pixel by +eps (a toy: the registration is the point)."""

    name = "toy-shift"

    def __init__(self, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        self.scale = scale
        self.distance = DISTANCES["linf"]

    def run_one(self, model, gradient_model, inputs, labels, eps, noise):  # type: ignore[no-untyped-def]
        return inputs + self.scale * eps


@pytest.fixture
def toy() -> Iterator[None]:
    register_attack("toy-shift", ToyShift, label="Toy",
                    rules={"scale": (lambda v: isinstance(v, float) and 0 < v <= 1, "a number in (0, 1]")})
    yield
    del attacks._ATTACKS["toy-shift"]


def test_one_registration_reaches_every_reader(toy: None) -> None:
    attack = attack_from_spec("toy-shift:scale=0.5")
    assert attack.spec == "toy-shift:scale=0.5"
    assert attack_label(attack_from_spec("toy-shift").spec) == "Toy"
    with pytest.raises(AttackSpecError, match="scale takes a number in \\(0, 1\\]"):
        attack_from_spec("toy-shift:scale=2.0")
    listing = CliRunner().invoke(cli, ["attacks"]).output
    assert any(line.startswith("toy-shift") and "scale=1.0" in line for line in listing.splitlines())
    x = torch.full((2, 3, 4, 4), 0.5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    with torch.no_grad():
        y = model(x).argmax(1)  # right on the clean input: the attack moves them
    result = attack(model, x, y, [0.1])
    assert torch.allclose(result.clipped[-1], x + 0.05)


def test_a_name_that_fixes_a_setting_refuses_it() -> None:
    with pytest.raises(AttackSpecError, match="fixes distance"):
        attack_from_spec("pgd-l2:distance=linf")
    with pytest.raises(ValueError, match="registered twice"):
        register_attack("pgd", attacks.PGD)


class ToyQuantize(torch.nn.Module):
    """Rounds each pixel to one of ``levels`` values (a toy defense: the registration is the point)."""

    randomized = False

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError("levels must be at least 2")
        self.levels = levels
        self.name = f"toyq:{levels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)

    def approximation(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def spec(self) -> str:
        return self.name


def test_a_toy_defense_is_one_registration() -> None:
    import defenses
    from defenses import DefenseSpecError, defense_examples, parse_defense, register_defense

    register_defense("toyq", ToyQuantize, int, "toyq:4")  # type: ignore[arg-type]
    try:
        assert "toyq:4" in defense_examples()
        assert "toyq:4" in CliRunner().invoke(cli, ["attack", "--help"]).output.replace("\n", " ").replace("  ", "")
        quantized = parse_defense("toyq:2")(torch.tensor([[0.2, 0.7]]))
        assert torch.equal(quantized, torch.tensor([[0.0, 1.0]]))
        with pytest.raises(DefenseSpecError, match="levels must be at least 2"):
            parse_defense("toyq:1")
    finally:
        del defenses._DEFENSES["toyq"]


class ToyOpen(Attack):
    """A toy compute attack: every pixel +eps, judged by executed FLOPs (the registration is the point)."""

    name = "toy-open"
    goal = "gates"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.distance = DISTANCES["linf"]

    def run_one(self, model, gradient_model, inputs, labels, eps, noise):  # type: ignore[no-untyped-def]
        return inputs + eps

    def succeeded(self, model, inputs, clipped, labels):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            return model.forward_with_gates(clipped)[1].flops > model.forward_with_gates(inputs)[1].flops


class ToyBlackBox(ToyShift):
    """A toy black-box accuracy attack."""

    name = "toy-black-box"


def test_a_toy_compute_and_a_toy_black_box_attack_reach_checks_tables_and_report() -> None:
    """What an attack is comes from its registration: a new compute attack appears in the efficiency table, the
    joint table and the report's compute figure, a new black-box attack in the black-box sanity check, and no other
    module names them."""
    from aigrobust import evaluate
    from aigrobust.evaluation.metrics import efficiency_table, joint_table, summarize
    from aigrobust.models.registry import untrained_model
    from aigrobust.reporting.report import build_report
    from aigrobust.reporting.sanity import record_checks
    from attacks import AttackRole, unregister_attack

    register_attack("toy-open", ToyOpen, label="Toy-Open", role=AttackRole(objective="compute"))
    register_attack("toy-black-box", ToyBlackBox, label="Toy-BB", role=AttackRole(method="black-box"))
    try:
        model = half_closed(untrained_model("tiny_aig")).eval()  # gates that save compute, for the attack to take back
        x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = model(x).argmax(1)
        result = evaluate({"toy-net": model}, x, y, attacks=["fgsm", "toy-black-box", "toy-open"],
                          epsilons=[8 / 255])
        full = {"toy-net": float(model.flop_profile((3, 32, 32)).full)}
        summary = summarize(result.records, full_flops=full)
        assert {"toy-open", "Toy-Open"} & set(efficiency_table(summary)["attack"])
        assert not joint_table(summary).empty  # the strongest compute attack beside the worst accuracy attack
        flags = {f.check: f for f in record_checks(result.records)}
        assert flags["blackbox-not-better"].status != "n/a", flags["blackbox-not-better"]
        assert "toy-black-box" in flags["blackbox-not-better"].sentence or flags["blackbox-not-better"].status == "ok"
        report = build_report(result.records, "toy", full_flops=full)
        assert "efficacy_curve" in report.figures
    finally:
        unregister_attack("toy-open")
        unregister_attack("toy-black-box")


def test_a_toy_training_method_is_one_registration(synthetic_npz_dir, tmp_path) -> None:
    from dataclasses import dataclass
    from pathlib import Path

    from aigrobust.models.checkpoints import read_checkpoint
    from aigrobust.training.inner_attacks import INNER_ATTACKS, InnerAttack, register_training_method

    @dataclass(frozen=True)
    class UniformNoise(InnerAttack):
        """Training on uniform noise of radius eps (no gradient): a control for adversarial training."""

        draws: int = 1
        method = "toy-noise"

        def perturb(self, forward, x, labels, generator, costs=None, teacher_probs=None):  # type: ignore[no-untyped-def]
            noise = torch.rand(tuple(x.shape), generator=generator).to(x) * 2 - 1
            return (x + self.eps * noise).clamp(0, 1).detach()

    register_training_method(UniformNoise)
    try:
        out = Path(tmp_path) / "run"
        result = CliRunner().invoke(cli, ["train", "--model", "tiny_resnet", "--data-dir", str(synthetic_npz_dir),
                                          "--out", str(out), "--epochs", "1", "--batch-size", "32", "--adversarial",
                                          "toy-noise:eps=4/255", "--val-samples", "24"])
        assert result.exit_code == 0, result.output
        _, meta = read_checkpoint(out / "model.safetensors")
        assert meta["recipe"]["adversarial"] == "toy-noise:eps=0.01568627450980392,compute=0.0,draws=1"
        refused = CliRunner().invoke(cli, ["train", "--model", "tiny_resnet", "--data-dir", str(synthetic_npz_dir),
                                           "--out", str(Path(tmp_path) / "other"), "--adversarial", "toy-noise:draw=2"])
        assert refused.exit_code == 2 and "toy-noise has no setting 'draw'; it takes eps, compute, draws" in refused.output
    finally:
        del INNER_ATTACKS["toy-noise"]
    assert "toy-noise" not in INNER_ATTACKS
