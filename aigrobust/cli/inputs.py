"""What the commands are given, turned into objects: models, test data, devices and finished runs.

Each function fails with one line (``BadInput``, exit 2) on input a user can fix; torch and the models load on
first use so that ``aigrobust --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from aigrobust.cli.types import ATTACK_SPEC, BadInput, CheckpointRef, Parsed
from aigrobust.errors import CheckpointError, DataError, UnknownModelError

log = logging.getLogger("aigrobust")


def known_models(names: tuple[str, ...] | list[str]) -> None:
    """Fail on the first unregistered model name (before any data is read)."""
    from aigrobust.models.registry import get_model_info

    for name in names:
        try:
            get_model_info(name)
        except UnknownModelError as err:
            raise BadInput(str(err)) from None


def given_on_command_line(name: str) -> bool:
    """Whether the current command's parameter ``name`` was typed (not left at its default)."""
    return click.get_current_context().get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


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


GATE_OPTIONS = ("target_rate", "gate_lambda", "gate_lr_factor", "target_warmup")


def check_gate_options(model_name: str, options: tuple[str, ...] = GATE_OPTIONS) -> None:
    """Refuse gate options given on the command line for a model without gates: training would ignore them and
    the checkpoint would still record them."""
    from aigrobust.models.factory import create_model

    given = [name for name in options if given_on_command_line(name)]
    if given and not create_model(model_name).is_gated:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BadInput(f"{model_name} has no gates: {flags} {'apply' if len(given) > 1 else 'applies'} to gated "
                       "models (aig*)")


def check_start_options(model_name: str, init: str | None, shortcut: str | None) -> None:
    """Refuse, before any data is read, ``--init torchvision`` for a model torchvision has no weights for (it would
    start from our shipped weights instead) and ``--shortcut`` for ImageNet models (torchvision's projections)."""
    from aigrobust.models.registry import get_model_info

    info = get_model_info(model_name)
    if init == "torchvision" and not info.torchvision_weights:
        raise BadInput(f"--init torchvision: torchvision has no weights for {model_name} (ImageNet models only); "
                       "give a weights file to start from instead")
    if shortcut is not None and info.family == "imagenet":
        raise BadInput(f"--shortcut applies to CIFAR ResNets; {model_name} has torchvision's projection shortcuts")


def load_model(name: str | None, checkpoint: Path | None, pretrained: bool) -> tuple[Any, dict[str, Any]]:
    """A model from a checkpoint, a shipped pretrained entry, or freshly initialised (with a warning)."""
    from aigrobust.models.factory import create_model, load_checkpoint

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
    from aigrobust.data import load_dataset

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
    from aigrobust.models.dynamic import GatedAdapter
    from aigrobust.models.registry import get_model_info

    if hasattr(model, "output_index") or isinstance(model, GatedAdapter):  # a user's module: its class count shows
        from aigrobust.models.adapter import ModelOutputError  # on one image of the data

        shape = tuple(data[0][0].shape)
        try:
            model.flop_profile(shape)
        except ModelOutputError as err:
            raise BadInput(str(err)) from None
        except (RuntimeError, ValueError) as err:
            raise BadInput(f"{name} does not take images of shape {shape}: {str(err).splitlines()[0]}") from None
    else:  # one of ours: its registered input size (a CIFAR network given 224-pixel images is not evaluated)
        try:
            expected = tuple(get_model_info(model.registry_name).input_shape)
        except UnknownModelError:
            expected = None
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
    from aigrobust.training.config import TrainingError
    from aigrobust.training.loop import resolve_device

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
    from aigrobust.evaluation import ModelEntry
    from aigrobust.models.registry import list_models

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
        from aigrobust.models.factory import create_model

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
    from aigrobust.models.facts import weights_available

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
    import datetime
    import re

    if world > 1:  # each process would stamp its own time
        raise BadInput("give --out under torchrun: every process must name the same run folder")
    names = list(models) or [ref.label or ref.path.stem for ref in checkpoints]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stamp}-{'-'.join(names)}")[:120]
    click.echo(f"run folder: {folder.resolve()}", err=True)
    return folder


