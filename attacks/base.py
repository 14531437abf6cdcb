"""Attack API in the spirit of foolbox: ``attack(model, inputs, labels, epsilons=[...]) -> AttackResult``.

Inputs and outputs are [0, 1] images; normalisation lives in the model. ``model`` is any callable returning logits.
A separate ``gradient_model`` (same inputs, same logits up to the gradient path) lets a caller choose how gradients
pass non-differentiable parts (for gated networks: exact, straight-through or soft gates) while success is always
judged on ``model`` itself. This package depends on torch only (foolbox for the bridge).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.distances import DISTANCES, Distance
from attacks.noise import SampleNoise

Model = Callable[[Tensor], Tensor]
EPS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AttackResult:
    """raw and clipped adversarials (K, N, ...) and success (K, N): clipped is misclassified (or goal reached).

    ``success`` is judged on first access (one forward pass per epsilon) and cached, so a caller that classifies the
    adversarials anyway (the evaluation pipeline) does not pay for it twice.
    """

    epsilons: tuple[float, ...]
    raw: Tensor
    clipped: Tensor
    judge: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)
    queries: int = 0  # model evaluations used (forward passes per sample), where the attack counts them
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def judged(cls, epsilons: tuple[float, ...], raw: Tensor, clipped: Tensor, success: Tensor) -> AttackResult:
        """A result whose success matrix is already known."""
        result = cls(epsilons, raw, clipped)
        result._cache["success"] = success
        return result

    @property
    def success(self) -> Tensor:
        """(K, N) bool."""
        if "success" not in self._cache:
            if self.judge is None:
                raise ValueError("this result has no success judge")
            self._cache["success"] = torch.stack([self.judge(c) for c in self.clipped])
        return self._cache["success"]


def validate_epsilons(epsilons: Sequence[float]) -> tuple[float, ...]:
    """Epsilons as floats in [0, 1]; anything else is a ValueError with the offending value."""
    if len(epsilons) == 0:
        raise ValueError("give at least one epsilon")
    out = []
    for eps in epsilons:
        value = float(eps)
        if not (0.0 <= value <= 1.0):  # also rejects NaN
            raise ValueError(f"epsilon {eps!r} is outside [0, 1] (pixel units)")
        out.append(value)
    return tuple(out)


def validate_inputs(inputs: Tensor, labels: Tensor) -> None:
    """Inputs a float batch of finite [0, 1] pixels (normalisation lives in the model), labels one integer class
    index per input; anything else is a ValueError, since the [0, 1] clip would otherwise quietly rewrite it."""
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
        raise ValueError("inputs must be a float tensor (N, ...) of [0, 1] pixels")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs hold NaN or infinite values")
    if len(inputs) and (float(inputs.min()) < 0.0 or float(inputs.max()) > 1.0):
        raise ValueError(f"inputs must lie in [0, 1] (normalisation happens inside the model), got "
                         f"{float(inputs.min()):.4g}..{float(inputs.max()):.4g}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError("labels must be a 1-D integer tensor of class indices")
    if len(labels) != len(inputs):
        raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")


@torch.no_grad()
def is_misclassified(model: Model, x: Tensor, labels: Tensor, batch_size: int = 1024) -> Tensor:
    """Boolean (N,) mask: the model's prediction on x differs from the label."""
    preds = [model(chunk).argmax(1) for chunk in x.split(batch_size)]
    return torch.cat(preds) != labels


def loss_gradient(model: Model, x: Tensor, labels: Tensor, loss: str = "ce") -> tuple[Tensor, Tensor]:
    """Gradient of the per-sample loss (summed, so each sample's gradient is its own) w.r.t. x, and the logits."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss == "ce":
            value = F.cross_entropy(logits.float(), labels, reduction="sum")
        elif loss == "margin":
            value = -margin(logits.float(), labels).sum()
        else:
            raise ValueError(f"unknown loss {loss!r}")
        (grad,) = torch.autograd.grad(value, x)
    return grad.detach(), logits.detach()


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """logit of the true class minus the largest other logit (negative: misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels[:, None], float("-inf"))
    return true - other.max(1).values


def keep_first_success(restarts: int, inputs: Tensor,
                       attempt: Callable[[Tensor, int], tuple[Tensor, Tensor | None]]) -> Tensor:
    """Restarts that attack only the samples not yet fooled: ``attempt(indices, restart)`` returns the adversarials
    of those samples and their success (None when there is a single attempt and success need not be judged here).
    The first attempt's point is kept for every sample; a later attempt replaces it only where it succeeds."""
    best = inputs.clone()
    found = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
    for restart in range(restarts):
        todo = (~found).nonzero().squeeze(1)
        if todo.numel() == 0:
            break  # every sample already fooled: restarts cannot change the outcome
        adv, success = attempt(todo, restart)
        if success is None:
            best[todo] = adv
            continue
        keep = success if restart > 0 else torch.ones_like(success)
        best[todo[keep]] = adv[keep]
        found[todo[success]] = True
    return best


