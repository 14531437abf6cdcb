"""ImageNet ResNet-50/101 in torchvision's module layout, and their ConvNet-AIG gated twins.

The layout (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2,3}``, ``downsample.0/1``, ``fc``; stride on the 3x3 conv,
"ResNet v1.5") matches torchvision, so its weights load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.models.base import ResNetBase
from aigrobust.models.gates import Gate
from aigrobust.models.layers import IMAGENET_MEAN, IMAGENET_STD, ResidualBlock, init_resnet_weights
from aigrobust.models.registry import register_model

DEFAULT_TARGET_RATE = 0.7


def aig_target_schedule(num_blocks: int, target_rate: float) -> tuple[float, ...]:
    """Per-layer targets from the ConvNet-AIG release: fixed rates where the paper keeps layers on, t elsewhere."""
    t = float(target_rate)
    if num_blocks == 16:  # ResNet-50
        return (1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1)
    if num_blocks == 33:  # ResNet-101
        return (1.0,) * 8 + (t,) * 25
    return (t,) * num_blocks


class Bottleneck(ResidualBlock):
    """1x1 -> 3x3 (stride) -> 1x1 expansion 4, with an optional gate on the block's input."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, gated: bool) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )
        self.gate = Gate(in_planes) if gated else None

    def residual(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def shortcut_path(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    @property
    def has_identity_shortcut(self) -> bool:
        return self.downsample is None


class ImageNetResNet(ResNetBase):
    """Bottleneck ResNet for 224x224 inputs; ``gated=True`` gates every block (targets per the AIG schedule)."""

    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int = 1000,
        gated: bool = False,
        target_rate: float = DEFAULT_TARGET_RATE,
        target_rates: Sequence[float] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean, std)
        self.num_classes = int(num_classes)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        stages = []
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for i in range(count):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(Bottleneck(in_planes, planes, stride, gated))
                in_planes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        init_resnet_weights(self)
        self._blocks = [b for layer in stages for b in layer]  # type: ignore[misc]
        if gated:
            rates = (
                tuple(float(t) for t in target_rates)
                if target_rates is not None
                else aig_target_schedule(len(self._blocks), target_rate)
            )
            if len(rates) != len(self._blocks):
                raise ValueError(f"target_rates has {len(rates)} entries for {len(self._blocks)} gated blocks")
            self.target_rates = rates

    def residual_blocks(self) -> list[ResidualBlock]:
        return list(self._blocks)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))


_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

for _depth, _layers in _LAYERS.items():

    def _plain(_l: tuple[int, ...] = _layers, **kwargs: object) -> ImageNetResNet:
        return ImageNetResNet(_l, gated=False, **kwargs)  # type: ignore[arg-type]

    def _gated(_l: tuple[int, ...] = _layers, **kwargs: object) -> ImageNetResNet:
        return ImageNetResNet(_l, gated=True, **kwargs)  # type: ignore[arg-type]

    register_model(f"resnet{_depth}", family="imagenet", description=f"ImageNet ResNet-{_depth} (torchvision layout)",
                   input_shape=(3, 224, 224), default_dataset="imagenet", torchvision_weights=f"ResNet{_depth}_Weights")(
        _plain
    )
    register_model(f"aig{_depth}", family="imagenet",
                   description=f"ConvNet-AIG ResNet-{_depth}, every block gated, AIG per-layer target schedule",
                   input_shape=(3, 224, 224), default_dataset="imagenet",
                   torchvision_weights=f"ResNet{_depth}_Weights")(_gated)
