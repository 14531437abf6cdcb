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

RUN = "{run}"  # in a draw's key, stands for each row's own run name (see SampleNoise.with_runs)


class SampleNoise:
    """Per-sample random draws: row i of every draw depends only on (seed, ``sample_ids[i]``, key).

    Rows may also carry a run name each (:meth:`with_runs`): a key holding ``{run}`` then reads, for row i, as the
    key with ``runs[i]`` in its place, so one batch can hold several runs of a sample (targeted attacks run their
    target classes side by side) and each row draws exactly what it would draw in a run of its own.
    """

    def __init__(self, seed: int, sample_ids: Tensor | Sequence[int], runs: Sequence[str] | None = None) -> None:
        self.seed = int(seed)
        self.sample_ids = torch.as_tensor(sample_ids, dtype=torch.int64).cpu().reshape(-1)
        self.runs = None if runs is None else list(runs)
        if self.runs is not None and len(self.runs) != len(self.sample_ids):
            raise ValueError(f"{len(self.runs)} run names for {len(self.sample_ids)} rows")
        self._base = splitmix64(splitmix64(self.sample_ids) ^ splitmix64(torch.tensor(self.seed, dtype=torch.int64)))

    def __len__(self) -> int:
        return len(self.sample_ids)

    def rows(self, index: Tensor) -> SampleNoise:
        """The noise of a subset of the samples (a bool mask or indices, repeats allowed), as attacks compact or
        replicate their batch."""
        index = index.cpu()
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        runs = None if self.runs is None else [self.runs[i] for i in index.tolist()]
        subset = SampleNoise.__new__(SampleNoise)  # the rows' hashes are taken, not computed again (Square asks each query)
        subset.seed, subset.sample_ids, subset.runs, subset._base = self.seed, self.sample_ids[index], runs, self._base[index]
        return subset

    def with_runs(self, runs: Sequence[str]) -> SampleNoise:
        """The same rows, row i named ``runs[i]`` wherever a key holds ``{run}``."""
        return SampleNoise(self.seed, self.sample_ids, runs)

    def _bits(self, key: str, count: int) -> Tensor:
        if RUN in key:
            if self.runs is None:
                raise ValueError(f"the key {key!r} names each row's run, but the rows carry no run names")
            mixes = {run: key_hash(key.replace(RUN, run)) for run in dict.fromkeys(self.runs)}
            mix: Tensor | int = torch.tensor([mixes[run] for run in self.runs], dtype=torch.int64)
        else:
            mix = key_hash(key)
        stream = splitmix64(self._base ^ mix)
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
