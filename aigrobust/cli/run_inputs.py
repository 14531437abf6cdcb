"""What the commands that read finished runs (report, check) take in: run folders opened and checked, their records joined, the user code they may import, and the model probes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from aigrobust.checks.probes import model_probes
from aigrobust.cli.exits import BadInput
from aigrobust.errors import CheckpointError, DataError
from aigrobust.models.user_code import ModelCodeError
from aigrobust.reporting.sanity import STATUS_NA, SanityFlag
from aigrobust.runs.folder import FinishedRun, RunFolderError
from aigrobust.runs.records import RECORDS_FILE, SPEC_FILE, combine_runs

log = logging.getLogger(__name__)


def open_runs(run_dirs: tuple[Path, ...], unsealed: bool = False) -> list[Any]:
    """Finished run folders, each checked as it is opened. A folder of records without run.json cannot prove them
    whole (run.json holds their row count and hash): refused unless ``unsealed``."""
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
    try:
        records, dropped = combine_runs(runs)
    except RunFolderError as err:
        raise BadInput(str(err)) from None
    if dropped:  # e.g. a subset run that repeats the reference rows of a full run listed before it
        log.info("%d records repeat a sample already read from an earlier run; the earlier run's are kept",
                 dropped)
    return records
