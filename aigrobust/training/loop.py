"""Training plain and gated ResNets: SGD, step/cosine/one-cycle schedules, target-rate loss, resumable.

Every epoch writes ``last.safetensors`` (the model, our checkpoint format) and ``train_state.pt`` (optimizer,
generators, history) atomically, and rewrites ``log.jsonl`` (one line per epoch) from that history, also atomically;
``resume=True`` continues from them and ends with the same weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import copy
import enum
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.data import ArrayDataset
from aigrobust.errors import AigrobustError
from aigrobust.evaluation.clean_accuracy import evaluate_clean
from aigrobust.files import atomic_write_bytes
from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import CheckpointError, load_state_checked, read_checkpoint, save_checkpoint
from aigrobust.models.factory import create_model
from aigrobust.models.gates import target_rate_loss
from aigrobust.training.inner_attacks import InnerAttack

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
MODEL_FILE = "last.safetensors"
FINAL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"  # adversarial training: the epoch with the highest validation PGD-10 accuracy
LOG_FILE = "log.jsonl"
INNER_NETWORKS = ("training", "deployed")
OVERFITTING_DROP = 0.20  # validation robust accuracy falling this much within one epoch: catastrophic overfitting


class Schedule(str, enum.Enum):
    """Learning-rate schedules: the paper's ``step`` (x0.1 at milestones), ``cosine``, and ``onecycle``."""

    STEP = "step"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class TrainingError(AigrobustError, RuntimeError):
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
    # fraction of the run over which every gate's target falls linearly from 1.0 (all blocks run) to its own: a
    # start from a plain network's weights keeps what they learnt while the gates learn to skip (0: no warm-up)
    target_warmup: float = 0.0
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # CUDA only
    channels_last: bool = True  # CPU and CUDA: NHWC convolutions are faster on both
    init: str | None = None  # 'torchvision', a weights file or a shipped name: weights to start from
    adversarial: str | None = None  # the inner attack's spec (aigrobust.training.inner_attacks), stored canonical
    compute_penalty: float = 4.0  # weight of per-sample execution above the target rate (adversarial compute=W > 0)
    ema: float | None = None  # decay of an exponential moving average of the weights (validated and saved)
    # the network the inner attack runs on: 'training' (Gumbel gates, batch statistics, as the step sees it) or
    # 'deployed' (hard gates with a straight-through gradient, running statistics, as evaluation attacks it)
    inner_network: str = "training"

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", Schedule(self.schedule))
        if self.adversarial is not None:
            from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec

            try:
                object.__setattr__(self, "adversarial", inner_attack_from_spec(self.adversarial).spec)
            except InnerSpecError as err:
                raise ValueError(f"--adversarial: {err}") from None
        if self.ema is not None and not (isinstance(self.ema, (int, float)) and 0 < self.ema < 1):
            raise ValueError(f"ema takes a decay in (0, 1), got {self.ema!r}")
        if not (math.isfinite(float(self.compute_penalty)) and self.compute_penalty >= 0):
            raise ValueError(f"compute_penalty must be a finite number >= 0, got {self.compute_penalty!r}")
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
        if self.inner_network not in INNER_NETWORKS:
            raise ValueError(f"inner_network takes one of {', '.join(INNER_NETWORKS)}, got {self.inner_network!r}")
        if not 0 <= float(self.target_warmup) <= 1:
            raise ValueError(f"target_warmup takes a fraction of the run in [0, 1], got {self.target_warmup!r}")

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
    heldout_top5: float | None = None  # ImageNet's second figure (logs written before it lack it)
    # adversarial training: PGD-10 on the validation split (held out of the training set), per-block execution
    # rates on its attacked images, whether this epoch is the best so far, and a catastrophic-overfitting warning
    heldout_robust_accuracy: float | None = None
    heldout_adversarial_execution_rates: tuple[float, ...] = ()
    heldout_adversarial_flops_ratio: float | None = None
    best: bool = False
    warning: str | None = None

    def log_line(self) -> str:
        """The epoch in one line, as the command line prints it."""
        held = f"{self.heldout_accuracy:.4f}" if self.heldout_accuracy is not None else "-"
        if self.heldout_top5 is not None:
            held += f" top-5 {self.heldout_top5:.4f}"
        rates = " ".join(f"{v:.2f}" for v in self.heldout_execution_rates or self.train_execution_rates)
        flops = f" flops {self.heldout_flops_ratio:.3f}" if self.heldout_flops_ratio is not None else ""
        robust = ""
        if self.heldout_robust_accuracy is not None:
            adv_rates = " ".join(f"{v:.2f}" for v in self.heldout_adversarial_execution_rates)
            robust = (f"  PGD-10 acc {self.heldout_robust_accuracy:.4f}"
                      + (f" flops {self.heldout_adversarial_flops_ratio:.3f}"
                         if self.heldout_adversarial_flops_ratio is not None else "")
                      + f" rates [{adv_rates}]" + ("  best" if self.best else ""))
        warning = f"  WARNING: {self.warning}" if self.warning else ""
        return (f"epoch {self.epoch:>3}  loss {self.train_loss:.4f}  train acc {self.train_accuracy:.4f}  "
                f"held-out acc {held}{flops}  rates [{rates}]{robust}  {self.seconds:.0f}s{warning}")


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


