"""CIFAR ResNets (He et al. 2016, 6n+2 layers) and their ConvNet-AIG gated twins.

Module names follow the pretrained akamaster files (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv{1,2}``, ``linear``)
and the ConvNet-AIG reference code (``shortcut.0/1`` for projections, gates ``fc1``, ``fc1bn``, ``fc2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.models.base import ResNetBase
from aigrobust.models.gates import Gate
from aigrobust.models.layers import CIFAR10_MEAN, CIFAR10_STD, ResidualBlock, init_resnet_weights
from aigrobust.models.registry import register_model

SHORTCUT_STYLES = ("A", "B")
CIFAR_DEPTHS = (14, 20, 32, 44, 56, 110)
DEFAULT_TARGET_RATE = 0.7


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride and zero-pad channels equally on both sides (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (planes - in_planes) // 2
        self.pad_after = planes - in_planes - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class CifarBasicBlock(ResidualBlock):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, with an optional gate on the block's input."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, gated: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.gate = Gate(in_planes) if gated else None

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut_path(self, x: Tensor) -> Tensor:
        return self.shortcut(x)

    @property
    def has_identity_shortcut(self) -> bool:
        return isinstance(self.shortcut, nn.Identity)


class CifarResNet(ResNetBase):
    """A CIFAR ResNet with three stages; ``gated=True`` puts a ConvNet-AIG gate on every block."""

    def __init__(
        self,
        blocks_per_stage: int,
        widths: Sequence[int] = (16, 32, 64),
        num_classes: int = 10,
        shortcut: str = "A",
        gated: bool = False,
        target_rate: float = DEFAULT_TARGET_RATE,
        target_rates: Sequence[float] | None = None,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std)
        shortcut = str(shortcut).upper()
        if shortcut not in SHORTCUT_STYLES:
            raise ValueError(f"shortcut must be one of {SHORTCUT_STYLES}, got {shortcut!r}")
        if len(widths) != 3:
            raise ValueError("a CIFAR ResNet has three stages: give three widths")
        self.num_classes = int(num_classes)
        self.shortcut_style = shortcut
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for stage, planes in enumerate(widths):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(CifarBasicBlock(in_planes, planes, stride, shortcut, gated))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[-1], num_classes)
        init_resnet_weights(self)
        n_blocks = 3 * blocks_per_stage
        if gated:
            rates = tuple(float(t) for t in target_rates) if target_rates is not None else (float(target_rate),) * n_blocks
            if len(rates) != n_blocks:
                raise ValueError(f"target_rates has {len(rates)} entries for {n_blocks} gated blocks")
            self.target_rates = rates
        self._blocks = [b for layer in stages for b in layer]  # type: ignore[misc]

    def residual_blocks(self) -> list[ResidualBlock]:
        return list(self._blocks)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def head(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=(2, 3)))


def blocks_for_depth(depth: int) -> int:
    """Residual blocks per stage of a CIFAR ResNet of ``depth`` layers (6n + 2)."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return (depth - 2) // 6


def _make_cifar(depth: int, gated: bool):  # type: ignore[no-untyped-def]
    def build(**kwargs: object) -> CifarResNet:
        return CifarResNet(blocks_for_depth(depth), gated=gated, **kwargs)  # type: ignore[arg-type]

    return build


for _depth in CIFAR_DEPTHS:
    for _name, _gated, _description in (
            (f"resnet{_depth}", False, f"CIFAR ResNet-{_depth} (option A shortcuts by default; shortcut='B' for "
                                       "projections)"),
            (f"aig{_depth}", True, f"ConvNet-AIG ResNet-{_depth}, every block gated (target rate "
                                   f"{DEFAULT_TARGET_RATE} by default)")):
        register_model(_name, family="cifar", description=_description, input_shape=(3, 32, 32),
                       default_dataset="cifar10")(_make_cifar(_depth, gated=_gated))


@register_model("tiny_resnet", family="test", description="tiny test ResNet (widths 4/8/16, 2 blocks per stage)",
                input_shape=(3, 32, 32), default_dataset="cifar10")
def tiny_resnet(**kwargs: object) -> CifarResNet:
    """A plain CIFAR ResNet of a few thousand parameters, for fast tests."""
    return CifarResNet(2, widths=(4, 8, 16), gated=False, **kwargs)  # type: ignore[arg-type]


@register_model("tiny_aig", family="test", description="tiny test ConvNet-AIG (widths 4/8/16, 2 blocks per stage)",
                input_shape=(3, 32, 32), default_dataset="cifar10")
def tiny_aig(**kwargs: object) -> CifarResNet:
    """The gated twin of ``tiny_resnet``."""
    return CifarResNet(2, widths=(4, 8, 16), gated=True, **kwargs)  # type: ignore[arg-type]
