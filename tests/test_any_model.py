"""Any model in: a plain torchvision classifier through aigrobust.evaluate with every
accuracy attack and its static FLOPs; a model returning (logits, extra) refused with one line or unwrapped; a
model trained on normalised input wrapped with normalized()."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import aigrobust
from aigrobust import PlainModel, normalized
from aigrobust.models.adapter import ModelOutputError


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g)


def test_torchvision_resnet18_goes_in_as_it_is(images) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x, y = images
    summary = aigrobust.evaluate([model], x, y, attacks=["fgsm", "pgd:steps=3"], epsilons=["8/255"])
    table = summary.table
    assert set(table["model"]) == {"ResNet"}
    flops = PlainModel(model).flop_profile((3, 32, 32)).full
    assert flops > 5e7 and (table["clean_flops"] == flops).all() and (table["flops_ratio"] == 1.0).all()
    attacked = table[table["epsilon"] > 0]
    assert (attacked["robust_acc"] <= attacked["clean_acc"]).all()
    records = summary.records
    assert (records[records["epsilon"] > 0]["linf"] <= 8 / 255 + 1e-6).all()


class _WithExtra(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits, logits.abs().mean()


def test_a_model_returning_logits_and_extra_is_refused_or_unwrapped(images) -> None:  # type: ignore[no-untyped-def]
    x, y = images
    with pytest.raises(ModelOutputError, match="returns a tuple, not a logits tensor.*output_index"):
        aigrobust.evaluate([_WithExtra()], x, y, attacks=["fgsm"], epsilons=["2/255"])
    unwrapped = PlainModel(_WithExtra(), name="with-extra", output_index=0)
    summary = aigrobust.evaluate({"with-extra": unwrapped}, x, y, attacks=["fgsm"], epsilons=["2/255"])
    assert set(summary.table["model"]) == {"with-extra"}


def test_normalized_puts_the_statistics_inside(images) -> None:  # type: ignore[no-untyped-def]
    x, _ = images
    inner = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    wrapped = normalized(inner, mean, std)
    expected = inner((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(wrapped(x), expected, atol=1e-6)


def test_gate_attacks_and_stochastic_gates_are_refused_without_gates(images) -> None:  # type: ignore[no-untyped-def]
    x, y = images
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="gate mode 'stochastic' needs gates"):
        PlainModel(model).set_gate_mode("stochastic")