def eval_spec(attacks: tuple[Parsed, ...], epsilons: tuple[float, ...], gate_grads: tuple[str, ...], gate_mode: str,
              seed: int, defenses: tuple[Parsed, ...], defense_grads: tuple[str, ...], early_exit: bool,
              eot_draws: int = 20) -> Any:
    """The evaluation spec from parsed options; refuses one attack given twice (two spellings of one spec)."""
    from aigrobust.evaluation import EvalSpec

    try:
        return EvalSpec(attacks=tuple(a.text for a in attacks), epsilons=epsilons, gate_grads=gate_grads,
                        gate_mode=gate_mode, seed=seed, defenses=tuple(d.text for d in defenses),
                        defense_grads=tuple(defense_grads), early_exit=early_exit, eot_draws=eot_draws,
                        parsed_attacks=tuple(a.value for a in attacks), parsed_defenses=tuple(d.value for d in defenses))
    except ValueError as err:
        raise BadInput(str(err)) from None


def attack_inputs(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], dataset: str | None,
                  data_dir: Path | None, download: bool, n_samples: int | None, model_codes: tuple[str, ...] = (),
                  output_index: int | None = None) -> tuple[Any, list[Any], str]:
    """The test data (its first ``n_samples``), the models to attack (checked against it) and the dataset's name."""
    from aigrobust.models.registry import get_model_info

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
    if getattr(data, "note", ""):
        click.echo(f"note: {data.note}", err=True)
    return data, entries, dataset


def user_model_entries(model_codes: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...],
                       output_index: int | None) -> list[Any]:
    """--model-code IMPORT:CALLABLE networks, each with the --checkpoint given in the same position (its weights;
    none: the callable's own initialisation, with a warning), named by their import path."""
    from aigrobust.evaluation import ModelEntry
    from aigrobust.models.user_code import ModelCodeError, load_user_model

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


def open_runs(run_dirs: tuple[Path, ...], unsealed: bool = False) -> list[Any]:
    """Finished run folders, each checked as it is opened. A folder of records without run.json cannot prove them
    whole (run.json holds their row count and hash): refused unless ``unsealed``."""
    from aigrobust.runs.folder import FinishedRun, RunFolderError
    from aigrobust.runs.records import RECORDS_FILE, SPEC_FILE

    bare = [r for r in run_dirs if (Path(r) / RECORDS_FILE).exists() and not (Path(r) / SPEC_FILE).exists()]
    if bare and not unsealed:
        raise BadInput(f"{bare[0]} has no {SPEC_FILE}: its records cannot prove they are whole (run.json holds their "
                       "row count and hash); give --unsealed to read them anyway, with a warning in the output")
    try:
        return [FinishedRun.open(r) for r in run_dirs]
    except RunFolderError as err:
        raise BadInput(str(err)) from None


def unsealed_warning(runs: list[Any]) -> str | None:
    """The warning a report or check carries for run folders read without run.json (``--unsealed``)."""
    from aigrobust.runs.records import SPEC_FILE

    bare = [str(run.root) for run in runs if not (run.root / SPEC_FILE).exists()]
    if not bare:
        return None
    return (f"Unsealed records: {', '.join(bare)} have no {SPEC_FILE}, so nothing proves them whole or unedited "
            "(read with --unsealed); figures from them may count fewer or other samples than were attacked.")


def named_code(model_codes: tuple[str, ...]) -> tuple[dict[str, str], set[str]]:
    """``[LABEL=]MODULE:CALLABLE`` as given to ``report`` and ``check``: code named for one label, and code allowed
    wherever a run folder names exactly it."""
    by_label: dict[str, str] = {}
    anywhere: set[str] = set()
    for given in model_codes:
        label, sep, target = given.partition("=")
        module, colon, attribute = (target if sep else given).partition(":")
        if not module or not colon or not attribute or (sep and not label):
            raise BadInput(f"--model-code {given!r}: give [LABEL=]MODULE:CALLABLE, e.g. mynet=mypkg.nets:build")
        if sep:
            by_label[label] = target
        else:
            anywhere.add(given)
    return by_label, anywhere


