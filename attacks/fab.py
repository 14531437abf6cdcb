"""FAB-T: the targeted fast adaptive boundary attack (Croce & Hein, ICML 2020), L-infinity and L2.

Per sample and target class t (the runner-up classes of the clean logits, as in AutoAttack), each step linearises
the boundary between the true class y and t, f(x) = z_y(x) - z_t(x) = 0, projects both the current point and the
original image onto it (minimal-norm steps inside the [0, 1] box), and moves to a convex combination of the two
projections that leans toward the original image (alpha <= alpha_max), overshooting by eta. A point that fools the
model is kept where it is the closest found so far, and the search steps back toward the original image
(x = (1 - beta) x0 + beta x). A sample leaves the search once it is fooled within epsilon.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attacks.base import Attack, Model, is_misclassified, over_target_classes
from attacks.distances import DISTANCES
from attacks.noise import RUN, SampleNoise

_BISECTION_STEPS = 30


def boundary_step(point: Tensor, w: Tensor, c: Tensor, norm: str) -> Tensor:
    """The minimal-norm step ``d`` (L-infinity or L2) with ``point + d`` in [0, 1] and ``c + w . d = 0``, per sample
    (rows of ``point`` and ``w`` flattened); where the box makes the hyperplane unreachable, the step that gets
    closest. Solved by bisection on the step's scale, along which ``w . d`` is monotone."""
    flat, wf = point.flatten(1), w.flatten(1)
    direction = -torch.sign(c)[:, None] * (torch.sign(wf) if norm == "linf" else wf)
    lower, upper = -flat, 1 - flat

    def step(scale: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(scale[:, None] * direction, lower), upper)

    # the largest useful scale saturates every coordinate: 1 for L-infinity, 1 / min |w_i| for L2
    smallest = wf.abs().masked_fill(wf == 0, float("inf")).amin(1)
    high = torch.ones_like(c) if norm == "linf" else (1.0 / smallest.clamp_min(1e-12)).clamp_max(1e12)
    low = torch.zeros_like(c)
    target = -c
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        reached = (step(middle) * wf).sum(1) * torch.sign(target) >= target.abs()
        high = torch.where(reached, middle, high)
        low = torch.where(reached, low, middle)
    return step(high).view_as(point)


class FABTargeted(Attack):
    """FAB-T (Croce & Hein, ICML 2020, "minimally distorted adversarial examples with a fast adaptive boundary
    attack"), as AutoAttack runs it: a run of ``steps`` iterations toward each of the ``n_target_classes`` most
    likely wrong classes of the clean input, on the samples not yet fooled.

    Args:
        steps: iterations per target class (AutoAttack: 100).
        n_target_classes: how many target classes (AutoAttack: 9).
        restarts: > 1 starts later runs at random points in the ball.
        alpha_max: the largest weight of the step toward the original point (FAB's biased extrapolation).
        eta: the overshoot factor of each projection onto the linearised boundary (> 1).
        beta: the backward step toward the clean input after a success.
        distance: ``linf`` or ``l2``.
        seed: the key of each sample's random restarts.

    >>> from attacks import get_attack
    >>> get_attack("fab-t", steps=50).spec
    'fab-t:steps=50,n_target_classes=9,restarts=1,alpha_max=0.1,eta=1.05,beta=0.9,distance=linf'
    """

    name = "fab-t"

    def __init__(self, steps: int = 100, n_target_classes: int = 9, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, distance: str = "linf", seed: int = 0) -> None:
        super().__init__(seed)
        self.steps = steps
        self.n_target_classes = n_target_classes
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.distance = DISTANCES[distance]
        if distance == "l2":
            self.name = "fab-t-l2"

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        def attempt(rows: Tensor, targets: Tensor, runs: list[str]) -> tuple[Tensor, Tensor]:
            # the first run of each target starts at the image, later restarts at a random point
            randomised = torch.tensor([not run.endswith("/0") for run in runs], device=inputs.device)
            return self._run(model, gradient_model, inputs[rows], labels[rows], targets, eps,
                             noise.rows(rows).with_runs(runs), randomised)

        return over_target_classes(model, inputs, labels, self.n_target_classes, self.restarts, attempt)

    def _run(self, model: Model, gradient_model: Model, x0: Tensor, y: Tensor, target: Tensor, eps: float,
             noise: SampleNoise, randomised: Tensor) -> tuple[Tensor, Tensor]:
        """One FAB run per row toward its ``target``, from the image or (``randomised`` rows) a random point: the
        closest fooling point found per row and whether it lies within eps."""
        norm = self.distance.name
        x = x0.clone()
        if randomised.any():
            r = randomised.nonzero().squeeze(1)
            start = self.distance.random_start(x0[r], eps / 2, noise.rows(r), f"start/{eps!r}/{RUN}")
            x[r] = self.clip(x0[r], start, eps)
        best = x0.clone()
        best_norm = torch.full((len(x0),), float("inf"), device=x0.device)
        working = torch.arange(len(x0), device=x0.device)
        for _ in range(self.steps):
            f, w = self._linearise(gradient_model, x, y[working], target[working])
            origin = x0[working]
            to_current = boundary_step(x, w, f, norm)
            to_origin = boundary_step(origin, w, f + (w * (origin - x)).flatten(1).sum(1), norm)
            n1, n2 = self.distance.norm(to_current), self.distance.norm(to_origin)
            alpha = (n1 / (n1 + n2).clamp_min(1e-12)).clamp(0, self.alpha_max).view(-1, *([1] * (x.dim() - 1)))
            x_new = ((1 - alpha) * (x + self.eta * to_current) + alpha * (origin + self.eta * to_origin)).clamp(0, 1)
            fooled = is_misclassified(model, x_new, y[working])
            distance = self.distance.norm(x_new - origin)
            closer = fooled & (distance < best_norm[working])
            best[working[closer]] = x_new[closer]
            best_norm[working[closer]] = distance[closer]
            x = torch.where(fooled.view(-1, *([1] * (x.dim() - 1))), (1 - self.beta) * origin + self.beta * x_new,
                            x_new)
            stay = best_norm[working] > eps * (1 + 1e-6)  # fooled within eps: this sample is done
            working, x = working[stay], x[stay]
            if working.numel() == 0:
                break
        return best, best_norm <= eps * (1 + 1e-6)

    @staticmethod
    def _linearise(gradient_model: Model, x: Tensor, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """f = z_y - z_t at x (positive while the true class leads the target) and its input gradient."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = gradient_model(x).float()
            f = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), grad.detach()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "n_target_classes": self.n_target_classes,
                "restarts": self.restarts}
