"""The JPEG round trip over a batch: libjpeg (through torchvision's ops) image by image, off the GIL.

Coding a 32x32 image costs libjpeg about 35 us, so per-call overhead decides the throughput. A Python loop over a
thread pool pays the interpreter and a GIL hand-off around every call; here the loop is TorchScript, and
``torch.jit.fork`` spreads contiguous shares of the batch over torch's inter-op threads, all in C++ (1000 CIFAR
images: 17.6 ms against 23 ms for the Python thread pool on 2 cores). TorchScript is deprecated in torch 2.x but
present in the pinned 2.14.1; where it cannot compile, the same calls run in a plain Python loop.

The calls are the ops behind ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` (whose Python wrappers loop over a
list anyway). torchvision 0.29 deprecates its codecs in favour of torchcodec, which needs FFmpeg; moving there is
open, and the Pillow-equality tests will say if a torchvision upgrade changes these ops.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_COMPILE_LOCK = threading.Lock()


def _code_share(images: Tensor, quality: int) -> Tensor:
    """Encode and decode each uint8 (3, H, W) image of ``images``; returns them stacked, uint8 (N, 3, H, W)."""
    decoded: list[Tensor] = []
    for i in range(images.shape[0]):
        encoded = torch.ops.image.encode_jpeg(images[i], quality)
        # mode 3 = ImageReadMode.RGB, as Pillow's convert("RGB"); no EXIF rotation (TorchScript: literal, not a global)
        decoded.append(torch.ops.image.decode_jpeg(encoded, 3, False))
    return torch.stack(decoded)


def _code_in_parallel(images: Tensor, quality: int, shares: int) -> Tensor:
    """Split ``images`` into ``shares`` contiguous parts, code each on an inter-op thread, concatenate in order."""
    futures: list[torch.jit.Future[Tensor]] = []
    for share in images.tensor_split(shares):
        futures.append(torch.jit.fork(_code_share, share, quality))
    return torch.cat([torch.jit.wait(future) for future in futures])


@functools.cache
def _scripted() -> Callable[[Tensor, int, int], Tensor] | None:
    """Compile the parallel round trip once per process; None where TorchScript is unavailable."""
    with _COMPILE_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        try:
            return torch.jit.script(_code_in_parallel)
        except Exception as error:  # noqa: BLE001  (any compile failure means: use the Python loop)
            log.warning("TorchScript unavailable (%s); JPEG codes in a Python loop on one core", error)
            return None


def jpeg_round_trip(images: Tensor, quality: int, *, scripted: bool = True) -> Tensor:
    """uint8 (N, 3, H, W) on the CPU through libjpeg's encoder and decoder at ``quality``; uint8 (N, 3, H, W).

    Pillow's settings (4:2:0 chroma, standard tables, islow DCT), so each image equals a Pillow round trip.
    ``scripted=False`` forces the Python loop (the fallback; tests compare the two).
    """
    import torchvision.io  # noqa: F401  (registers torch.ops.image, which both paths call)

    if len(images) == 0:
        return images.clone()
    # more shares than threads lets a share that finishes early pick up work; 32 images keep a fork worth its cost
    shares = min(4 * torch.get_num_interop_threads(), len(images) // 32)
    compiled = _scripted() if scripted and shares > 1 else None
    if compiled is None:  # small batches too: entering TorchScript costs about 0.1 ms
        return _code_share(images, quality)
    return compiled(images, quality, shares)
