"""Training plain and gated ResNets: SGD, step/cosine/one-cycle schedules, target-rate loss, resumable.

Every epoch writes ``last.safetensors`` (the model, our checkpoint format) and ``train_state.pt`` (optimizer,
generators, history) atomically, and appends a line to ``log.jsonl``; ``resume=True`` continues from them and ends
with the same weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import enum
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.checkpoints import CheckpointError, load_state_checked, read_checkpoint, save_checkpoint
from aigrobust.clean_accuracy import CleanEvaluation, evaluate_clean
from aigrobust.data import ArrayDataset
from aigrobust.factory import create_model
from aigrobust.files import atomic_write_bytes
from aigrobust.models.base import ResNetBase
from aigrobust.models.gates import target_rate_loss

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
MODEL_FILE = "last.safetensors"
FINAL_FILE = "model.safetensors"
LOG_FILE = "log.jsonl"


class Schedule(str, enum.Enum):
    """Learning-rate schedules: the paper's ``step`` (x0.1 at milestones), ``cosine``, and ``onecycle``."""

    STEP = "step"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class TrainingError(RuntimeError):
    """A training run that cannot start or resume (e.g. a resume with another configuration)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (a resume must use the same one)."""

    model: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule.STEP
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run, for the step schedule
    gate_lambda: float = 2.0
    gate_lr_factor: float = 1.0
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # CUDA only
    channels_last: bool = True  # CPU and CUDA: NHWC convolutions are faster on both

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", Schedule(self.schedule))
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        for name in ("lr", "momentum", "weight_decay", "gate_lambda", "gate_lr_factor"):
            value = getattr(self, name)
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0:
            raise ValueError("lr must be positive")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints and compared on resume)."""
        d = asdict(self)
        d["schedule"] = self.schedule.value
        d["milestones"] = list(self.milestones)
        d["model_kwargs"] = dict(self.model_kwargs)
        return d


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's figures, as written to ``log.jsonl``."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    rate_loss: float
    train_execution_rates: tuple[float, ...]
    heldout_accuracy: float | None
    heldout_execution_rates: tuple[float, ...]
    heldout_flops_ratio: float | None
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """The trained model, its final checkpoint path and the per-epoch history."""

    model: ResNetBase
    checkpoint: Path
    history: tuple[EpochRecord, ...]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("CUDA was asked for but no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainingError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at optimiser step ``step`` of ``total_steps`` (a pure function: nothing to save on resume)."""
    progress = step / max(1, total_steps)
    if config.schedule is Schedule.STEP:
        drops = sum(progress >= m for m in config.milestones)
        return config.lr * (0.1**drops)
    if config.schedule is Schedule.COSINE:
        return 0.5 * config.lr * (1 + math.cos(math.pi * progress))
    # one-cycle: linear warm-up over the first 15% to lr, then cosine down to lr/1000
    warm = 0.15
    if progress < warm:
        return config.lr * (0.04 + 0.96 * progress / warm)
    rest = (progress - warm) / (1 - warm)
    return config.lr * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * rest)))


