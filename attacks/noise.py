"""Random numbers keyed by (seed, sample id, draw), so a sample's random start or Square proposal is the same
whatever batch it shares, whatever its position in it and whichever samples left the batch before.

A counter-based generator: each number is the splitmix64 hash of (seed, sample id, draw key, position), computed
with int64 tensor arithmetic (which wraps), so it is the same on every machine and device and needs no state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aigrobust.randomness import key_hash, splitmix64, uniform_from_bits


class SampleNoise:
    """Per-sample random draws: row i of every draw depends only on (seed, ``sample_ids[i]``, key)."""

    def __init__(self, seed: int, sample_ids: Tensor | Sequence[int]) -> None:
        self.seed = int(seed)
        self.sample_ids = torch.as_tensor(sample_ids, dtype=torch.int64).cpu().reshape(-1)
        self._base = splitmix64(splitmix64(self.sample_ids) ^ splitmix64(torch.tensor(self.seed, dtype=torch.int64)))

    def __len__(self) -> int:
        return len(self.sample_ids)

    def rows(self, index: Tensor) -> SampleNoise:
        """The noise of a subset of the samples (a bool mask or indices), as attacks compact their batch."""
        return SampleNoise(self.seed, self.sample_ids[index.cpu()])

    def _bits(self, key: str, count: int) -> Tensor:
        stream = splitmix64(self._base ^ key_hash(key))
        return splitmix64(stream[:, None] + torch.arange(count, dtype=torch.int64)[None, :])

    def uniform(self, key: str, shape: Sequence[int]) -> Tensor:
        """(N, *shape) float32 in [0, 1), 24 random bits each."""
        count = int(torch.tensor(shape).prod()) if len(shape) else 1
        return uniform_from_bits(self._bits(key, count)).reshape(len(self), *shape)

    def normal(self, key: str, shape: Sequence[int]) -> Tensor:
        """(N, *shape) standard normal float32 (Box-Muller)."""
        u1 = self.uniform(key + "/1", shape).clamp_min(2.0 ** -24)
        u2 = self.uniform(key + "/2", shape)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)

    def signs(self, key: str, shape: Sequence[int]) -> Tensor:
        """(N, *shape) float32 of -1 and +1."""
        return (self.uniform(key, shape) < 0.5).to(torch.float32) * 2 - 1

    def integers(self, key: str, high: int) -> Tensor:
        """(N,) int64 uniform in [0, high)."""
        return (self.uniform(key, ()) * high).long().clamp_max(high - 1)