def imagenet_defaults(batch_size: int) -> dict[str, Any]:
    """The paper's ImageNet recipe (ConvNet-AIG, after He et al.): SGD momentum 0.9, lr 0.1 per 256 images, weight
    decay 1e-4, lr x0.1 every 30 epochs, 100 epochs; the gate targets are the model's own (aig50's per-layer
    schedule) and the gate loss weight stays ``gate_lambda``."""
    return {"epochs": 100, "lr": 0.1 * batch_size / 256, "weight_decay": 1e-4, "schedule": "step",
            "milestones": (0.3, 0.6, 0.9)}


def initialise_from(model: ResNetBase, init: str) -> None:
    """Start ``model`` from other weights: 'torchvision' (ImageNet models: torchvision's download), a weights file
    (ours, akamaster's, the ConvNet-AIG reference code's or torchvision's layout, read with weights_only=True) or a
    registered name with shipped weights ('resnet20.at', 'aig20'). The source is the same architecture (every weight
    taken, gates included: fine-tuning a gated model keeps its gates) or the plain twin of a gated model (the
    residual weights taken; the gates keep their fresh initialisation, as the reference code does). The source's
    input normalisation comes along: its weights were trained under it."""
    from aigrobust.models.factory import load_checkpoint, load_pretrained_into
    from aigrobust.models.registry import UnknownModelError, get_model_info

    if init == "torchvision":
        try:
            load_pretrained_into(model, get_model_info(model.registry_name))
        except CheckpointError as err:
            raise TrainingError(str(err)) from None
        return
    path = Path(init)
    try:
        source = load_checkpoint(path)[0] if path.exists() else create_model(init, pretrained=True)
    except UnknownModelError as err:
        raise TrainingError(f"--init {init}: no such file, and {err.args[0]} (give 'torchvision', a weights "
                            "file or a shipped name such as resnet20.at)") from None
    except CheckpointError as err:
        raise TrainingError(f"--init {init}: {err}") from None
    ours, theirs = model.state_dict(), source.state_dict()
    misfit = sorted(k for k, v in theirs.items() if k not in ours or ours[k].shape != v.shape)
    missing = sorted(k for k in ours if k not in theirs and ".gate." not in k)
    if misfit or missing:
        names = ", ".join((misfit + missing)[:3])
        raise TrainingError(f"--init {init}: it holds {source.registry_name} weights, which do not fit "
                            f"{model.registry_name} ({len(misfit)} weights without a place, {len(missing)} missing: "
                            f"{names}); give the same architecture or the plain twin of a gated model")
    load_state_checked(model, {**ours, **theirs}, str(init))
    model.normalize.set_statistics(source.normalize.mean.flatten().tolist(), source.normalize.std.flatten().tolist())


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


