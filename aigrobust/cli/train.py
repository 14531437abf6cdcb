"""``aigrobust train``: a thin command over :func:`aigrobust.training.loop.train`, its options checked before any
data is read. Named in the group's table (:mod:`aigrobust.cli.commands`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch
from tqdm import tqdm

from aigrobust.cli import inputs, training_inputs
from aigrobust.cli.exits import DISK_ERRORS, BadInput
from aigrobust.cli.inputs import known_models
from aigrobust.cli.options import data_dir_option, device_option, download_option, seed_option, train_option
from aigrobust.cli.types import FiniteFloatRange
from aigrobust.distributed import finish as finish_distributed
from aigrobust.distributed import rank_and_world
from aigrobust.errors import CheckpointError
from aigrobust.models.factory import create_model
from aigrobust.models.registry import get_model_info
from aigrobust.settings import TRAIN_SETTINGS
from aigrobust.training.config import STATE_FILE, TrainConfig, TrainingError
from aigrobust.training.loop import train
from aigrobust.training.state import initialise_from


@click.command("train")
@click.option("--model", "model_name", required=True, help="Registered model name, e.g. aig20.")
@data_dir_option()
@download_option()
@train_option("init")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Run folder (checkpoints, log).")
@train_option("epochs", type=click.IntRange(min=1))
@train_option("batch_size", type=click.IntRange(min=1))
@train_option("lr", type=FiniteFloatRange(min=0, min_open=True, max=1000))
@train_option("momentum", type=FiniteFloatRange(0, 1))
@train_option("weight_decay", type=FiniteFloatRange(0, 1))
@train_option("schedule")
@click.option("--target-rate", type=FiniteFloatRange(0, 1), default=None, help="Gate target rate t (gated models).")
@train_option("gate_lambda", type=FiniteFloatRange(0, 1000))
@train_option("gate_lr_factor", type=FiniteFloatRange(0, 1000))
@train_option("target_warmup", type=FiniteFloatRange(0, 1), metavar="FRACTION")
@click.option("--shortcut", type=click.Choice(["A", "B"]), default=None, help="CIFAR shortcut style.")
@click.option("--max-train-samples", type=click.IntRange(min=1), default=None, help="Train on a seeded subset.")
@click.option("--no-augment", is_flag=True, help="Disable random crop + flip.")
@seed_option(TRAIN_SETTINGS["seed"])
@device_option()
@click.option("--no-bf16", is_flag=True, help="Disable bf16 autocast on CUDA.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N optimiser steps inside an epoch (0: at epoch ends only).")
@train_option("adversarial", metavar="METHOD[:key=value,...]")
@click.option("--val-samples", type=click.IntRange(min=0), default=None,
              help="Training images held out for validation [default: 1000 with --adversarial, else 0: the test "
              "split's figures are shown].")
@train_option("ema", type=FiniteFloatRange(0, 1, min_open=True, max_open=True))
@train_option("compute_penalty", type=FiniteFloatRange(0, 1000))
@train_option("inner_network")
@train_option("exits_only")
@train_option("exit_accuracy_loss", type=FiniteFloatRange(0, 1), metavar="FRACTION")
def train_command(model_name: str, data_dir: Path | None, download: bool, init: str | None, out_dir: Path, epochs: int,
                  batch_size: int, lr: float, momentum: float, weight_decay: float, schedule: str,
                  target_rate: float | None, gate_lambda: float, gate_lr_factor: float,
                  target_warmup: float, shortcut: str | None,
                  max_train_samples: int | None, no_augment: bool, seed: int, device: str, no_bf16: bool,
                  threads: int | None, resume: bool, checkpoint_every: int, adversarial: str | None,
                  val_samples: int | None, ema: float | None, compute_penalty: float, inner_network: str,
                  exits_only: bool, exit_accuracy_loss: float) -> None:
    """Train a model on CIFAR-10 or ImageNet, checkpointing every epoch (resumable with --resume).

    ImageNet models take the paper's recipe unless told otherwise: SGD momentum 0.9, lr 0.1 per 256 images,
    weight decay 1e-4, lr x0.1 every 30 epochs, 100 epochs; images stream from ROOT/train through DataLoader
    workers (RandomResizedCrop 224 and flip), held-out figures from a class-balanced subset of ROOT/val.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    known_models([model_name])
    training_inputs.check_gate_options(model_name)
    training_inputs.check_start_options(model_name, init, shortcut)
    inner = training_inputs.check_adversarial_options(model_name, adversarial, compute_penalty, inner_network)
    info = get_model_info(model_name)
    kwargs: dict[str, Any] = {k: v for k, v in (("target_rate", target_rate), ("shortcut", shortcut)) if v is not None}
    rank, world = rank_and_world(inputs.device(device))
    recipe = training_inputs.recipe(info.default_dataset, batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay,
                           schedule=schedule)
    val_samples = training_inputs.held_out_count(model_name, val_samples, adversarial=inner is not None,
                                                 exits_only=exits_only)
    # a source that does not fit is refused before the data is read (a resume takes its weights from its state)
    if init not in (None, "torchvision") and not (resume and (out_dir / STATE_FILE).exists()):
        _refuse_unfit_source(model_name, kwargs, init)
    train_data, heldout = training_inputs.training_data(info.default_dataset, data_dir, download, max_train_samples, seed,
                                               augment=not no_augment, validation_samples=val_samples)
    try:
        config = TrainConfig(model=model_name, model_kwargs=kwargs, batch_size=batch_size, momentum=momentum,
                             gate_lambda=gate_lambda, gate_lr_factor=gate_lr_factor,
                             target_warmup=target_warmup, augment=not no_augment,
                             seed=seed, device=device, bf16=not no_bf16, init=init, adversarial=inner,
                             compute_penalty=compute_penalty, ema=ema, inner_network=inner_network,
                             exits_only=exits_only, exit_accuracy_loss=exit_accuracy_loss, **recipe)
    except ValueError as err:
        raise BadInput(str(err)) from None
    _run_training(config, train_data, heldout, out_dir, resume, checkpoint_every, rank, world)


