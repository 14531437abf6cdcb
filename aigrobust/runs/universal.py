"""A universal compute perturbation judged as DeepSloth and SlowFormer judge theirs: one delta fitted on
training images, its effect measured on test images it never saw, beside random sign noise of the same norm.

:func:`universal_compute` fits and measures; it writes nothing (``aigrobust universal`` writes the folder).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attacks.universal import apply_universal, fit_universal


def _flops(model: Any, images: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.forward_with_gates(chunk)[1].flops.double() for chunk in images.split(batch_size)])


def _recovery(model: Any, clean: Tensor, attacked: Tensor, batch_size: int) -> tuple[float, float, float]:
    """FLOPs-weighted recovery, mean clean and attacked FLOPs."""
    full = model.flop_profile(tuple(clean.shape[1:])).full
    before, after = _flops(model, clean, batch_size), _flops(model, attacked, batch_size)
    saved = float((full - before).sum())
    return (float((after - before).sum()) / saved if saved > 0 else float("nan"), float(before.mean()),
            float(after.mean()))


@dataclass(frozen=True)
class UniversalResult:
    """What a universal perturbation did: on the images it was fitted on, on unseen ones, and what noise does."""

    epsilon: float
    steps: int
    gate_loss: str
    fit_ids: list[int]
    judge_ids: list[int]
    full_flops: float
    fit_recovery: float
    judge_recovery: float
    noise_recovery: float
    judge_clean_flops: float
    judge_attacked_flops: float
    delta: Tensor = field(repr=False)

    @property
    def delta_sha256(self) -> str:
        """sha256 of the perturbation's float32 bytes, so a record names the very delta."""
        return hashlib.sha256(self.delta.detach().cpu().float().numpy().tobytes()).hexdigest()

    def document(self) -> dict[str, object]:
        """The JSON-able description (everything but the delta itself)."""
        return {"epsilon": self.epsilon, "steps": self.steps, "gate_loss": self.gate_loss,
                "fit_ids": self.fit_ids, "judge_ids": self.judge_ids, "full_flops": self.full_flops,
                "fit_recovery": self.fit_recovery, "judge_recovery": self.judge_recovery,
                "noise_recovery": self.noise_recovery, "judge_clean_flops": self.judge_clean_flops,
                "judge_attacked_flops": self.judge_attacked_flops, "delta_sha256": self.delta_sha256}


def universal_compute(model: Any, fit_images: Tensor, fit_ids: list[int], judge_images: Tensor, judge_ids: list[int],
                      eps: float, steps: int = 50, gate_loss: str = "hinge", batch_size: int = 128,
                      seed: int = 0) -> UniversalResult:
    """Fit one Linf perturbation of radius ``eps`` on ``fit_images`` and measure the share of the saved FLOPs it
    takes back there and on ``judge_images``, beside seeded random sign noise of the same norm."""
    if not getattr(model, "is_gated", False):
        raise ValueError("a universal compute perturbation needs a gated model")
    delta, _ = fit_universal(model, fit_images, eps, steps=steps, batch_size=batch_size, gate_loss=gate_loss)
    generator = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(judge_images.shape[1:], generator=generator) < 0.5, -1.0, 1.0)
    fit_rec, _, _ = _recovery(model, fit_images, apply_universal(fit_images, delta), batch_size)
    judge_rec, clean, attacked = _recovery(model, judge_images, apply_universal(judge_images, delta), batch_size)
    noise_rec, _, _ = _recovery(model, judge_images, apply_universal(judge_images, eps * signs.to(delta)), batch_size)
    return UniversalResult(eps, steps, gate_loss, [int(i) for i in np.asarray(fit_ids)],
                           [int(i) for i in np.asarray(judge_ids)], float(model.flop_profile(
                               tuple(judge_images.shape[1:])).full), fit_rec, judge_rec, noise_rec, clean, attacked,
                           delta.detach().cpu())
