"""What determines a training run and what it records: the configuration (a resume must use the same one), the per-epoch record, the result, the learning-rate schedules and the recipe defaults."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from aigrobust.errors import AigrobustError
from aigrobust.models.base import ResNetBase
from aigrobust.settings import train_default
from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec

STATE_FILE = "train_state.pt"


MODEL_FILE = "last.safetensors"


FINAL_FILE = "model.safetensors"


BEST_FILE = "best.safetensors"  # adversarial training: the epoch with the highest validation PGD-10 accuracy


LOG_FILE = "log.jsonl"


# the network the inner attack runs on: as it trains (sampled gates, batch statistics), as it is deployed (hard
# gates, running statistics), or the control between them (sampled gates, running statistics)
INNER_NETWORKS = ("training", "deployed", "running-statistics")


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
    """Everything that determines a training run (a resume must use the same one); ``aigrobust train`` builds one
    from its options.

    Args:
        model: a registered model name (``aig20``, ``resnet32``, ``sdn20``).
        model_kwargs: the model's settings (``target_rates``, ``exit_after``, ...).
        epochs: passes over the training images.
        batch_size: images per optimiser step.
        lr: the peak learning rate (SGD with momentum).
        momentum: SGD's momentum.
        weight_decay: L2 weight decay.
        schedule: the learning-rate schedule: ``step`` (divided by 10 at each milestone), ``cosine`` or ``onecycle``.
        milestones: fractions of the run where the step schedule divides the rate.
        gate_lambda: the weight of the gates' target-rate loss (ConvNet-AIG's).
        gate_lr_factor: the gates' learning rate relative to ``lr``.
        target_warmup: the fraction of the run over which every gate's target falls linearly from 1.0 (all blocks
            run) to its own, so a start from a plain network's weights keeps what they learnt while the gates learn to
            skip (0: no warm-up).
        augment: random crops and flips.
        seed: the seed of the data order, augmentation, initialisation and Gumbel draws.
        device: ``auto``, ``cpu`` or ``cuda``.
        bf16: bfloat16 autocast (CUDA only).
        channels_last: NHWC convolutions (faster on the CPU and CUDA).
        init: weights to start from: ``torchvision``, a weights file or a shipped name (``resnet20.at``).
        adversarial: the inner attack's spec (:func:`~aigrobust.training.inner_attacks.inner_attack_from_spec`),
            stored canonical; None: standard training.
        compute_penalty: the weight of per-sample execution above the target rate (adversarial ``compute=W`` > 0).
        ema: the decay of an exponential moving average of the weights, which is validated and saved; None: none.
        inner_network: the network the inner attack runs on: ``training`` (Gumbel gates, batch statistics, as the
            step sees it) or ``deployed`` (hard gates with a straight-through gradient, running statistics, as an
            evaluation attacks it).
        exits_only: early-exit networks: train the exits only, on the frozen backbone (SDN's "IC-only").
        exit_accuracy_loss: early-exit networks: the threshold is calibrated on the held-out images after each epoch
            for at most this accuracy loss (a fraction).

    >>> TrainConfig(model="aig20", epochs=30, adversarial="n-fgsm").adversarial
    'n-fgsm:eps=0.03137254901960784,compute=0.0,k=2.0,step=auto'
    """

    model: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = train_default("epochs")
    batch_size: int = train_default("batch_size")
    lr: float = train_default("lr")
    momentum: float = train_default("momentum")
    weight_decay: float = train_default("weight_decay")
    schedule: Schedule = Schedule(train_default("schedule"))
    milestones: tuple[float, ...] = (0.5, 0.75)
    gate_lambda: float = train_default("gate_lambda")
    gate_lr_factor: float = train_default("gate_lr_factor")
    target_warmup: float = train_default("target_warmup")
    augment: bool = True
    seed: int = train_default("seed")
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    init: str | None = train_default("init")
    adversarial: str | None = train_default("adversarial")
    compute_penalty: float = train_default("compute_penalty")
    ema: float | None = train_default("ema")
    inner_network: str = train_default("inner_network")
    exits_only: bool = train_default("exits_only")
    exit_accuracy_loss: float = train_default("exit_accuracy_loss")

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", Schedule(self.schedule))
        if self.adversarial is not None:

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
        for name, top in (("weight_decay", 1.0), ("gate_lambda", 1000.0), ("gate_lr_factor", 1000.0),
                          ("compute_penalty", 1000.0)):  # the command line's ranges: larger values overflow
            if not 0 <= float(getattr(self, name)) <= top:
                raise ValueError(f"{name} takes a number in [0, {top:g}], got {getattr(self, name)!r}")
        if self.inner_network not in INNER_NETWORKS:
            raise ValueError(f"inner_network takes one of {', '.join(INNER_NETWORKS)}, got {self.inner_network!r}")
        if not 0 <= float(self.exit_accuracy_loss) <= 1:
            raise ValueError(f"exit_accuracy_loss takes a fraction in [0, 1], got {self.exit_accuracy_loss!r}")
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


def imagenet_defaults(batch_size: int) -> dict[str, Any]:
    """The paper's ImageNet recipe (ConvNet-AIG, after He et al.): SGD momentum 0.9, lr 0.1 per 256 images, weight
    decay 1e-4, lr x0.1 every 30 epochs, 100 epochs; the gate targets are the model's own (aig50's per-layer
    schedule) and the gate loss weight stays ``gate_lambda``."""
    return {"epochs": 100, "lr": 0.1 * batch_size / 256, "weight_decay": 1e-4, "schedule": "step",
            "milestones": (0.3, 0.6, 0.9)}


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


def overfitting_warning(previous: float | None, current: float) -> str | None:
    """A warning where validation robust accuracy fell by more than OVERFITTING_DROP since the previous epoch
    (catastrophic overfitting: single-step training that stops resisting multi-step attacks); else None."""
    if previous is None or previous - current <= OVERFITTING_DROP:
        return None
    return (f"catastrophic overfitting: validation PGD-10 accuracy fell from {previous:.4f} to {current:.4f} in one "
            f"epoch; {BEST_FILE} keeps the best epoch")


ADDED_SETTINGS = ("adversarial", "compute_penalty", "ema", "target_warmup", "inner_network", "exits_only",
                  "exit_accuracy_loss")
