"""Compute inflation at full strength: take back the FLOPs a gated network saves, inside an Linf or L2 ball.

The published attacks on dynamic networks (ILFO, CVPR 2020; GradAuto, ECCV 2022; GradMDM, TPAMI 2023) each offer a
gate loss and an update rule; this attack has them all as settings, and its defaults are what measured strongest on
the shipped aig20 (benchmarks/reference_compute_attack.py; first 100 test images, 100 steps, FLOPs-weighted
recovery at 8/255 and 2/255: defaults 0.941 and 0.390, the GradMDM port at its best learning rate 0.929 and 0.380,
the hinge/normalised/deconflicted/APGD variant 0.901 and 0.280):

* the gate loss (``gate_loss``): ``"prob"`` (default), GradMDM's emphasis, per gate the probability of 'on'
  clamped at the threshold to the power ``p`` (3.5): gates nearest to opening pull hardest, gates already open add
  nothing; ``"hinge"``, a hinge on the gate's log-odds ``-relu(kappa - m)`` (open gates kept open with margin
  ``kappa``); ``"pnorm"``, the hinge's shortfall to the power ``p``; ``"capped"``, the capped log-odds sum. Each gate
  is weighted by its block's FLOPs. For early-exit networks (whose trace holds ``exit_logits``) ``"uniform"`` is
  DeepSloth's objective (Hong et al., ICLR 2021): every internal classifier reached pushed toward the uniform
  distribution (minus its cross-entropy to uniform), unweighted;
* per-gate gradient normalisation (``normalize``, GradMDM) and removal of the conflict between "turn on" and "keep
  on" gradients (``deconflict``, GradAuto's observation, PCGrad's cure): both off by default, as on aig20 they
  spread the step over gates that cannot be opened (0.297 against 0.337 at 2/255 on 50 images);
* the update (``schedule``): ``"adam"`` (default; Adam's normalised step times 0.3 eps, as GradMDM optimises),
  ``"apgd"`` (step 2 eps, momentum 0.75, halving at APGD's checkpoints when the objective stalls, back to the best
  point) or ``"fixed"``; ``restarts`` from random starts; early exit per sample once every gate is open; the
  iterate with the most executed FLOPs is kept;
* ``keep_label``: a cross-entropy penalty keeps the true label, and only label-keeping points count as found.

The model is reached through duck-typed ``forward_with_gates(x) -> (logits, trace)`` (``trace.p_on``,
``trace.decisions``, ``trace.flops``) and ``flop_profile(shape).residual``, as by the other gate attacks: any
:class:`aigrobust.DynamicNetwork`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.apgd import apgd_checkpoints
from attacks.base import Attack, Model
from attacks.distances import DISTANCES
from attacks.noise import SampleNoise

LOSSES = ("prob", "hinge", "pnorm", "capped", "uniform")
SCHEDULES = ("apgd", "fixed", "adam")


def gate_log_odds(p_on: Tensor) -> Tensor:
    """log p - log(1 - p): the gate's margin for 'on' (its decision threshold is 0), with a gradient even where a
    gate is confidently closed (torch.logit's clamp would cut it)."""
    p = p_on.float()
    return torch.log(p.clamp_min(1e-30)) - torch.log1p(-p.clamp(max=1 - 1e-7))


def _gated(model: Any) -> Any:
    if not hasattr(model, "forward_with_gates"):
        raise TypeError("compute attacks need a model with forward_with_gates(x) (aigrobust models have it)")
    return model


class ComputeInflation(Attack):
    """Raise the executed FLOPs as far as the ball allows (success: more FLOPs than on the clean input).

    For gated networks the objective pushes closed gates open (GradMDM's probability loss by default); for early-exit
    networks ``gate_loss=uniform`` pushes every internal classifier toward uniform (DeepSloth), so no exit fires.

    Args:
        steps: iterations per restart.
        gate_loss: the per-gate objective: ``prob`` (the gate's probability of running, capped at 0.5, to the power
            ``p``), ``hinge`` (the log-odds' shortfall below ``kappa``), ``pnorm`` (that shortfall to the power ``p``),
            ``capped`` (the log-odds capped at ``kappa``), or ``uniform`` (early exits: DeepSloth's).
        kappa: the margin of the hinge, pnorm and capped losses, in log-odds.
        p: the exponent of the prob and pnorm losses.
        normalize: normalise each gate's gradient before summing (GradMDM).
        deconflict: remove the conflict between the gradients that open closed gates and keep open ones open.
        schedule: the step rule: ``adam`` (0.3 eps times Adam's normalised step), ``fixed`` (2.5 eps / steps) or
            ``apgd`` (2 eps, halved as progress stalls).
        restarts: runs from fresh starts, keeping each sample's best.
        random_start: start each run at a random point of the ball.
        keep_label: count only adversarials that keep the true label (``compute-inflation-keep-label``).
        label_weight: the weight of the cross-entropy term that keeps the label.
        rel_stepsize: the step as a fraction of epsilon (overrides the schedule's default).
        distance: ``linf`` or ``l2`` (``compute-inflation-l2``).
        seed: the key of each sample's random starts.

    >>> from attacks import get_attack
    >>> get_attack("compute-inflation", steps=20, gate_loss="uniform").spec.startswith(
    ...     "compute-inflation:steps=20,gate_loss=uniform,")
    True
    """

    name = "compute-inflation"
    goal = "gates"

    def __init__(self, steps: int = 100, gate_loss: str = "prob", kappa: float = 0.5, p: float = 3.5,
                 normalize: bool = False, deconflict: bool = False, schedule: str = "adam", restarts: int = 1,
                 random_start: bool = False, keep_label: bool = False, label_weight: float = 1.0,
                 rel_stepsize: float | None = None, distance: str = "linf", seed: int = 0) -> None:
        super().__init__(seed)
        if gate_loss not in LOSSES:
            raise ValueError(f"gate_loss must be one of {', '.join(LOSSES)}")
        if gate_loss == "uniform" and (normalize or deconflict):
            raise ValueError("gate_loss=uniform has one term per exit, not per gate: normalize and deconflict "
                             "do not apply")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        self.steps, self.gate_loss, self.kappa, self.p = steps, gate_loss, kappa, p
        self.normalize, self.deconflict, self.schedule = normalize, deconflict, schedule
        self.restarts, self.random_start = restarts, random_start
        self.keep_label, self.label_weight = keep_label, label_weight
        # fixed schedule: 2.5 eps / steps (the PGD default); apgd: starts at 2 eps and halves as it stalls; adam:
        # 0.3 eps times Adam's normalised step
        self.rel_stepsize = rel_stepsize
        self.distance = DISTANCES[distance]
        # the registered name ('compute-inflation-l2' fixes the distance)
        self.name = "compute-inflation" + ("-keep-label" if keep_label else "") + ("-l2" if distance == "l2" else "")

    # ----- the objective -----
    def gate_terms(self, trace: Any, costs: Tensor) -> Tensor:
        """Per sample and gate, the (N, L) terms whose sum the attack ascends (``uniform``: per sample and exit)."""
        if self.gate_loss == "uniform":
            if getattr(trace, "exit_logits", None) is None:
                raise ValueError("gate_loss=uniform pushes an early-exit network's exits toward uniform; this "
                                 "network has gates, not exits (use prob, hinge, pnorm or capped)")
            return F.log_softmax(trace.exit_logits.float(), dim=-1).mean(-1)  # -CE(uniform) up to a constant
        m = gate_log_odds(trace.p_on)
        if self.gate_loss == "hinge":
            return -F.relu(self.kappa - m) * costs
        if self.gate_loss == "pnorm":
            return -(F.relu(self.kappa - m) ** self.p) * costs
        if self.gate_loss == "prob":
            return trace.p_on.float().clamp(max=0.5) ** self.p * costs
        return m.clamp(max=self.kappa) * costs

    def surrogate(self, logits: Tensor, trace: Any, costs: Tensor, labels: Tensor) -> Tensor:
        """The per-sample objective (what the schedule watches): gate terms summed, minus the label penalty."""
        value = self.gate_terms(trace, costs).sum(1)
        if self.keep_label:
            value = value - self.label_weight * F.cross_entropy(logits.float(), labels, reduction="none")
        return value

    def score(self, logits: Tensor, trace: Any, labels: Tensor) -> Tensor:
        """The true (discrete) per-sample score kept at its best: executed FLOPs (-1 where the label is lost and
        must be kept)."""
        flops = trace.flops.to(torch.float64)
        if self.keep_label:
            flops = torch.where(logits.argmax(1) == labels, flops, torch.full_like(flops, -1.0))
        return flops

    def direction(self, source: Any, x: Tensor, labels: Tensor, costs: Tensor) -> tuple[Tensor, Tensor]:
        """The ascent direction at ``x`` (before the norm's steepest-ascent map) and the surrogate there."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, trace = source.forward_with_gates(xg)
            terms = self.gate_terms(trace, costs)
            label_term = (self.label_weight * F.cross_entropy(logits.float(), labels, reduction="none")
                          if self.keep_label else None)
            value = terms.sum(1) - (label_term if label_term is not None else 0.0)
            if not (self.normalize or self.deconflict):
                (grad,) = torch.autograd.grad(value.sum(), xg)
                return grad, value.detach()
            closed = (gate_log_odds(trace.p_on) <= 0).detach()  # the gates to turn on; the others to keep on
            active = terms.detach() != 0  # silent gates (past the margin) give no gradient to normalise
            per_gate = self._per_gate_gradients(terms, xg, active)
            label_grad = (torch.autograd.grad(-label_term.sum(), xg)[0] if label_term is not None
                          else torch.zeros_like(x))
        if self.normalize:
            norms = per_gate.flatten(2).norm(dim=2).clamp_min(1e-12)  # (L, N)
            per_gate = per_gate / norms.view(*norms.shape, *([1] * (per_gate.dim() - 2)))
        shape = (per_gate.shape[0], per_gate.shape[1]) + (1,) * (per_gate.dim() - 2)
        turn_on = (per_gate * closed.t().reshape(shape)).sum(0)
        keep_on = (per_gate * (~closed).t().reshape(shape)).sum(0)
        if self.deconflict:
            dot = (turn_on * keep_on).flatten(1).sum(1)
            keep_sq = keep_on.flatten(1).pow(2).sum(1).clamp_min(1e-24)
            conflict = (dot < 0).view(-1, *([1] * (x.dim() - 1)))
            turn_on = torch.where(conflict, turn_on - (dot / keep_sq).view_as(conflict.float()) * keep_on, turn_on)
        if self.keep_label and self.normalize:
            label_grad = label_grad / label_grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return turn_on + keep_on + label_grad, value.detach()

    @staticmethod
    def _per_gate_gradients(terms: Tensor, xg: Tensor, active: Tensor) -> Tensor:
        """(L, N, ...) gradient of each gate's term in the input, one backward per gate that has any active term."""
        grads = []
        for gate in range(terms.shape[1]):
            if bool(active[:, gate].any()):
                (g,) = torch.autograd.grad(terms[:, gate].sum(), xg, retain_graph=True)
            else:
                g = torch.zeros_like(xg)
            grads.append(g)
        return torch.stack(grads)

    # ----- the loop -----
    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        deployed = _gated(model)
        source = gradient_model if hasattr(gradient_model, "forward_with_gates") else deployed
        costs = torch.tensor(deployed.flop_profile(tuple(inputs.shape[1:])).residual, dtype=torch.float32,
                             device=inputs.device)
        costs = costs / costs.mean().clamp_min(1e-12)
        best = inputs.clone()
        with torch.no_grad():
            logits, trace = deployed.forward_with_gates(inputs)
        best_score = self.score(logits, trace, labels)
        best_sur = self.surrogate(logits, trace, costs, labels)
        for restart in range(self.restarts):
            todo = ~trace.decisions.all(1) if not self.keep_label else torch.ones_like(labels, dtype=torch.bool)
            todo &= ~self._all_open(deployed, best)
            if not bool(todo.any()):
                break
            idx = todo.nonzero().flatten()
            found, score, sur = self._attempt(deployed, source, inputs[idx], labels[idx], eps, costs,
                                              noise.rows(idx), restart, best_score[idx], best_sur[idx], best[idx])
            best[idx], best_score[idx], best_sur[idx] = found, score, sur
        return best

    @staticmethod
    def _all_open(model: Any, x: Tensor) -> Tensor:
        with torch.no_grad():
            return model.forward_with_gates(x)[1].decisions.all(1)

    def _attempt(self, deployed: Any, source: Any, x0: Tensor, labels: Tensor, eps: float, costs: Tensor,
                 noise: SampleNoise, restart: int, best_score: Tensor, best_sur: Tensor, best: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """One run from the clean input (or a random start): the best point per sample, its score and surrogate."""
        x = x0.clone()
        if self.random_start or restart > 0:
            x = self.clip(x0, self.distance.random_start(x0, eps, noise, f"compute/{eps!r}/{restart}"), eps)
        apgd, adam = self.schedule == "apgd", self.schedule == "adam"
        default_step = {"apgd": 2.0, "adam": 0.3, "fixed": 2.5 / self.steps}[self.schedule]
        initial = self.rel_stepsize if self.rel_stepsize is not None else default_step
        moment1, moment2 = torch.zeros_like(x0), torch.zeros_like(x0)
        step = torch.full((len(x0),), initial * eps, device=x0.device)
        checkpoints = set(apgd_checkpoints(self.steps)[1:]) if apgd else set()
        previous = x.clone()
        improved_since = torch.zeros(len(x0), device=x0.device)
        last_check, best_sur_at_check, step_at_check = 0, best_sur.clone(), step.clone()
        active = torch.arange(len(x0), device=x0.device)  # rows still attacked (early exit once all gates open)
        for k in range(self.steps):
            xa = x[active]
            grad, _ = self.direction(source, xa, labels[active], costs)
            view = (-1,) + (1,) * (x.dim() - 1)
            update = (self._adam_update(grad, k, active, moment1, moment2) if adam
                      else self.distance.ascent_direction(grad))
            z = self.clip(x0[active], xa + step[active].view(view) * update, eps)
            if apgd and k > 0:
                z = self.clip(x0[active], xa + 0.75 * (z - xa) + 0.25 * (xa - previous[active]), eps)
            previous[active] = xa
            x[active] = z
            with torch.no_grad():
                logits, trace = deployed.forward_with_gates(z)
            score = self.score(logits, trace, labels[active])
            sur = self.surrogate(logits, trace, costs, labels[active])
            better = (score > best_score[active]) | ((score == best_score[active]) & (sur > best_sur[active]))
            rows = active[better]
            best[rows], best_score[rows], best_sur[rows] = z[better], score[better], sur[better]
            improved_since[active] += better.float()
            if apgd and (k + 1) in checkpoints:
                interval = k + 1 - last_check
                stalled = (improved_since < 0.75 * interval) | (
                    (step == step_at_check) & (best_sur <= best_sur_at_check))
                step_at_check = step.clone()
                step = torch.where(stalled, step / 2, step)
                x = torch.where(stalled.view((-1,) + (1,) * (x.dim() - 1)), best, x)  # restart from the best point
                improved_since.zero_()
                last_check, best_sur_at_check = k + 1, best_sur.clone()
            if not self.keep_label and bool((all_open := trace.decisions.all(1)).any()):
                active = active[~all_open]
                if len(active) == 0:
                    break
        return best, best_score, best_sur

    def _adam_update(self, grad: Tensor, k: int, active: Tensor, moment1: Tensor, moment2: Tensor) -> Tensor:
        """Adam's normalised step at iteration ``k`` for the ``active`` rows (their moments updated in place)."""
        moment1[active] = 0.9 * moment1[active] + 0.1 * grad
        moment2[active] = 0.999 * moment2[active] + 0.001 * grad * grad
        ratio = (moment1[active] / (1 - 0.9 ** (k + 1))) / ((moment2[active] / (1 - 0.999 ** (k + 1))).sqrt() + 1e-12)
        # Linf: Adam's per-pixel step as it is; L2: its direction, scaled to the step length
        return ratio if self.distance.name == "linf" else self.distance.ascent_direction(ratio)

    def succeeded(self, model: Model, inputs: Tensor, clipped: Tensor, labels: Tensor) -> Tensor:
        deployed = _gated(model)
        with torch.no_grad():
            _, clean = deployed.forward_with_gates(inputs)
            logits, adv = deployed.forward_with_gates(clipped)
        success = adv.flops > clean.flops
        if self.keep_label:
            success &= logits.argmax(1) == labels
        return success

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "steps": self.steps, "goal": self.goal, "gate_loss": self.gate_loss}


class RandomNoise(Attack):
    """The control every compute (and accuracy) attack needs: random noise of the same norm, keyed per sample.

    Linf: each pixel moved by +-eps (a corner of the ball: the largest Linf noise); L2: a Gaussian direction scaled
    to eps. A compute attack that beats this by a wide margin is doing the work, not the perturbation. Success: more
    executed FLOPs than on the clean input (for a network without gates, a changed label).

    Args:
        distance: ``linf`` or ``l2``.
        draws: how many noise draws per sample; the one with the most executed FLOPs is kept, so more draws make a
            stronger control.
        seed: the key of each sample's draws.

    >>> from attacks import get_attack
    >>> get_attack("random-noise", draws=10).spec
    'random-noise:distance=linf,draws=10'
    """

    name = "random-noise"
    goal = "gates"

    def __init__(self, distance: str = "linf", draws: int = 1, seed: int = 0) -> None:
        super().__init__(seed)
        if draws < 1:
            raise ValueError("draws must be at least 1")
        self.distance = DISTANCES[distance]
        self.draws = draws

    def _noise(self, inputs: Tensor, eps: float, noise: SampleNoise, draw: int) -> Tensor:
        key = f"random-noise/{eps!r}/{draw}"
        if self.distance.name == "linf":
            return inputs + eps * noise.signs(key, inputs.shape[1:]).to(inputs)
        direction = noise.normal(key, inputs.shape[1:]).to(inputs)
        norms = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (inputs.dim() - 1)))
        return inputs + eps * direction / norms

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        """The draw with the most executed FLOPs (of ``draws``), so more draws make a stronger control."""
        best = self.clip(inputs, self._noise(inputs, eps, noise, 0), eps)
        if self.draws == 1 or not hasattr(model, "forward_with_gates"):
            return best
        with torch.no_grad():
            best_flops = model.forward_with_gates(best)[1].flops
            for draw in range(1, self.draws):
                x = self.clip(inputs, self._noise(inputs, eps, noise, draw), eps)
                flops = model.forward_with_gates(x)[1].flops
                better = flops > best_flops
                best[better], best_flops = x[better], torch.where(better, flops, best_flops)
        return best

    def succeeded(self, model: Model, inputs: Tensor, clipped: Tensor, labels: Tensor) -> Tensor:
        if not hasattr(model, "forward_with_gates"):
            with torch.no_grad():
                return model(clipped).argmax(1) != model(inputs).argmax(1)
        with torch.no_grad():
            return model.forward_with_gates(clipped)[1].flops > model.forward_with_gates(inputs)[1].flops

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "draws": self.draws, "goal": self.goal}
