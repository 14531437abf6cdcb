"""A training run's state and the files it writes: starting or resuming a run (the same configuration only), the resume point (train_state.pt), the end-of-epoch checkpoints and log, and their metadata."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aigrobust.data import ArrayDataset
from aigrobust.files import atomic_write_bytes
from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import CheckpointError, load_state_checked, read_checkpoint, save_checkpoint
from aigrobust.models.factory import create_model, load_checkpoint, load_pretrained_into
from aigrobust.models.registry import UnknownModelError, get_model_info
from aigrobust.runs.folder import describe_differences
from aigrobust.training.config import (
    ADDED_SETTINGS,
    BEST_FILE,
    LOG_FILE,
    MODEL_FILE,
    STATE_FILE,
    EpochRecord,
    TrainConfig,
    TrainingError,
)
from aigrobust.training.inner_attacks import inner_attack_from_spec

log = logging.getLogger(__name__)


def initialise_from(model: ResNetBase, init: str) -> None:
    """Start ``model`` from other weights: 'torchvision' (ImageNet models: torchvision's download), a weights file
    (ours, akamaster's, the ConvNet-AIG reference code's or torchvision's layout, read with weights_only=True) or a
    registered name with shipped weights ('resnet20.at', 'aig20'). The source is the same architecture (every weight
    taken, gates included: fine-tuning a gated model keeps its gates) or the plain twin of a gated model (the
    residual weights taken; the gates keep their fresh initialisation, as the reference code does). The source's
    input normalisation comes along: its weights were trained under it."""

    if init == "torchvision":
        try:
            load_pretrained_into(model, get_model_info(model.registry_name))
        except CheckpointError as err:
            raise TrainingError(str(err)) from None
        return
    source = _model_from(init, "--init", "'torchvision', a weights file or a shipped name such as resnet20.at")
    ours, theirs = model.state_dict(), source.state_dict()
    misfit = sorted(k for k, v in theirs.items() if k not in ours or ours[k].shape != v.shape)
    missing = sorted(k for k in ours if k not in theirs and not model.is_decision_state(k))
    if misfit or missing:
        names = ", ".join((misfit + missing)[:3])
        raise TrainingError(f"--init {init}: it holds {source.registry_name} weights, which do not fit "
                            f"{model.registry_name} ({len(misfit)} weights without a place, {len(missing)} missing: "
                            f"{names}); give the same architecture or the plain twin of a gated model")
    load_state_checked(model, {**ours, **theirs}, str(init))
    model.normalize.set_statistics(source.normalize.mean.flatten().tolist(), source.normalize.std.flatten().tolist())


def _model_from(source: str, option: str, choices: str) -> ResNetBase:
    """A weights file (any layout ``load_checkpoint`` reads) or a registered name with shipped weights."""
    path = Path(source)
    try:
        return load_checkpoint(path)[0] if path.exists() else create_model(source, pretrained=True)
    except UnknownModelError as err:
        raise TrainingError(f"{option} {source}: no such file, and {err.args[0]} (give {choices})") from None
    except CheckpointError as err:
        raise TrainingError(f"{option} {source}: {err}") from None


def load_teacher(source: str, device: torch.device) -> ResNetBase:
    """A distillation method's teacher, frozen and in evaluation mode on ``device`` (a gated teacher decides by its
    hard gates, as deployed)."""
    teacher = _model_from(source, "teacher", "a weights file or a shipped name such as resnet20.at")
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def require_finite_weights(model: nn.Module, when: str) -> None:
    """A TrainingError instead of a checkpoint when any parameter or buffer holds NaN or inf."""
    bad = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingError(f"{len(bad)} tensors hold NaN or inf {when} (first: {bad[0]}): training diverged "
                            "(lower --lr); no checkpoint was written")


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the resume point atomically (a kill leaves the previous one whole)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Read a resume point (weights_only: tensors and plain containers, never code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise TrainingError(f"{path}: training state unreadable ({type(err).__name__}); delete it to start over") from None


def make_optimizer(model: ResNetBase, config: TrainConfig) -> torch.optim.SGD:
    """SGD over the model's parameters, the gates' at ``gate_lr_factor`` times the learning rate."""
    gate_ids = {id(p) for p in model.gate_parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]  # a frozen backbone (exits-only) stays out
    base = [p for p in trained if id(p) not in gate_ids]
    gates = [p for p in trained if id(p) in gate_ids]
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
class Run:
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


def start_or_resume(config: TrainConfig, out_dir: Path, resume: bool) -> Run:
    """A fresh run from the seed, or the run the state file in ``out_dir`` describes (same configuration only)."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_kwargs)
    state_path = out_dir / STATE_FILE
    resuming = resume and state_path.exists()
    if config.init is not None and not resuming:  # a resume takes weights and input statistics from its state
        initialise_from(model, config.init)
    model.reset_gate_generator(config.seed)
    if config.exits_only:
        if not hasattr(model, "freeze_backbone"):
            raise TrainingError(f"--exits-only trains an early-exit network's exits; {config.model} has none")
        model.freeze_backbone()
    if config.adversarial is not None:

        if inner_attack_from_spec(config.adversarial).compute > 0 and not model.is_gated:
            raise TrainingError(f"--adversarial {config.adversarial}: compute > 0 attacks the gates, and "
                                f"{config.model} has none")
    run = Run(model, make_optimizer(model, config), torch.Generator().manual_seed(config.seed), [])
    if config.ema is not None:
        run.ema_model = copy.deepcopy(model).eval()
    if not resuming:
        return run
    state = load_state(state_path)
    now = json.loads(json.dumps(config.as_dict()))
    # settings added since a run began read as their defaults, so older runs still resume
    saved = {**{k: v for k, v in TrainConfig(model=config.model).as_dict().items() if k in ADDED_SETTINGS},
             **(state.get("config") or {})}
    if saved != now:

        raise TrainingError(f"{out_dir} was started with another configuration "
                            f"({describe_differences(saved, now)}); resume needs the same one")
    _restore(run, state, config, out_dir)
    log.info("resuming %s at epoch %d step %d", out_dir, run.start_epoch + 1, int(state.get("step", 0)))
    return run



def _restore(run: Run, state: dict[str, Any], config: TrainConfig, out_dir: Path) -> None:
    """Put a resume point's weights, input statistics, optimizer, generators, history and position into ``run``."""
    state_path = out_dir / STATE_FILE
    model = run.model
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


def save_epoch(config: TrainConfig, run: Run, epoch: int, record: EpochRecord, data_meta: Mapping[str, Any],
                out_dir: Path) -> None:
    """The end-of-epoch files: last.safetensors the usable model (and best.safetensors), log.jsonl one line per
    epoch, and last the state (weights included), the resume point: a kill between two writes leaves a resume point
    whose every file exists (the epoch after it is trained again, to the same weights)."""
    require_finite_weights(run.model, f"after epoch {epoch + 1}")
    metadata = checkpoint_metadata(config, data_meta, record, epoch + 1)
    save_checkpoint(run.published, out_dir / MODEL_FILE, **metadata)
    if record.best:
        save_checkpoint(run.published, out_dir / BEST_FILE, **metadata)
    # the whole history, rewritten atomically: never a line cut in half
    atomic_write_bytes(out_dir / LOG_FILE, "".join(json.dumps(asdict(r)) + "\n" for r in run.history).encode())
    save_state(out_dir / STATE_FILE, run_state(config, run.model, run.optimizer, run.data_generator, epoch + 1,
                                             run.history, ema_model=run.ema_model))


def restore_named_files(config: TrainConfig, run: Run, data_meta: Mapping[str, Any], out_dir: Path) -> None:
    """On resume, the files the history names must exist: best.safetensors where an epoch was the best. Folders
    whose resume point was written before them (a kill in between) get it back from the state where the best epoch
    is the last one finished; otherwise the run says it cannot."""
    best = [i for i, r in enumerate(run.history) if r.best]
    if not best or (out_dir / BEST_FILE).exists():
        return
    if best[-1] != len(run.history) - 1:
        raise TrainingError(f"{out_dir}: the log names epoch {best[-1] + 1} as the best, but {BEST_FILE} is missing and "
                            f"the resume point holds epoch {len(run.history)}'s weights: its best model is lost; "
                            "start the run afresh in another --out")
    record = run.history[-1]
    save_checkpoint(run.published, out_dir / BEST_FILE,
                    **checkpoint_metadata(config, data_meta, record, len(run.history)))


def data_metadata(train_data: ArrayDataset, heldout: ArrayDataset | None) -> dict[str, Any]:
    """Which data a run trained and validated on (source, size, fingerprint), for its checkpoints."""
    return {
        "dataset": train_data.name,
        "classes": list(train_data.classes),
        "train_data": {"source": train_data.source, "n": len(train_data), "sha256": train_data.fingerprint()},
        "heldout_data": ({"source": heldout.source, "n": len(heldout), "sha256": heldout.fingerprint()}
                         if heldout is not None else None),
    }


def run_state(config: TrainConfig, model: ResNetBase, optimizer: torch.optim.Optimizer, data_generator: torch.Generator,
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


def checkpoint_metadata(config: TrainConfig, data_meta: Mapping[str, Any], record: EpochRecord,
                         epoch: int) -> dict[str, Any]:
    """What a checkpoint of this run carries beside its weights: the recipe, the data, the epoch's figures."""
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


def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, for parameters and floating-point buffers alike (BatchNorm's
    running statistics: statistics copied from the live network describe its features, not the averaged weights',
    and cost an averaged robust network several points); integer buffers (batch counters) are copied."""
    with torch.no_grad():
        for a, p in zip(average.parameters(), model.parameters()):
            a.lerp_(p, 1.0 - decay)
        for a, b in zip(average.buffers(), model.buffers()):
            if a.is_floating_point():
                a.lerp_(b, 1.0 - decay)
            else:
                a.copy_(b)
