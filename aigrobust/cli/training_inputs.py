"""What train takes in, checked before any data is read: gate and start options, the adversarial method, the recipe, the training data and its held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from aigrobust.cli.exits import BadInput
from aigrobust.cli.types import given_on_command_line
from aigrobust.data import ImageFolderDataset, load_dataset
from aigrobust.errors import DataError
from aigrobust.models.factory import create_model
from aigrobust.models.registry import get_model_info
from aigrobust.training.config import imagenet_defaults
from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec

GATE_OPTIONS = ("target_rate", "gate_lambda", "gate_lr_factor", "target_warmup")


def check_gate_options(model_name: str, options: tuple[str, ...] = GATE_OPTIONS) -> None:
    """Refuse gate options given on the command line for a model without gates: training would ignore them and
    the checkpoint would still record them."""
    given = [name for name in options if given_on_command_line(name)]
    if given and not create_model(model_name).is_gated:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BadInput(f"{model_name} has no gates: {flags} {'apply' if len(given) > 1 else 'applies'} to gated "
                       "models (aig*)")


def check_start_options(model_name: str, init: str | None, shortcut: str | None) -> None:
    """Refuse, before any data is read, ``--init torchvision`` for a model torchvision has no weights for (it would
    start from our shipped weights instead) and ``--shortcut`` for ImageNet models (torchvision's projections)."""
    info = get_model_info(model_name)
    if init == "torchvision" and not info.torchvision_weights:
        raise BadInput(f"--init torchvision: torchvision has no weights for {model_name} (ImageNet models only); "
                       "give a weights file to start from instead")
    if shortcut is not None and info.family == "imagenet":
        raise BadInput(f"--shortcut applies to CIFAR ResNets; {model_name} has torchvision's projection shortcuts")


def recipe(dataset: str, batch_size: int, **given: Any) -> dict[str, Any]:
    """The training settings: those given on the command line, the rest from the paper's ImageNet recipe for
    ImageNet models (the options' own defaults for CIFAR-10)."""
    context = click.get_current_context()
    chosen = {k: v for k, v in given.items()}
    if dataset == "imagenet":
        defaults = imagenet_defaults(batch_size)
        for key in given:
            if context.get_parameter_source(key) == click.core.ParameterSource.DEFAULT:
                chosen[key] = defaults[key]
        chosen["milestones"] = defaults["milestones"]
    return chosen


def training_data(dataset: str, data_dir: Path | None, download: bool, max_train_samples: int | None, seed: int,
                  augment: bool = True, heldout_samples: int = 1000, validation_samples: int = 0) -> tuple[Any, Any]:
    """The training split (a seeded subset of ``max_train_samples``) and held-out data for the per-epoch figures
    (None, with a warning, where absent): CIFAR-10's test split, or a class-balanced ``heldout_samples`` of an
    ImageNet folder's val/ (its train/ streams from disk with random crops and flips). With
    ``validation_samples`` the held-out data is instead a seeded split cut from the training set (never trained
    on), so nothing picked from the per-epoch figures has seen the test images."""
    try:
        if dataset == "imagenet":
            if data_dir is None:
                raise DataError("training an ImageNet model needs --data-dir IMAGENET (holding train/<wnid>/*.JPEG "
                                "and val/<wnid>/*.JPEG)")
            train_data: Any = ImageFolderDataset(data_dir, "train", augment=augment)
        else:
            train_data = load_dataset("cifar10", "train", data_dir, download)
    except DataError as err:
        raise BadInput(str(err)) from None
    if validation_samples:
        if validation_samples >= len(train_data):
            raise BadInput(f"--val-samples {validation_samples} leaves nothing to train on: the training split holds "
                           f"{len(train_data)} images")
        order = np.random.default_rng([seed, 17]).permutation(len(train_data))
        # an image folder's training view crops and flips at random: validate on its plain view
        plain = ImageFolderDataset(data_dir, "train") if dataset == "imagenet" else train_data  # type: ignore[arg-type]
        heldout = plain.subset(np.sort(order[:validation_samples]))
        train_data = train_data.subset(np.sort(order[validation_samples:]))
    else:
        try:
            heldout = load_dataset(dataset, "test", data_dir, download)
            if hasattr(heldout, "balanced_subset"):
                heldout = heldout.balanced_subset(heldout_samples, seed=seed)
        except DataError:
            heldout = None
            click.echo("warning: no held-out split found; no held-out accuracy per epoch", err=True)
    if max_train_samples is not None and max_train_samples < len(train_data):
        pick = np.random.default_rng(seed).permutation(len(train_data))[:max_train_samples]
        train_data = train_data.subset(np.sort(pick))
    elif max_train_samples is not None and max_train_samples > len(train_data):
        click.echo(f"note: --max-train-samples {max_train_samples} asks for more images than the training split "
                   f"holds; all {len(train_data)} are used", err=True)
    return train_data, heldout


def check_adversarial_options(model_name: str, adversarial: str | None, compute_penalty: float,
                              inner_network: str = "training") -> str | None:
    """The --adversarial spec made canonical, or one line: an unknown method or setting, a value out of range,
    compute=W for a model without gates, --compute-penalty without a compute attack to apply it to, or
    --inner-network without an attack to run."""
    given = given_on_command_line("compute_penalty")
    if adversarial is None:
        if inner_network != "training":
            raise BadInput(f"--inner-network {inner_network} chooses what --adversarial's attack runs on: give "
                           "--adversarial METHOD")
        if given:
            raise BadInput("--compute-penalty applies to compute-attacked batches: give --adversarial METHOD:compute=W")
        return None
    try:
        inner = inner_attack_from_spec(adversarial)
    except InnerSpecError as err:
        raise BadInput(f"--adversarial {adversarial}: {err}") from None
    if inner.compute > 0 and not create_model(model_name).is_gated:
        raise BadInput(f"--adversarial {adversarial}: compute={inner.compute:g} attacks the gates, and {model_name} "
                       "has none")
    if given and inner.compute == 0:
        raise BadInput("--compute-penalty applies to compute-attacked batches: add compute=W to --adversarial")
    return inner.spec


def held_out_count(model_name: str, val_samples: int | None, adversarial: bool, exits_only: bool) -> int:
    """How many training images to hold out: as given, else 1000 where validation needs them (adversarial training;
    an early-exit network, whose threshold is calibrated on them), else none; refuses --exits-only without exits."""
    early_exit = hasattr(create_model(model_name), "calibrate_exits")
    if exits_only and not early_exit:
        raise BadInput(f"--exits-only trains an early-exit network's exits; {model_name} has none")
    if val_samples is None:
        val_samples = 1000 if adversarial or early_exit else 0
    if early_exit and val_samples == 0:
        raise BadInput(f"{model_name} calibrates its exit threshold on held-out images: give --val-samples N > 0")
    return val_samples
