"""What the commands are given, turned into objects: models, test data, devices and finished runs.

Each function fails with one line (``BadInput``, exit 2) on input a user can fix; torch and the models load on
first use so that ``aigrobust --help`` stays fast.
"""

from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from aigrobust.cli.exits import BadInput
from aigrobust.cli.types import ATTACK_SPEC, CheckpointRef, ParsedSpec, given_on_command_line
from aigrobust.data import load_dataset
from aigrobust.errors import CheckpointError, DataError, UnknownModelError
from aigrobust.evaluation import EvalSpec, ModelEntry
from aigrobust.evaluation.fit import check_fit, declared_input_shape
from aigrobust.models.adapter import ModelOutputError
from aigrobust.models.dynamic import UserNetworkAdapter
from aigrobust.models.factory import create_model, load_checkpoint
from aigrobust.models.facts import weights_available
from aigrobust.models.folding import why_not_foldable
from aigrobust.models.registry import get_model_info, list_models
from aigrobust.models.user_code import ModelCodeError, load_user_model
from aigrobust.training.config import TrainingError
from aigrobust.training.loop import resolve_device
from attacks import SUITES

log = logging.getLogger("aigrobust")


def known_models(names: tuple[str, ...] | list[str]) -> None:
    """Fail on the first unregistered model name (before any data is read)."""
    for name in names:
        try:
            get_model_info(name)
        except UnknownModelError as err:
            raise BadInput(str(err)) from None


def check_attack_options(epsilons: tuple[float, ...], defenses: tuple[Any, ...], defense_grads: tuple[str, ...],
                         gate_mode: str) -> None:
    """Refuse, before any data is read, attack options that would do nothing: no positive epsilon, a defense
    gradient with no defense, EOT draws where nothing is random."""
    if not epsilons:
        raise BadInput("give at least one --eps (e.g. --eps 8/255)")
    if not any(eps > 0 for eps in epsilons):
        raise BadInput("--eps 0 alone attacks nothing: give a positive epsilon (e.g. --eps 8/255; 0, the clean "
                       "reference, is always added)")
    if given_on_command_line("defense_grads") and all(d.value.name == "none" for d in defenses):
        raise BadInput("--defense-grad says how attackers treat a defense, and no --defense was given (e.g. "
                       "--defense jpeg:75)")
    if given_on_command_line("eot_draws") and gate_mode != "stochastic" and "eot" not in defense_grads:
        raise BadInput("--eot-draws sets the draws EOT averages, and nothing here is random: it applies with "
                       "--gate-mode stochastic or --defense-grad eot on a randomised defense")


def check_gate_use(entries: list[Any], gate_mode: str) -> None:
    """Refuse gate settings (stochastic gates, gate gradients given on the command line) where no model has gates."""
    if any(e.model.is_gated for e in entries):
        return
    names = ", ".join(e.name for e in entries)
    if gate_mode == "stochastic":
        raise BadInput(f"--gate-mode stochastic draws gates, and none of {names} has any")
    if given_on_command_line("gate_grads"):
        raise BadInput(f"--gate-grad says how attack gradients pass gates, and none of {names} has any")


def load_model(name: str | None, checkpoint: Path | None, pretrained: bool) -> tuple[Any, dict[str, Any]]:
    """A model from a checkpoint, a shipped pretrained entry, or freshly initialised (with a warning)."""
    try:
        if checkpoint is not None:
            model, meta = load_checkpoint(checkpoint, expect_model=name)
            return model, meta
        if name is None:
            raise BadInput("give --model or --checkpoint")
        model = create_model(name, pretrained=pretrained)
        meta = getattr(model, "pretrained_metadata", {}) or {}
        return model.eval(), dict(meta)
    except (UnknownModelError, CheckpointError) as err:
        raise BadInput(str(err)) from None


def heldout_split(name: str, data_dir: Path | None, download: bool) -> Any:
    """The named dataset's test split."""
    try:
        return load_dataset(name, "test", data_dir, download)
    except DataError as err:
        raise BadInput(str(err)) from None


def first_samples(data: Any, n_samples: int | None) -> Any:
    """The first ``n_samples`` of the test split (of an image folder: a seeded class-balanced subset); a note where
    it holds fewer (all of them are then used)."""
    if n_samples is not None and n_samples < len(data) and hasattr(data, "balanced_subset"):
        return data.balanced_subset(n_samples)
    if n_samples is not None and n_samples < len(data):
        return data.subset(range(n_samples))
    if n_samples is not None and n_samples > len(data):
        click.echo(f"note: --n-samples {n_samples} asks for more images than the test split holds; all {len(data)} "
                   "are used", err=True)
    return data


