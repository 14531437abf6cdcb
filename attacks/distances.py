"""The threat models, foolbox's way: one small class per norm (projection onto the epsilon ball, steepest-ascent
direction, random start, norm), shared by every attack through ``DISTANCES``."""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from attacks.noise import SampleNoise


class Distance(abc.ABC):
    """A threat model: projection onto the epsilon ball, steepest-ascent direction, random start."""

    name: str

    @abc.abstractmethod
    def project(self, x0: Tensor, x: Tensor, eps: float) -> Tensor:
        """Nearest point of the eps-ball around x0 (before clipping to [0, 1])."""

    @abc.abstractmethod
    def ascent_direction(self, grad: Tensor) -> Tensor:
        """The unit-norm step that increases the loss most to first order."""

    @abc.abstractmethod
    def random_start(self, x0: Tensor, eps: float, noise: SampleNoise, key: str) -> Tensor:
        """A random point of the eps-ball around each sample, drawn from that sample's own noise under ``key``."""

    @abc.abstractmethod
    def norm(self, delta: Tensor) -> Tensor:
        """Per-sample norm (N,)."""


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


class LinfDistance(Distance):
    """L-infinity ball."""

    name = "linf"

    def project(self, x0: Tensor, x: Tensor, eps: float) -> Tensor:
        return x0 + (x - x0).clamp(-eps, eps)

    def ascent_direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def random_start(self, x0: Tensor, eps: float, noise: SampleNoise, key: str) -> Tensor:
        return x0 + eps * (noise.uniform(key, x0.shape[1:]).to(x0) * 2 - 1)

    def norm(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).abs().amax(1)


class L2Distance(Distance):
    """L2 ball."""

    name = "l2"

    def project(self, x0: Tensor, x: Tensor, eps: float) -> Tensor:
        delta = x - x0
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = torch.clamp(eps / norms, max=1.0)
        return x0 + delta * _view(factor, delta)

    def ascent_direction(self, grad: Tensor) -> Tensor:
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / _view(norms, grad)

    def random_start(self, x0: Tensor, eps: float, noise: SampleNoise, key: str) -> Tensor:
        # uniform in the ball: direction from a Gaussian, radius eps * u^(1/d)
        g = noise.normal(key + "/direction", x0.shape[1:]).to(x0)
        d = g[0].numel()
        radius = eps * noise.uniform(key + "/radius", ()).to(x0) ** (1.0 / d)
        return x0 + self.ascent_direction(g) * _view(radius, x0)

    def norm(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).norm(dim=1)


DISTANCES: dict[str, Distance] = {"linf": LinfDistance(), "l2": L2Distance()}