def warmed_up_targets(targets: Tensor, warmup: float, step: int, total_steps: int) -> Tensor:
    """The gates' target rates at optimiser step ``step`` of ``total_steps``: 1.0 at the start, falling linearly to
    ``targets`` over the first ``warmup`` of the run, ``targets`` from then on (a pure function of the step, so a
    resume continues the same schedule)."""
    if warmup <= 0:
        return targets
    progress = min(1.0, step / max(1.0, warmup * total_steps))
    return 1.0 - (1.0 - targets) * progress


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


@dataclass
class EpochTally:
    """Running sums of an epoch (what a mid-epoch checkpoint keeps so a resumed epoch reports the same figures)."""

    loss: float = 0.0
    rate: float = 0.0
    correct: int = 0
    seen: int = 0
    executed: Tensor | None = None  # per block, samples whose branch ran

    def to_state(self) -> list[Any]:
        """The list stored under 'sums' in the state file (its format predates this class)."""
        return [self.loss, self.rate, self.correct, self.seen, self.executed]

    @classmethod
    def from_state(cls, sums: list[Any]) -> EpochTally:
        """The tally a state file's 'sums' describe."""
        return cls(float(sums[0]), float(sums[1]), int(sums[2]), int(sums[3]), sums[4].clone())


@dataclass
class _Run:
    """What a training run carries from epoch to epoch."""

    model: ResNetBase
    optimizer: torch.optim.Optimizer
    data_generator: torch.Generator
    history: list[EpochRecord]
    start_epoch: int = 0
    mid_epoch: dict[str, Any] | None = None
    ema_model: ResNetBase | None = None  # the weight average (config.ema), validated and saved in place of model

    @property
    def published(self) -> ResNetBase:
        """The network the epoch's figures and checkpoints describe: the weight average where one is kept."""
        return self.ema_model if self.ema_model is not None else self.model


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
    state_path = out_dir / STATE_FILE
    if state_path.exists() and not resume:
        raise TrainingError(f"{out_dir} already holds a training run; pass --resume to continue it or pick another --out")
    run = _start_or_resume(config, out_dir, resume)
    model = run.model
    for module in (model, run.ema_model):
        if module is not None:
            module.to(device)
            if config.channels_last:
                module.to(memory_format=torch.channels_last)
    loop = _Loop(config, run, train_data, device, state_path, checkpoint_every, on_batch)
    data_meta = _data_metadata(train_data, heldout)
    for epoch in range(run.start_epoch, config.epochs):
        started = time.perf_counter()
        lr, tally = loop.epoch(epoch)
        if loop.inner is not None and heldout is not None:
            robust = _robust_figures(run, heldout, loop.inner.eps, device, config.seed)
            evaluation = None
        else:
            robust = {}
            evaluation = (evaluate_clean(run.published, heldout, batch_size=256, device=device)
                          if heldout is not None else None)
        record = EpochRecord(
            epoch=epoch + 1,
            lr=lr,
            train_loss=tally.loss / tally.seen,
            train_accuracy=tally.correct / tally.seen,
            rate_loss=tally.rate / tally.seen,
            train_execution_rates=tuple(round(float(v), 4) for v in tally.executed / tally.seen),
            **({} if robust else {
                "heldout_accuracy": evaluation.accuracy if evaluation else None,
                "heldout_execution_rates": (tuple(round(v, 4) for v in evaluation.execution_rates)
                                            if evaluation else ()),
                "heldout_flops_ratio": evaluation.flops_ratio if evaluation else None}),
            seconds=time.perf_counter() - started,
            heldout_top5=evaluation.top5_accuracy if evaluation else None,
            **robust,
        )
        run.history.append(record)
        if record.warning:
            log.warning("epoch %d: %s", epoch + 1, record.warning)
        if loop.rank == 0:
            _save_epoch(config, run, epoch, record, data_meta, out_dir)
        log.info("epoch %d: %s", epoch + 1, asdict(record))
        if on_epoch is not None:
            on_epoch(record)
    final_path = out_dir / FINAL_FILE
    if run.history and loop.rank == 0:
        last = run.history[-1]
        save_checkpoint(run.published, final_path, **_checkpoint_metadata(config, data_meta, last, last.epoch))
    run.published.eval()
    return TrainResult(model=run.published, checkpoint=final_path, history=tuple(run.history))


