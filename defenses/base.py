"""Input defenses: nn.Modules on [0, 1] images that also say how an attacker's gradient may pass them.

Gradient settings (Athalye, Carlini & Wagner, ICML 2018):
  oblivious  the attacker does not know the defense: attack the bare model, classify the defended adversarial
  bpda       the real transform forward, identity backward
  diff       a differentiable approximation forward and backward
  eot        for randomised defenses: expectation over N draws of the transform (with bpda inside)
This package depends on torch (kornia, pillow) only.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from aigrobust.randomness import keyed_draw


class DefenseGrad(str, enum.Enum):
    """How the attacker treats the defense."""

    OBLIVIOUS = "oblivious"
    BPDA = "bpda"
    DIFF = "diff"
    EOT = "eot"

    def __str__(self) -> str:
        return self.value


class Defense(nn.Module):
    """An input transform. ``forward`` is the real defense; ``approximation`` a differentiable stand-in."""

    name: str = "defense"
    randomized: bool = False

    def approximation(self, x: Tensor) -> Tensor:
        """Differentiable approximation (default: the identity, i.e. BPDA's backward used forward too)."""
        return x

    @property
    def spec(self) -> str:
        """The command-line spelling of this defense (as an attack's and a training method's ``spec``)."""
        return self.name


class _BackwardIdentity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, transformed: Tensor) -> Tensor:  # type: ignore[override]
        return transformed

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def bpda(defense: nn.Module, x: Tensor) -> Tensor:
    """defense(x) forward, identity backward (Backward Pass Differentiable Approximation)."""
    with torch.no_grad():
        out = defense(x)
    return _BackwardIdentity.apply(x, out)


class Compose(Defense):
    """Defenses applied in order, as ``parse_defense("jpeg:50+median:2")`` builds them.

    Args:
        parts: the defenses, first applied first.

    >>> from defenses import JPEG, MedianSmoothing
    >>> Compose([JPEG(50), MedianSmoothing(2)]).spec
    'jpeg:50+median:2'
    """

    def __init__(self, parts: list[Defense]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.randomized = any(p.randomized for p in parts)
        self.name = "+".join(p.spec for p in parts)

    def forward(self, x: Tensor) -> Tensor:
        for part in self.parts:
            x = part(x)
        return x

    def approximation(self, x: Tensor) -> Tensor:
        for part in self.parts:
            x = part.approximation(x)  # type: ignore[operator]
        return x


class NoDefense(Defense):
    """The reference row: the identity."""

    name = "none"

    def forward(self, x: Tensor) -> Tensor:
        return x


class AttackerDefenseView(nn.Module):
    """``model(defense(x))`` as the attacker differentiates it under a :class:`DefenseGrad` setting."""

    def __init__(self, model: nn.Module, defense: Defense, grad: DefenseGrad | str, eot_samples: int = 8) -> None:
        super().__init__()
        self.model = model
        self.defense = defense
        self.grad = DefenseGrad(grad)
        self.eot_samples = eot_samples

    def transformed(self, x: Tensor) -> Tensor:
        """The input the model sees under this gradient setting (for one draw)."""
        if self.grad is DefenseGrad.OBLIVIOUS:
            return x
        if self.grad is DefenseGrad.DIFF:
            return self.defense.approximation(x)
        return bpda(self.defense, x)

    def forward(self, x: Tensor) -> Tensor:
        if self.grad is DefenseGrad.EOT and self.defense.randomized:
            # log of the mean softmax over draws: cross-entropy on it is the loss of the expected prediction

            draws = []
            for d in range(self.eot_samples):  # each draw under its own name: keyed layers repeat a named draw
                with keyed_draw(self, f"defense-eot/{d}"):
                    draws.append(self.model(bpda(self.defense, x)).float().softmax(1))
            return torch.stack(draws).mean(0).clamp_min(1e-12).log()
        return self.model(self.transformed(x))

    def forward_with_gates(self, x: Tensor):  # type: ignore[no-untyped-def]
        """Logits and gate trace of the wrapped model on the transformed input."""
        return self.model.forward_with_gates(self.transformed(x))  # type: ignore[operator]

    def flop_profile(self, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
        """The wrapped model's FLOP profile."""
        return self.model.flop_profile(shape)  # type: ignore[operator]


class DefendedModel(nn.Module):
    """The deployed pipeline: ``model(defense(x))``; gates are traced on the defended image the model sees."""

    def __init__(self, model: nn.Module, defense: Defense) -> None:
        super().__init__()
        self.model = model
        self.defense = defense

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            defended = self.defense(x)
        return self.model(defended)

    def forward_with_gates(self, x: Tensor):  # type: ignore[no-untyped-def]
        """Logits and trace on the defended input."""
        with torch.no_grad():
            defended = self.defense(x)
        return self.model.forward_with_gates(defended)  # type: ignore[operator]

    def flop_profile(self, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
        """The wrapped model's FLOP profile."""
        return self.model.flop_profile(shape)  # type: ignore[operator]
