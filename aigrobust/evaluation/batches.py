"""Images in numbered batches: from tensors in memory or streamed from a dataset through a DataLoader, each sample carrying its id."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from aigrobust.data import streaming_loader, to_tensor_images


def iterate_numbered_batches(images: Tensor | np.ndarray | torch.utils.data.Dataset, labels: Tensor,
                             sample_ids: np.ndarray, batch_size: int) -> Iterator[tuple[int, Tensor, Tensor, np.ndarray]]:
    """(batch number, images, labels, sample ids) in order. ``images`` may be float (N, C, H, W) in [0, 1], uint8
    (N, H, W, C) as stored, or a dataset of (image, label) items read by a DataLoader with worker processes (an image
    folder); either way one batch at a time is in memory."""

    if not isinstance(images, (Tensor, np.ndarray)):
        yield from _streamed_batches(images, labels, sample_ids, batch_size)
        return
    for b, start in enumerate(range(0, len(labels), batch_size)):
        stop = start + batch_size
        batch = images[start:stop]
        if isinstance(batch, np.ndarray):
            batch = to_tensor_images(batch)
        yield b, batch, labels[start:stop], sample_ids[start:stop]


def _streamed_batches(dataset: torch.utils.data.Dataset, labels: Tensor, sample_ids: np.ndarray,
                      batch_size: int) -> Iterator[tuple[int, Tensor, Tensor, np.ndarray]]:
    for b, (batch, _) in enumerate(streaming_loader(dataset, batch_size)):
        start = b * batch_size
        yield b, batch, labels[start:start + len(batch)], sample_ids[start:start + len(batch)]