def overfitting_warning(previous: float | None, current: float) -> str | None:
    """A warning where validation robust accuracy fell by more than OVERFITTING_DROP since the previous epoch
    (catastrophic overfitting: single-step training that stops resisting multi-step attacks); else None."""
    if previous is None or previous - current <= OVERFITTING_DROP:
        return None
    return (f"catastrophic overfitting: validation PGD-10 accuracy fell from {previous:.4f} to {current:.4f} in one "
            f"epoch; {BEST_FILE} keeps the best epoch")


def _robust_figures(run: _Run, heldout: ArrayDataset, eps: float, device: torch.device, seed: int) -> dict[str, Any]:
    """The epoch's validation figures under PGD-10 as EpochRecord fields: clean ones in the held-out fields, the
    best-so-far flag, and a warning where robust accuracy fell by more than OVERFITTING_DROP since the last epoch."""
    from aigrobust.training.validation import validate_robust

    figures = validate_robust(run.published, heldout, eps, device=device, seed=seed)
    earlier = [r.heldout_robust_accuracy for r in run.history if r.heldout_robust_accuracy is not None]
    warning = overfitting_warning(earlier[-1] if earlier else None, figures.robust_accuracy)
    return {
        "heldout_accuracy": figures.clean_accuracy,
        "heldout_execution_rates": figures.clean_execution_rates,
        "heldout_flops_ratio": figures.clean_flops_ratio,
        "heldout_robust_accuracy": figures.robust_accuracy,
        "heldout_adversarial_execution_rates": figures.adversarial_execution_rates,
        "heldout_adversarial_flops_ratio": figures.adversarial_flops_ratio,
        "best": not earlier or figures.robust_accuracy > max(earlier),
        "warning": warning,
    }


