"""Robust distillation: a student learns a robust teacher's outputs on clean and adversarial inputs.

``rslad`` (Zi et al., ICCV 2021, "Revisiting adversarial robustness distillation: robust soft labels make student
better"): the teacher's class probabilities on the clean image are the only labels. The inner attack ascends
KL(student(x_adv) || teacher(x)) from a 0.001 N(0, 1) start with projected signed steps; the training loss is
``alpha`` KL(student(x_adv) || teacher(x)) + (1 - ``alpha``) KL(student(x) || teacher(x)). A gated student started
from its plain teacher's residual weights (``--init``) keeps learning the teacher's robust outputs while its gates
learn to skip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aigrobust.training.inner_attacks import (
    Forward,
    InnerSpecError,
    PGDTraining,
    check_setting,
    kl_to,
    register_training_method,
)


@register_training_method
@dataclass(frozen=True)
class RSLAD(PGDTraining):
    """RSLAD: robust soft labels from a teacher, for the inner attack and for both terms of the loss.

    Args:
        eps: the Linf radius the network is trained against.
        compute: the weight of the compute objective added to the inner loss (gated networks only; 0: none).
        steps: projected steps of the inner attack (10 in the paper).
        step: the signed step (default eps/4, the paper's 2/255 at 8/255).
        alpha: the adversarial term's weight; the clean term takes 1 - alpha (5/6 in the paper).
        teacher: a registered name with shipped weights (``resnet20.at``) or a weights file.

    >>> RSLAD(steps=2).spec
    'rslad:eps=0.03137254901960784,compute=0.0,steps=2,step=auto,alpha=0.8333333333333334,teacher=resnet20.at'
    """

    alpha: float = 5 / 6
    teacher: str = "resnet20.at"

    method = "rslad"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_setting(self.method, "alpha", self.alpha, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        if not (isinstance(self.teacher, str) and self.teacher.strip()):
            raise InnerSpecError(f"{self.method}: teacher takes a model name or a weights file, got {self.teacher!r}")

    @property
    def needs_clean_logits(self) -> bool:
        return True

    @property
    def teacher_source(self) -> str | None:
        return self.teacher

    def inner_loss(self, logits: Tensor, p_on: Tensor | None, labels: Tensor, costs: Tensor | None,
                   clean_probs: Tensor | None = None) -> Tensor:
        assert clean_probs is not None  # here: the teacher's probabilities on the clean batch
        return kl_to(clean_probs, logits, "sum") + self.compute_objective(p_on, costs)

    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        if teacher_probs is None:
            raise InnerSpecError("rslad: the inner attack needs the teacher's probabilities on the clean batch")
        start = (x + 0.001 * torch.randn(tuple(x.shape), generator=generator).to(x)).clamp(0, 1)
        return self.iterate(forward, x, start, labels, costs, teacher_probs)

    def training_loss(self, logits_adv: Tensor, labels: Tensor, logits_clean: Tensor | None = None,
                      teacher_probs: Tensor | None = None) -> Tensor:
        assert logits_clean is not None and teacher_probs is not None
        adversarial = kl_to(teacher_probs, logits_adv, "batchmean")
        return self.alpha * adversarial + (1 - self.alpha) * kl_to(teacher_probs, logits_clean, "batchmean")


__all__ = ["RSLAD"]
