"""The ``aigrobust`` command line: a thin click command per library function.

Only this module prints, parses arguments and owns progress bars; user errors become one line and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from aigrobust.cli_types import (
    ATTACK_SPEC,
    DEFENSE_SPEC,
    BadInput,
    CheckpointRef,
    CheckpointType,
    EpsilonType,
    FiniteFloatRange,
    OneLineErrors,
    Parsed,
)
from aigrobust.distributed import barrier, rank_and_world
from aigrobust.distributed import finish as finish_distributed
from aigrobust.errors import CheckpointError, DataError
from aigrobust.registry import DATASETS, UnknownModelError, get_model_info, list_models

# torch and the models load inside the commands that need them, so `aigrobust --help` stays fast

log = logging.getLogger("aigrobust")


def _load_model(name: str | None, checkpoint: Path | None, pretrained: bool) -> tuple[Any, dict[str, Any]]:
    """A model from a checkpoint, a shipped pretrained entry, or freshly initialised (with a warning)."""
    from aigrobust.factory import create_model, load_checkpoint

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


def _dataset(name: str, data_dir: Path | None, download: bool) -> Any:
    from aigrobust.data import load_dataset

    try:
        return load_dataset(name, "test", data_dir, download)
    except DataError as err:
        raise BadInput(str(err)) from None


def _first_samples(data: Any, n_samples: int | None) -> Any:
    """The first ``n_samples`` of the test split; a note where it holds fewer (all of them are then used)."""
    if n_samples is not None and n_samples < len(data):
        return data.subset(range(n_samples))
    if n_samples is not None and n_samples > len(data):
        click.echo(f"note: --n-samples {n_samples} asks for more images than the test split holds; all {len(data)} "
                   "are used", err=True)
    return data


def _check_classes(name: str, model: Any, data: Any) -> None:
    classes = getattr(data, "classes", None)
    if classes is not None and len(classes) != model.num_classes:
        raise BadInput(f"{name} predicts {model.num_classes} classes but {getattr(data, 'name', 'the data')} "
                                   f"has {len(classes)}")


def _device(name: str) -> Any:
    from aigrobust.training import TrainingError, resolve_device

    try:
        return resolve_device(name)
    except TrainingError as err:
        raise BadInput(str(err)) from None


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigrobust")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """aigrobust: adversarial robustness of gated ResNets (ConvNet-AIG) and plain ResNets."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@cli.command("models")
@click.argument("pattern", default="*")
@click.option("--details", is_flag=True, help="Build each model and count parameters and FLOPs now (slow for the "
              "ImageNet models) instead of reading the stored figures.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_command(pattern: str, details: bool, as_json: bool) -> None:
    """List registered models with parameters, full FLOPs (per image, at the model's input size), gated blocks and
    the weights each has (shipped, torchvision, none)."""
    from aigrobust.model_facts import measure_facts, stored_facts, weights_available

    stored = {} if details else stored_facts()
    rows = []
    for name in list_models(pattern):
        info = get_model_info(name)
        facts = stored.get(name) or measure_facts(name)
        rows.append({"model": name, "family": info.family, "params": facts.params, "gflops": facts.gflops,
                     "gated_blocks": facts.gated_blocks, "weights": weights_available(name),
                     "input": "x".join(map(str, info.input_shape)), "description": info.description})
    if not rows:
        raise BadInput(f"no model matches {pattern!r}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'model':<12} {'family':<9} {'params':>11} {'GFLOPs':>8} {'gates':>5}  {'weights':<12} input      "
               "description")
    for r in rows:
        click.echo(f"{r['model']:<12} {r['family']:<9} {r['params']:>11,} {r['gflops']:>8.3f} {r['gated_blocks']:>5}  "
                   f"{r['weights']:<12} {r['input']:<10} {r['description']}")
    if any(r["weights"] == "torchvision*" for r in rows):
        click.echo("* residual branches from torchvision's ResNet, gates untrained: fine-tune (aigrobust train) first")


@cli.command("attacks")
def attacks_command() -> None:
    """List every attack with its settings and their defaults (give them as name:key=value,key=value)."""
    from attacks import attack_settings, list_attacks

    for name in list_attacks():
        settings = ", ".join(f"{k}={'auto' if v is None else str(v).lower()}" for k, v in attack_settings(name).items())
        click.echo(f"{name:<30} {settings or '(no settings)'}")
    click.echo("auto: PGD and the gate attacks step 2.5 eps / steps")
    click.echo("foolbox:NAME[:key=value,...]    any attack class of foolbox.attacks, with its own settings")


@cli.command("train")
@click.option("--model", "model_name", required=True, help="Registered model name, e.g. aig20.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of .npz files (train and test); otherwise torchvision's CIFAR-10 cache.")
@click.option("--download", is_flag=True, help="Let torchvision download CIFAR-10 (needs a network).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Run folder (checkpoints, log).")
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--momentum", type=FiniteFloatRange(0, 1), default=0.9, show_default=True)
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=1e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["step", "cosine", "onecycle"]), default="step", show_default=True,
              help="step: x0.1 at 50% and 75% of the run (the paper's); cosine or onecycle for short CPU budgets.")