def _start_or_resume(config: TrainConfig, out_dir: Path, resume: bool) -> _Run:
    """A fresh run from the seed, or the run the state file in ``out_dir`` describes (same configuration only)."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_kwargs)
    state_path = out_dir / STATE_FILE
    resuming = resume and state_path.exists()
    if config.init is not None and not resuming:  # a resume takes weights and input statistics from its state
        initialise_from(model, config.init)
    model.reset_gate_generator(config.seed)
    if config.adversarial is not None:
        from aigrobust.training.inner_attacks import inner_attack_from_spec

        if inner_attack_from_spec(config.adversarial).compute > 0 and not model.is_gated:
            raise TrainingError(f"--adversarial {config.adversarial}: compute > 0 attacks the gates, and "
                                f"{config.model} has none")
    run = _Run(model, _make_optimizer(model, config), torch.Generator().manual_seed(config.seed), [])
    if config.ema is not None:
        run.ema_model = copy.deepcopy(model).eval()
    if not resuming:
        return run
    state = _load_state(state_path)
    now = json.loads(json.dumps(config.as_dict()))
    # settings added since a run began read as their defaults, so older runs still resume
    saved = {**{k: v for k, v in TrainConfig(model=config.model).as_dict().items() if k in _ADDED_SETTINGS},
             **(state.get("config") or {})}
    if saved != now:
        from aigrobust.runs.folder import describe_differences

        raise TrainingError(f"{out_dir} was started with another configuration "
                            f"({describe_differences(saved, now)}); resume needs the same one")
    if "model" in state:  # weights travel inside the state file: one atomic unit
        weights = state["model"]
    else:  # files written before the weights moved into the state (per-epoch only)
        try:
            weights, _ = read_checkpoint(out_dir / MODEL_FILE)
        except CheckpointError as err:
            raise TrainingError(f"cannot resume: {err}") from None
    load_state_checked(model, weights, str(state_path))
    # the input statistics the run trained under; a state written before they were saved began when --init left
    # the model's own defaults in place
    norm = state.get("normalization") or create_model(config.model, **config.model_kwargs).normalize.as_dict()
    model.normalize.set_statistics(norm["mean"], norm["std"])
    if run.ema_model is not None:
        load_state_checked(run.ema_model, state["ema"], str(state_path))
        run.ema_model.normalize.set_statistics(norm["mean"], norm["std"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.data_generator.set_state(state["data_generator"])
    model.set_gate_generator_state(state["gate_generator"])
    run.history = [EpochRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
                   for r in json.loads(state["history"])]
    run.start_epoch = int(state["epoch"])
    if int(state.get("step", 0)) > 0:
        run.mid_epoch = {"step": int(state["step"]), "order": state["order"], "sums": state["sums"]}
    log.info("resuming %s at epoch %d step %d", out_dir, run.start_epoch + 1, int(state.get("step", 0)))
    return run


_ADDED_SETTINGS = ("adversarial", "compute_penalty", "ema", "target_warmup", "inner_network")


class _Loop:
    """The optimiser steps of each epoch: data order, augmentation, the loss with the target-rate term, and the
    mid-epoch checkpoints; under torchrun each rank takes its share of the global batch."""

    def __init__(self, config: TrainConfig, run: _Run, train_data: ArrayDataset, device: torch.device,
                 state_path: Path, checkpoint_every: int,
                 on_batch: Callable[[int, int, int, float], None] | None) -> None:
        self.config, self.run, self.device = config, run, device
        self.state_path, self.checkpoint_every, self.on_batch = state_path, checkpoint_every, on_batch
        # in-memory arrays (CIFAR) are indexed directly; image folders (ImageNet) stream through a DataLoader
        self.dataset = None if hasattr(train_data, "images") else train_data
        self.images = (torch.from_numpy(np.ascontiguousarray(train_data.images)).permute(0, 3, 1, 2)  # uint8 NCHW
                       if self.dataset is None else None)
        self.labels = torch.from_numpy(train_data.labels.astype(np.int64))
        self.n_samples = len(self.labels)
        self.steps_per_epoch = math.ceil(self.n_samples / config.batch_size)
        self.rank, self.world = _rank_world()
        model = run.model
        self.step_module: torch.nn.Module = _TrainStep(model)
        self.augment_generator = run.data_generator
        if self.world > 1:
            # every rank shuffles alike (shared generator) but augments and draws gates with its own stream
            self.augment_generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.rank)
            model.reset_gate_generator(config.seed * 1_000_003 + self.rank)
            self.step_module = torch.nn.parallel.DistributedDataParallel(self.step_module)
        self.targets = (torch.tensor(model.target_rates, dtype=torch.float32, device=device) if model.is_gated
                        else None)
        self.gated_cols = [i for i, b in enumerate(model.residual_blocks()) if b.gate is not None]
        self.inner: InnerAttack | None = None
        self.costs: Tensor | None = None  # per block FLOPs over their mean: the compute objective's weights
        if config.adversarial is not None:
            from aigrobust.training.inner_attacks import inner_attack_from_spec

            self.inner = inner_attack_from_spec(config.adversarial)
            shape = tuple(train_data[0][0].shape)
            costs = torch.tensor(model.flop_profile(shape).residual, dtype=torch.float32)
            self.costs = (costs / costs.mean()).to(device)

    def epoch(self, epoch: int) -> tuple[float, EpochTally]:
        """Run one epoch (from its saved position after a mid-epoch resume); its last learning rate and tally."""
        self.run.model.train()
        first_step, mid = 0, self.run.mid_epoch
        if mid is not None:
            order, first_step, tally = mid["order"], mid["step"], EpochTally.from_state(mid["sums"])
            self.run.mid_epoch = None
        else:
            order = torch.randperm(self.n_samples, generator=self.run.data_generator)
            tally = EpochTally(executed=torch.zeros(self.run.model.num_blocks, dtype=torch.float64))
        lr = self.config.lr
        stream = self._stream(epoch, order, first_step) if self.dataset is not None else None
        for step in range(first_step, self.steps_per_epoch):
            lr = self._step(epoch, step, order, tally, next(stream) if stream is not None else None)
            if (self.rank == 0 and self.checkpoint_every and (step + 1) % self.checkpoint_every == 0
                    and step + 1 < self.steps_per_epoch):
                require_finite_weights(self.run.model, f"after step {step + 1} of epoch {epoch + 1}")
                _save_state(self.state_path, _state(self.config, self.run.model, self.run.optimizer,
                                                    self.run.data_generator, epoch, self.run.history, step=step + 1,
                                                    order=order, sums=tally.to_state(),
                                                    ema_model=self.run.ema_model))
        return lr, tally

    def _stream(self, epoch: int, order: Tensor, first_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches from ``first_step`` on, read and augmented by DataLoader workers (this rank's share
        of each global batch); the workers' random crops are seeded by (run seed, epoch)."""
        from aigrobust.data import streaming_loader

        size = self.config.batch_size
        batches = [order[s * size:(s + 1) * size][self.rank::self.world].tolist()
                   for s in range(first_step, self.steps_per_epoch)]
        return iter(streaming_loader(self.dataset, batch_sampler=batches, seed=self.config.seed * 1_000_003 + epoch))

    def _step(self, epoch: int, step: int, order: Tensor, tally: EpochTally,
              streamed: tuple[Tensor, Tensor] | None = None) -> float:
        """One optimiser step on the batch at ``step`` of ``order`` (or the ``streamed`` batch a DataLoader read for
        it); adds to ``tally``; returns the learning rate."""
        config, device = self.config, self.device
        if streamed is not None:
            x, y = streamed
        else:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if self.world > 1:
                idx = idx[self.rank :: self.world]  # each rank takes its share of the global batch
            x, y = self.images[idx].float().div_(255.0), self.labels[idx]
            if config.augment:
                x = augment_batch(x, self.augment_generator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        position, total_steps = epoch * self.steps_per_epoch + step, self.steps_per_epoch * config.epochs
        lr = learning_rate(config, position, total_steps)
        for group in self.run.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16):
            clean_logits = None
            if self.inner is not None:
                if self.inner.needs_clean_logits:
                    clean_logits = self.step_module(x)[0]
                x = self._adversarial_batch(x, y, epoch, step)
            logits, gate_values, decisions = self.step_module(x)
            loss = (F.cross_entropy(logits.float(), y) if self.inner is None
                    else self.inner.training_loss(logits, y, clean_logits))
            rate_loss = torch.zeros((), device=device)
            if self.targets is not None:
                # under adversarial training the gates see (and the target rate holds on) the attacked batch
                targets = warmed_up_targets(self.targets, config.target_warmup, position, total_steps)
                rate_loss = target_rate_loss(gate_values[:, self.gated_cols], targets[: len(self.gated_cols)])
                loss = loss + config.gate_lambda * rate_loss
                if self.inner is not None and self.inner.compute > 0:
                    loss = loss + config.compute_penalty * self._excess_execution(gate_values, targets)
        if not torch.isfinite(loss.detach()):
            # a diverged run is stopped before the optimiser writes NaN into the weights; the last checkpoint
            # (finite, from an earlier epoch or step) stays the newest one on disk
            raise TrainingError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}: "
                                "training diverged (lower --lr); no checkpoint of this step was written")
        self.run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.run.optimizer.step()
        if self.run.ema_model is not None:
            _update_average(self.run.ema_model, self.run.model, float(config.ema))  # type: ignore[arg-type]
        tally.loss += float(loss.detach()) * len(y)
        tally.rate += float(rate_loss.detach()) * len(y)
        tally.correct += int((logits.detach().argmax(1) == y).sum())
        tally.seen += len(y)
        tally.executed += decisions.double().sum(0).cpu()
        if self.on_batch is not None:
            self.on_batch(epoch + 1, step + 1, self.steps_per_epoch, float(loss.detach()))
        return lr


    def _adversarial_batch(self, x: Tensor, y: Tensor, epoch: int, step: int) -> Tensor:
        """The inner attack on the model as it trains (Gumbel gates, batch statistics) or as it is deployed
        (``inner_network``); its noise is keyed by (seed, rank, epoch, step), so a resumed run draws the same."""
        assert self.inner is not None
        key = (self.config.seed * 1_000_003 + (epoch * 100_003 + step) * 7_919 + self.rank) % (2**63)
        generator = torch.Generator().manual_seed(key)
        model = self.run.model

        def forward(z: Tensor) -> tuple[Tensor, Tensor | None]:
            logits, trace = model.forward_with_gates(z)
            return logits, (trace.p_on[:, self.gated_cols] if self.gated_cols else None)

        costs = self.costs[self.gated_cols] if self.costs is not None and self.gated_cols else None
        if self.config.inner_network == "deployed":
            # the network evaluation will attack: hard gates (straight-through gradient), running statistics
            model.eval()
            try:
                with model.gate_settings(mode="hard", grad="straight-through"):
                    adversarial = self.inner.perturb(forward, x, y, generator, costs)
            finally:
                model.train()
        else:
            adversarial = self.inner.perturb(forward, x, y, generator, costs)
        if self.config.channels_last:
            adversarial = adversarial.contiguous(memory_format=torch.channels_last)
        return adversarial

    def _excess_execution(self, gate_values: Tensor, targets: Tensor) -> Tensor:
        """Mean over the batch of the squared FLOPs-weighted execution above the target rates ``targets`` (this
        step's), per sample: a batch mean at the target can hide images that open everything, which is what a
        compute attacker finds."""
        assert self.costs is not None
        costs = self.costs[self.gated_cols]
        executed = (gate_values[:, self.gated_cols] * costs).sum(1) / costs.sum()
        target = (targets[: len(self.gated_cols)] * costs).sum() / costs.sum()
        return (F.relu(executed - target) ** 2).mean()


