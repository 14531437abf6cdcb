"""The commands that read what exists: the model and attack registries, finished runs (``report``) and CI baselines
(``check``). Named in the group's table (:mod:`aigrobust.cli.commands`); thin, like every command there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aigrobust.checks.baseline import display_key, make_baseline, recheck, spec_from_run, write_baseline
from aigrobust.checks.baseline_document import BaselineError
from aigrobust.cli import run_inputs
from aigrobust.cli.exits import DISK_ERRORS, BadInput
from aigrobust.errors import CheckpointError, DataError
from aigrobust.files import unusable_file
from aigrobust.models.facts import model_rows, models_table
from aigrobust.reporting.report import refuse_foreign_folder, report_from_runs, write_report
from aigrobust.reporting.sanity import record_checks
from attacks import attack_catalogue


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--details", is_flag=True, help="Build each model and count parameters and FLOPs now (slow for the "
              "ImageNet models) instead of reading the stored figures.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_command(pattern: str, details: bool, as_json: bool) -> None:
    """List registered models with parameters, full FLOPs (per image, at the model's input size), gated blocks and
    the weights each has (shipped, torchvision, none)."""
    rows = model_rows(pattern, measure=details)
    if not rows:
        raise BadInput(f"no model matches {pattern!r}")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(models_table(rows))


@click.command("attacks")
def attacks_command() -> None:
    """List every attack with its settings and their defaults (give them as name:key=value,key=value)."""
    click.echo("\n".join(attack_catalogue()))


def run_reading_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that reads finished run folders (``report``, ``check``), declared once: probe
    size, the user code the probes may import, and folders without run.json."""
    options = [
        click.option("--n-probe", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Test images the sanity probes run on (the probes that run a model)."),
        click.option("--model-code", "model_codes", multiple=True, metavar="[LABEL=]MODULE:CALLABLE",
                     help="Code you trust that built a run's own network (as given to `attack --model-code`): the "
                     "probes import it. Code a run folder names is never imported on its own word."),
        click.option("--trust-code", is_flag=True, help="Import the code the run folders name for their own "
                     "networks (each import is printed first): only for run folders you trust."),
        click.option("--unsealed", is_flag=True, help="Also read run folders without run.json (their records "
                     "cannot prove they are whole); the output says so."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Report folder.")
@click.option("--title", default="aigrobust robustness report", show_default=True, help="The report's heading.")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Also run model probes (zero gradients, randomness, large epsilon) on the runs' models.")
@run_reading_options
@click.option("--preface", "preface_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Markdown file placed under the title (e.g. a study's findings in plain words).")
def report_command(run_dirs: tuple[Path, ...], out_dir: Path, title: str, probe: bool, n_probe: int,
                   model_codes: tuple[str, ...], trust_code: bool, unsealed: bool, preface_path: Path | None) -> None:
    """Tables (Markdown, CSV, LaTeX), figures (PNG, SVG), index.md and a self-contained index.html from runs.

    Runs listed first win where two runs hold the same sample under the same setting (e.g. a 1000-image run
    followed by a subset run that repeats its reference rows).
    """
    try:
        refuse_foreign_folder(out_dir)
    except ValueError as err:
        raise BadInput(str(err)) from None
    why = unusable_file(preface_path) if preface_path is not None else None
    if why is not None:
        raise BadInput(f"the preface {preface_path} {why}")
    try:
        preface = preface_path.read_text() if preface_path is not None else ""
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read the preface {preface_path}: {err}") from None
    runs = run_inputs.open_runs(run_dirs, unsealed)
    records = run_inputs.read_runs(runs)
    flags = run_inputs.probe_flags(runs, n_probe, model_codes, trust_code) if probe else []
    report = report_from_runs(runs, records, title, flags, preface)
    warning = run_inputs.unsealed_warning(runs)
    if warning is not None:
        report.notes.insert(0, warning)
        click.echo(f"warning: {warning}", err=True)
    try:
        written = write_report(report, out_dir)
    except OSError as err:
        if err.errno in DISK_ERRORS:
            raise  # main() says it in one line; the previous report stays as it was
        raise BadInput(f"cannot write the report to {out_dir}: {err.strerror}") from None
    warnings = [f for f in report.flags if f.status == "warn"]
    click.echo(f"report: {out_dir / 'index.html'} and index.md ({len(written)} files, {len(report.figures)} figures)")
    for flag in warnings:
        click.echo(f"warning: {flag.model}: {flag.sentence}")
    for flag in flags:
        if flag.check == "model probes" and flag.status != "warn":
            click.echo(f"note: {flag.model}: model probes {flag.sentence}", err=True)


@click.command("check")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), default=None,
              help="Baseline JSON: re-run its spec and compare each metric with its tolerance.")
@click.option("--update", is_flag=True, help="Write the new figures into the baseline and show what moved.")
@click.option("--init-from", "init_run", type=click.Path(path_type=Path), default=None,
              help="Create --baseline from a finished attack run folder (an existing one only with --update).")
@click.option("--sanity", "sanity_runs", multiple=True, type=click.Path(path_type=Path),
              help="Run the gradient-masking sanity checks on a run folder (repeatable).")
@run_reading_options
@click.option("--allow-root", "allowed_roots", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="A folder outside the baseline's own from which its checkpoints and data may be read (repeatable); "
              "any other path the baseline names is refused before it is opened.")
def check_command(baseline_path: Path | None, update: bool, init_run: Path | None, sanity_runs: tuple[Path, ...],
                  n_probe: int, model_codes: tuple[str, ...], trust_code: bool, unsealed: bool,
                  allowed_roots: tuple[Path, ...]) -> None:
    """CI checks: regression against a baseline (exit 1 on regression) and sanity checks for masking.

    \b
    Examples:
      aigrobust check --baseline reports/ci/baseline.json --allow-root . --allow-root ../shared/data
      aigrobust check --baseline ci/baseline.json --init-from runs/ci
      aigrobust check --sanity runs/quickstart
    """
    if not baseline_path and not sanity_runs:
        raise BadInput("give --baseline FILE and/or --sanity RUN")
    if baseline_path is None and (init_run is not None or update):
        raise BadInput(f"{'--init-from' if init_run is not None else '--update'} needs --baseline FILE")
    if init_run is not None and baseline_path is not None and baseline_path.exists() and not update:
        raise BadInput(f"{baseline_path} exists: --init-from would replace it; add --update to replace it, or give "
                       "another --baseline path")
    failed = False
    if sanity_runs:
        failed |= _sanity_checks(sanity_runs, n_probe, model_codes, trust_code, unsealed)
    if baseline_path is not None:
        failed |= _baseline_check(baseline_path, update, init_run, unsealed, allowed_roots)
    if failed:
        raise SystemExit(1)


def _sanity_checks(sanity_runs: tuple[Path, ...], n_probe: int, model_codes: tuple[str, ...], trust_code: bool,
                   unsealed: bool) -> bool:
    """The record checks and model probes on the runs, a line each; whether any warned."""
    runs = run_inputs.open_runs(sanity_runs, unsealed)
    warning = run_inputs.unsealed_warning(runs)
    if warning is not None:
        click.echo(f"WARN  unsealed-records             {warning}")
    flags = record_checks(run_inputs.read_runs(runs)) + run_inputs.probe_flags(runs, n_probe, model_codes, trust_code)
    for flag in flags:
        click.echo(f"{flag.status.upper():<5} {flag.check:<28} {flag.model}: {flag.sentence}")
    return any(f.status == "warn" for f in flags)


def _baseline_check(baseline_path: Path, update: bool, init_run: Path | None, unsealed: bool,
                    allowed_roots: tuple[Path, ...]) -> bool:
    """A baseline written from a run (``init_run``), updated, or checked (its table printed); whether a metric
    regressed."""
    try:
        if init_run is not None:
            records = run_inputs.read_runs(run_inputs.open_runs((init_run,), unsealed))
            document = make_baseline(spec_from_run(init_run, baseline_path, records), records)
            write_baseline(baseline_path, document)
            click.echo(f"baseline written: {baseline_path} ({len(document['metrics'])} settings)")
            return False
        check = recheck(baseline_path, allowed_roots)
    except (BaselineError, CheckpointError, DataError) as err:
        raise BadInput(str(err)) from None
    for note in check.notes:
        click.echo(f"note: {note}")
    if update:
        write_baseline(baseline_path, {**check.document, "metrics": check.now})
        moved = [r for r in check.results if abs(r.now - r.baseline) > 1e-9]
        click.echo(f"baseline updated: {len(moved)} metrics moved")
        for r in moved:
            click.echo(f"  {display_key(r.key)} {r.metric}: {r.baseline:.4g} -> {r.now:.4g}")
        return False
    click.echo("\n".join(check.table_lines()))
    return check.regressions > 0