@click.option("--target-rate", type=FiniteFloatRange(0, 1), default=None, help="Gate target rate t (gated models).")
@click.option("--gate-lambda", type=FiniteFloatRange(min=0), default=2.0, show_default=True,
              help="Weight of the target-rate loss.")
@click.option("--gate-lr-factor", type=FiniteFloatRange(min=0), default=1.0, show_default=True)
@click.option("--shortcut", type=click.Choice(["A", "B"]), default=None, help="CIFAR shortcut style.")
@click.option("--max-train-samples", type=click.IntRange(min=1), default=None, help="Train on a seeded subset.")
@click.option("--no-augment", is_flag=True, help="Disable random crop + flip.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--no-bf16", is_flag=True, help="Disable bf16 autocast on CUDA.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N optimiser steps inside an epoch (0: at epoch ends only).")
def train_command(model_name: str, data_dir: Path | None, download: bool, out_dir: Path, epochs: int,
                  batch_size: int, lr: float, momentum: float, weight_decay: float, schedule: str,
                  target_rate: float | None, gate_lambda: float, gate_lr_factor: float, shortcut: str | None,
                  max_train_samples: int | None, no_augment: bool, seed: int, device: str, no_bf16: bool,
                  threads: int | None, resume: bool, checkpoint_every: int) -> None:
    """Train a model on CIFAR-10, checkpointing every epoch (resumable with --resume)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from aigrobust.training import TrainConfig, TrainingError, train

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        info = get_model_info(model_name)
    except UnknownModelError as err:
        raise BadInput(str(err)) from None
    if info.default_dataset != "cifar10":
        raise BadInput(f"{model_name} trains on {info.default_dataset}; 'aigrobust train' covers CIFAR-10 "
                                   "models (fine-tune ImageNet models from torchvision weights in your own loop)")
    kwargs: dict[str, Any] = {}
    if target_rate is not None:
        kwargs["target_rate"] = target_rate
    if shortcut is not None:
        kwargs["shortcut"] = shortcut
    _device(device)
    from aigrobust.data import load_dataset

    try:
        train_data = load_dataset("cifar10", "train", data_dir, download)
        try:
            heldout = load_dataset("cifar10", "test", data_dir, download)
        except DataError:
            heldout = None
            click.echo("warning: no test split found; no held-out accuracy per epoch", err=True)
        if max_train_samples is not None and max_train_samples < len(train_data):
            pick = np.random.default_rng(seed).permutation(len(train_data))[:max_train_samples]
            train_data = train_data.subset(np.sort(pick))  # type: ignore[attr-defined]
        config = TrainConfig(model=model_name, model_kwargs=kwargs, epochs=epochs, batch_size=batch_size, lr=lr,
                             momentum=momentum, weight_decay=weight_decay, schedule=schedule,  # type: ignore[arg-type]
                             gate_lambda=gate_lambda, gate_lr_factor=gate_lr_factor, augment=not no_augment,
                             seed=seed, device=device, bf16=not no_bf16)
    except (DataError, ValueError) as err:
        raise BadInput(str(err)) from None

    rank, world = rank_and_world(_device(device))
    bar = tqdm(total=0, unit="batch", leave=False, disable=None if rank == 0 else True)

    def on_batch(epoch: int, step: int, steps: int, loss: float) -> None:
        if bar.total != steps:
            bar.reset(total=steps)
        bar.set_description(f"epoch {epoch}/{epochs}")
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    def on_epoch(r: Any) -> None:
        if rank != 0:
            return
        held = f"{r.heldout_accuracy:.4f}" if r.heldout_accuracy is not None else "-"
        rates = " ".join(f"{v:.2f}" for v in r.heldout_execution_rates or r.train_execution_rates)
        flops = f" flops {r.heldout_flops_ratio:.3f}" if r.heldout_flops_ratio is not None else ""
        tqdm.write(f"epoch {r.epoch:>3}  loss {r.train_loss:.4f}  train acc {r.train_accuracy:.4f}  "
                   f"held-out acc {held}{flops}  rates [{rates}]  {r.seconds:.0f}s")

    try:
        result = train(config, train_data, out_dir, heldout=heldout, resume=resume,  # type: ignore[arg-type]
                       on_batch=on_batch, on_epoch=on_epoch, checkpoint_every=checkpoint_every)
    except (TrainingError, CheckpointError, OSError) as err:
        raise BadInput(str(err)) from None
    finally:
        bar.close()
        if world > 1:
            finish_distributed()
    if rank == 0:
        click.echo(f"saved {result.checkpoint}" + (f" (DistributedDataParallel over {world} processes)"
                                                   if world > 1 else ""))


@cli.command("eval")
@click.option("--model", "model_name", default=None, help="Registered model name.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Our .safetensors checkpoint or a convertible file (akamaster, ConvNet-AIG, torchvision).")
@click.option("--pretrained", is_flag=True, help="Use the model's shipped (or torchvision) pretrained weights.")
@click.option("--dataset", type=click.Choice(DATASETS), default=None, help="Default: the model's own dataset.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--download", is_flag=True)
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="First N samples only.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--gate-mode", type=click.Choice(["hard", "stochastic", "soft", "open"]), default="hard",
              show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_command(model_name: str | None, checkpoint: Path | None, pretrained: bool, dataset: str | None,
                 data_dir: Path | None, download: bool, n_samples: int | None, batch_size: int, gate_mode: str,
                 device: str, as_json: bool) -> None:
    """Clean accuracy, per-layer execution rates and mean executed FLOPs."""
    from tqdm import tqdm

    from aigrobust.clean_accuracy import evaluate_clean

    dev = _device(device)
    if checkpoint is None and model_name is not None:
        try:
            get_model_info(model_name)  # a bad name fails before any data is read
        except UnknownModelError as err:
            raise BadInput(str(err)) from None
        dataset = dataset or get_model_info(model_name).default_dataset
        data = _dataset(dataset, data_dir, download)
        model, meta = _load_model(model_name, checkpoint, pretrained)
    else:
        model, meta = _load_model(model_name, checkpoint, pretrained)
        dataset = dataset or get_model_info(model.registry_name).default_dataset
        data = _dataset(dataset, data_dir, download)
    name = model.registry_name
    if checkpoint is None and not pretrained:
        click.echo(f"warning: {name} has random weights (no --checkpoint, no --pretrained)", err=True)
    data = _first_samples(data, n_samples)
    _check_classes(name, model, data)
    if getattr(data, "note", ""):
        click.echo(f"note: {data.note}", err=True)  # type: ignore[attr-defined]
    model.to(dev)
    with tqdm(total=len(data), unit="img", leave=False, disable=None) as bar:  # type: ignore[arg-type]
        result = evaluate_clean(model, data, batch_size=batch_size, device=dev, gate_mode=gate_mode,
                                on_batch=bar.update)
    summary = {"model": name, "dataset": dataset, "n_samples": result.n_samples, "accuracy": result.accuracy,
               "gate_mode": result.gate_mode, "mean_flops": result.mean_flops, "full_flops": result.full_flops,
               "flops_ratio": result.flops_ratio, "execution_rates": list(result.execution_rates)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{name} on {dataset} ({result.n_samples} images, gates {result.gate_mode}): "
               f"accuracy {100 * result.accuracy:.2f}%")
    click.echo(f"executed FLOPs {result.mean_flops / 1e6:.2f} M of {result.full_flops / 1e6:.2f} M "
               f"({100 * result.flops_ratio:.1f}%)")
    if model.is_gated:
        click.echo("execution rate per block: " + " ".join(f"{v:.2f}" for v in result.execution_rates))


def _model_entries(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...]) -> list[Any]:
    """--model NAME alone uses shipped/torchvision weights; --checkpoint [LABEL=]PATH any checkpoint. Given both,
    they pair in order: each checkpoint must hold the model named beside it."""
    from aigrobust.evaluation import ModelEntry

    if models and checkpoints and len(models) != len(checkpoints):
        raise BadInput("give one --checkpoint per --model (they pair in order), or only one kind")
    for name in models:
        try:
            get_model_info(name)
        except UnknownModelError as err:
            raise BadInput(str(err)) from None
    entries = []
    for i, ref in enumerate(checkpoints):
        expected = models[i] if models else None
        model, _ = _load_model(expected, ref.path, False)
        entries.append(ModelEntry(ref.label or model.registry_name, model, source=str(ref.path.resolve())))
    if not checkpoints:
        from aigrobust.factory import create_model

        for name in models:
            try:
                model = create_model(name, pretrained=True).eval()
            except CheckpointError as err:
                raise BadInput(f"no weights for {name}: pass --checkpoint PATH ({err})") from None
            entries.append(ModelEntry(name, model, source="pretrained"))
    if not entries:
        raise BadInput("give --model or --checkpoint")
    labels = [e.name for e in entries]
    if len(set(labels)) != len(labels):
        raise BadInput("two models share a name; label checkpoints as --checkpoint LABEL=PATH")
    return entries


def _print_summary(summary: Any, table: str) -> None:
    """The compact table (worst case per model and defense setting, one column per epsilon) or every row."""
    from aigrobust.metrics import compact_table, format_eps

    if table == "compact":
        compact = compact_table(summary)
        left = {c: (lambda w: lambda v: f"{v:<{w}}")(compact[c].str.len().max()) for c in ("model", "defense")}
        click.echo(compact.to_string(index=False, formatters=left, justify="left"))
        return
    header = (f"{'model':<18} {'defense':<20} {'attack':<22} {'gate-grad':<16} {'eps':>7} {'clean':>6} {'robust':>6} "
              f"{'same gates':>10} {'hamming':>8} {'FLOPs adv/clean':>15}")
    noise = "noise_floor_hamming" in summary.columns
    click.echo(header + (f" {'noise floor':>11}" if noise else ""))
    for row in summary.itertuples():
        defense = row.defense if row.defense == "none" else f"{row.defense} {row.defense_grad}"
        click.echo(f"{row.model:<18} {defense:<20} {row.attack:<22} {row.gate_grad:<16} {format_eps(row.epsilon):>7} "
                   f"{100 * row.clean_acc:>5.1f}% {100 * row.robust_acc:>5.1f}% {100 * row.unchanged_gates:>9.1f}% "
                   f"{row.hamming_mean:>8.3f} {row.flops_ratio:>15.3f}" + (f" {row.noise_floor_hamming:>11.3f}" if noise
                                                                          else ""))


@cli.command("attack")
@click.option("--model", "models", multiple=True, help="Registered model with shipped or torchvision weights.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=CheckpointType(),
              help="[LABEL=]PATH of a checkpoint (ours or convertible); repeatable.")
@click.option("--eps", "epsilons", multiple=True, type=EpsilonType(), help="Epsilon in [0, 1] pixel units, e.g. 0.03 "
              "or 8/255; repeatable. 0 is always added.")
@click.option("--attack", "attacks", multiple=True, default=("fgsm",), show_default=True, type=ATTACK_SPEC,
              help="Attack name or spec (pgd, pgd:steps=40, apgd, square, gate-flip, foolbox:LinfDeepFoolAttack).")
@click.option("--gate-grad", "gate_grads", multiple=True, default=("exact",), show_default=True,
              type=click.Choice(["exact", "straight-through", "soft", "all"]),
              help="How attack gradients pass hard gates; 'all' runs each and reports the worst case too.")
@click.option("--gate-mode", type=click.Choice(["hard", "stochastic"]), default="hard", show_default=True)
@click.option("--defense", "defenses", multiple=True, default=("none",), show_default=True, type=DEFENSE_SPEC,
              help="Input defense: none, jpeg:75, bits:4, median:2, randpad:0.875, or parts joined by '+' "
              "(jpeg:50+median:2); repeatable. 'none' is always run as the reference.")
@click.option("--defense-grad", "defense_grads", multiple=True, default=("oblivious", "bpda", "diff"),
              show_default=True, type=click.Choice(["oblivious", "bpda", "diff", "eot"]),
              help="How attackers treat a defense (eot only for randomised ones).")
@click.option("--dataset", type=click.Choice(DATASETS), default=None, help="Default: the first model's dataset.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--download", is_flag=True)
@click.option("--n-samples", type=int, default=None, help="First N samples of the test split.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--early-exit", is_flag=True, help="Attack a sample only while still robust (faster worst case; "
              "per-attack figures then cover only the samples each attack saw).")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--table", type=click.Choice(["compact", "full"]), default="compact", show_default=True,
              help="compact: the worst case per model and defense setting, one column per epsilon with its 95% "
              "interval; full: every attack, gate gradient and epsilon (as in summary.csv).")
def attack_command(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], epsilons: tuple[float, ...],
                   attacks: tuple[Parsed, ...], gate_grads: tuple[str, ...], gate_mode: str,
                   defenses: tuple[Parsed, ...], defense_grads: tuple[str, ...], dataset: str | None,
                   data_dir: Path | None, download: bool, n_samples: int | None, batch_size: int, seed: int,
                   early_exit: bool, device: str, out_dir: Path, resume: bool, table: str) -> None:
    """Attack models at a sweep of epsilons; write per-sample records and a summary, print a compact table.

    \b
    Examples:
      aigrobust attack --model resnet20 --model aig20 --eps 2/255 --eps 8/255 --attack fgsm --attack pgd
      aigrobust attack --model aig20 --eps 8/255 --attack apgd --gate-grad all --defense jpeg:75 --defense-grad bpda
      aigrobust attack --checkpoint mine=runs/aig20/last.safetensors --eps 0.03 --data-dir ../shared/data --resume
    """
    from aigrobust.evaluation import EvalSpec

    if not epsilons:
        raise BadInput("give at least one --eps (e.g. --eps 8/255)")
    if n_samples is not None and n_samples < 1:
        raise BadInput(f"--n-samples must be at least 1, got {n_samples}")
    if batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1, got {batch_size}")
    grads = ("exact", "straight-through", "soft") if "all" in gate_grads else tuple(dict.fromkeys(gate_grads))
    for name in models:  # a bad name fails before any data is read
        try:
            get_model_info(name)
        except UnknownModelError as err:
            raise BadInput(str(err)) from None
    dev = _device(device)
    data, entries, dataset = _attack_inputs(models, checkpoints, dataset, data_dir, download, n_samples)
    spec = EvalSpec(attacks=tuple(a.text for a in attacks), epsilons=epsilons, gate_grads=grads, gate_mode=gate_mode,
                    seed=seed, defenses=tuple(d.text for d in defenses), defense_grads=tuple(defense_grads),
                    early_exit=early_exit, parsed_attacks=tuple(a.value for a in attacks),
                    parsed_defenses=tuple(d.value for d in defenses))
    run_info = {"models": {e.name: {"model": e.model.registry_name, "source": e.source} for e in entries},
                "dataset": {"name": data.name, "source": data.source, "n": len(data), "sha256": data.fingerprint()},
                "batch_size": batch_size,
                "data": {"dataset": dataset, "data_dir": str(Path(data_dir).resolve()) if data_dir else None}}
    result = _run_attack(entries, spec, data, run_info, out_dir, resume, batch_size, dev)
    if result is None:
        return  # a torchrun rank other than 0: rank 0 writes the results
    _finish_attack(result, entries, data, spec, out_dir, table, dev)


def _attack_inputs(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], dataset: str | None,
                   data_dir: Path | None, download: bool, n_samples: int | None) -> tuple[Any, list[Any], str]:
    """The test data (its first ``n_samples``) and the models to attack, checked against each other."""
    if dataset is None:
        first = models[0] if models else None
        dataset = get_model_info(first).default_dataset if first and first in list_models() else "cifar10"
    data = _dataset(dataset, data_dir, download)
    entries = _model_entries(models, checkpoints)
    if hasattr(data, "in_memory"):  # image folders (ImageNet) are decoded once into memory
        data = data.in_memory(n_samples)
    data = _first_samples(data, n_samples)
    for entry in entries:
        _check_classes(entry.name, entry.model, data)
    if getattr(data, "note", ""):
        click.echo(f"note: {data.note}", err=True)
    return data, entries, dataset


def _run_attack(entries: list[Any], spec: Any, data: Any, run_info: dict[str, Any], out_dir: Path, resume: bool,
                batch_size: int, dev: Any) -> Any:
    """Evaluate into the run folder (sharded under torchrun): (records, folder) on rank 0, None on the others."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from aigrobust.evaluation import run_document, run_evaluation
    from aigrobust.runs import RunFolder, RunFolderError

    images = data.images  # uint8, converted batch by batch: memory stays flat in the number of samples
    labels = torch.from_numpy(data.labels.astype(np.int64))
    sample_ids = np.asarray(data.indices)
    rank, world = rank_and_world(dev)
    try:
        if rank == 0:
            folder = RunFolder(out_dir, run_document(spec, run_info), resume)
        barrier(world)
        if rank != 0:  # rank 0 made (or checked) the folder; the others join it
            folder = RunFolder(out_dir, run_document(spec, run_info), resume=True, lock=False)
    except RunFolderError as err:
        raise BadInput(str(err)) from None
    with tqdm(total=len(entries) * len(data), unit="img", leave=False, disable=None if rank == 0 else True) as bar:
        run = run_evaluation(entries, spec, images, labels, sample_ids, batch_size=batch_size, device=dev,
                             on_batch=lambda _m, n: bar.update(n), done_batches=folder.done_batch,
                             save_batch=folder.save_batch, shard=(rank, world), units_for=folder.units_for,
                             describe=bar.set_description_str)
    if world > 1:
        barrier(world)
        if rank != 0:
            finish_distributed()
            return None
        # every shard's batches are saved: rank 0 reads them back in order
        run = run_evaluation(entries, spec, images, labels, sample_ids, batch_size=batch_size, device=dev,
                             done_batches=folder.done_batch)
        finish_distributed()
    return run.records, folder