# targeted runs share one batch while (samples standing) x (runs) stays within this: a GPU wants full batches; a CPU
# computes input gradients fastest at about a hundred rows (resnet20, 2 threads: 1470 rows/s at 80 rows, 1300 at
# 256, 1160 at 720), where a batch's features still fit its caches (benchmarks/robust_suite.py)
TARGET_BATCH_ROWS = 256
TARGET_BATCH_ROWS_CPU = 96


def over_target_classes(model: Model, inputs: Tensor, labels: Tensor, n_target_classes: int, restarts: int,
                        attempt: Callable[[Tensor, Tensor, list[str]], tuple[Tensor, Tensor]]) -> Tensor:
    """Targeted runs as AutoAttack chains them: toward the most likely wrong class of the clean input, then the next,
    up to ``n_target_classes``, ``restarts`` runs each, every run on the samples no earlier run fooled; the first
    run's point stands where no run fools.

    ``attempt(rows, targets, runs)`` attacks ``inputs[rows]`` toward ``targets`` and returns the points and whether
    each fools the model; ``runs[i]`` names row i's run (``"rank/restart"``, for its random draws). Where few samples
    stand, several runs go into one batch (rows repeat samples) and are read back in the chain's order: each run of
    a sample depends only on that sample, so the outcome is the chain's, at the cost of a few runs a sample would
    have skipped, and small batches no longer leave the hardware idle."""
    with torch.no_grad():
        ranking = model(inputs).argsort(1, descending=True)
    chain = [(rank, restart) for rank in range(1, min(n_target_classes, ranking.shape[1] - 1) + 1)
             for restart in range(restarts)]
    best = inputs.clone()
    found = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
    done = 0
    while done < len(chain):
        todo = (~found).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        n = todo.numel()
        rows = min(TARGET_BATCH_ROWS, TARGET_BATCH_ROWS_CPU) if inputs.device.type == "cpu" else TARGET_BATCH_ROWS
        group = chain[done:done + max(1, rows // n)]
        # the rank-th most likely class, skipping the true one where the clean input is right
        right = ranking[todo, 0] == labels[todo]
        targets = torch.cat([torch.where(right, ranking[todo, rank], ranking[todo, rank - 1]) for rank, _ in group])
        runs = [f"{rank}/{restart}" for rank, restart in group for _ in range(n)]
        adv, fooled = attempt(todo.repeat(len(group)), targets, runs)
        for j in range(len(group)):  # in the chain's order: a sample takes the first run that fools it
            run_adv, run_fooled = adv[j * n:(j + 1) * n], fooled[j * n:(j + 1) * n]
            newly = run_fooled & ~found[todo]
            keep = torch.ones_like(newly) if done + j == 0 else newly
            best[todo[keep]] = run_adv[keep]
            found[todo[newly]] = True
        done += len(group)
    return best


def judges_with_gradient_logits(model: Model, gradient_model: Model | None) -> bool:
    """True when the gradient pass runs the deployed model itself (no defense, exact gate gradients, no randomness:
    the caller passes the same object), so the logits of that pass can judge success without another forward."""
    return gradient_model is None or gradient_model is model


class FirstSuccess:
    """Per sample, the first iterate of an iterative attack that fools the deployed model.

    ``update`` judges the working samples' current iterates; with ``leave=True`` a fooled sample leaves the working
    batch (the attack compacts its own per-sample state with the returned mask), so later steps cost nothing for
    it. ``finish`` fills in the samples never fooled with the point the attack ends on.
    """

    def __init__(self, model: Model, gradient_model: Model, inputs: Tensor, leave: bool = True) -> None:
        self.model = model
        self.from_gradient_pass = judges_with_gradient_logits(model, gradient_model)
        self.leave = leave
        self.adversarial = inputs.clone()
        self.fooled = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
        self.working = torch.arange(len(inputs), device=inputs.device)

    def update(self, x: Tensor, labels: Tensor, gradient_logits: Tensor) -> Tensor:
        """Judge the working samples at ``x`` (``gradient_logits``: the gradient pass's logits at ``x``); returns the
        mask of the samples that stay in the working batch (all of them when ``leave`` is off)."""
        if self.from_gradient_pass:
            hit = gradient_logits.argmax(1) != labels
        else:
            hit = is_misclassified(self.model, x, labels)
        new = hit & ~self.fooled[self.working]
        self.adversarial[self.working[new]] = x[new]
        self.fooled[self.working[new]] = True
        if not self.leave:
            return torch.ones_like(hit)
        self.working = self.working[~hit]
        return ~hit

    @property
    def done(self) -> bool:
        """No sample left to attack."""
        return self.working.numel() == 0

    def finish(self, final: Tensor, labels: Tensor | None = None) -> Tensor:
        """The adversarials: the first fooling point where one was found, ``final`` (one row per working sample) for
        the rest. With ``labels``, the final points are judged too, so :attr:`fooled` is complete."""
        rest = self.working if self.leave else (~self.fooled).nonzero().squeeze(1)
        last = final if self.leave else final[rest]
        self.adversarial[rest] = last
        if labels is not None and rest.numel():
            self.fooled[rest] = is_misclassified(self.model, last, labels if self.leave else labels[rest])
        return self.adversarial


def keep_rows(keep: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Per-sample tensors restricted to the rows in ``keep`` (a bool mask); unchanged when every row stays."""
    if bool(keep.all()):
        return tensors
    return tuple(t[keep] for t in tensors)


def select_rows(state: dict[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
    """Every per-sample tensor of an attack's state, restricted to the rows in ``keep`` (a bool mask)."""
    return dict(zip(state, keep_rows(keep, *state.values())))


class Attack(abc.ABC):
    """An attack over a sweep of epsilons, foolbox's way: ``attack(model, inputs, labels, epsilons)``.

    Inputs are images in [0, 1]; any PyTorch classifier goes in (normalisation inside the model). Calling it returns
    an ``AttackResult``: the raw and the clipped adversarials per epsilon, and per-sample success judged on the
    clipped ones. Subclasses implement :meth:`run_one` (one epsilon) or override ``__call__``.

    Args:
        seed: the key of the attack's random draws; each sample draws by (seed, its sample id), so its adversarial
            does not depend on the batch it shares.

    >>> import torch
    >>> from attacks import FGSM
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    >>> result = FGSM()(model, torch.rand(4, 3, 8, 8), torch.arange(4), [2 / 255, 8 / 255])
    >>> tuple(result.clipped.shape), tuple(result.success.shape)
    ((2, 4, 3, 8, 8), (2, 4))
    """

    name: str = "attack"
    distance: Distance = DISTANCES["linf"]
    goal: str = "misclassify"  # or "gates" for attacks aimed at the gates

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.spec = self.name  # the canonical spec, set by attacks.get_attack (every setting, defaults filled in)

    def __call__(self, model: Model, inputs: Tensor, labels: Tensor, epsilons: Sequence[float],
                 gradient_model: Model | None = None, sample_ids: Tensor | Sequence[int] | None = None
                 ) -> AttackResult:
        """Attack ``inputs`` at every epsilon; ``gradient_model`` (default ``model``) supplies gradients.

        Random draws are keyed by (seed, sample id): ``sample_ids`` (default 0..N-1) names each row, so a sample gets
        the same adversarial whichever batch it is attacked in."""
        eps_values = validate_epsilons(epsilons)
        validate_inputs(inputs, labels)
        grad_model = gradient_model or model
        ids = torch.arange(len(inputs)) if sample_ids is None else torch.as_tensor(sample_ids, dtype=torch.int64)
        if len(ids) != len(inputs):
            raise ValueError(f"{len(ids)} sample ids for {len(inputs)} inputs")
        noise = SampleNoise(self.seed, ids)
        already = self.already_adversarial(model, inputs, labels)
        raws, clippeds = [], []
        for eps in eps_values:
            if eps == 0.0:
                raw = inputs.clone()
            else:
                raw = self.run_one(model, grad_model, inputs, labels, eps, noise)
                raw[already] = inputs[already]
            raws.append(raw)
            clippeds.append(self.clip(inputs, raw, eps))
        return AttackResult(eps_values, torch.stack(raws), torch.stack(clippeds), judge=self.judge(model, inputs, labels))

    def judge(self, model: Model, inputs: Tensor, labels: Tensor) -> Callable[[Tensor], Tensor]:
        """The success test of a clipped adversarial batch (bound to this model, inputs and labels)."""
        return lambda clipped: self.succeeded(model, inputs, clipped, labels)

    def already_adversarial(self, model: Model, inputs: Tensor, labels: Tensor) -> Tensor:
        """Samples the clean input already fools: they stay at the clean input (AutoAttack's convention), so an
        attack can never turn a mistake into a correct answer."""
        if self.goal != "misclassify":
            return torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
        return is_misclassified(model, inputs, labels)

    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        """The raw adversarial for one epsilon; random draws come from ``noise`` (one row per input)."""
        raise NotImplementedError

    def clip(self, inputs: Tensor, raw: Tensor, eps: float) -> Tensor:
        """Project into the epsilon ball and the [0, 1] box."""
        return self.distance.project(inputs, raw, eps).clamp(0.0, 1.0)

    def succeeded(self, model: Model, inputs: Tensor, clipped: Tensor, labels: Tensor) -> Tensor:
        """Per-sample success on the clipped adversarial."""
        return is_misclassified(model, clipped, labels)

    def describe(self) -> dict[str, object]:
        """Name and settings, for the records."""
        return {"attack": self.name, "distance": self.distance.name}
