"""BatchNorm folded into the convolution before it: an evaluation-only copy of a network of aigrobust's own families.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` is one convolution with scaled weights and
a bias. The folded copy skips BatchNorm's passes over the features forward and backward: input gradients about 1.5x
faster on the CPU (``benchmarks/robust_suite.py``). Its logits equal the original's up to float rounding (about
1e-6 relative), so attacks reach the same outcomes on all but knife-edge samples but not bit for bit: a run that
folds says so in its run.json, and a resume must fold too.

Only aigrobust's families are folded: their blocks name each convolution and the BatchNorm applied to its output
``convK`` / ``bnK`` (or hold them side by side in an ``nn.Sequential``); a user's network may order them otherwise
(a pre-activation block normalises *before* its convolution), so it is refused. Every copy is checked against the
original on a probe batch before it is used.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from aigrobust.models.base import ResNetBase

FOLD_TOLERANCE = 1e-4  # largest logit difference (relative to the logits' scale) a folded copy may show


def _fold_children(module: nn.Module) -> int:
    """Fold the conv/BatchNorm pairs among ``module``'s direct children; returns how many were folded."""
    children = dict(module.named_children())
    folded = 0
    if isinstance(module, nn.Sequential):
        names = list(children)
        for first, second in zip(names, names[1:]):
            conv, bn = children[first], children[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                setattr(module, first, fuse_conv_bn_eval(conv, bn))
                setattr(module, second, nn.Identity())
                folded += 1
        return folded
    for name, conv in children.items():
        match = re.fullmatch(r"conv(\d*)", name)
        bn = children.get(f"bn{match.group(1)}") if match else None
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            setattr(module, name, fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{match.group(1)}", nn.Identity())  # type: ignore[union-attr]
            folded += 1
    return folded


def why_not_foldable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be folded (one line), or None where it can."""
    if not isinstance(model, ResNetBase):
        return (f"BatchNorm folding takes aigrobust's own model families only, not {type(model).__name__} (a user's "
                "network may normalise before its convolution)")
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return f"{type(model).__name__} has no BatchNorm to fold"
    return None


def fold_batchnorm(model: nn.Module, probe: torch.Tensor | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` (one of aigrobust's families) with every BatchNorm folded into the convolution
    before it and no parameter asking for gradients (attacks need input gradients only). ``model`` itself is left
    as it was. With ``probe`` (a few input images), the copy's logits are checked against the original's.

    Raises ValueError for a network that is not of aigrobust's families or whose folded copy disagrees."""
    why = why_not_foldable(model)
    if why is not None:
        raise ValueError(why)
    folded_model = copy.deepcopy(model).eval()
    count = sum(_fold_children(module) for module in list(folded_model.modules()))
    if count == 0:
        raise ValueError(f"{type(model).__name__} has no convolution followed by a BatchNorm to fold")
    for parameter in folded_model.parameters():
        parameter.requires_grad_(False)
    if probe is not None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                expected, got = model(probe), folded_model(probe)
        finally:
            model.train(was_training)
        scale = float(expected.abs().amax().clamp_min(1.0))
        difference = float((expected - got).abs().amax())
        if difference > FOLD_TOLERANCE * scale:
            raise ValueError(f"folding the BatchNorm of {type(model).__name__} changed its logits by "
                             f"{difference:.3g}: not folded")
    return folded_model