def check_classes(name: str, model: Any, data: Any) -> None:
    """Fail where a model's number of classes differs from the data's."""
    if hasattr(model, "output_index") or isinstance(model, UserNetworkAdapter):  # a user's module: its class count shows
        shape = tuple(data[0][0].shape)
        try:
            model.flop_profile(shape)
        except ModelOutputError as err:
            raise BadInput(str(err)) from None
        except (RuntimeError, ValueError) as err:
            raise BadInput(f"{name} does not take images of shape {shape}: {str(err).splitlines()[0]}") from None
    else:  # one of ours: its registered input size (a CIFAR network given 224-pixel images is not evaluated)
        expected = declared_input_shape(model)
        shape = tuple(data[0][0].shape) if len(data) else None
        if expected is not None and shape is not None and shape != expected:
            raise BadInput(f"{name} takes images of {'x'.join(map(str, expected))}, but the data's are "
                           f"{'x'.join(map(str, shape))}: pick the model's dataset (or --dataset)")
    classes = getattr(data, "classes", None)
    if classes is not None and len(classes) != model.num_classes:
        hint = (" (a folder with some ImageNet classes: name its class folders by class number, 0 .. 999)"
                if getattr(data, "name", "") == "imagenet" and model.num_classes == 1000 else "")
        raise BadInput(f"{name} predicts {model.num_classes} classes but {getattr(data, 'name', 'the data')} "
                       f"has {len(classes)}{hint}")


def device(name: str) -> Any:
    """'auto', 'cpu' or 'cuda[:N]' as a torch device."""
    try:
        return resolve_device(name)
    except TrainingError as err:
        raise BadInput(str(err)) from None


def pretrained_names(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...]) -> tuple[str, ...]:
    """The --model names that load shipped or torchvision weights: all of them without --checkpoint; with as many
    checkpoints as models, none (they pair in order); otherwise those no checkpoint's label names
    (``--model resnet50 --model aig50 --checkpoint aig50=PATH``)."""
    if not checkpoints:
        return models
    if len(models) == len(checkpoints):
        return ()
    labels = {ref.label for ref in checkpoints}
    return tuple(name for name in models if name not in labels)


def model_entries(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...]) -> list[Any]:
    """--model NAME alone uses shipped/torchvision weights; --checkpoint [LABEL=]PATH any checkpoint. Given as many
    of each, they pair in order (each checkpoint must hold the model named beside it); otherwise a checkpoint labelled
    with a --model name stands for it and the other --model names load their own weights."""
    known_models(models)
    registered = set(list_models())  # a label that is a model's name must hold that model (aig20=resnet20.pt would not)
    paired = bool(models) and len(models) == len(checkpoints)
    entries = []
    for i, ref in enumerate(checkpoints):
        expected = models[i] if paired else (ref.label if ref.label in models else None)
        model, _ = load_model(expected, ref.path, False)
        if ref.label and ref.label != model.registry_name and ref.label in registered:
            raise BadInput(f"--checkpoint {ref.label}={ref.path}: the label names the registered model {ref.label}, "
                           f"but the file holds a {model.registry_name}; label it {model.registry_name} or a name "
                           "that is not a model's")
        entries.append(ModelEntry(ref.label or model.registry_name, model, source=str(ref.path.resolve())))
    if pretrained_names(models, checkpoints):
        for name in pretrained_names(models, checkpoints):
            try:
                model = create_model(name, pretrained=True).eval()
            except CheckpointError as err:  # the cause first (missing, changed on disk, unreadable), then the way out
                raise BadInput(f"{name}: {err}" + ("" if "--checkpoint" in str(err) else "; pass --checkpoint PATH")
                               ) from None
            entries.append(ModelEntry(name, model, source="pretrained"))
    if not entries:
        raise BadInput("give --model or --checkpoint")
    refuse_colliding_labels(entries)
    return entries


def refuse_colliding_labels(entries: list[Any]) -> None:
    """Each model's label names its files in the run folder: refuse a label given twice, and two that differ only
    in case (one file on a case-insensitive disk, as macOS and Windows have by default)."""
    labels = [e.name for e in entries]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise BadInput(f"model name {', '.join(map(repr, repeated))} given twice; give each model once, and label "
                       "checkpoints as --checkpoint LABEL=PATH")
    folded: dict[str, str] = {}
    for label in labels:
        other = folded.setdefault(label.casefold(), label)
        if other != label:
            raise BadInput(f"model names {other!r} and {label!r} differ only in case: their files would be one on a "
                           "case-insensitive disk; label one of them otherwise (--checkpoint LABEL=PATH)")


def require_weights(models: tuple[str, ...], labelled_checkpoints: bool = True, otherwise: str = "") -> None:
    """Fail, before any data is read, on a model with no weights to attack, saying what to pass: ``--checkpoint
    NAME=PATH`` where the command labels checkpoints, else ``--checkpoint PATH``; ``otherwise`` adds an alternative."""
    for name in models:
        weights = weights_available(name)
        flag = f"--checkpoint {name}=PATH" if labelled_checkpoints else "--checkpoint PATH"
        if weights == "none":
            raise BadInput(f"{name} has no shipped weights: pass {flag} (weights you trained with "
                           f"aigrobust train --model {name}, or a convertible file){otherwise}")
        if weights == "torchvision*":
            raise BadInput(f"{name}'s gates have no published weights (only its residual branches exist, in "
                           f"torchvision's ResNet): pass {flag} to a trained {name}{otherwise}")


