"""Square attack (Andriushchenko et al., ECCV 2020): score-based black-box L-infinity attack.

It needs only the model's logits, so it is the gradient-free check: if it beats white-box attacks, the white-box
gradients were masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attacks.base import Attack, Model, margin
from attacks.distances import DISTANCES
from attacks.noise import SampleNoise


def square_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """The share of pixels a square covers at ``iteration``: p_init halved at the paper's schedule points."""
    it = int(iteration / n_queries * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                           (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


class SquareAttack(Attack):
    """Square attack (Andriushchenko et al., ECCV 2020): random square updates of +-eps per channel, accepted when the
    margin loss drops; no gradient, so gradient masking does not stop it. Stops per sample on success.

    Args:
        n_queries: the query budget per sample (AutoAttack: 5000).
        p_init: the initial fraction of the image a square covers; it shrinks on Square's schedule.
        seed: the key of each sample's squares and signs.

    >>> from attacks import get_attack
    >>> get_attack("square", n_queries=5000).spec
    'square:n_queries=5000,p_init=0.8'
    """

    name = "square"

    def __init__(self, n_queries: int = 1000, p_init: float = 0.8, seed: int = 0) -> None:
        super().__init__(seed)
        self.n_queries = n_queries
        self.p_init = p_init
        self.distance = DISTANCES["linf"]

    @torch.no_grad()
    def run_one(self, model: Model, gradient_model: Model, inputs: Tensor, labels: Tensor, eps: float,
                noise: SampleNoise) -> Tensor:
        n, c, h, w = inputs.shape
        # vertical stripes of +-eps to start; every draw is the sample's own (its window, its signs)
        x = (inputs + eps * noise.signs(f"stripes/{eps!r}", (c, 1, w)).to(inputs)).clamp(0, 1)
        best_margin = margin(model(x).float(), labels)
        rows = torch.arange(h, device=inputs.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=inputs.device).view(1, 1, 1, w)
        for i in range(1, self.n_queries):
            todo = (best_margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x0, x_best, draws = inputs[todo], x[todo], noise.rows(todo)
            side = max(int(round(math.sqrt(self.square_share(i) * h * w))), 1)
            side = min(side, h - 1, w - 1)
            top = draws.integers(f"top/{eps!r}/{i}", h - side + 1).to(inputs.device).view(-1, 1, 1, 1)
            left = draws.integers(f"left/{eps!r}/{i}", w - side + 1).to(inputs.device).view(-1, 1, 1, 1)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (n, 1, h, w)
            new = draws.signs(f"colour/{eps!r}/{i}", (c, 1, 1)).to(inputs) * eps
            # a proposal identical to the current window wastes a query: flip its signs instead
            current = torch.where(window, x_best, torch.zeros_like(x_best))
            proposed = torch.where(window, (x0 + new).clamp(0, 1), torch.zeros_like(x_best))
            same = (proposed - current).abs().flatten(1).amax(1) < 1e-7
            new[same] = -new[same]
            x_new = torch.where(window, x0 + new, x_best).clamp(0, 1)
            new_margin = margin(model(x_new).float(), labels[todo])
            better = new_margin < best_margin[todo]
            x[todo[better]] = x_new[better]
            best_margin[todo[better]] = new_margin[better]
        return x

    def square_share(self, iteration: int) -> float:
        """Share of the image the square covers at ``iteration``."""
        return square_fraction(self.p_init, iteration, self.n_queries)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "n_queries": self.n_queries, "p_init": self.p_init}
