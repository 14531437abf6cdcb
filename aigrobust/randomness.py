"""Counter-based random numbers: every number is a hash of its key, so draws need no state and do not depend on
the batch a row shares, its position in it, the device or what ran before.

Two kinds of key: :class:`attacks.noise.SampleNoise` keys an attack's draws by (run seed, sample id, draw); the
stochastic gates of a model, which never see sample ids, key theirs by (seed, the input row's bytes, draw, block)
through :func:`input_row_keys` and :func:`keyed_uniform`, and :func:`keyed_draw` names the draw (an EOT draw, a
judging draw), so the same input meets the same gates in the same draw and a perturbed input fresh ones.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


def signed64(constant: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def shift_right64(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(z: Tensor) -> Tensor:
    """The splitmix64 finaliser (Steele et al. 2014) on int64 tensors: a well-mixed 64-bit hash of each value."""
    z = z + signed64(0x9E3779B97F4A7C15)
    z = (z ^ shift_right64(z, 30)) * signed64(0xBF58476D1CE4E5B9)
    z = (z ^ shift_right64(z, 27)) * signed64(0x94D049BB133111EB)
    return z ^ shift_right64(z, 31)


def key_hash(key: str) -> int:
    """A draw's name as a 64-bit mixing constant (CRC-32, spread by the golden ratio)."""
    return signed64((zlib.crc32(key.encode()) * 0x9E3779B1) % (1 << 64))


def uniform_from_bits(bits: Tensor) -> Tensor:
    """float32 in [0, 1) from the top 24 bits of int64 hashes."""
    return shift_right64(bits, 40).to(torch.float32) / float(1 << 24)


_ROW_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def input_row_keys(x: Tensor) -> Tensor:
    """(N,) int64: a hash of each row's float32 bits (in NCHW order whatever the memory format), computed on x's
    device. Equal rows get equal keys; any changed pixel gives an unrelated key."""
    flat = x.detach().float().contiguous().flatten(1)
    width = flat.shape[1]
    weights_key = (width, str(flat.device))
    if weights_key not in _ROW_WEIGHTS:
        position = torch.arange(width, dtype=torch.int64, device=flat.device)
        _ROW_WEIGHTS[weights_key] = splitmix64(position) | 1  # odd weights: a multiplicative hash of each word
    words = flat.view(torch.int32).to(torch.int64)
    return splitmix64((words * _ROW_WEIGHTS[weights_key]).sum(1))  # int64 products and sums wrap, as a hash wants


def keyed_uniform(row_keys: Tensor, seed: int, key: str, shape: tuple[int, ...]) -> Tensor:
    """float32 in [0, 1) of ``shape`` (rows first, one per key in ``row_keys``): row i depends only on (seed,
    ``row_keys[i]``, key)."""
    count = 1
    for size in shape[1:]:
        count *= size
    stream = splitmix64(row_keys ^ splitmix64(torch.tensor(int(seed), dtype=torch.int64, device=row_keys.device))
                        ^ key_hash(key))
    position = torch.arange(count, dtype=torch.int64, device=row_keys.device)
    return uniform_from_bits(splitmix64(stream[:, None] + position[None, :])).reshape(shape)


@contextlib.contextmanager
def keyed_draw(module: nn.Module, draw: str) -> Iterator[None]:
    """Within the block, every keyed random layer inside ``module`` (those with a ``draw_key``: stochastic gates)
    draws under the name ``draw`` (say ``eot/3`` or ``judge/0``), appended to the name it had: nested draws (an
    attack's EOT around a view's EOT) stay distinct. The previous names come back on exit."""
    layers = [m for m in module.modules() if hasattr(m, "draw_key")]
    saved = [m.draw_key for m in layers]
    for layer, key in zip(layers, saved):
        layer.draw_key = f"{key}/{draw}" if key else draw
    try:
        yield
    finally:
        for layer, key in zip(layers, saved):
            layer.draw_key = key
