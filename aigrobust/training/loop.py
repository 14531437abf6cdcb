"""Training plain and gated ResNets: SGD, step/cosine/one-cycle schedules, target-rate loss, resumable.

Every epoch writes ``last.safetensors`` (the model, our checkpoint format) and ``train_state.pt`` (optimizer,
generators, history) atomically, and rewrites ``log.jsonl`` (one line per epoch) from that history, also atomically;
``resume=True`` continues from them and ends with the same weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aigrobust.data import ArrayDataset, streaming_loader
from aigrobust.distributed import joined_rank_and_world
from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.gates import target_rate_loss
from aigrobust.training.config import (
    FINAL_FILE,
    STATE_FILE,
    EpochRecord,
    TrainConfig,
    TrainingError,
    TrainResult,
    learning_rate,
    warmed_up_targets,
)
from aigrobust.training.inner_attacks import InnerAttack, inner_attack_from_spec
from aigrobust.training.state import (
    EpochTally,
    Run,
    checkpoint_metadata,
    data_metadata,
    load_teacher,
    require_finite_weights,
    restore_named_files,
    run_state,
    save_epoch,
    save_state,
    start_or_resume,
    update_average,
)
from aigrobust.training.validation import epoch_record

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("CUDA was asked for but no CUDA device is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainingError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


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
    """Train ``config.model`` on ``train_data``, checkpointing into ``out_dir``.

    Args:
        config: everything that determines the run (:class:`~aigrobust.training.config.TrainConfig`).
        train_data: the training images and labels.
        out_dir: the run's folder: ``model.safetensors`` (the final weights with their recipe), the resumable state
            and the per-epoch log.
        heldout: images validated after every epoch (clean accuracy, PGD-10 for adversarial training, execution
            rates); early-exit thresholds are calibrated on them.
        resume: continue a stopped run in ``out_dir`` (the same ``config`` only): the result equals an uninterrupted
            run's.
        on_batch: ``on_batch(epoch, step, steps, loss)`` after every optimiser step, for progress.
        on_epoch: ``on_epoch(record)`` after every epoch.
        checkpoint_every: also save every this many optimiser steps inside an epoch (0: at epoch ends only), so a
            killed run loses at most that many steps.

    Returns:
        The :class:`TrainResult`: the model, its final checkpoint and the per-epoch records.

    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from aigrobust.data import ArrayDataset
    >>> from aigrobust.training.config import TrainConfig
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    >>> data = ArrayDataset(images, np.arange(8) % 10, [str(c) for c in range(10)], "random", "example")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = train(TrainConfig(model="resnet20", epochs=1, batch_size=8, device="cpu"), data, Path(folder))
    >>> len(result.history), result.checkpoint.name
    (1, 'model.safetensors')
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    state_path = out_dir / STATE_FILE
    if state_path.exists() and not resume:
        raise TrainingError(f"{out_dir} already holds a training run; pass --resume to continue it or pick another --out")
    _refuse_one_class(train_data)
    run = start_or_resume(config, out_dir, resume)
    model = run.model
    for module in (model, run.ema_model):
        if module is not None:
            module.to(device)
            if config.channels_last:
                module.to(memory_format=torch.channels_last)
    loop = _EpochRunner(config, run, train_data, device, state_path, checkpoint_every, on_batch)
    data_meta = data_metadata(train_data, heldout)
    if resume and run.mid_epoch is None:
        restore_named_files(config, run, data_meta, out_dir)
    for epoch in range(run.start_epoch, config.epochs):
        started = time.perf_counter()
        lr, tally = loop.epoch(epoch)
        record = epoch_record(run, config, loop.inner, heldout, device, epoch, lr, tally, started)
        run.history.append(record)
        if record.warning:
            log.warning("epoch %d: %s", epoch + 1, record.warning)
        if loop.rank == 0:
            save_epoch(config, run, epoch, record, data_meta, out_dir)
        log.info("epoch %d: %s", epoch + 1, asdict(record))
        if on_epoch is not None:
            on_epoch(record)
    final_path = out_dir / FINAL_FILE
    if run.history and loop.rank == 0:
        last = run.history[-1]
        save_checkpoint(run.published, final_path, **checkpoint_metadata(config, data_meta, last, last.epoch))
    run.published.eval()
    return TrainResult(model=run.published, checkpoint=final_path, history=tuple(run.history))


