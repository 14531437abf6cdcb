"""White-box gradient attacks: FGSM, BIM, PGD (Madry et al. 2018), MI-FGSM (Dong et al. 2018); APGD lives in
``attacks.apgd``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attacks.base import (
    Attack,
    AttackResult,
    FirstSuccess,
    Model,
    is_misclassified,
    keep_first_success,
    keep_rows,
    loss_gradient,
    validate_epsilons,
    validate_inputs,
)
from attacks.distances import DISTANCES
from attacks.noise import SampleNoise


class FGSM(Attack):
    """Fast gradient (sign) method (Goodfellow et al. 2015): one gradient at the clean input, shared by every epsilon of
    the sweep; with ``distance="l2"`` the fast gradient method (``fgm-l2``).

    Args:
        distance: ``linf`` (the gradient's sign) or ``l2`` (the normalised gradient).
        seed: unused by the method (it draws nothing); kept so every attack takes one.

    >>> from attacks import get_attack
    >>> get_attack("fgsm").spec, get_attack("fgm-l2").spec
    ('fgsm:distance=linf', 'fgm-l2')
    """

    name = "fgsm"

    def __init__(self, distance: str = "linf", seed: int = 0) -> None:
        super().__init__(seed)
        self.distance = DISTANCES[distance]
        if distance == "l2":
            self.name = "fgm-l2"

    def __call__(self, model: Model, inputs: Tensor, labels: Tensor, epsilons: Sequence[float],
                 gradient_model: Model | None = None, sample_ids: Tensor | Sequence[int] | None = None
                 ) -> AttackResult:
        eps_values = validate_epsilons(epsilons)
        validate_inputs(inputs, labels)
        direction = torch.zeros_like(inputs)
        if any(eps > 0 for eps in eps_values):
            grad, logits = loss_gradient(gradient_model or model, inputs, labels)
            direction = self.distance.ascent_direction(grad)
            # the gradient pass already classified the clean input when it ran on the deployed model itself
            already = (logits.argmax(1) != labels) if gradient_model in (None, model) else \
                self.already_adversarial(model, inputs, labels)
            direction[already] = 0.0
        # one shared direction: every epsilon is a scaled copy, no further gradients
        raw = inputs.unsqueeze(0) + torch.tensor(eps_values, dtype=inputs.dtype, device=inputs.device).view(
            -1, *([1] * inputs.dim())) * direction.unsqueeze(0)
        clipped = torch.stack([self.clip(inputs, raw[k], eps) for k, eps in enumerate(eps_values)])
        return AttackResult(eps_values, raw, clipped, judge=self.judge(model, inputs, labels))


class IterativeAttack(Attack):
    """Projected steepest ascent on the cross-entropy; BIM and PGD are its settings.

    With ``stop_at_success`` (the default) a sample keeps the first iterate that fools the deployed model and leaves
    the working batch, so the attack is never weaker than running every step and much cheaper once most samples are
    fooled; ``stop_at_success=False`` runs every sample through every step and returns the last iterate (the
    textbook formulation, kept for comparisons).
    """

    def __init__(self, steps: int = 20, rel_stepsize: float | None = None, abs_stepsize: float | None = None,
                 random_start: bool = True, restarts: int = 1, distance: str = "linf", seed: int = 0,
                 stop_at_success: bool = True) -> None:
        super().__init__(seed)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        self.steps = steps
        self.rel_stepsize = rel_stepsize if rel_stepsize is not None else 2.5 / steps
        self.abs_stepsize = abs_stepsize
        self.random_start = random_start
        self.restarts = restarts
        self.distance = DISTANCES[distance]
        self.stop_at_success = stop_at_success

    def stepsize(self, eps: float) -> float:
        """Absolute step size for ``eps``."""
        return self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        step = self.stepsize(eps)

        def attempt(todo: Tensor, restart: int) -> tuple[Tensor, Tensor | None]:
            x0, y = inputs[todo], labels[todo]
            start = f"start/{eps!r}/{restart}"
            x = self.distance.random_start(x0, eps, noise.rows(todo), start) if self.random_start else x0.clone()
            x = self.clip(x0, x, eps)
            if not self.stop_at_success:
                for _ in range(self.steps):
                    grad, _ = loss_gradient(gradient_model, x, y)
                    x = self.clip(x0, x + step * self.distance.ascent_direction(grad), eps)
                return x, (None if self.restarts == 1 else is_misclassified(model, x, y))
            first = FirstSuccess(model, gradient_model, x0)
            for _ in range(self.steps):
                grad, logits = loss_gradient(gradient_model, x, y)
                keep = first.update(x, y, logits)
                x, x0, y, grad = keep_rows(keep, x, x0, y, grad)
                if first.done:
                    break
                x = self.clip(x0, x + step * self.distance.ascent_direction(grad), eps)
            # the last iterate is judged once, by the result's judge, unless restarts need the outcome now
            adversarial = first.finish(x, y if self.restarts > 1 else None)
            return adversarial, (None if self.restarts == 1 else first.fooled)

        return keep_first_success(self.restarts, inputs, attempt)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "rel_stepsize": self.rel_stepsize,
                "random_start": self.random_start, "restarts": self.restarts,
                "stop_at_success": self.stop_at_success}


class BIM(IterativeAttack):
    """Basic iterative method / I-FGSM (Kurakin et al. 2017): no random start, ``steps`` steps of eps/steps.

    Args:
        steps: gradient steps.
        distance: ``linf`` or ``l2``.
        seed: the key of per-sample draws (BIM draws nothing).
        stop_at_success: a sample keeps its first fooling iterate and leaves the batch (False: every sample runs
            every step).

    >>> from attacks import get_attack
    >>> get_attack("bim", steps=20).spec
    'bim:steps=20,distance=linf,stop_at_success=true'
    """

    name = "bim"

    def __init__(self, steps: int = 10, distance: str = "linf", seed: int = 0, stop_at_success: bool = True) -> None:
        super().__init__(steps=steps, rel_stepsize=1.0 / steps, random_start=False, distance=distance, seed=seed,
                         stop_at_success=stop_at_success)


class PGD(IterativeAttack):
    """Projected gradient descent with a random start and restarts (Madry et al. 2018).

    Args:
        steps: gradient steps per restart.
        rel_stepsize: the step as a fraction of epsilon (default 2.5 / steps: the ball crossed 2.5 times).
        abs_stepsize: the step in pixel units, whatever the epsilon (overrides ``rel_stepsize``).
        restarts: runs from fresh random starts, each on the samples the earlier ones did not fool.
        distance: ``linf`` or ``l2`` (``pgd-l2``).
        seed: the key of each sample's random starts.
        stop_at_success: a sample keeps its first fooling iterate and leaves the batch (False: every sample runs
            every step).

    >>> from attacks import get_attack
    >>> get_attack("pgd", steps=10, restarts=2).spec
    'pgd:steps=10,rel_stepsize=auto,abs_stepsize=auto,restarts=2,distance=linf,stop_at_success=true'
    """

    name = "pgd"

    def __init__(self, steps: int = 20, rel_stepsize: float | None = None, abs_stepsize: float | None = None,
                 restarts: int = 1, distance: str = "linf", seed: int = 0, stop_at_success: bool = True) -> None:
        super().__init__(steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, random_start=True,
                         restarts=restarts, distance=distance, seed=seed, stop_at_success=stop_at_success)
        if distance == "l2":
            self.name = "pgd-l2"


class MIFGSM(Attack):
    """Momentum iterative FGSM (Dong et al. 2018): accumulated L1-normalised gradients.

    Args:
        steps: gradient steps, each eps/steps.
        decay: the momentum's decay ``mu``.
        distance: ``linf`` or ``l2``.
        seed: the key of per-sample draws (MI-FGSM draws nothing).
        stop_at_success: a sample keeps its first fooling iterate and leaves the batch (see :class:`IterativeAttack`).

    >>> from attacks import get_attack
    >>> get_attack("mifgsm", decay=0.5).spec
    'mifgsm:steps=10,decay=0.5,distance=linf,stop_at_success=true'
    """

    name = "mifgsm"

    def __init__(self, steps: int = 10, decay: float = 1.0, distance: str = "linf", seed: int = 0,
                 stop_at_success: bool = True) -> None:
        super().__init__(seed)
        self.steps = steps
        self.decay = decay
        self.distance = DISTANCES[distance]
        self.stop_at_success = stop_at_success

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        x, x0, y = inputs.clone(), inputs, labels
        momentum = torch.zeros_like(inputs)
        step = eps / self.steps
        first = FirstSuccess(model, gradient_model, inputs, leave=self.stop_at_success)
        for _ in range(self.steps):
            grad, logits = loss_gradient(gradient_model, x, y)
            if self.stop_at_success:
                keep = first.update(x, y, logits)
                x, x0, y, grad, momentum = keep_rows(keep, x, x0, y, grad, momentum)
                if first.done:
                    break
            l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
            momentum = self.decay * momentum + grad / l1
            x = self.clip(x0, x + step * self.distance.ascent_direction(momentum), eps)
        return first.finish(x)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "decay": self.decay,
                "stop_at_success": self.stop_at_success}