def _run_training(config: Any, train_data: Any, heldout: Any, out_dir: Path, resume: bool, checkpoint_every: int,
                  rank: int, world: int) -> None:
    """Train with a progress bar; a training or checkpoint error is one line (a full disk: main() says it)."""
    bar, on_batch, on_epoch = _progress(config.epochs, config.batch_size, rank)
    try:
        result = train(config, train_data, out_dir, heldout=heldout, resume=resume,
                       on_batch=on_batch, on_epoch=on_epoch, checkpoint_every=checkpoint_every)
    except (TrainingError, CheckpointError, OSError) as err:
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            raise  # main() says it in one line; the last checkpoint stays whole
        raise BadInput(str(err)) from None
    finally:
        bar.close()
        if world > 1:
            finish_distributed()
    if rank == 0:
        click.echo(f"saved {result.checkpoint}" + (f" (DistributedDataParallel over {world} processes)"
                                                   if world > 1 else ""))


def _refuse_unfit_source(model_name: str, kwargs: dict[str, Any], init: str) -> None:
    """``--init`` weights that do not fit the model, refused in one line before any data is read."""
    try:
        initialise_from(create_model(model_name, **kwargs), init)
    except TrainingError as err:
        raise BadInput(str(err)) from None


def _progress(epochs: int, batch_size: int, rank: int) -> tuple[Any, Any, Any]:
    """A progress bar over each epoch's batches (images per second beside the loss) and the per-epoch log line,
    both on the first process only: the bar and the two callbacks ``train`` takes."""
    bar = tqdm(total=0, unit="batch", leave=False, disable=None if rank == 0 else True)

    def on_batch(epoch: int, step: int, steps: int, loss: float) -> None:
        if bar.total != steps:
            bar.reset(total=steps)
        bar.set_description(f"epoch {epoch}/{epochs}")
        rate = bar.format_dict.get("rate")  # batches per second, once tqdm has measured it
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate * batch_size:.0f}" if rate else "-")
        bar.update(1)

    def on_epoch(record: Any) -> None:
        if rank == 0:
            tqdm.write(record.log_line())

    return bar, on_batch, on_epoch