def augment_batch(images: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per sample, from ``generator``."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)).to(images.device)
    cols = (dx[:, None] + torch.arange(w))
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(images.device)
    batch_idx = torch.arange(n, device=images.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def require_finite_weights(model: nn.Module, when: str) -> None:
    """A TrainingError instead of a checkpoint when any parameter or buffer holds NaN or inf."""
    bad = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingError(f"{len(bad)} tensors hold NaN or inf {when} (first: {bad[0]}): training diverged "
                            "(lower --lr); no checkpoint was written")


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise TrainingError(f"{path}: training state unreadable ({type(err).__name__}); delete it to start over") from None


def _make_optimizer(model: ResNetBase, config: TrainConfig) -> torch.optim.SGD:
    gate_ids = {id(p) for p in model.gate_parameters()}
    base = [p for p in model.parameters() if id(p) not in gate_ids]
    gates = [p for p in model.parameters() if id(p) in gate_ids]
    groups = [{"params": base, "lr_factor": 1.0}]
    if gates:
        groups.append({"params": gates, "lr_factor": config.gate_lr_factor})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=False)


def train(
    config: TrainConfig,
    train_data: ArrayDataset,
    out_dir: Path,
    heldout: ArrayDataset | None = None,
    resume: bool = False,
    on_batch: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    checkpoint_every: int = 0,
) -> TrainResult:
    """Train ``config.model`` on ``train_data``; checkpoint into ``out_dir`` every epoch (and every
    ``checkpoint_every`` optimiser steps inside an epoch, so a killed run loses at most that many steps).

    ``on_batch(epoch, step, steps, loss)`` and ``on_epoch(record)`` let a caller show progress.
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    state_path, model_path = out_dir / STATE_FILE, out_dir / MODEL_FILE
    if state_path.exists() and not resume:
        raise TrainingError(f"{out_dir} already holds a training run; pass --resume to continue it or pick another --out")

    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_kwargs)
    model.reset_gate_generator(config.seed)
    data_generator = torch.Generator().manual_seed(config.seed)
    optimizer = _make_optimizer(model, config)
    history: list[EpochRecord] = []
    start_epoch = 0
    mid_epoch: dict[str, Any] | None = None

    if resume and state_path.exists():
        state = _load_state(state_path)
        if state.get("config") != json.loads(json.dumps(config.as_dict())):
            raise TrainingError(f"{out_dir} was started with another configuration; resume needs the same one")
        if "model" in state:  # weights travel inside the state file: one atomic unit
            weights = state["model"]
        else:  # files written before the weights moved into the state (per-epoch only)
            try:
                weights, _ = read_checkpoint(model_path)
            except CheckpointError as err:
                raise TrainingError(f"cannot resume: {err}") from None
        load_state_checked(model, weights, str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        data_generator.set_state(state["data_generator"])
        model.set_gate_generator_state(state["gate_generator"])
        history = [EpochRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
                   for r in json.loads(state["history"])]
        start_epoch = int(state["epoch"])
        if int(state.get("step", 0)) > 0:
            mid_epoch = {"step": int(state["step"]), "order": state["order"], "sums": state["sums"]}
        log.info("resuming %s at epoch %d step %d", out_dir, start_epoch + 1, int(state.get("step", 0)))

    model.to(device)
    use_cuda = device.type == "cuda"
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    images = torch.from_numpy(np.ascontiguousarray(train_data.images)).permute(0, 3, 1, 2)  # uint8 NCHW view
    labels = torch.from_numpy(train_data.labels.astype(np.int64))
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    rank, world = _rank_world()
    step_module: torch.nn.Module = _TrainStep(model)
    augment_generator = data_generator
    if world > 1:
        # every rank shuffles alike (shared generator) but augments and draws gates with its own stream
        augment_generator = torch.Generator().manual_seed(config.seed * 1_000_003 + rank)
        model.reset_gate_generator(config.seed * 1_000_003 + rank)
        step_module = torch.nn.parallel.DistributedDataParallel(step_module)
    targets = torch.tensor(model.target_rates, dtype=torch.float32, device=device) if model.is_gated else None
    gated_cols = [i for i, b in enumerate(model.residual_blocks()) if b.gate is not None]
    final_path = out_dir / FINAL_FILE
    data_meta = _data_metadata(train_data, heldout)

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        first_step = 0
        if mid_epoch is not None:
            order, first_step = mid_epoch["order"], mid_epoch["step"]
            loss_sum, rate_sum, correct, seen = (float(mid_epoch["sums"][0]), float(mid_epoch["sums"][1]),
                                                 int(mid_epoch["sums"][2]), int(mid_epoch["sums"][3]))
            exec_sum = mid_epoch["sums"][4].clone()
            mid_epoch = None
        else:
            order = torch.randperm(n, generator=data_generator)
            loss_sum = rate_sum = 0.0
            correct = seen = 0
            exec_sum = torch.zeros(model.num_blocks, dtype=torch.float64)
        lr = config.lr
        for step in range(first_step, steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if world > 1:
                idx = idx[rank::world]  # each rank takes its share of the global batch
            x = images[idx].float().div_(255.0)
            y = labels[idx]
            if config.augment:
                x = augment_batch(x, augment_generator)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = learning_rate(config, epoch * steps_per_epoch + step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_factor"]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_cuda and config.bf16):
                logits, gate_values, decisions = step_module(x)
                loss = F.cross_entropy(logits.float(), y)
                rate_loss = torch.zeros((), device=device)
                if targets is not None:
                    rate_loss = target_rate_loss(gate_values[:, gated_cols], targets[: len(gated_cols)])
                    loss = loss + config.gate_lambda * rate_loss
            if not torch.isfinite(loss.detach()):
                # a diverged run is stopped before the optimiser writes NaN into the weights; the last checkpoint
                # (finite, from an earlier epoch or step) stays the newest one on disk
                raise TrainingError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}: "
                                    "training diverged (lower --lr); no checkpoint of this step was written")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            rate_sum += float(rate_loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            exec_sum += decisions.double().sum(0).cpu()
            if on_batch is not None:
                on_batch(epoch + 1, step + 1, steps_per_epoch, float(loss.detach()))
            if rank == 0 and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps_per_epoch:
                require_finite_weights(model, f"after step {step + 1} of epoch {epoch + 1}")
                _save_state(state_path, _state(config, model, optimizer, data_generator, epoch, history,
                                               step=step + 1, order=order,
                                               sums=[loss_sum, rate_sum, correct, seen, exec_sum]))

        evaluation: CleanEvaluation | None = None
        if heldout is not None:
            evaluation = evaluate_clean(model, heldout, batch_size=256, device=device)
        record = EpochRecord(
            epoch=epoch + 1,
            lr=lr,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            rate_loss=rate_sum / seen,
            train_execution_rates=tuple(round(float(v), 4) for v in exec_sum / seen),
            heldout_accuracy=evaluation.accuracy if evaluation else None,
            heldout_execution_rates=tuple(round(v, 4) for v in evaluation.execution_rates) if evaluation else (),
            heldout_flops_ratio=evaluation.flops_ratio if evaluation else None,
            seconds=time.perf_counter() - started,
        )
        history.append(record)
        metadata = _checkpoint_metadata(config, data_meta, record, epoch + 1)
        if rank == 0:
            # The state file (weights included) is the resume point; last.safetensors is the usable model.
            require_finite_weights(model, f"after epoch {epoch + 1}")
            _save_state(state_path, _state(config, model, optimizer, data_generator, epoch + 1, history))
            save_checkpoint(model, model_path, **metadata)
            with open(out_dir / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(record)) + "\n")
        log.info("epoch %d: %s", epoch + 1, asdict(record))
        if on_epoch is not None:
            on_epoch(record)

    if history and rank == 0:
        last = history[-1]
        save_checkpoint(model, final_path, **_checkpoint_metadata(config, data_meta, last, last.epoch))
    model.eval()
    return TrainResult(model=model, checkpoint=final_path, history=tuple(history))


def _data_metadata(train_data: ArrayDataset, heldout: ArrayDataset | None) -> dict[str, Any]:
    return {
        "dataset": train_data.name,
        "classes": list(train_data.classes),
        "train_data": {"source": train_data.source, "n": len(train_data), "sha256": train_data.fingerprint()},
        "heldout_data": ({"source": heldout.source, "n": len(heldout), "sha256": heldout.fingerprint()}
                         if heldout is not None else None),
    }


class _TrainStep(torch.nn.Module):
    """One forward for training: (logits, gate values, decisions); a module so DistributedDataParallel can wrap it."""

    def __init__(self, model: ResNetBase) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, trace = self.model.forward_with_gates(x)
        return logits, trace.gate_values, trace.decisions


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _state(config: TrainConfig, model: ResNetBase, optimizer: torch.optim.Optimizer, data_generator: torch.Generator,
           epoch: int, history: list[EpochRecord], step: int = 0, order: Tensor | None = None,
           sums: list[Any] | None = None) -> dict[str, Any]:
    """Everything a resume needs, in one file written atomically (weights, optimiser, generators, position)."""
    state: dict[str, Any] = {
        "config": config.as_dict(),
        "epoch": epoch,
        "step": step,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "data_generator": data_generator.get_state(),
        "gate_generator": model.gate_generator_state(),
        "history": json.dumps([asdict(r) for r in history]),
    }
    if step:
        state["order"] = order
        state["sums"] = sums
    return state


def _checkpoint_metadata(config: TrainConfig, data_meta: Mapping[str, Any], record: EpochRecord,
                         epoch: int) -> dict[str, Any]:
    return {
        **data_meta,
        "accuracy": record.heldout_accuracy,
        "execution_rates": list(record.heldout_execution_rates),
        "flops_ratio": record.heldout_flops_ratio,
        "epoch": epoch,
        "recipe": config.as_dict(),
        "torch": torch.__version__,
    }
