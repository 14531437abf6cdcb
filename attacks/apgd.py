"""Auto-PGD (Croce & Hein, ICML 2020): APGD with the cross-entropy or the DLR loss, and APGD-T, AutoAttack's
targeted version, with their step-size checkpoints and the DLR loss."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from aigrobust.randomness import keyed_draw
from attacks.base import (
    Attack,
    FirstSuccess,
    Model,
    keep_first_success,
    over_target_classes,
    select_rows,
)
from attacks.distances import DISTANCES
from attacks.noise import RUN, SampleNoise


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Iterations where APGD may halve its step: p0=0, p1=0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(round(q * n_iter)) for q in p if q <= 1})


def dlr_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per sample, to maximise: untargeted
    -(z_y - max_{i != y} z_i) / (z_1 - z_3), targeted -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2), with z_k the k-th
    largest logit. Invariant to shifting and scaling the logits."""
    if logits.shape[1] < (3 if target is None else 4):
        raise ValueError(f"the DLR loss needs at least {3 if target is None else 4} classes, got {logits.shape[1]}")
    ordered = logits.sort(1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(true - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    aimed = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aimed) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


APGD_LOSSES = ("ce", "dlr")


class APGD(Attack):
    """Auto-PGD (Croce & Hein, ICML 2020) with the cross-entropy (``apgd``) or the DLR loss (``apgd-dlr``).

    Step 2 eps, halved at checkpoints when progress stalls, restarting from the best point. Returns a misclassified
    point where one was found at any iteration, else the point of highest loss.

    Args:
        steps: iterations per restart (AutoAttack: 100).
        rho: at a checkpoint the step halves unless at least this fraction of the steps since the last one raised
            the loss (and the step or the best loss changed).
        alpha: the momentum's weight on the previous update (0.75).
        restarts: runs from fresh random starts on the samples still standing.
        distance: ``linf`` or ``l2`` (``apgd-l2``).
        seed: the key of each sample's random starts.
        stop_at_success: a sample leaves the batch once fooled (AutoAttack's early exit).
        loss: ``ce`` or ``dlr`` (fixed by the names ``apgd`` and ``apgd-dlr``).
        eot_draws: > 1: each gradient is the mean over that many draws of a randomised model or defense
            (expectation over transformation; AutoAttack's ``rand`` version: 20).

    >>> from attacks import get_attack
    >>> get_attack("apgd-dlr", steps=50).spec
    'apgd-dlr:steps=50,rho=0.75,alpha=0.75,restarts=1,distance=linf,stop_at_success=true,eot_draws=1'
    """

    name = "apgd"

    def __init__(self, steps: int = 100, rho: float = 0.75, alpha: float = 0.75, restarts: int = 1,
                 distance: str = "linf", seed: int = 0, stop_at_success: bool = True, loss: str = "ce",
                 eot_draws: int = 1) -> None:
        super().__init__(seed)
        if loss not in APGD_LOSSES:
            raise ValueError(f"unknown APGD loss {loss!r}; known: {', '.join(APGD_LOSSES)}")
        self.steps, self.rho, self.alpha, self.restarts = steps, rho, alpha, restarts
        self.loss, self.stop_at_success = loss, stop_at_success
        self.eot_draws = eot_draws  # > 1: each gradient is the mean over that many draws of a random model (EOT)
        self.distance = DISTANCES[distance]
        self.name = ("apgd" if loss == "ce" else f"apgd-{loss}") + ("-l2" if distance == "l2" else "")  # registered

    def _loss_and_grad(self, gradient_model: Model, x: Tensor, y: Tensor,
                       target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        losses, grads = [], []
        for d in range(self.eot_draws):  # a deterministic model gives the same draw each time: keep eot_draws=1
            xg = x.detach().requires_grad_(True)
            # keyed random layers (stochastic gates) draw by input and draw name: each EOT draw gets its own name
            draw = keyed_draw(gradient_model, f"apgd-eot/{d}") if self.eot_draws > 1 else contextlib.nullcontext()
            with torch.enable_grad(), draw:
                logits = gradient_model(xg)
                if self.loss == "ce" and target is None:
                    per_sample = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
                else:
                    per_sample = dlr_loss(logits.float(), y, target)
                (grad,) = torch.autograd.grad(per_sample.sum(), xg)
            losses.append(per_sample.detach())
            grads.append(grad.detach())
        if self.eot_draws == 1:
            return losses[0], grads[0], logits.detach()
        return torch.stack(losses).mean(0), torch.stack(grads).mean(0), logits.detach()

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        return keep_first_success(
            self.restarts, inputs,
            lambda todo, restart: self._run(model, gradient_model, inputs[todo], labels[todo], eps,
                                            noise.rows(todo), f"start/{eps!r}/{restart}"))

    def _run(self, model: Model, gradient_model: Model, x0: Tensor, y: Tensor, eps: float,
             noise: SampleNoise, start: str, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        checkpoints = set(apgd_checkpoints(self.steps))
        x = self.clip(x0, self.distance.random_start(x0, eps, noise, start), eps)
        loss, grad, logits = self._loss_and_grad(gradient_model, x, y, target)
        first = FirstSuccess(model, gradient_model, x0, leave=self.stop_at_success)
        eta = torch.full((len(x0),), 2.0 * eps, device=x0.device)
        # every per-sample quantity lives in one dict, so a fooled sample leaves all of them at once
        s = select_rows({"x0": x0, "y": y, "x": x, "x_prev": x.clone(), "loss": loss, "grad": grad,
                         "best_loss": loss.clone(), "x_best": x.clone(), "grad_best": grad.clone(), "eta": eta,
                         "increases": torch.zeros_like(eta), "eta_at_checkpoint": eta.clone(),
                         "best_at_checkpoint": loss.clone(), **({} if target is None else {"target": target})},
                        first.update(x, y, logits))
        last_checkpoint = 0
        for k in range(self.steps):
            if first.done:
                break
            s = self._step(s, k, eps, gradient_model, first)
            if k + 1 in checkpoints and k + 1 < self.steps:
                self._checkpoint(s, k + 1 - last_checkpoint)
                last_checkpoint = k + 1
        adversarial = first.finish(s["x_best"])
        return adversarial, first.fooled

    def _step(self, s: dict[str, Tensor], k: int, eps: float, gradient_model: Model,
              first: FirstSuccess) -> dict[str, Tensor]:
        """One momentum step of every working sample; fooled samples leave ``s``."""
        view = (-1,) + (1,) * (s["x"].dim() - 1)
        z = self.clip(s["x0"], s["x"] + s["eta"].view(view) * self.distance.ascent_direction(s["grad"]), eps)
        momentum = self.alpha if k > 0 else 1.0
        x = self.clip(s["x0"], s["x"] + momentum * (z - s["x"]) + (1 - momentum) * (s["x"] - s["x_prev"]), eps)
        s["x_prev"], s["x"] = s["x"], x
        new_loss, s["grad"], logits = self._loss_and_grad(gradient_model, x, s["y"], s.get("target"))
        s["increases"] = s["increases"] + (new_loss > s["loss"]).float()
        s["loss"] = new_loss
        s = select_rows(s, first.update(x, s["y"], logits))
        improved = s["loss"] > s["best_loss"]
        s["best_loss"] = torch.where(improved, s["loss"], s["best_loss"])
        s["x_best"][improved] = s["x"][improved]
        s["grad_best"][improved] = s["grad"][improved]
        return s

    def _checkpoint(self, s: dict[str, Tensor], span: int) -> None:
        """Halve the step of the samples whose progress stalled and restart them from their best point."""
        stalled = s["increases"] < self.rho * span
        unchanged = (s["eta"] == s["eta_at_checkpoint"]) & (s["best_loss"] == s["best_at_checkpoint"])
        halve = stalled | unchanged
        s["eta_at_checkpoint"], s["best_at_checkpoint"] = s["eta"].clone(), s["best_loss"].clone()
        s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
        s["x"][halve] = s["x_best"][halve]
        s["x_prev"][halve] = s["x_best"][halve]
        s["grad"][halve] = s["grad_best"][halve]
        s["increases"].zero_()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "restarts": self.restarts, "rho": self.rho,
                "loss": self.loss, "stop_at_success": self.stop_at_success}


class APGDTargeted(APGD):
    """APGD-T (Croce & Hein, ICML 2020): APGD on the targeted DLR loss toward each of the ``n_target_classes`` most
    likely wrong classes of the clean input in turn, each target a full run on the samples still standing.

    Args:
        steps: iterations per target and restart (AutoAttack: 100).
        n_target_classes: how many target classes (AutoAttack: 9).
        rho: the step-halving condition, as in :class:`APGD`.
        alpha: the momentum's weight, as in :class:`APGD`.
        restarts: runs per target from fresh random starts.
        distance: ``linf`` or ``l2``.
        seed: the key of each sample's random starts.
        stop_at_success: a sample leaves the batch once fooled.

    >>> from attacks import get_attack
    >>> get_attack("apgd-t", n_target_classes=3).spec
    'apgd-t:steps=100,n_target_classes=3,rho=0.75,alpha=0.75,restarts=1,distance=linf,stop_at_success=true'
    """

    name = "apgd-t"

    def __init__(self, steps: int = 100, n_target_classes: int = 9, rho: float = 0.75, alpha: float = 0.75,
                 restarts: int = 1, distance: str = "linf", seed: int = 0, stop_at_success: bool = True) -> None:
        super().__init__(steps=steps, rho=rho, alpha=alpha, restarts=restarts, distance=distance, seed=seed,
                         stop_at_success=stop_at_success, loss="dlr")
        self.n_target_classes = n_target_classes
        self.name = "apgd-t" + ("-l2" if distance == "l2" else "")

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        def attempt(rows: Tensor, targets: Tensor, runs: list[str]) -> tuple[Tensor, Tensor]:
            return self._run(model, gradient_model, inputs[rows], labels[rows], eps, noise.rows(rows).with_runs(runs),
                             f"start/{eps!r}/{RUN}", targets)

        return over_target_classes(model, inputs, labels, self.n_target_classes, self.restarts, attempt)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "n_target_classes": self.n_target_classes}
