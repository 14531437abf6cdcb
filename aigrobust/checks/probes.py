"""Sanity probes that run the model (Athalye et al. 2018; Carlini et al. 2019; AutoAttack): zero input gradients,
eval-mode randomness, and accuracy under PGD at a very large epsilon. Each yields a
:class:`~aigrobust.reporting.sanity.SanityFlag`, as the record-based checks do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.evaluation.metrics import format_eps
from aigrobust.randomness import keyed_draw
from aigrobust.reporting.sanity import STATUS_OK, STATUS_WARN, SanityFlag, percent
from attacks import get_attack


def zero_gradient_share(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of samples whose input gradient of the cross-entropy is exactly zero."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().amax(1) == 0).float().mean())


def model_probes(name: str, model: nn.Module, images: Tensor, labels: Tensor, num_classes: int,
                 large_eps: float = 0.5, pgd_steps: int = 20) -> list[SanityFlag]:
    """Probes on the model: zero input gradients, eval-mode randomness, and accuracy at a very large epsilon."""

    model.eval()
    flags = []
    share = zero_gradient_share(model, images, labels)
    flags.append(SanityFlag("zero-gradients", name, STATUS_WARN if share > 0.05 else STATUS_OK,
                            f"{percent(share)} of samples have an all-zero input gradient"
                            + (": gradient-based attacks cannot move them (masking)." if share > 0.05 else ".")))
    with torch.no_grad():  # two named draws: keyed random layers repeat a draw on the same input by design
        with keyed_draw(model, "probe/1"):
            first = model(images)
        with keyed_draw(model, "probe/2"):
            second = model(images)
    random = not torch.equal(first, second)
    flags.append(SanityFlag("eval-randomness", name, STATUS_WARN if random else STATUS_OK,
                            "Two eval-mode passes give different logits: attacks must use EOT to be meaningful."
                            if random else "Eval-mode outputs repeat exactly."))
    result = get_attack("pgd", steps=pgd_steps)(model, images, labels, [large_eps])
    accuracy = float((~result.success[0]).float().mean())
    chance = 1.0 / num_classes
    status = STATUS_WARN if accuracy > chance + 0.02 else STATUS_OK
    flags.append(SanityFlag("large-epsilon", name, status,
                            f"PGD at eps {format_eps(large_eps)} leaves {percent(accuracy)} accuracy (chance {percent(chance)})"
                            + (": an attack this large must win, so gradients are masked." if status == STATUS_WARN
                               else ".")))
    return flags
