"""Gates of ConvNet-AIG (Veit & Belongie, ECCV 2018) and the modes they run in.

A gate looks at a residual block's input and decides, per sample, whether the block's residual branch F runs:
global average pool -> linear to 16 -> BatchNorm -> ReLU -> linear to 2 logits (off, on).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATE_HIDDEN = 16
# Bias (off, on) of the last gate layer: softmax gives p_on = sigmoid(1.9) ~ 0.87, so gates start mostly open.
GATE_BIAS_OFF_ON = (0.1, 2.0)
GATE_WEIGHT_STD = 1e-3


class _StrEnum(str, enum.Enum):
    """An enum that also accepts its value as a string (``GateMode("hard")``) and any spelling with - or _."""

    @classmethod
    def _missing_(cls, value: object) -> _StrEnum | None:
        if isinstance(value, str):
            wanted = value.strip().lower().replace("_", "-")
            for member in cls:
                if member.value == wanted:
                    return member
        return None

    def __str__(self) -> str:
        return self.value


class GateMode(_StrEnum):
    """How gates decide in ``model.eval()``; in ``model.train()`` they always draw a Gumbel sample (``train``)."""

    TRAIN = "train"
    HARD = "hard"
    STOCHASTIC = "stochastic"
    SOFT = "soft"
    OPEN = "open"


class GateGrad(_StrEnum):
    """How an attacker's gradient passes a hard gate decision.

    ``exact``: the deployed network's own gradient, zero through the decision (closed branches really skipped).
    ``straight-through``: hard forward, softmax backward (every branch is computed so that its gradient exists).
    ``soft``: the gradient of a surrogate, the soft-gated network (every F scaled by p_on); its forward differs.
    """

    EXACT = "exact"
    STRAIGHT_THROUGH = "straight-through"
    SOFT = "soft"


class GateExecution(_StrEnum):
    """How a closed gate is realised in hard mode: really ``skip`` the branch, or ``mask`` it (multiply by 0)."""

    SKIP = "skip"
    MASK = "mask"


@dataclass(frozen=True)
class GateConfig:
    """How a network's gates behave outside training, as one value.

    A network holds one and replaces it whole (by ``set_gate_mode``, ``gate_settings``, ``keyed_draw``), and each
    forward reads it once, so a forward depends only on its input and this value (and, in training, the seeded
    Gumbel generator).

    Args:
        mode: how gates decide: ``hard`` (the deployed argmax), ``soft``, ``stochastic`` (keyed draws) or ``open``
            (every block runs).
        grad: how an attacker's gradient passes the gates: ``exact``, ``straight-through`` or ``soft``.
        execution: ``skip`` closed branches (the deployed network's compute) or ``mask`` them (computed, multiplied by
            0).
        seed: the key of stochastic gates' per-row draws (see aigrobust.randomness).
        draw_key: the name of the draw, so that two named draws of one image differ and a repeated one does not.

    >>> GateConfig(mode=GateMode.OPEN).grad.value
    'exact'
    """

    mode: GateMode = GateMode.HARD
    grad: GateGrad = GateGrad.EXACT
    execution: GateExecution = GateExecution.SKIP
    seed: int = 0
    draw_key: str = ""


class Gate(nn.Module):
    """The gate of one residual block: input feature map (N, C, H, W) -> logits (N, 2) for (off, on).

    Module names ``fc1``, ``fc1bn``, ``fc2`` follow the ConvNet-AIG reference code so its checkpoints convert 1:1
    (there they are 1x1 convolutions; linear layers on the pooled vector are the same map).
    """

    def __init__(self, in_channels: int, hidden: int = GATE_HIDDEN) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc1bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 2)
        self.reset_gate_parameters()

    def reset_gate_parameters(self) -> None:
        """Initialise the last layer so that gates start about 87% open (the reference code's choice)."""
        with torch.no_grad():
            nn.init.normal_(self.fc2.weight, 0.0, GATE_WEIGHT_STD)
            self.fc2.bias.copy_(torch.tensor(GATE_BIAS_OFF_ON))

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.fc2(F.relu(self.fc1bn(self.fc1(pooled))))

    def eval_logits(self, x: Tensor) -> Tensor:
        """:meth:`forward` in eval mode through the same kernels, without three module calls (at batch 1 their
        dispatch costs as much as the arithmetic); bitwise equal to ``self(x)`` under ``eval()``."""
        bn = self.fc1bn
        hidden = F.batch_norm(F.linear(x.mean(dim=(2, 3)), self.fc1.weight, self.fc1.bias), bn.running_mean,
                              bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return F.linear(F.relu(hidden), self.fc2.weight, self.fc2.bias)


def randomize_gates(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every gate of ``model`` random hidden and last-layer weights (zero last bias, unit hidden variance) so
    that many of its decisions are 'off' and differ between images (aig20 built after ``torch.manual_seed(0)``,
    seed 0: 55% off, 5 of 9 gates deciding per image): a network whose gates really skip, for benchmarks and tests of
    the skipping paths. Changes ``model`` in place and returns it; the hidden biases stay the model's own, the rest
    follows ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Gate):
                module.fc1.weight.copy_(torch.randn(module.fc1.weight.shape, generator=generator) * 3.0)
                module.fc2.weight.copy_(torch.randn(module.fc2.weight.shape, generator=generator) * 2.0)
                module.fc2.bias.zero_()
                module.fc1bn.running_var.fill_(1.0)
    return model


def gumbel_straight_through(logits: Tensor, uniform: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample gate value: a hard 0/1 Gumbel-softmax sample forward, its softmax backward (straight-through).

    ``uniform`` holds U(0, 1) noise of the logits' shape (drawn by the caller from a seeded generator).
    Returns the 'on' component, shape (N,).
    """
    eps = torch.finfo(torch.float32).tiny
    neg_log_u = (-torch.log(uniform.float().clamp_min(eps))).clamp_min(eps)
    gumbel = -torch.log(neg_log_u)
    soft = F.softmax((logits.float() + gumbel) / temperature, dim=1)[:, 1]
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly hard forward, softmax gradient


@dataclass(frozen=True)
class GateTrace:
    """What the gates did for each sample of a batch.

    Args:
        decisions: (N, L) bool, True where block l's residual branch contributed for sample n.
        p_on: (N, L) float, the gate's softmax probability of 'on' (1.0 for blocks without a gate).
        gate_values: (N, L) float, the multiplier actually applied to F (differentiable in train mode; used by the
            target-rate loss).
        flops: (N,) float, FLOPs the deployed network executes for the sample (fixed parts plus open branches).
        exit_logits: (N, K, classes) float, an early-exit network's internal classifiers' logits (zeros where an
            exit was not reached); None for gated networks.

    >>> import torch
    >>> trace = GateTrace(torch.tensor([[True, False]]), torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]]),
    ...                   torch.tensor([1.5e6]))
    >>> trace.decisions.float().mean().item()
    0.5
    """

    decisions: Tensor
    p_on: Tensor
    gate_values: Tensor
    flops: Tensor
    exit_logits: Tensor | None = None

    def detach(self) -> GateTrace:
        """The same trace without autograd history."""
        return GateTrace(self.decisions, self.p_on.detach(), self.gate_values.detach(), self.flops.detach(),
                         None if self.exit_logits is None else self.exit_logits.detach())


def target_rate_loss(gate_values: Tensor, targets: Tensor) -> Tensor:
    """Mean over gated layers of (t_l - mean over the batch of g_l)^2; ``gate_values`` is (N, L), ``targets`` (L,)."""
    return ((targets.to(gate_values) - gate_values.mean(dim=0)) ** 2).mean()
