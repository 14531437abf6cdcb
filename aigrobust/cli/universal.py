"""``aigrobust universal``: one compute perturbation for every image, fitted on training images and judged on test
images it never saw. A thin command over :func:`aigrobust.runs.universal.universal_compute`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from safetensors.torch import save

from aigrobust.cli import inputs
from aigrobust.cli.exits import BadInput
from aigrobust.cli.options import data_dir_option, seed_option
from aigrobust.cli.types import CheckpointRef, CheckpointType, EpsilonType
from aigrobust.data import load_dataset
from aigrobust.errors import DataError
from aigrobust.files import atomic_write_bytes
from aigrobust.runs.records import enclosing_run_folder
from aigrobust.runs.universal import universal_compute
from aigrobust.settings import Setting

RESULT_FILE = "universal.json"
DELTA_FILE = "delta.safetensors"


@click.command("universal")
@click.option("--model", "models", multiple=True, help="Registered gated model with shipped weights.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=CheckpointType(),
              help="[LABEL=]PATH of a gated model's checkpoint.")
@click.option("--eps", "epsilon", type=EpsilonType(positive=True), required=True, help="Linf radius, e.g. 8/255.")
@click.option("--fit", "n_fit", type=click.IntRange(min=1), default=512, show_default=True,
              help="Training images the perturbation is fitted on (a seeded pick).")
@click.option("--n-samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="First test images it is judged on (never seen while fitting).")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="Passes of the fitting loop over the fitting images.")
@click.option("--gate-loss", type=click.Choice(["hinge", "prob"]), default="hinge", show_default=True,
              help="The compute attack's gate loss the perturbation ascends (see compute-inflation's gate_loss).")
@seed_option(Setting("seed", "--seed", 0, "Seeds the pick of fitting images and the noise control."))
@data_dir_option("Folder with cifar10_train*.npz and cifar10_test*.npz.", must_be_folder=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for the perturbation (delta.safetensors) and its figures (universal.json).")
def universal_command(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], epsilon: float, n_fit: int,
                      n_samples: int, steps: int, gate_loss: str, seed: int, data_dir: Path | None,
                      out_dir: Path) -> None:
    """Fit one Linf perturbation for all images on training images; judge it on unseen test images.

    Writes universal.json (both image sets by sample id, the recovery of the saved FLOPs on each and under random
    sign noise of the same norm, the delta's sha256) and delta.safetensors.

    \b
    Example:
      aigrobust universal --model aig20 --eps 8/255 --fit 1024 --steps 50 --data-dir ../shared/data --out runs/u
    """
    _refuse_output_folder(out_dir)
    entry = _one_gated_model(models, checkpoints)
    try:
        train = load_dataset("cifar10", "train", data_dir, False)
        test = inputs.first_samples(inputs.heldout_split("cifar10", data_dir, False), n_samples)
    except DataError as err:
        raise BadInput(str(err)) from None
    if n_fit > len(train):
        raise BadInput(f"--fit {n_fit} asks for more images than the training split holds ({len(train)})")
    pick = np.sort(np.random.default_rng([seed, 30]).permutation(len(train))[:n_fit])
    fit = train.subset(pick)
    fit_images, _ = fit.tensors()
    judge_images, _ = test.tensors()
    shared = _shared_images(fit_images, judge_images)
    if shared:
        raise BadInput(f"{shared} of the {len(test)} test images are also among the {n_fit} fitting images (the same "
                       "pixels): they would not be unseen; give a --data-dir whose train and test files differ")
    result = universal_compute(entry.model, fit_images, list(fit.indices), judge_images, list(test.indices), epsilon,
                               steps=steps, gate_loss=gate_loss, seed=seed)
    document = {"model": entry.name, "source": entry.source, "fit_data": {"split": "train", "n": n_fit, "seed": seed,
                                                                         "sha256": fit.fingerprint()},
                "judge_data": {"split": "test", "n": len(test), "sha256": test.fingerprint()}, **result.document()}
    atomic_write_bytes(out_dir / DELTA_FILE, save({"delta": result.delta.contiguous()}))
    atomic_write_bytes(out_dir / RESULT_FILE, json.dumps(document, indent=2, sort_keys=True).encode())
    click.echo(f"{entry.name}, universal Linf {epsilon:.4f}, fitted on {n_fit} training images, judged on {len(test)} "
               f"unseen test images: recovery of the saved FLOPs {100 * result.fit_recovery:.1f}% (fitting), "
               f"{100 * result.judge_recovery:.1f}% (unseen); random sign noise {100 * result.noise_recovery:.1f}%; "
               f"{out_dir / RESULT_FILE}")


def _refuse_output_folder(out_dir: Path) -> None:
    """An --out that holds a universal result already, or lies in an attack run folder, refused in one line."""
    if (out_dir / RESULT_FILE).exists():
        raise BadInput(f"{out_dir} already holds {RESULT_FILE}; pick another --out")
    around = enclosing_run_folder(out_dir / RESULT_FILE)
    if around is not None:
        raise BadInput(f"{out_dir} lies in the attack run folder {around}: a resume or rerun of it replaces what it "
                       "finds; pick an --out outside it")


def _one_gated_model(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...]) -> Any:
    """The one gated model a universal perturbation is fitted to, or one line saying what is wrong."""
    inputs.require_weights(inputs.pretrained_names(models, checkpoints))
    entries = inputs.model_entries(models, checkpoints)
    if len(entries) != 1:
        raise BadInput("give one model (--model or --checkpoint): a universal perturbation is fitted to one network")
    if not entries[0].model.is_gated:
        raise BadInput(f"{entries[0].name} has no gates: a compute perturbation needs a gated model")
    return entries[0]


def _shared_images(fitting: Any, judged: Any) -> int:
    """How many judged images have exactly the pixels of a fitting image."""
    seen = {hashlib.sha256(image.numpy().tobytes()).digest() for image in fitting}
    return sum(hashlib.sha256(image.numpy().tobytes()).digest() in seen for image in judged)
