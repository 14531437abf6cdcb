"""Attacks aimed at the gates of a dynamic network rather than its label.

* Compute inflation lives in ``attacks.compute_attack``.
* Gate flip: maximise the distance between the adversarial and the clean gate pattern: the worst case of stability.

The model is reached only through duck-typed methods: ``forward_with_gates(x) -> (logits, trace)`` with
``trace.p_on`` (N, L), ``trace.decisions`` (N, L) and ``trace.flops`` (N,), and ``flop_profile(shape).residual``.
Gate probabilities are differentiable in the input in every gradient mode (the gate logits depend on x through the
earlier layers), so these attacks work with exact gradients too; straight-through ones reach further.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attacks.base import Attack, Model
from attacks.compute_attack import _gated
from attacks.distances import DISTANCES
from attacks.noise import SampleNoise

GATE_MARGIN_CAP = 2.0  # a gate pushed this far (in logit margin) past its decision stops pulling the attack


def _gate_margin(p_on: Tensor) -> Tensor:
    return torch.logit(p_on.float(), eps=1e-6)


class _GateAttack(Attack):
    goal = "gates"

    def __init__(self, steps: int = 20, rel_stepsize: float | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.steps = steps
        self.rel_stepsize = rel_stepsize if rel_stepsize is not None else 2.5 / steps
        self.distance = DISTANCES["linf"]

    def objective(self, logits: Tensor, trace: Any, state: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Differentiable per-sample objective to maximise."""
        raise NotImplementedError

    def score(self, logits: Tensor, trace: Any, state: dict[str, Tensor], labels: Tensor) -> Tensor:
        """The true (discrete) per-sample score the attack keeps the best of."""
        raise NotImplementedError

    def prepare(self, model: Any, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per-sample state from the clean input (clean decisions, FLOPs, block costs)."""
        with torch.no_grad():
            _, trace = model.forward_with_gates(inputs)
        costs = torch.tensor(model.flop_profile(tuple(inputs.shape[1:])).residual, dtype=torch.float32,
                             device=inputs.device)
        return {"decisions": trace.decisions, "flops": trace.flops, "costs": costs / costs.mean().clamp_min(1e-12)}

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        deployed = _gated(model)
        grad_source = gradient_model if hasattr(gradient_model, "forward_with_gates") else deployed
        state = self.prepare(deployed, inputs, labels)
        x = inputs.clone()
        best = inputs.clone()
        with torch.no_grad():
            logits, trace = deployed.forward_with_gates(x)
        best_score = self.score(logits, trace, state, labels)
        step = self.rel_stepsize * eps
        for _ in range(self.steps):
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits_g, trace_g = grad_source.forward_with_gates(xg)
                value = self.objective(logits_g, trace_g, state, labels).sum()
                (grad,) = torch.autograd.grad(value, xg)
            x = self.clip(inputs, x + step * grad.sign(), eps)
            with torch.no_grad():
                logits, trace = deployed.forward_with_gates(x)
            current = self.score(logits, trace, state, labels)
            improved = current > best_score
            best[improved] = x[improved]
            best_score = torch.where(improved, current, best_score)
        return best

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "goal": self.goal}


class GateFlip(_GateAttack):
    """Flip as many gates as possible away from their clean decision (maximise the Hamming distance).

    Success: the clipped adversarial's gate pattern differs from the clean one.

    Args:
        steps: signed gradient steps on the gates' log-odds.
        rel_stepsize: the step as a fraction of epsilon (default 2.5 / steps).
        seed: the key of per-sample draws (the attack draws nothing).

    >>> from attacks import get_attack
    >>> get_attack("gate-flip", steps=40).spec
    'gate-flip:steps=40,rel_stepsize=auto'
    """

    name = "gate-flip"

    def objective(self, logits: Tensor, trace: Any, state: dict[str, Tensor], labels: Tensor) -> Tensor:
        away = torch.where(state["decisions"], -1.0, 1.0)  # open gates pushed closed, closed pushed open
        return (away * _gate_margin(trace.p_on)).clamp(max=GATE_MARGIN_CAP).sum(1)

    def score(self, logits: Tensor, trace: Any, state: dict[str, Tensor], labels: Tensor) -> Tensor:
        return (trace.decisions != state["decisions"]).float().sum(1)

    def succeeded(self, model: Model, inputs: Tensor, clipped: Tensor, labels: Tensor) -> Tensor:
        deployed = _gated(model)
        with torch.no_grad():
            _, clean = deployed.forward_with_gates(inputs)
            _, adv = deployed.forward_with_gates(clipped)
        return (clean.decisions != adv.decisions).any(1)