def _finish_attack(result: Any, entries: list[Any], data: Any, spec: Any, out_dir: Path, table: str,
                   dev: Any) -> None:
    """Summarise, seal the run folder and print the table."""
    import torch

    from aigrobust.evaluation import stochastic_noise_floor
    from aigrobust.metrics import summarize

    records, folder = result
    summary = summarize(records)
    noise = {}
    if spec.gate_mode == "stochastic":
        for e in entries:
            noise[e.name] = stochastic_noise_floor(e.model, data.subset(range(min(len(data), 512))).tensors()[0].to(dev))
    if noise:  # stochastic gates: the clean-vs-clean flip rate sits beside every stability figure
        summary["noise_floor_hamming"] = summary["model"].map(noise).fillna(0.0)
    folder.finalize(records, summary, {"noise_floor_hamming": noise, "torch": torch.__version__})
    _print_summary(summary, table)
    for name, value in noise.items():
        click.echo(f"{name}: stochastic gates flip {value:.3f} of decisions between two clean draws (noise floor)")
    more = "every attack and gate gradient: --table full or " if table == "compact" else ""
    click.echo(f"robust accuracy % [95% interval]; {more}{out_dir / 'summary.csv'}; per-sample records: "
               f"{out_dir / 'records.csv.gz'} ({len(records)} rows)")