def default_run_folder(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], world: int = 1) -> Path:
    """runs/<date>-<time>-<models> under the working directory, for a run given no --out (printed)."""
    if world > 1:  # each process would stamp its own time
        raise BadInput("give --out under torchrun: every process must name the same run folder")
    names = list(models) or [ref.label or ref.path.stem for ref in checkpoints]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stamp}-{'-'.join(names)}")[:120]
    click.echo(f"run folder: {folder.resolve()}", err=True)
    return folder


def eval_spec(attacks: tuple[ParsedSpec, ...], epsilons: tuple[float, ...], gate_grads: tuple[str, ...], gate_mode: str,
              seed: int, defenses: tuple[ParsedSpec, ...], defense_grads: tuple[str, ...], early_exit: bool,
              eot_draws: int = 20, fold_batchnorm: bool = False) -> Any:
    """The evaluation spec from parsed options; refuses one attack given twice (two spellings of one spec)."""
    try:
        return EvalSpec(attacks=tuple(a.text for a in attacks), epsilons=epsilons, gate_grads=gate_grads,
                        gate_mode=gate_mode, seed=seed, defenses=tuple(d.text for d in defenses),
                        defense_grads=tuple(defense_grads), early_exit=early_exit, eot_draws=eot_draws,
                        fold_batchnorm=fold_batchnorm, parsed_attacks=tuple(a.value for a in attacks), parsed_defenses=tuple(d.value for d in defenses))
    except ValueError as err:
        raise BadInput(str(err)) from None


def check_foldable(entries: list[Any], fold_batchnorm: bool) -> None:
    """With --fold-batchnorm, every model must be one of aigrobust's families with BatchNorm to fold."""
    for entry in entries if fold_batchnorm else []:
        why = why_not_foldable(entry.model)
        if why is not None:
            raise BadInput(f"--fold-batchnorm: {entry.name}: {why}")


def attack_inputs(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], dataset: str | None,
                  data_dir: Path | None, download: bool, n_samples: int | None, model_codes: tuple[str, ...] = (),
                  output_index: int | None = None, deterministic: bool = True) -> tuple[Any, list[Any], str]:
    """The test data (its first ``n_samples``), the models to attack (checked against it: classes, input shape, the
    fit check; ``deterministic``: two passes must agree) and the dataset's name."""
    if model_codes:
        entries = user_model_entries(model_codes, checkpoints, output_index)
        if models:
            require_weights(models)
            entries = model_entries(models, ()) + entries
            refuse_colliding_labels(entries)
    else:
        require_weights(pretrained_names(models, checkpoints))
        entries = model_entries(models, checkpoints)
    if dataset is None:  # the first registered model's own dataset (a user's network: CIFAR-10 unless --dataset)
        registered = [e for e in entries if not e.model.registry_name.startswith("code:")]
        dataset = get_model_info(registered[0].model.registry_name).default_dataset if registered else "cifar10"
    data = heldout_split(dataset, data_dir, download)
    data = first_samples(data, n_samples)  # image folders stay on disk: batches stream through a DataLoader
    for entry in entries:
        check_classes(entry.name, entry.model, data)
    probe_images, probe_labels = data.subset(range(min(2, len(data)))).tensors()
    for entry in entries:  # the library's fit check, as evaluate() makes it: one line and nothing written
        try:
            check_fit(entry.name, entry.model, probe_images, probe_labels, deterministic=deterministic)
        except ValueError as err:
            raise BadInput(str(err)) from None
    if getattr(data, "note", ""):
        click.echo(f"note: {data.note}", err=True)
    return data, entries, dataset


def user_model_entries(model_codes: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...],
                       output_index: int | None) -> list[Any]:
    """--model-code IMPORT:CALLABLE networks, each with the --checkpoint given in the same position (its weights;
    none: the callable's own initialisation, with a warning), named by their import path."""
    if checkpoints and len(checkpoints) != len(model_codes):
        raise BadInput(f"{len(model_codes)} --model-code and {len(checkpoints)} --checkpoint: give one weights file "
                       "per --model-code, in the same order (or none)")
    entries = []
    for i, target in enumerate(model_codes):
        ref = checkpoints[i] if checkpoints else None
        try:
            model, _ = load_user_model(target, ref.path if ref else None, output_index)
        except (ModelCodeError, CheckpointError) as err:
            raise BadInput(str(err)) from None
        if ref is None:
            click.echo(f"warning: {target} has no --checkpoint: its weights are whatever {target}() made", err=True)
        entries.append(ModelEntry((ref.label if ref and ref.label else target), model,
                                  source=str(ref.path.resolve()) if ref else "code"))
    return entries


def with_suite(suite: str, attacks: tuple[ParsedSpec, ...]) -> tuple[ParsedSpec, ...]:
    """A suite's attacks, then any --attack given beside it (not the default fgsm)."""
    given = click.get_current_context().get_parameter_source("attacks") != click.core.ParameterSource.DEFAULT
    return tuple(ATTACK_SPEC.convert(a, None, None) for a in SUITES[suite]) + (attacks if given else ())


def progress_bar(total: int, rank: int) -> Any:
    """A progress bar in images, on rank 0 only (and only on a terminal)."""
    return tqdm(total=total, unit="img", leave=False, disable=None if rank == 0 else True)
