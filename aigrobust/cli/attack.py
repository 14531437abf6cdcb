"""``aigrobust attack``: models attacked at a sweep of epsilons into a sealed run folder, and its table."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import click

from aigrobust.cli import inputs
from aigrobust.cli.exits import DISK_ERRORS, BadInput, RunStopped
from aigrobust.cli.inputs import known_models
from aigrobust.cli.options import (
    batch_size_option,
    data_dir_option,
    device_option,
    download_option,
    eval_option,
    seed_option,
)
from aigrobust.cli.types import (
    ATTACK_SPEC,
    DEFENSE_SPEC,
    CheckpointRef,
    CheckpointType,
    EpsilonType,
    LazyHelpOption,
    ParsedSpec,
)
from aigrobust.datasets import DATASETS
from aigrobust.distributed import rank_and_world
from aigrobust.errors import AigrobustError
from aigrobust.evaluation.metrics import table_text
from aigrobust.runs.attack import answer_finished, evaluate_into, open_folder, run_info, seal
from aigrobust.runs.document import run_document
from aigrobust.runs.earlier_runs import open_earlier_runs
from aigrobust.runs.records import COPIED_FROM, RunFolderError
from aigrobust.settings import EVAL_SETTINGS, GATE_GRADS
from defenses import defense_examples


@click.command("attack")
@click.option("--model", "models", multiple=True, help="Registered model with shipped or torchvision weights.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=CheckpointType(),
              help="[LABEL=]PATH of a checkpoint (ours or convertible); repeatable.")
@click.option("--model-code", "model_codes", multiple=True, metavar="MODULE:CALLABLE",
              help="Your own network: an import path and a callable returning an nn.Module that maps [0, 1] images "
              "to logits (importing it runs its code); its weights from the --checkpoint in the same position.")
@click.option("--output-index", type=click.IntRange(min=0), default=None,
              help="For a --model-code network returning a tuple: the element holding the logits.")
@click.option("--eps", "epsilons", multiple=True, type=EpsilonType(), help="Epsilon in [0, 1] pixel units, e.g. 0.03 "
              "or 8/255; repeatable. 0 is always added.")
@eval_option("attacks", type=ATTACK_SPEC)
@click.option("--suite", type=click.Choice(["standard", "rand", "quick"]), default=None,
              help="standard: APGD-CE, APGD-T, FAB-T, Square-5000 (AutoAttack); rand: APGD-CE and APGD-DLR with EOT "
              "over 20 draws; quick: FGSM and PGD-20. Runs with --early-exit; --attack adds to it.")
@eval_option("gate_grads", type=click.Choice([*GATE_GRADS, "all"]),
             help=f"{EVAL_SETTINGS['gate_grads'].help} 'all' runs each and reports the worst case too.")
@eval_option("gate_mode")
@eval_option("eot_draws", type=click.IntRange(min=1))
@eval_option("defenses", type=DEFENSE_SPEC, cls=LazyHelpOption,
             help_from=lambda: f"Input defense: {defense_examples()}. {EVAL_SETTINGS['defenses'].help}")
@eval_option("defense_grads")
@click.option("--dataset", type=click.Choice(DATASETS), default=None, help="Default: the first model's dataset.")
@data_dir_option()
@download_option()
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="First N samples of the test split.")
@batch_size_option()
@seed_option()
@eval_option("early_exit")
@eval_option("fold_batchnorm")
@device_option()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: runs/<date>-<time>-<models>, printed).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--reuse-from", "reuse_from", multiple=True, type=click.Path(path_type=Path),
              help="A finished run of the same models, images, seed and attacks: the settings it holds (say the "
              "undefended reference) are copied from its records, not attacked again; repeatable.")
@click.option("--table", type=click.Choice(["compact", "full"]), default="compact", show_default=True,
              help="compact: the worst case per model and defense setting, one column per epsilon with its 95% "
              "interval; full: every attack, gate gradient and epsilon (as in summary.csv).")
def attack_command(models: tuple[str, ...], checkpoints: tuple[CheckpointRef, ...], model_codes: tuple[str, ...],
                   output_index: int | None, epsilons: tuple[float, ...],
                   attacks: tuple[ParsedSpec, ...], suite: str | None, gate_grads: tuple[str, ...], gate_mode: str,
                   eot_draws: int,
                   defenses: tuple[ParsedSpec, ...], defense_grads: tuple[str, ...], dataset: str | None,
                   data_dir: Path | None, download: bool, n_samples: int | None, batch_size: int, seed: int,
                   early_exit: bool, fold_batchnorm: bool, device: str, out_dir: Path | None, resume: bool,
                   reuse_from: tuple[Path, ...], table: str) -> None:
    """Attack models at a sweep of epsilons; write per-sample records and a summary, print a compact table.

    \b
    Examples:
      aigrobust attack --model resnet20 --model aig20 --eps 2/255 --eps 8/255 --attack fgsm --attack pgd
      aigrobust attack --model aig20 --eps 8/255 --attack apgd --gate-grad all --defense jpeg:75 --defense-grad bpda
      aigrobust attack --checkpoint mine=runs/aig20/last.safetensors --eps 0.03 --data-dir ../shared/data --resume
    """
    inputs.check_attack_options(epsilons, defenses, defense_grads, gate_mode)
    known_models(models)  # a bad name fails before any data is read
    if suite is not None:
        attacks, early_exit = inputs.with_suite(suite, attacks), True
    grads = ("exact", "straight-through", "soft") if "all" in gate_grads else tuple(dict.fromkeys(gate_grads))
    dev = inputs.device(device)
    spec = inputs.eval_spec(attacks, epsilons, grads, gate_mode, seed, defenses, defense_grads, early_exit, eot_draws,
                            fold_batchnorm)
    data, entries, dataset = inputs.attack_inputs(models, checkpoints, dataset, data_dir, download, n_samples,
                                                  model_codes, output_index, deterministic=gate_mode != "stochastic")
    inputs.check_gate_use(entries, gate_mode)
    inputs.check_foldable(entries, fold_batchnorm)
    rank, world = rank_and_world(dev)
    out_dir = out_dir or inputs.default_run_folder(models, checkpoints, world)
    try:
        info = run_info(entries, data, dataset, data_dir, batch_size)
        # an earlier run that cannot supply this one is refused before the run folder is made
        earlier_runs = open_earlier_runs(list(reuse_from), run_document(spec, info))
        folder = open_folder(out_dir, spec, info, resume, rank, world)
    except RunFolderError as err:
        raise BadInput(str(err)) from None
    sealed = answer_finished(folder) if resume and world == 1 else None
    if sealed is not None:
        click.echo(f"{out_dir} holds this run, finished: its sealed records answer (nothing is attacked again)",
                   err=True)
    else:
        sealed = _attack_into(folder, entries, spec, data, batch_size, dev, rank, world, earlier_runs)
    if sealed is not None:  # None on a torchrun rank other than 0: rank 0 writes the results
        _show_sealed(sealed, spec, table, out_dir)


def _attack_into(folder: Any, entries: list[Any], spec: Any, data: Any, batch_size: int, device: Any, rank: int,
                 world: int, earlier_runs: Any) -> Any:
    """Every model attacked into the run folder, then sealed; None on the other ranks of a torchrun."""
    try:
        with inputs.progress_bar(len(entries) * len(data), rank) as bar:
            records = evaluate_into(folder, entries, spec, data, batch_size, device, rank, world, bar.update,
                                    bar.set_description_str, reuse=earlier_runs)
    except RunFolderError as err:  # copied rows that contradict this run: the units saved so far stay for --resume
        raise BadInput(str(err)) from None
    except Exception as err:  # noqa: BLE001 - any other error ends the run with what its folder keeps
        worded = isinstance(err, AigrobustError) or (isinstance(err, OSError) and err.errno in DISK_ERRORS)
        if worded or os.environ.get("AIGROBUST_TRACEBACK"):  # the library's own errors are already one line (exit 2)
            raise
        raise RunStopped(_stopped_line(err, folder)) from None
    return None if records is None else seal(folder, records, entries, spec, data, device)


def _stopped_line(err: BaseException, folder: Any) -> str:
    """What stopped a run (the error, and the innermost line of code it came from) and what its folder now keeps:
    its finished units, which ``--resume`` continues from; a folder this command made and saved nothing into is taken
    away, so that the same command runs again."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    saved = folder.saved_work()
    if not saved and folder.discard_if_unused():
        keeps = f"nothing was saved and {folder.root} was removed: fix the cause, then run the same command again"
    elif saved:
        keeps = (f"{folder.root} keeps its {saved} finished parts: fix the cause, then run the same "
                 "command with --resume to continue")
    else:
        keeps = (f"{folder.root} (there before this command) holds no finished part: fix the cause, then run the same "
                 "command with --resume")
    message = str(err).strip().splitlines()[0] if str(err).strip() else "(no message)"
    return (f"the run stopped on {type(err).__name__}: {message}{where}; {keeps} "
            "(AIGROBUST_TRACEBACK=1 shows the traceback)")


def _show_sealed(sealed: Any, spec: Any, table: str, out_dir: Path) -> None:
    """The table a finished attack run prints, with where its files are."""
    # counted over every process and every resume of the run, not only this one
    for origin, count in sealed.unit_origins.items():
        if origin.startswith(COPIED_FROM):
            click.echo(f"{count} units (one setting x one attack x one batch) {origin}", err=True)
    click.echo(table_text(sealed.summary, table))
    for name, value in sealed.noise_floor.items():
        click.echo(f"{name}: stochastic gates flip {value:.3f} of decisions between two clean draws (noise floor)")
    if spec.early_exit and table == "full" and len(spec.attacks) > 1:
        click.echo(f"early exit: the attacks ran as a chain ({', '.join(a.name for a in spec.parsed_attacks)}), each on "
                   "the samples the ones before it left standing, so each attack's row is the chain up to it")
    more = "every attack and gate gradient: --table full or " if table == "compact" else ""
    click.echo(f"robust accuracy % [95% interval]; {more}{out_dir / 'summary.csv'}; per-sample records: "
               f"{out_dir / 'records.csv.gz'} ({len(sealed.records)} rows)")
