"""A universal compute perturbation: one delta for every image (the threat model of DeepSloth's and SlowFormer's
universal attacks), fitted on one set of images and judged on others.

``fit_universal(model, images, eps)`` ascends the compute attack's gate loss summed over the fitting images with
signed steps on the shared delta (Linf, projected to the ball; each image then clipped to [0, 1]), in mini-batches,
and keeps the delta with the highest executed FLOPs on the fitting set. ``apply_universal(images, delta)`` is the
attacked batch. The model is reached through ``forward_with_gates`` and ``flop_profile``, as by every gate attack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks.compute_attack import ComputeInflation


def apply_universal(images: Tensor, delta: Tensor) -> Tensor:
    """Every image plus the one perturbation, clipped to the image range."""
    return (images + delta.to(images).unsqueeze(0)).clamp(0, 1)


def _mean_flops(model: Any, images: Tensor, delta: Tensor, batch_size: int) -> float:
    total = 0.0
    with torch.no_grad():
        for chunk in images.split(batch_size):
            total += float(model.forward_with_gates(apply_universal(chunk, delta))[1].flops.double().sum())
    return total / len(images)


def fit_universal(model: Any, images: Tensor, eps: float, steps: int = 50, batch_size: int = 128,
                  rel_stepsize: float = 0.1, gate_loss: str = "hinge") -> tuple[Tensor, float]:
    """The universal Linf perturbation of radius ``eps`` that raises executed FLOPs most on ``images``.

    Deterministic: it starts at zero and draws nothing. The hinge loss is the default here, as it generalised better
    to unseen images than the probability loss (0.276 against 0.258 recovery, 256 fitting images, 500 test images,
    30 steps at 8/255).

    Args:
        model: a dynamic network (gated or early-exit) in eval mode.
        images: the images it is fitted on, in [0, 1].
        eps: the Linf radius.
        steps: signed gradient steps.
        batch_size: images per forward/backward pass.
        rel_stepsize: each step as a fraction of ``eps``.
        gate_loss: the compute attack's objective (see :class:`~attacks.compute_attack.ComputeInflation`).

    Returns:
        The perturbation (3, H, W) and the mean executed FLOPs it reaches on ``images``.

    >>> import torch
    >>> from aigrobust import create_model
    >>> delta, flops = fit_universal(create_model("aig20", pretrained=True).eval(), torch.rand(4, 3, 32, 32), 8 / 255,
    ...                              steps=2)
    >>> tuple(delta.shape), float(delta.abs().max()) <= 8 / 255
    ((3, 32, 32), True)
    """
    loss = ComputeInflation(gate_loss=gate_loss)
    costs = torch.tensor(model.flop_profile(tuple(images.shape[1:])).residual, dtype=torch.float32,
                         device=images.device)
    costs = costs / costs.mean().clamp_min(1e-12)
    delta = torch.zeros(images.shape[1:], device=images.device)
    best, best_flops = delta.clone(), _mean_flops(model, images, delta, batch_size)
    for _ in range(steps):
        grad = torch.zeros_like(delta)
        for chunk in images.split(batch_size):
            d = delta.clone().requires_grad_(True)
            with torch.enable_grad():
                _, trace = model.forward_with_gates(apply_universal(chunk, d))
                value = loss.gate_terms(trace, costs).sum()
                (g,) = torch.autograd.grad(value, d)
            grad += g
        delta = (delta + rel_stepsize * eps * grad.sign()).clamp(-eps, eps)
        flops = _mean_flops(model, images, delta, batch_size)
        if flops > best_flops:
            best, best_flops = delta.clone(), flops
    return best, best_flops
