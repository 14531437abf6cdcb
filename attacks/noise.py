"""Random numbers keyed by (seed, sample id, draw), so a sample's random start or Square proposal is the same
whatever batch it shares, whatever its position in it and whichever samples left the batch before.

A counter-based generator: each number is the splitmix64 hash of (seed, sample id, draw key, position), computed
with int64 tensor arithmetic (which wraps), so it is the same on every machine and device and needs no state.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor


def _signed(constant: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def _shift_right(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: Tensor) -> Tensor:
    """The splitmix64 finaliser (Steele et al. 2014) on int64 tensors: a well-mixed 64-bit hash of each value."""
    z = z + _signed(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _shift_right(z, 31)


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
        stream = splitmix64(self._base ^ _signed(zlib.crc32(key.encode()) * 0x9E3779B1))
        return splitmix64(stream[:, None] + torch.arange(count, dtype=torch.int64)[None, :])

    def uniform(self, key: str, shape: Sequence[int]) -> Tensor:
        """(N, *shape) float32 in [0, 1), 24 random bits each."""
        count = int(torch.tensor(shape).prod()) if len(shape) else 1
        bits = _shift_right(self._bits(key, count), 40)
        return (bits.to(torch.float32) / float(1 << 24)).reshape(len(self), *shape)

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
