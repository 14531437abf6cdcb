"""Routes to a robust gated network. Robust distillation (RSLAD): the inner attack ascends the divergence from the
teacher, the loss mixes its two terms as asked, and a training run feeds the teacher's probabilities on the clean batch
to both. Batch-norm statistics per path: only the images that run a block feed its statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.data import load_cifar10
from aigrobust.models.checkpoints import read_checkpoint, save_checkpoint
from aigrobust.models.factory import create_model
from aigrobust.training.config import TrainConfig
from aigrobust.training.distillation import RSLAD
from aigrobust.training.inner_attacks import INNER_ATTACKS, InnerSpecError, inner_attack_from_spec
from aigrobust.training.loop import train
from aigrobust.training.recalibration import recalibrate_batchnorm
from tests.conftest import varied_images

EPS = 8 / 255


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(1)
    student = create_model("tiny_resnet").eval()
    torch.manual_seed(2)
    return student, create_model("tiny_resnet").eval()


def _forward(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return model(x), None

    return forward


def test_rslad_is_registered_and_its_spec_parses_back() -> None:
    assert "rslad" in INNER_ATTACKS
    method = inner_attack_from_spec("rslad:steps=2,teacher=runs/teacher.safetensors")
    assert isinstance(method, RSLAD) and method.teacher_source == "runs/teacher.safetensors"
    assert inner_attack_from_spec(method.spec) == method
    with pytest.raises(InnerSpecError, match="alpha takes a number in"):
        inner_attack_from_spec("rslad:alpha=2")
    with pytest.raises(InnerSpecError, match="is not a number"):
        inner_attack_from_spec("rslad:steps=two")


def test_the_inner_attack_ascends_the_divergence_from_the_teacher() -> None:
    student, teacher = _models()
    x = varied_images(16, seed=3)
    labels = torch.zeros(16, dtype=torch.long)
    with torch.no_grad():
        teacher_probs = F.softmax(teacher(x), 1)
    method = RSLAD(eps=EPS, steps=5)
    adv = method.perturb(_forward(student), x, labels, torch.Generator().manual_seed(0), teacher_probs=teacher_probs)
    assert float((adv - x).abs().max()) <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        before = F.kl_div(F.log_softmax(student(x), 1), teacher_probs, reduction="batchmean")
        after = F.kl_div(F.log_softmax(student(adv), 1), teacher_probs, reduction="batchmean")
        signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)).float() * 2 - 1
        noise = F.kl_div(F.log_softmax(student((x + EPS * signs).clamp(0, 1)), 1), teacher_probs, reduction="batchmean")
    assert float(after) > 1.2 * float(before) and float(after) > 1.2 * float(noise)
    with pytest.raises(InnerSpecError, match="teacher's probabilities"):
        method.perturb(_forward(student), x, labels, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("alpha", [0.0, 5 / 6, 1.0])
def test_the_loss_weighs_the_adversarial_and_clean_divergences_by_alpha(alpha: float) -> None:
    torch.manual_seed(0)
    adv, clean, teacher = torch.randn(8, 10), torch.randn(8, 10), F.softmax(torch.randn(8, 10), 1)
    kl = [F.kl_div(F.log_softmax(z, 1), teacher, reduction="batchmean") for z in (adv, clean)]
    loss = RSLAD(alpha=alpha).training_loss(adv, torch.zeros(8, dtype=torch.long), clean, teacher)
    assert torch.allclose(loss, alpha * kl[0] + (1 - alpha) * kl[1])


def test_a_training_run_learns_from_the_teachers_probabilities(synthetic_npz_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _, teacher = _models()
    teacher_file = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher, teacher_file)
    seen: list[torch.Tensor] = []
    original = RSLAD.training_loss

    def spy(self: RSLAD, logits_adv, labels, logits_clean=None, teacher_probs=None):  # type: ignore[no-untyped-def]
        seen.append(teacher_probs)
        return original(self, logits_adv, labels, logits_clean, teacher_probs)

    monkeypatch.setattr(RSLAD, "training_loss", spy)
    spec = f"rslad:steps=1,step=8/255,teacher={teacher_file}"
    config = TrainConfig(model="tiny_aig", model_kwargs={"target_rate": 0.6}, epochs=1, batch_size=32, lr=0.05,
                         seed=1, adversarial=spec, inner_network="deployed", augment=False)
    data = load_cifar10("train", synthetic_npz_dir)
    result = train(config, data, tmp_path / "run")
    assert len(seen) == 3 and all(p is not None for p in seen)
    with torch.no_grad():  # the first batch in the run's order: the teacher's probabilities on the clean images
        order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(1))
        first = torch.from_numpy(data.images[order[:32].numpy()]).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(seen[0], F.softmax(teacher(first), 1), atol=1e-5)
    _, meta = read_checkpoint(result.checkpoint)
    assert meta["recipe"]["adversarial"].endswith(f"teacher={teacher_file}")


def test_a_teacher_that_does_not_exist_is_one_line(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out",
                                      str(tmp_path / "run"), "--epochs", "1", "--adversarial",
                                      "rslad:steps=1,teacher=no-such-model", "--val-samples", "0"])
    assert result.exit_code == 2, result.output
    assert "teacher no-such-model: no such file" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("per_path", [True, False])
def test_recalibrated_statistics_come_from_the_images_that_run_each_block(per_path: bool) -> None:
    """Per path: a block's branch statistics are the average over the images its gate opens, and only those; the
    control: over every image. The gates' own statistics stay as trained."""
    model = create_model("aig20", pretrained=True).eval()  # trained gates: they split a batch
    images = varied_images(32, seed=5)
    gate_state = {k: v.clone() for k, v in model.state_dict().items() if ".gate." in k}
    seen: list[tuple[int, int, torch.Tensor, object]] = []
    hooks = []
    for index, block in enumerate(model.residual_blocks()):
        bn = block.bn1  # the residual branch's first BatchNorm
        opened: dict[str, int] = {}
        gate = block.gate
        assert gate is not None

        def counted(logits: torch.Tensor, opened: dict[str, int] = opened) -> torch.Tensor:
            opened["n"] = int((logits[:, 1] > logits[:, 0]).sum())
            return logits

        # the deployed forward asks the gate's eval_logits, the masked one calls the gate: count the opens of both
        eval_logits = gate.eval_logits
        gate.eval_logits = lambda h, eval_logits=eval_logits, counted=counted: counted(eval_logits(h))  # type: ignore[method-assign]
        hooks.append(gate.register_forward_hook(lambda mod, inp, out, counted=counted: counted(out)))
        hooks.append(bn.register_forward_hook(
            lambda mod, inp, out, opened=opened, index=index: seen.append(
                (index, opened["n"], inp[0].detach().clone(), mod))))
    recalibrate_batchnorm(model, [images], per_path=per_path)
    for hook in hooks:
        hook.remove()
    assert seen
    for index, n_open, features, bn in seen:
        assert len(features) == (n_open if per_path else 32), index
        assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)  # type: ignore[union-attr]
    if per_path:
        assert any(0 < n < 32 for _, n, _, _ in seen)  # some block split the batch
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in gate_state.items())
    assert not model.training
