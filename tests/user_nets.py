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


class SkipNetStyle(nn.Module):
    """A SkipNet-style dynamic network written as a user would, not with aigrobust's classes: a stem, residual blocks
    each preceded by its own small gate network (pooled features -> a 2-layer MLP -> one log-odds of running the
    block), a head. In eval mode a closed block is really skipped for that sample; in train mode the block is
    scaled by the gate's sigmoid. forward returns (logits, gate log-odds (N, blocks))."""

    def __init__(self, width: int = 8, blocks: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                          nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
            for _ in range(blocks))
        self.gates = nn.ModuleList(nn.Sequential(nn.Linear(width, 8), nn.ReLU(), nn.Linear(8, 1))
                                   for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        log_odds = []
        for block, gate in zip(self.blocks, self.gates):
            g = gate(h.mean(dim=(2, 3))).squeeze(1)
            log_odds.append(g)
            if self.training:
                h = torch.relu(h + torch.sigmoid(g).view(-1, 1, 1, 1) * block(h))
                continue
            run = g > 0
            out = h.clone()
            if bool(run.any()):
                out[run] = torch.relu(h[run] + block(h[run]))
            h = out
        return self.head(h.mean(dim=(2, 3))), torch.stack(log_odds, dim=1)


def build_skipnet() -> nn.Module:
    """The SkipNet-style network through aigrobust's adapter, with its blocks' FLOPs counted once, gate biases set
    so that each gate is near its threshold on natural images (about half the blocks run)."""
    from torch.utils.flop_counter import FlopCounterMode

    from aigrobust import GatedAdapter

    torch.manual_seed(0)
    net = SkipNetStyle().eval()
    with torch.no_grad():
        for gate in net.gates:
            gate[2].weight.mul_(8.0)
        probe = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        h = net.stem(probe)
        for block, gate in zip(net.blocks, net.gates):
            g = gate(h.mean(dim=(2, 3))).squeeze(1)
            gate[2].bias -= g.median()
            h = torch.relu(h + block(h))
        counter = FlopCounterMode(display=False)
        with counter:
            net.blocks[0](torch.zeros(1, 8, 32, 32))
    block_flops = [float(counter.get_total_flops())] * len(net.blocks)
    return GatedAdapter(net, block_flops, name="skipnet-style")


def build_imagenet_tiny() -> nn.Module:
    """A tiny 1000-class classifier for ImageNet-sized images (folder tests without a ResNet-50's cost)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 1000))


class BranchyStyle(nn.Module):
    """A BranchyNet-style early-exit network written without aigrobust's classes: three convolution stages, a
    classifier after the first two and a final one; every classifier runs (the adapter decides the exit)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                     nn.Conv2d(8, 8, 3, padding=1)])
        self.classifiers = nn.ModuleList(nn.Linear(8 * 4 * 4, 10) for _ in range(3))
        self.register_buffer("sharpness", torch.ones(3))  # per classifier, a temperature set by build_branchy

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, logits = x, []
        for stage, classifier, sharpness in zip(self.stages, self.classifiers, self.sharpness):
            h = torch.relu(stage(h))
            logits.append(classifier(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)) * sharpness)
        return logits[-1], torch.stack(logits[:-1], 1)


def build_branchy() -> nn.Module:
    """The BranchyNet-style network through EarlyExitAdapter with threshold 0.5, each exit's temperature set so that
    its median confidence on random images is 0.5 (some images leave at each exit, some reach the final one)."""
    from torch.utils.flop_counter import FlopCounterMode

    from aigrobust import EarlyExitAdapter

    torch.manual_seed(0)
    net = BranchyStyle().eval()
    with torch.no_grad():
        probe = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        for k in range(2):
            low, high = 0.0, 10_000.0
            for _ in range(60):  # bisection: the median confidence grows with the sharpness
                net.sharpness[k] = (low + high) / 2
                median = float(torch.softmax(net(probe)[1][:, k], 1).amax(1).median())
                low, high = (float(net.sharpness[k]), high) if median < 0.5 else (low, float(net.sharpness[k]))
        counter = FlopCounterMode(display=False)
        with counter:
            net.stages[1](torch.zeros(1, 8, 32, 32))
            net.classifiers[1](torch.zeros(1, 8 * 4 * 4))
    segment = float(counter.get_total_flops())
    return EarlyExitAdapter(net, [segment, segment], threshold=0.5, name="branchy-style")


class FailsAfter(SmallNet):
    """A network whose code raises after a number of calls, as a user's bug deep into a run would."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls_left -= 1
        if self.calls_left < 0:
            raise RuntimeError("a bug in the user's forward")
        return super().forward(x)


def build_failing_soon() -> nn.Module:
    """Passes the fit check's two clean passes, then fails in the first attack step."""
    torch.manual_seed(0)
    return FailsAfter(calls=3)


def build_failing_late() -> nn.Module:
    """Fails after a few batches of the run have been saved."""
    torch.manual_seed(0)
    return FailsAfter(calls=40)