def _refuse_one_class(train_data: ArrayDataset) -> None:
    """Training data of one class teaches nothing: refused before any step (an image folder's classes are its
    folders, checked when it is read)."""
    labels = getattr(train_data, "labels", None)
    if labels is not None and len(labels) and len(np.unique(np.asarray(labels))) < 2:
        raise TrainingError(f"the training data holds one class only ({len(labels)} images of class "
                            f"{int(np.asarray(labels)[0])}): a classifier needs at least two to learn anything")


class _EpochRunner:
    """The optimiser steps of each epoch: data order, augmentation, the loss with the target-rate term, and the
    mid-epoch checkpoints; under torchrun each rank takes its share of the global batch."""

    def __init__(self, config: TrainConfig, run: Run, train_data: ArrayDataset, device: torch.device,
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
        self.rank, self.world = joined_rank_and_world()
        model = run.model
        self.step_module: torch.nn.Module = _TrainStep(model)
        self.augment_generator = run.data_generator
        if self.world > 1:
            # every rank shuffles alike (shared generator) but augments and draws gates with its own stream
            self.augment_generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.rank)
            model.reset_gate_generator(config.seed * 1_000_003 + self.rank)
            self.step_module = torch.nn.parallel.DistributedDataParallel(self.step_module)
        self.targets = (torch.tensor(model.target_rates, dtype=torch.float32, device=device)
                        if model.is_gated and model.target_rates else None)
        self.gated_cols = [i for i, b in enumerate(model.residual_blocks()) if b.gate is not None]
        self.inner: InnerAttack | None = None
        self.teacher: torch.nn.Module | None = None  # a distillation method's frozen teacher
        self.costs: Tensor | None = None  # per block FLOPs over their mean: the compute objective's weights
        if config.adversarial is not None:

            self.inner = inner_attack_from_spec(config.adversarial)
            if self.inner.teacher_source is not None:
                self.teacher = load_teacher(self.inner.teacher_source, device)
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
                save_state(self.state_path, run_state(self.config, self.run.model, self.run.optimizer,
                                                    self.run.data_generator, epoch, self.run.history, step=step + 1,
                                                    order=order, sums=tally.to_state(),
                                                    ema_model=self.run.ema_model))
        return lr, tally

    def _stream(self, epoch: int, order: Tensor, first_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches from ``first_step`` on, read and augmented by DataLoader workers (this rank's share
        of each global batch); the workers' random crops are seeded by (run seed, epoch)."""

        size = self.config.batch_size
        batches = [order[s * size:(s + 1) * size][self.rank::self.world].tolist()
                   for s in range(first_step, self.steps_per_epoch)]
        return iter(streaming_loader(self.dataset, batch_sampler=batches, seed=self.config.seed * 1_000_003 + epoch))

    def _batch(self, step: int, order: Tensor, streamed: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """The images and labels of ``step`` (this rank's share, augmented), on the device in the step's layout."""
        config = self.config
        if streamed is not None:
            x, y = streamed
        else:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if self.world > 1:
                idx = idx[self.rank :: self.world]  # each rank takes its share of the global batch
            x, y = self.images[idx].float().div_(255.0), self.labels[idx]
            if config.augment:
                x = augment_batch(x, self.augment_generator)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _step(self, epoch: int, step: int, order: Tensor, tally: EpochTally,
              streamed: tuple[Tensor, Tensor] | None = None) -> float:
        """One optimiser step on the batch at ``step`` of ``order`` (or the ``streamed`` batch a DataLoader read for
        it); adds to ``tally``; returns the learning rate."""
        config, device = self.config, self.device
        x, y = self._batch(step, order, streamed)
        position, total_steps = epoch * self.steps_per_epoch + step, self.steps_per_epoch * config.epochs
        lr = learning_rate(config, position, total_steps)
        for group in self.run.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.bf16):
            clean_logits = teacher_probs = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_probs = F.softmax(self.teacher(x).float(), dim=1)
            if self.inner is not None:
                if self.inner.needs_clean_logits:
                    clean_logits = self.step_module(x)[0]
                x = self._adversarial_batch(x, y, epoch, step, teacher_probs)
            logits, gate_values, decisions, extra = self.step_module(x, y)
            loss = (F.cross_entropy(logits.float(), y) if self.inner is None
                    else self.inner.training_loss(logits, y, clean_logits, teacher_probs))
            if extra is not None:  # an early-exit network's exits
                loss = loss + extra
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
                                f"training diverged (lower --lr{self._other_weights()}); no checkpoint of this step "
                                "was written")
        self.run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.run.optimizer.step()
        if self.run.ema_model is not None:
            update_average(self.run.ema_model, self.run.model, float(config.ema))  # type: ignore[arg-type]
        tally.loss += float(loss.detach()) * len(y)
        tally.rate += float(rate_loss.detach()) * len(y)
        tally.correct += int((logits.detach().argmax(1) == y).sum())
        tally.seen += len(y)
        tally.executed += decisions.double().sum(0).cpu()
        if self.on_batch is not None:
            self.on_batch(epoch + 1, step + 1, self.steps_per_epoch, float(loss.detach()))
        return lr


    def _adversarial_batch(self, x: Tensor, y: Tensor, epoch: int, step: int,
                           teacher_probs: Tensor | None = None) -> Tensor:
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
        if self.config.inner_network != "training":
            # 'deployed': the network evaluation attacks (hard gates, running statistics); 'running-statistics':
            # gates sampled as in training, batch norm as deployed (which of the two matters); both with the
            # straight-through gate gradient that training's gates use
            mode = "hard" if self.config.inner_network == "deployed" else "stochastic"
            model.eval()
            try:
                with model.gate_settings(mode=mode, grad="straight-through"):
                    adversarial = self.inner.perturb(forward, x, y, generator, costs, teacher_probs)
            finally:
                model.train()
        else:
            adversarial = self.inner.perturb(forward, x, y, generator, costs, teacher_probs)
        if self.config.channels_last:
            adversarial = adversarial.contiguous(memory_format=torch.channels_last)
        return adversarial

    def _other_weights(self) -> str:
        """The other loss weights of this run a diverged loss may come from, for its message."""
        named = [f"--gate-lambda {self.config.gate_lambda:g}"] if self.targets is not None else []
        if self.inner is not None and self.inner.compute > 0:
            named.append(f"--compute-penalty {self.config.compute_penalty:g}")
        return f", or {' or '.join(named)}" if named else ""

    def _excess_execution(self, gate_values: Tensor, targets: Tensor) -> Tensor:
        """Mean over the batch of the squared FLOPs-weighted execution above the target rates ``targets`` (this
        step's), per sample: a batch mean at the target can hide images that open everything, which is what a
        compute attacker finds."""
        assert self.costs is not None
        costs = self.costs[self.gated_cols]
        executed = (gate_values[:, self.gated_cols] * costs).sum(1) / costs.sum()
        target = (targets[: len(self.gated_cols)] * costs).sum() / costs.sum()
        return (F.relu(executed - target) ** 2).mean()


class _TrainStep(torch.nn.Module):
    """One forward for training: (logits, gate values, decisions, the model's auxiliary loss); a module so DistributedDataParallel can wrap it."""

    def __init__(self, model: ResNetBase) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        logits, trace = self.model.forward_with_gates(x)
        extra = self.model.auxiliary_loss(trace, labels) if labels is not None else None
        return logits, trace.gate_values, trace.decisions, extra