def _open_runs(run_dirs: tuple[Path, ...]) -> list[Any]:
    from aigrobust.runs import FinishedRun, RunFolderError

    try:
        return [FinishedRun.open(r) for r in run_dirs]
    except RunFolderError as err:
        raise BadInput(str(err)) from None


def _probe_flags(runs: list[Any], n_probe: int) -> list[Any]:
    """Masking probes on each model of the runs, once per model even where several runs share it."""
    from aigrobust.masking import model_probes
    from aigrobust.runs import RunFolderError

    flags, probed = [], set()
    for run in runs:
        try:
            models, data = run.models(), run.data()
        except (RunFolderError, CheckpointError, DataError) as err:
            raise BadInput(str(err)) from None
        subset = data.subset(range(min(n_probe, len(data))))
        images, labels = subset.tensors()
        for label, model in models.items():
            source = run.document["models"][label].get("source")
            if (label, source) in probed:
                continue
            probed.add((label, source))
            flags += model_probes(label, model, images, labels, model.num_classes)
    return flags


def _read_runs(runs: list[Any]) -> Any:
    from aigrobust.runs import RunFolderError, combine_records

    try:
        records, dropped = combine_records([run.records() for run in runs])
    except RunFolderError as err:
        raise BadInput(str(err)) from None
    if dropped:  # e.g. a subset run that repeats the reference rows of a full run listed before it
        log.info("%d records repeat a sample already read from an earlier run; the earlier run's are kept",
                 dropped)
    return records


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Report folder.")
@click.option("--title", default="aigrobust robustness report", show_default=True)
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Also run model probes (zero gradients, randomness, large epsilon) on the runs' models.")
@click.option("--n-probe", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--preface", "preface_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Markdown file placed under the title (e.g. a study's findings in plain words).")
def report_command(run_dirs: tuple[Path, ...], out_dir: Path, title: str, probe: bool, n_probe: int,
                   preface_path: Path | None) -> None:
    """Tables (Markdown, CSV, LaTeX), figures (PNG, SVG), index.md and a self-contained index.html from runs.

    Runs listed first win where two runs hold the same sample under the same setting (e.g. a 1000-image run
    followed by a subset run that repeats its reference rows).
    """
    from aigrobust.data import CIFAR10_CLASSES
    from aigrobust.reports import build_report, write_report

    try:
        preface = preface_path.read_text() if preface_path is not None else ""
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read the preface {preface_path}: {err}") from None
    runs = _open_runs(run_dirs)
    records = _read_runs(runs)
    flags = _probe_flags(runs, n_probe) if probe else []
    provenance: dict[str, Any] = {"runs": [str(r) for r in run_dirs]}
    provenance.update({str(run.root): run.document for run in runs if run.document})
    try:
        report = build_report(records, title, classes=list(CIFAR10_CLASSES), extra_flags=flags, provenance=provenance)
        report.preface = preface
        for run in runs:  # stochastic-gate runs: their noise floor stands beside every stability figure
            for model_name, value in run.noise_floor.items():
                report.notes.append(f"{model_name} ran stochastic gates: two seeded draws on the same clean images "
                                    f"differ in {100 * value:.1f}% of decisions (the noise floor of its stability "
                                    "figures).")
        written = write_report(report, out_dir)
    except OSError as err:
        raise BadInput(f"cannot write the report to {out_dir}: {err.strerror}") from None
    warnings = [f for f in report.flags if f.status == "warn"]
    click.echo(f"report: {out_dir / 'index.html'} and index.md ({len(written)} files, {len(report.figures)} figures)")
    for flag in warnings:
        click.echo(f"warning: {flag.model}: {flag.sentence}")


@cli.command("check")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), default=None,
              help="Baseline JSON: re-run its spec and compare each metric with its tolerance.")
