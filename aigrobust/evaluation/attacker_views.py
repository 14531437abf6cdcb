"""The attacker's views of a deployed model: gradients through gates as a gate-gradient mode says, and EOT over the
random parts (stochastic gates, randomised defenses).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aigrobust.models.dynamic import DynamicNetwork
from aigrobust.models.gates import GateGrad
from aigrobust.randomness import keyed_draw


class AttackerGateView(nn.Module):
    """The attacker's view of a gated model: same weights, gradients through gates as ``grad`` says."""

    def __init__(self, model: DynamicNetwork, grad: GateGrad | str) -> None:
        super().__init__()
        self.model = model
        self.grad = GateGrad(grad)

    def forward(self, x: Tensor) -> Tensor:
        with self.model.gate_settings(grad=self.grad):
            return self.model(x)

    def forward_with_gates(self, x: Tensor) -> Any:
        """Logits and trace under this view's gradient mode."""
        with self.model.gate_settings(grad=self.grad):
            return self.model.forward_with_gates(x)

    def flop_profile(self, shape: tuple[int, ...]) -> Any:
        """The wrapped model's FLOP profile."""
        return self.model.flop_profile(shape)

class EOTView(nn.Module):
    """Expectation over transformation for a random model: the logits averaged over ``draws`` forward passes, each
    with fresh randomness (Gumbel draws of stochastic gates), so an attack follows the gradient of the mean."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        self.model = model
        self.draws = draws

    def forward(self, x: Tensor) -> Tensor:
        draws = []
        for d in range(self.draws):
            with keyed_draw(self.model, f"eot/{d}"):
                draws.append(self.model(x))
        return torch.stack(draws).mean(0)

    def forward_with_gates(self, x: Tensor) -> Any:
        """One draw's logits and trace (attacks on the gates follow a single draw)."""
        return self.model.forward_with_gates(x)

    def flop_profile(self, shape: tuple[int, ...]) -> Any:
        """The wrapped model's FLOP profile."""
        return self.model.flop_profile(shape)

def draw_accuracy(deployed: nn.Module, x: Tensor, labels: Tensor, draws: int, first: Tensor) -> Tensor:
    """Per sample, the share of ``draws`` predictions that are right: ``first`` (the prediction already made) and
    ``draws - 1`` fresh draws of the random model."""
    right = (first == labels).float()
    with torch.no_grad():
        for d in range(1, draws):
            with keyed_draw(deployed, f"judge/{d}"):
                right += (deployed(x).argmax(1) == labels).float()
    return (right / draws).cpu()
