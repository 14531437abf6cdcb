"""Networks as a user writes them in their own package (not aigrobust's classes), for the --model-code tests."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """A plain CIFAR classifier, [0, 1] images in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WithExtra(SmallNet):
    """Returns (logits, an auxiliary tensor), as many research codebases do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        logits = super().forward(x)
        return logits, logits.pow(2).mean()


def build() -> nn.Module:
    torch.manual_seed(0)
    return SmallNet()


def build_with_extra() -> nn.Module:
    torch.manual_seed(0)
    return WithExtra()