@click.option("--update", is_flag=True, help="Write the new figures into the baseline and show what moved.")
@click.option("--init-from", "init_run", type=click.Path(path_type=Path), default=None,
              help="Create --baseline from a finished attack run folder.")
@click.option("--sanity", "sanity_runs", multiple=True, type=click.Path(path_type=Path),
              help="Run the gradient-masking sanity checks on a run folder (repeatable).")
@click.option("--n-probe", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--allow-root", "allowed_roots", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="A folder outside the baseline's own from which its checkpoints and data may be read (repeatable); "
              "any other path the baseline names is refused before it is opened.")
def check_command(baseline_path: Path | None, update: bool, init_run: Path | None, sanity_runs: tuple[Path, ...],
                  n_probe: int, allowed_roots: tuple[Path, ...]) -> None:
    """CI checks: regression against a baseline (exit 1 on regression) and sanity checks for masking.

    \b
    Examples:
      aigrobust check --baseline reports/ci/baseline.json --allow-root . --allow-root ../shared/data
      aigrobust check --baseline ci/baseline.json --init-from runs/ci
      aigrobust check --sanity runs/quickstart
    """
    from aigrobust.baseline import (
        BaselineError,
        compare,
        evaluate_spec,
        load_baseline,
        make_baseline,
        metrics_rows,
        run_baseline_spec,
        spec_from_run,
        write_baseline,
    )
    from aigrobust.masking import record_checks

    if not baseline_path and not sanity_runs:
        raise BadInput("give --baseline FILE and/or --sanity RUN")
    failed = False
    if sanity_runs:
        runs = _open_runs(sanity_runs)
        flags = record_checks(_read_runs(runs)) + _probe_flags(runs, n_probe)
        for flag in flags:
            click.echo(f"{flag.status.upper():<5} {flag.check:<28} {flag.model}: {flag.sentence}")
        failed |= any(f.status == "warn" for f in flags)
    if baseline_path is not None:
        try:
            if init_run is not None:
                records = _read_runs(_open_runs((init_run,)))
                document = make_baseline(spec_from_run(init_run, baseline_path, records), records)
                write_baseline(baseline_path, document)
                click.echo(f"baseline written: {baseline_path} ({len(document['metrics'])} settings)")
                return
            document = load_baseline(baseline_path)
            records, notes = run_baseline_spec(baseline_path, document, evaluate_spec, allowed_roots)
        except (BaselineError, CheckpointError, DataError) as err:
            raise BadInput(str(err)) from None
        for note in notes:
            click.echo(f"note: {note}")
        now = metrics_rows(records)
        results = compare(document["metrics"], now, document["tolerances"])
        bad = [r for r in results if not r.holds]
        if update:
            write_baseline(baseline_path, {**document, "metrics": now})
            moved = [r for r in results if abs(r.now - r.baseline) > 1e-9]
            click.echo(f"baseline updated: {len(moved)} metrics moved")
            for r in moved:
                click.echo(f"  {r.key} {r.metric}: {r.baseline:.4g} -> {r.now:.4g}")
            return
        click.echo(f"{'setting':<70} {'metric':<16} {'baseline':>10} {'now':>10} {'tolerance':>9}  status")
        for r in results:
            if not r.holds or r.metric == "robust_acc":
                click.echo(f"{r.key:<70} {r.metric:<16} {r.baseline:>10.4g} {r.now:>10.4g} {r.tolerance:>9.3g}  "
                           f"{'ok' if r.holds else 'REGRESSION'}")
        click.echo(f"{len(results) - len(bad)} of {len(results)} metrics hold")
        failed |= bool(bad)
    if failed:
        raise SystemExit(1)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="aigrobust")
