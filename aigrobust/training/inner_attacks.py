"""The inner maximisation of adversarial training: ``perturb(forward, x, y, generator) -> x_adv``.

Training attacks differ from evaluation attacks in what they must not do: they never judge, keep a best iterate or
stop per sample (every image gets the same budget, so the cost of a step is fixed), and they run on the model in
training mode. They share the norm geometry (``LinfDistance``) with ``attacks.gradient``, and each one's update rule
is the evaluation attack's with a fixed start (tested against FGSM and PGD there).

Methods (settings are typed and range-checked; ``spec`` is canonical, every default filled in):

* ``n-fgsm`` (de Jorge et al., NeurIPS 2022): noise U(-k eps, k eps), one signed step of ``step`` (default eps) from
  there, no projection back to the eps-ball; only [0, 1] clipping.
* ``fgsm-rs`` (Wong et al., ICLR 2020): U(-eps, eps) start, one step of ``alpha`` eps (1.25), projected.
* ``pgd`` (Madry et al., ICLR 2018): U(-eps, eps) start, ``steps`` projected steps of ``step`` (default eps/4).
* ``trades`` (Zhang et al., ICML 2019): the inner loss is KL(f(x_adv) || f(x)), start 0.001 N(0, 1); the training
  loss is CE(f(x), y) + beta KL(f(x_adv) || f(x)).

``compute=W`` (gated networks only) adds W times a compute objective to every method's inner loss: each gate's
log-odds of 'on' (capped, weighted by its block's FLOPs), so the adversarial batch also tries to open gates; the
training loss then penalises per-sample execution above the target rate on those inputs (``aigrobust.training.loop``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aigrobust.errors import AigrobustError
from aigrobust.evaluation.spec import EPSILON_RESOLUTION
from aigrobust.registry import Registry
from aigrobust.specs import finite_number, format_value, parse_value, positive_int, require, split_spec
from attacks.compute_attack import gate_log_odds
from attacks.distances import LinfDistance

# forward(x) -> (logits, p_on or None): p_on (N, L) differentiable gate probabilities of a gated network
Forward = Callable[[Tensor], tuple[Tensor, "Tensor | None"]]

COMPUTE_MARGIN_CAP = 2.0  # a gate this far past 'on' (in log-odds) stops pulling the inner attack
_LINF = LinfDistance()


class InnerSpecError(AigrobustError, ValueError):
    """A training attack setting that is unknown, of the wrong type or out of range; the message is one line."""


def _clip(x: Tensor, candidate: Tensor, eps: float) -> Tensor:
    """Into the eps-ball around ``x`` and the [0, 1] image range (the evaluation attacks' ``clip``)."""
    return _LINF.project(x, candidate, eps).clamp(0, 1)


def _random_start(x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
    """U(-eps, eps) around ``x``, in the ball and [0, 1] (FGSM-RS's and PGD's start)."""
    return _clip(x, x + _uniform(tuple(x.shape), -eps, eps, generator).to(x), eps)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def kl_to(target_probs: Tensor, logits: Tensor, reduction: str) -> Tensor:
    """KL(target || softmax(logits)), as ``F.kl_div`` computes it from the logits (TRADES, distillation)."""
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target_probs, reduction=reduction)


@dataclass(frozen=True)
class InnerAttack(abc.ABC):
    """Settings shared by every method: the Linf radius and the weight of the compute objective."""

    eps: float = 8 / 255
    compute: float = 0.0

    method = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # whole numbers given for real-valued settings read as floats: one canonical spec
            value = getattr(self, f.name)
            if "float" in str(f.type) and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        if not (isinstance(self.eps, (int, float)) and EPSILON_RESOLUTION < self.eps <= 1):
            # the evaluation's own floor: a radius it would take for 0 is no adversarial training either
            raise InnerSpecError(f"{self.method}: eps takes a number above {EPSILON_RESOLUTION:g} and at most 1, got "
                                 f"{self.eps!r}")
        if not (isinstance(self.compute, (int, float)) and math.isfinite(self.compute) and self.compute >= 0):
            raise InnerSpecError(f"{self.method}: compute takes a number >= 0, got {self.compute!r}")

    @property
    def spec(self) -> str:
        """'n-fgsm:eps=0.031372549019607836,compute=0.0,k=2.0,step=auto': every setting, defaults filled in."""
        return self.method + ":" + ",".join(f"{f.name}={format_value(getattr(self, f.name))}" for f in fields(self))

    @property
    def needs_clean_logits(self) -> bool:
        """Whether the training loss also needs the clean forward (TRADES, distillation)."""
        return False

    @property
    def teacher_source(self) -> str | None:
        """The model whose outputs on the clean batch the method learns from (a registered name with shipped weights
        or a weights file); None: the labels alone."""
        return None

    def inner_loss(self, logits: Tensor, p_on: Tensor | None, labels: Tensor, costs: Tensor | None,
                   clean_probs: Tensor | None = None) -> Tensor:
        """The summed objective the inner attack ascends: cross-entropy, plus the compute objective where asked."""
        value = F.cross_entropy(logits.float(), labels, reduction="sum")
        return value + self.compute_objective(p_on, costs)

    def compute_objective(self, p_on: Tensor | None, costs: Tensor | None) -> Tensor:
        """``compute`` times each gate's capped log-odds of 'on', weighted by its block's relative FLOPs."""
        if self.compute == 0 or p_on is None or costs is None:
            return torch.zeros(())
        margins = gate_log_odds(p_on).clamp(max=COMPUTE_MARGIN_CAP)
        return self.compute * (margins * costs).sum()

    def gradient(self, forward: Forward, x: Tensor, labels: Tensor, costs: Tensor | None,
                 clean_probs: Tensor | None = None) -> Tensor:
        """d inner_loss / d x at ``x``."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, p_on = forward(xg)
            value = self.inner_loss(logits, p_on, labels, costs, clean_probs)
            (grad,) = torch.autograd.grad(value, xg)
        return grad

    @abc.abstractmethod
    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        """The adversarial batch (detached, in [0, 1]); noise from ``generator`` (CPU), drawn in a fixed order;
        ``teacher_probs``: the teacher's class probabilities on ``x`` where the method has one."""

    def training_loss(self, logits_adv: Tensor, labels: Tensor, logits_clean: Tensor | None = None,
                      teacher_probs: Tensor | None = None) -> Tensor:
        """The classification part of the training loss on the adversarial batch (mean over the batch)."""
        return F.cross_entropy(logits_adv.float(), labels)


@dataclass(frozen=True)
class NFGSM(InnerAttack):
    """N-FGSM (de Jorge et al., NeurIPS 2022): strong noise, one step, no projection (its perturbations reach (k + 1)
    eps in Linf), at the cost of one FGSM step.

    Args:
        eps: the Linf radius the network is trained against.
        compute: the weight of the compute objective added to the inner loss (gated networks only; 0: none).
        k: the noise's half-width in units of eps.
        step: the signed step (default: eps).

    >>> NFGSM(k=1.0).spec
    'n-fgsm:eps=0.03137254901960784,compute=0.0,k=1.0,step=auto'
    """

    k: float = 2.0
    step: float | None = None  # None: eps

    method = "n-fgsm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_setting(self.method, "k", self.k, lambda v: v >= 0, "a number >= 0")
        check_setting(self.method, "step", self.step, lambda v: v is None or 0 < v <= 1, "a number in (0, 1]")

    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        width = self.k * self.eps
        noise = _uniform(tuple(x.shape), -width, width, generator).to(x)
        start = (x + noise).clamp(0, 1)
        grad = self.gradient(forward, start, labels, costs)
        step = self.step if self.step is not None else self.eps
        return (start + step * _LINF.ascent_direction(grad)).clamp(0, 1).detach()


@dataclass(frozen=True)
class FGSMRS(InnerAttack):
    """FGSM with a random start (Wong et al., ICLR 2020, "fast is better than free"): start U(-eps, eps), one step of
    alpha eps, projected.

    Args:
        eps: the Linf radius the network is trained against.
        compute: the weight of the compute objective added to the inner loss (gated networks only; 0: none).
        alpha: the step in units of eps.

    >>> FGSMRS().spec
    'fgsm-rs:eps=0.03137254901960784,compute=0.0,alpha=1.25'
    """

    alpha: float = 1.25

    method = "fgsm-rs"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_setting(self.method, "alpha", self.alpha, lambda v: 0 < v <= 4, "a number in (0, 4]")

    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        start = _random_start(x, self.eps, generator)
        grad = self.gradient(forward, start, labels, costs)
        return _clip(x, start + self.alpha * self.eps * _LINF.ascent_direction(grad), self.eps).detach()


@dataclass(frozen=True)
class PGDTraining(InnerAttack):
    """Madry et al.'s PGD adversarial training: random start in the ball, ``steps`` projected signed steps.

    Args:
        eps: the Linf radius the network is trained against.
        compute: the weight of the compute objective added to the inner loss (gated networks only; 0: none).
        steps: projected steps.
        step: the signed step (default eps/4).

    >>> PGDTraining(steps=7).spec
    'pgd:eps=0.03137254901960784,compute=0.0,steps=7,step=auto'
    """

    steps: int = 10
    step: float | None = None

    method = "pgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_setting(self.method, "steps", self.steps, positive_int, "a positive integer")
        check_setting(self.method, "step", self.step, lambda v: v is None or 0 < v <= 1, "a number in (0, 1]")

    def step_size(self) -> float:
        """The absolute step."""
        return self.step if self.step is not None else self.eps / 4

    def start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The random start: U(-eps, eps) around ``x``, in [0, 1]."""
        return _random_start(x, self.eps, generator)

    def iterate(self, forward: Forward, x: Tensor, start: Tensor, labels: Tensor, costs: Tensor | None,
                clean_probs: Tensor | None = None) -> Tensor:
        """``steps`` projected ascent steps from ``start``."""
        current = start
        for _ in range(self.steps):
            grad = self.gradient(forward, current, labels, costs, clean_probs)
            current = _clip(x, current + self.step_size() * _LINF.ascent_direction(grad), self.eps)
        return current.detach()

    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        return self.iterate(forward, x, self.start(x, generator), labels, costs)


@dataclass(frozen=True)
class TRADES(PGDTraining):
    """TRADES (Zhang et al., ICML 2019): the inner attack maximises KL(f(x_adv) || f(x)); the loss adds beta times that
    KL to the clean cross-entropy.

    Args:
        eps: the Linf radius the network is trained against.
        compute: the weight of the compute objective added to the inner loss (gated networks only; 0: none).
        steps: projected steps of the inner attack.
        step: the signed step (default eps/4).
        beta: the weight of the robustness term (6 in the paper).

    >>> TRADES(beta=3).spec
    'trades:eps=0.03137254901960784,compute=0.0,steps=10,step=auto,beta=3.0'
    """

    beta: float = 6.0

    method = "trades"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_setting(self.method, "beta", self.beta, lambda v: 0 < v <= 100, "a number in (0, 100]")

    @property
    def needs_clean_logits(self) -> bool:
        return True

    def inner_loss(self, logits: Tensor, p_on: Tensor | None, labels: Tensor, costs: Tensor | None,
                   clean_probs: Tensor | None = None) -> Tensor:
        assert clean_probs is not None
        return kl_to(clean_probs, logits, "sum") + self.compute_objective(p_on, costs)

    def perturb(self, forward: Forward, x: Tensor, labels: Tensor, generator: torch.Generator,
                costs: Tensor | None = None, teacher_probs: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            clean_probs = F.softmax(forward(x)[0].float(), dim=1)
        start = (x + 0.001 * torch.randn(tuple(x.shape), generator=generator).to(x)).clamp(0, 1)
        return self.iterate(forward, x, start, labels, costs, clean_probs)

    def training_loss(self, logits_adv: Tensor, labels: Tensor, logits_clean: Tensor | None = None,
                      teacher_probs: Tensor | None = None) -> Tensor:
        assert logits_clean is not None
        kl = kl_to(F.softmax(logits_clean.float(), dim=1), logits_adv, "batchmean")
        return F.cross_entropy(logits_clean.float(), labels) + self.beta * kl


INNER_ATTACKS: Registry[type[InnerAttack]] = Registry("adversarial training method")


def register_training_method(cls: type[InnerAttack]) -> type[InnerAttack]:
    """Add an adversarial-training method under ``cls.method``: the one place ``--adversarial``, its canonical
    spec in the checkpoint's recipe and the error messages read. Usable as a class decorator.

    Args:
        cls: a frozen dataclass subclass of :class:`InnerAttack` (its fields are the settings) with a new ``method``.

    Returns:
        ``cls`` unchanged.

    >>> sorted(INNER_ATTACKS)
    ['fgsm-rs', 'n-fgsm', 'pgd', 'rslad', 'trades']
    """
    INNER_ATTACKS.add(cls.method, cls)
    return cls


for _method in (NFGSM, FGSMRS, PGDTraining, TRADES):
    register_training_method(_method)


def check_setting(method: str, key: str, value: Any, rule: Callable[[Any], bool], wording: str) -> None:
    """A numeric setting (None where it is 'auto') that passes ``rule``, else one line naming it."""

    def passes(v: Any) -> bool:
        if v is not None and not finite_number(v):
            return False
        try:
            return bool(rule(v))
        except TypeError:  # 'auto' for a setting that has no automatic value
            return False

    require(method, key, value, (passes, wording), InnerSpecError)


def inner_attack_from_spec(spec: str) -> InnerAttack:
    """An adversarial-training method from its spec, as ``aigrobust train --adversarial`` takes it.

    Args:
        spec: ``'n-fgsm'``, ``'pgd:eps=8/255,steps=7'``, ``'trades:beta=6'``; settings as ``key=value`` (fractions
            allowed, ``auto`` for a derived default); a canonical spec parses back to the same method.

    Returns:
        The :class:`InnerAttack`; a bad spec raises ``InnerSpecError`` naming it.

    >>> inner_attack_from_spec("pgd:eps=8/255,steps=7").spec
    'pgd:eps=0.03137254901960784,compute=0.0,steps=7,step=auto'
    """
    parts = split_spec(spec, "training", InnerSpecError)
    method = parts.name
    if method not in INNER_ATTACKS:
        raise InnerSpecError(f"unknown adversarial training method {method!r}; known: {', '.join(INNER_ATTACKS)}")
    cls = INNER_ATTACKS[method]
    known = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, text in parts.settings.items():
        if key not in known:
            raise InnerSpecError(f"{method} has no setting {key!r}; it takes {', '.join(known)}")
        value = parse_value(text)
        takes_text = "str" in str(next(f.type for f in fields(cls) if f.name == key))
        if isinstance(value, bool) or (isinstance(value, str) and not takes_text):
            raise InnerSpecError(f"{method}: {key}={text!r} is not a number")
        if takes_text:
            value = text.strip()
        kwargs[key] = value
    if kwargs.get("steps") is not None and isinstance(kwargs["steps"], float):
        raise InnerSpecError(f"{method}: steps takes a positive integer, got {kwargs['steps']!r}")
    for key in ("eps", "compute"):
        if kwargs.get(key, 0) is None:
            raise InnerSpecError(f"{method}: {key} cannot be auto")
    if "eps" in kwargs:
        kwargs["eps"] = float(kwargs["eps"])
    return cls(**kwargs)


__all__ = ["FGSMRS", "INNER_ATTACKS", "InnerAttack", "InnerSpecError", "NFGSM", "PGDTraining", "TRADES",
           "inner_attack_from_spec", "register_training_method"]
