"""Batch-norm statistics re-estimated on the paths a gated network takes as deployed.

Training runs every residual branch on every image (BatchNorm needs the whole batch; the sampled gate multiplies the
branch), so a block's running statistics describe all images, also those whose gate will close it once deployed.
:func:`recalibrate_batchnorm` re-estimates them with the gates deciding as deployed (hard): ``per_path=True`` runs a
block's branch only on the images that open it, so its statistics come from those images alone; ``per_path=False``
is the control that differs in nothing else (the same images, the same hard decisions, every branch computed for
every image and masked, as in training).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from aigrobust.models.base import ResNetBase


def recalibrated_layers(model: ResNetBase) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` outside its gates (the gates keep deciding as they were trained to)."""
    in_gates = {id(m) for block in model.residual_blocks() if block.gate is not None for m in block.gate.modules()}
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_gates]


def recalibrate_batchnorm(model: ResNetBase, batches: Iterable[Tensor], *, per_path: bool) -> int:
    """Reset and re-estimate the running statistics of :func:`recalibrated_layers` from ``batches`` (images in
    [0, 1]), the gates deciding as deployed; the statistics are the plain average over every batch (momentum None).

    Args:
        model: a gated (or plain) network of ours; left in evaluation mode with its new statistics.
        batches: the images to estimate from, batch by batch.
        per_path: True: a block's branch runs only on the images that open it, and only they feed its statistics;
            False: every image feeds every block (the control).

    Returns:
        The number of images seen.

    >>> import torch
    >>> from aigrobust.models.factory import create_model
    >>> model = create_model("tiny_aig").eval()
    >>> recalibrate_batchnorm(model, [torch.rand(8, 3, 32, 32)], per_path=True)
    8
    """
    layers = recalibrated_layers(model)
    saved_momentum = [layer.momentum for layer in layers]
    model.eval()
    seen = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average: every batch counts alike
            layer.train()
        execution = "skip" if per_path else "mask"
        with torch.no_grad(), model.gate_settings(mode="hard", grad="exact", execution=execution):
            for images in batches:
                model(images)
                seen += len(images)
    finally:
        for layer, momentum in zip(layers, saved_momentum):
            layer.momentum = momentum
        model.eval()
    return seen


__all__ = ["recalibrate_batchnorm", "recalibrated_layers"]