def _update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model for parameters; buffers (BatchNorm statistics) copied."""
    with torch.no_grad():
        for a, p in zip(average.parameters(), model.parameters()):
            a.lerp_(p, 1.0 - decay)
        for a, b in zip(average.buffers(), model.buffers()):
            a.copy_(b)


def _save_epoch(config: TrainConfig, run: _Run, epoch: int, record: EpochRecord, data_meta: Mapping[str, Any],
                out_dir: Path) -> None:
    """The end-of-epoch files: the state (weights included) is the resume point, last.safetensors the usable
    model, log.jsonl one line per epoch."""
    require_finite_weights(run.model, f"after epoch {epoch + 1}")
    _save_state(out_dir / STATE_FILE, _state(config, run.model, run.optimizer, run.data_generator, epoch + 1,
                                             run.history, ema_model=run.ema_model))
    metadata = _checkpoint_metadata(config, data_meta, record, epoch + 1)
    save_checkpoint(run.published, out_dir / MODEL_FILE, **metadata)
    if record.best:
        save_checkpoint(run.published, out_dir / BEST_FILE, **metadata)
    # the whole history, rewritten atomically: a full disk or a kill between the state and the log cannot leave a
    # log that lacks an epoch the state holds, or a line cut in half
    atomic_write_bytes(out_dir / LOG_FILE, "".join(json.dumps(asdict(r)) + "\n" for r in run.history).encode())


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
           sums: list[Any] | None = None, ema_model: nn.Module | None = None) -> dict[str, Any]:
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
        "normalization": model.normalize.as_dict(),  # not in the weights; --init may have set it
    }
    if ema_model is not None:
        state["ema"] = {k: v.detach().cpu().clone() for k, v in ema_model.state_dict().items()}
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
        **({"robust_accuracy": record.heldout_robust_accuracy, "robust_accuracy_attack": "pgd-10",
            "adversarial_flops_ratio": record.heldout_adversarial_flops_ratio}
           if record.heldout_robust_accuracy is not None else {}),
        "epoch": epoch,
        "recipe": config.as_dict(),
        "torch": torch.__version__,
    }