def trusted_code(run: Any, model_codes: tuple[str, ...], trust_code: bool) -> tuple[dict[str, str], list[Any]]:
    """Which user code of ``run`` may be imported (label -> MODULE:CALLABLE) and a sanity flag for each network whose
    probes are skipped. Code runs only where the user named it on the command line (``--model-code``) or said
    ``--trust-code``, which prints what it will import: a run folder is data, and data never names code to run."""
    from aigrobust.reporting.sanity import STATUS_NA, SanityFlag

    by_label, anywhere = named_code(model_codes)
    allowed, skipped = {}, []
    for label, target in run.code_models().items():
        if label in by_label:
            allowed[label] = by_label[label]
        elif target in anywhere:
            allowed[label] = target
        elif trust_code:
            click.echo(f"--trust-code: importing {target.partition(':')[0]} and calling {target} for {label!r} "
                       f"(named by {run.root / 'run.json'})", err=True)
            allowed[label] = target
        else:
            skipped.append(SanityFlag("model probes", label, STATUS_NA,
                                      f"skipped: its network is user code ({target}) that {run.root} names, and code "
                                      "named by a run folder is never imported; give --model-code "
                                      f"{label}={target} (or --trust-code) to probe it"))
    return allowed, skipped


def probe_flags(runs: list[Any], n_probe: int, model_codes: tuple[str, ...] = (),
                trust_code: bool = False) -> list[Any]:
    """Masking probes on each model of the runs, once per model even where several runs share it; a user's network
    only where its code was named (:func:`trusted_code`), else one n/a flag saying why."""
    from aigrobust.checks.probes import model_probes
    from aigrobust.models.user_code import ModelCodeError
    from aigrobust.runs.folder import RunFolderError

    flags, probed = [], set()
    for run in runs:
        code, skipped = trusted_code(run, model_codes, trust_code)
        flags += skipped
        try:
            models, data = run.models(code), run.data()
        except (RunFolderError, CheckpointError, DataError, ModelCodeError) as err:  # e.g. a run from elsewhere
            raise BadInput(f"{err} (the model probes reload {run.root}'s models and images; --no-probe skips "
                           "them)") from None
        subset = data.subset(range(min(n_probe, len(data))))
        images, labels = subset.tensors()
        for label, model in models.items():
            source = run.document.models[label].source
            if (label, source) in probed:
                continue
            probed.add((label, source))
            model.flop_profile(tuple(images.shape[1:]))  # a wrapped user network learns its class count here
            flags += model_probes(label, model, images, labels, model.num_classes)
    return flags


def read_runs(runs: list[Any]) -> Any:
    """The runs' records joined; where two hold the same sample under the same setting, the earlier run's. Runs
    that give one model label to two networks, or one sample to two images, are refused."""
    from aigrobust.runs.records import RunFolderError, combine_runs

    try:
        records, dropped = combine_runs(runs)
    except RunFolderError as err:
        raise BadInput(str(err)) from None
    if dropped:  # e.g. a subset run that repeats the reference rows of a full run listed before it
        log.info("%d records repeat a sample already read from an earlier run; the earlier run's are kept",
                 dropped)
    return records


def recipe(dataset: str, batch_size: int, **given: Any) -> dict[str, Any]:
    """The training settings: those given on the command line, the rest from the paper's ImageNet recipe for
    ImageNet models (the options' own defaults for CIFAR-10)."""
    from aigrobust.training.config import imagenet_defaults

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
    import numpy as np

    from aigrobust.data import ImageFolderDataset, load_dataset

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


def check_adversarial_options(model_name: str, adversarial: str | None, compute_penalty: float) -> str | None:
    """The --adversarial spec made canonical, or one line: an unknown method or setting, a value out of range,
    compute=W for a model without gates, or --compute-penalty without a compute attack to apply it to."""
    from aigrobust.models.factory import create_model
    from aigrobust.training.inner_attacks import InnerSpecError, inner_attack_from_spec

    given = given_on_command_line("compute_penalty")
    if adversarial is None:
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


def with_suite(suite: str, attacks: tuple[Parsed, ...]) -> tuple[Parsed, ...]:
    """A suite's attacks, then any --attack given beside it (not the default fgsm)."""
    from attacks import SUITES

    given = click.get_current_context().get_parameter_source("attacks") != click.core.ParameterSource.DEFAULT
    return tuple(ATTACK_SPEC.convert(a, None, None) for a in SUITES[suite]) + (attacks if given else ())


def progress_bar(total: int, rank: int) -> Any:
    """A progress bar in images, on rank 0 only (and only on a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", leave=False, disable=None if rank == 0 else True)
