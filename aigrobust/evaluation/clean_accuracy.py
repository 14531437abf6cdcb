"""Clean evaluation: accuracy, per-layer execution rates and executed FLOPs of a model on a dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

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
        from aigrobust.data import to_tensor_images

        for start in range(0, len(dataset), batch_size):  # type: ignore[arg-type]
            stop = start + batch_size
            yield (to_tensor_images(dataset.images[start:stop]),  # type: ignore[attr-defined]
                   torch.from_numpy(dataset.labels[start:stop]))  # type: ignore[attr-defined]
        return
    from aigrobust.data import streaming_loader

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
    num_classes = model.num_classes
    correct = 0
    top5 = 0
    total = 0
    decisions_sum: Tensor | None = None
    per_class_sum = torch.zeros(num_classes, model.num_blocks, dtype=torch.float64)
    per_class_count = torch.zeros(num_classes, dtype=torch.float64)
    flops_sum = 0.0
    full = 0.0
    try:
        with torch.inference_mode(), model.gate_settings(mode=gate_mode):
            for images, labels in iterate_batches(dataset, batch_size):
                images, labels = images.to(device), labels.to(device)
                logits, trace = model.forward_with_gates(images)
                full = model.flop_profile(tuple(images.shape[1:])).full
                correct += int((logits.argmax(1) == labels).sum())
                top5 += int((logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(1).sum())
                total += int(labels.numel())
                d = trace.decisions.double().cpu()
                decisions_sum = d.sum(0) if decisions_sum is None else decisions_sum + d.sum(0)
                per_class_sum.index_add_(0, labels.cpu(), d)
                per_class_count += torch.bincount(labels.cpu(), minlength=num_classes).double()
                flops_sum += float(trace.flops.sum())
                if on_batch is not None:
                    on_batch(int(labels.numel()))
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    assert decisions_sum is not None
    per_class = per_class_sum / per_class_count.clamp_min(1).unsqueeze(1)
    return CleanEvaluation(
        n_samples=total,
        accuracy=correct / total,
        execution_rates=tuple(float(v) for v in decisions_sum / total),
        mean_flops=flops_sum / total,
        full_flops=full,
        gate_mode=str(GateMode(gate_mode)),
        per_class_execution=tuple(tuple(float(v) for v in row) for row in per_class),
        top5_accuracy=top5 / total,
    )
