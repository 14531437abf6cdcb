"""The pieces every model family builds on: input normalisation inside the model, the residual block, per-sample FLOPs profiles and weight initialisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from aigrobust.models.gates import (
    Gate,
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


class InputNormalization(nn.Module):
    """(x - mean) / std on [0, 1] images; part of the model so that attacks only ever see pixel space.

    The statistics are non-persistent buffers: they live in checkpoint metadata, not in the weights.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def set_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace mean and std (e.g. a converted checkpoint trained with other statistics)."""
        self.mean.copy_(torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.std.copy_(torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def as_dict(self) -> dict[str, list[float]]:
        """Mean and std as plain lists, for metadata."""
        return {
            "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
            "std": [round(v, 6) for v in self.std.flatten().tolist()],
        }

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class ResidualBlock(nn.Module):
    """A residual block: out = relu(shortcut(x) + g * F(x)); ``gate`` is None for plain ResNets."""

    gate: Gate | None

    def residual(self, x: Tensor) -> Tensor:
        """The residual branch F (the part a closed gate skips)."""
        raise NotImplementedError

    def shortcut_path(self, x: Tensor) -> Tensor:
        """The shortcut (identity, zero-padded subsampling, or projection)."""
        raise NotImplementedError

    @property
    def has_identity_shortcut(self) -> bool:
        """True when the shortcut returns its input unchanged (a closed gate then leaves the features as they are)."""
        return False

    def forward(self, x: Tensor) -> Tensor:
        # Plain forward for use outside a network (the network runs blocks through its gate logic).
        return F.relu(self.shortcut_path(x) + self.residual(x))


@dataclass(frozen=True)
class FlopProfile:
    """FLOPs of one sample of a given input size, counted by torch.utils.flop_counter (2 per multiply-add).

    fixed: what always runs (stem, head, shortcuts, gates); residual: each block's residual branch;
    measured_total: an independent count of the whole network with every branch running.
    """

    image_shape: tuple[int, ...]
    stem: float
    head: float
    gates: tuple[float, ...]
    shortcuts: tuple[float, ...]
    residual: tuple[float, ...]
    measured_total: float

    @property
    def fixed(self) -> float:
        """FLOPs that run whatever the gates decide."""
        return self.stem + self.head + sum(self.gates) + sum(self.shortcuts)

    @property
    def full(self) -> float:
        """FLOPs with every residual branch running, from the parts."""
        return self.fixed + sum(self.residual)

    def executed(self, decisions: Tensor) -> Tensor:
        """Per-sample executed FLOPs for (N, L) bool decisions."""
        costs = torch.tensor(self.residual, dtype=torch.float64, device=decisions.device)
        return self.fixed + decisions.to(torch.float64) @ costs


def init_resnet_weights(model: nn.Module) -> None:
    """He initialisation for convolutions, unit BatchNorm, and the gates' start at about 87% open."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Gate):
            m.reset_gate_parameters()


def count_flops(fn: object, *args: Tensor) -> tuple[float, Tensor]:
    """FLOPs of one call ``fn(*args)``, counted by torch's flop counter, and its output."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)  # type: ignore[operator]
    return float(counter.get_total_flops()), out
