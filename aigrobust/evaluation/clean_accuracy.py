"""Clean evaluation: accuracy, per-layer execution rates and executed FLOPs of a model on a dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from aigrobust.data import streaming_loader, to_tensor_images
from aigrobust.models.dynamic import DynamicNetwork
from aigrobust.models.gates import GateMode


@dataclass(frozen=True)
class CleanEvaluation:
    """Clean-data figures of one model: accuracy, per-block execution rates, mean executed and full FLOPs."""

    n_samples: int
    accuracy: float
    execution_rates: tuple[float, ...]
    mean_flops: float
    full_flops: float
    gate_mode: str
    per_class_execution: tuple[tuple[float, ...], ...]
    top5_accuracy: float = float("nan")  # the label among the five largest logits (ImageNet's second figure)

    @property
    def flops_ratio(self) -> float:
        """Executed over full FLOPs (1.0 for a plain ResNet)."""
        return self.mean_flops / self.full_flops if self.full_flops else float("nan")

    def to_dict(self) -> dict[str, object]:
        """The figures ``aigrobust eval --json`` prints."""
        return {"n_samples": self.n_samples, "accuracy": self.accuracy, "top5_accuracy": self.top5_accuracy,
                "gate_mode": self.gate_mode,
                "mean_flops": self.mean_flops, "full_flops": self.full_flops, "flops_ratio": self.flops_ratio,
                "execution_rates": list(self.execution_rates)}


def iterate_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) batches in order; in-memory datasets are sliced directly (no per-item overhead)."""
    tensors = getattr(dataset, "images", None)
    if tensors is not None and hasattr(dataset, "labels"):

        for start in range(0, len(dataset), batch_size):  # type: ignore[arg-type]
            stop = start + batch_size
            yield (to_tensor_images(dataset.images[start:stop]),  # type: ignore[attr-defined]
                   torch.from_numpy(dataset.labels[start:stop]))  # type: ignore[attr-defined]
        return

    yield from streaming_loader(dataset, batch_size)


def evaluate_clean(
    model: DynamicNetwork,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    gate_mode: GateMode | str = GateMode.HARD,
    on_batch: Callable[[int], None] | None = None,
) -> CleanEvaluation:
    """Accuracy and gate statistics of ``model`` on ``dataset`` in eval mode with ``gate_mode``."""
    was_training = model.training
    model.eval()
    sums = _CleanSums(model.num_classes, model.num_blocks)
    try:
        with torch.inference_mode(), model.gate_settings(mode=gate_mode):
            for images, labels in iterate_batches(dataset, batch_size):
                images, labels = images.to(device), labels.to(device)
                logits, trace = model.forward_with_gates(images)
                sums.full = model.flop_profile(tuple(images.shape[1:])).full
                sums.add(logits, trace, labels)
                if on_batch is not None:
                    on_batch(int(labels.numel()))
    finally:
        model.train(was_training)
    if sums.total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    total = sums.total
    per_class = sums.per_class / sums.per_class_count.clamp_min(1).unsqueeze(1)
    return CleanEvaluation(
        n_samples=total,
        accuracy=sums.correct / total,
        execution_rates=tuple(float(v) for v in sums.decisions / total),
        mean_flops=sums.flops / total,
        full_flops=sums.full,
        gate_mode=str(GateMode(gate_mode)),
        per_class_execution=tuple(tuple(float(v) for v in row) for row in per_class),
        top5_accuracy=sums.top5 / total,
    )


class _CleanSums:
    """Running sums of :func:`evaluate_clean` over batches."""

    def __init__(self, num_classes: int, num_blocks: int) -> None:
        self.num_classes = num_classes
        self.correct = self.top5 = self.total = 0
        self.decisions = torch.zeros(num_blocks, dtype=torch.float64)
        self.per_class = torch.zeros(num_classes, num_blocks, dtype=torch.float64)
        self.per_class_count = torch.zeros(num_classes, dtype=torch.float64)
        self.flops = 0.0
        self.full = 0.0

    def add(self, logits: Tensor, trace: Any, labels: Tensor) -> None:
        """One batch's logits, trace and labels."""
        self.correct += int((logits.argmax(1) == labels).sum())
        self.top5 += int((logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(1).sum())
        self.total += int(labels.numel())
        d = trace.decisions.double().cpu()
        self.decisions += d.sum(0)
        self.per_class.index_add_(0, labels.cpu(), d)
        self.per_class_count += torch.bincount(labels.cpu(), minlength=self.num_classes).double()
        self.flops += float(trace.flops.sum())
