"""Robustness reports from per-sample records: tables (Markdown, CSV, LaTeX), figures (PNG, SVG), index.md/html.

Every number comes from :mod:`aigrobust.evaluation.metrics` over the records, so a table and a figure of the same quantity
cannot disagree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.data import CIFAR10_CLASSES
from aigrobust.errors import DataError
from aigrobust.evaluation.metrics import (
    class_rates,
    compact_table,
    layer_rates,
    summarize,
)
from aigrobust.files import atomic_write_bytes, swap_in
from aigrobust.reporting.figures import FIGURES, FigureInputs
from aigrobust.reporting.gate_plots import gate_figure_epsilon
from aigrobust.reporting.pages import html_index, markdown_index
from aigrobust.reporting.sanity import SanityFlag, flags_table, record_checks
from aigrobust.reporting.tables import Report, headline, sample_counts_sentence, threat_model, to_latex, to_markdown
from aigrobust.runs.records import (
    COPIED_FROM,
    PARTS_DIR,
    RECORDS_FILE,
    SPEC_FILE,
    combined_full_flops,
    enclosing_run_folder,
)


def build_report(records: pd.DataFrame, title: str, classes: Sequence[str] | None = None,
                 extra_flags: Sequence[SanityFlag] = (), provenance: dict[str, Any] | None = None,
                 sample_images: Callable[[list[int]], dict[int, np.ndarray]] | None = None,
                 full_flops: dict[str, float] | None = None, input_values: int | None = None) -> Report:
    """Aggregate records into tables, every registered figure and sanity flags; ``sample_images`` reads the images
    of given sample ids (HxWx3 uint8) for the gate raster (without it the raster shows the patterns alone);
    ``full_flops`` (per model label, every block open) adds the FLOPs-weighted recovery, efficacy and its curve;
    ``input_values`` (values per image) the perturbations' MSE and PSNR.

    Args:
        records: per-sample records, as ``aigrobust attack`` writes them (one or several runs joined).
        title: the report's heading.
        classes: class names, for the per-class tables.
        extra_flags: sanity flags found elsewhere (the probes that rerun a model), shown beside the records' own.
        provenance: what made the records (commands, runs, devices), written into the report.
        sample_images: reads the images of given sample ids, for the gate raster.
        full_flops: each model's FLOPs with every block open.
        input_values: values per image, for MSE and PSNR.

    Returns:
        The :class:`Report` (tables, figures as bytes, flags, text), which :func:`write_report` writes.

    >>> import torch, aigrobust
    >>> summary = aigrobust.evaluate("aig20", torch.rand(4, 3, 32, 32), torch.arange(4), epsilons=["8/255"])
    >>> report = build_report(summary.records, "FGSM on four random images")
    >>> report.title, "accuracy_vs_epsilon" in report.figures
    ('FGSM on four random images', True)
    """
    if records.empty:
        raise ValueError("no records to report")
    full = dict(full_flops or {})
    summary = summarize(records, full_flops=full, input_values=input_values)
    layers = layer_rates(records[records["gate_grad"] != "none"]) if (records["gate_grad"] != "none").any() \
        else pd.DataFrame()
    gated_rows = records[(records["defense"] == "none") & (records["gate_grad"] != "none")]  # plain models: all open
    class_table = class_rates(gated_rows, list(classes) if classes else None) if not gated_rows.empty else pd.DataFrame()
    flags = record_checks(records) + list(extra_flags)
    report = Report(title, summary, layers, class_table, flags, provenance=dict(provenance or {}))
    sample_counts = sample_counts_sentence(records)
    report.notes.append(f"{sample_counts} Wilson intervals in the tables.")
    report.worst_case = compact_table(summary)
    report.threat_model = threat_model(records, report.provenance, sample_counts)
    gate_eps = gate_figure_epsilon(records) if not layers.empty else 0.0
    inputs = FigureInputs(records, summary, layers, class_table, gate_eps, full, sample_images)
    for entry in FIGURES.values():
        drawn = None if entry.gated_only and layers.empty else entry.build(inputs)
        if drawn is not None:
            report.figures[entry.name] = drawn
    if layers.empty:
        report.notes.append("No gated model in these records: gate figures are omitted.")
    return report


def images_from_runs(runs: Sequence[Any], sample_ids: list[int]) -> dict[int, np.ndarray]:
    """The images (HxWx3 uint8) of the given sample ids, from the first run whose test data can be read and holds
    them; empty where none can (the data moved or is absent: the figure then shows the gate patterns alone)."""

    for run in runs:
        try:
            data = run.data()
        except (DataError, OSError, KeyError, ValueError):
            continue
        positions = {int(v): i for i, v in enumerate(data.indices)}
        found = [i for i in sample_ids if i in positions]
        if not found:
            continue
        pictures = data.subset([positions[i] for i in found]).tensors()[0]
        as_uint8 = (pictures.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        return dict(zip(found, as_uint8))
    return {}


def report_from_runs(runs: Sequence[Any], records: pd.DataFrame, title: str, flags: Sequence[SanityFlag] = (),
                     preface: str = "") -> Report:
    """The report of finished runs (``runs.FinishedRun``) and their joined records, with each run's spec in the
    provenance and the noise floor of stochastic-gate runs beside every stability figure."""

    provenance: dict[str, Any] = {"runs": [str(run.root) for run in runs]}
    provenance.update({str(run.root): run.document.to_dict() for run in runs if not run.document.is_empty})
    full_flops = combined_full_flops(list(runs))
    sizes = {run.input_values for run in runs} - {None}  # one image size per report (one norm, one data set)
    report = build_report(records, title, classes=list(CIFAR10_CLASSES), extra_flags=flags, provenance=provenance,
                          sample_images=lambda ids: images_from_runs(runs, ids), full_flops=full_flops,
                          input_values=sizes.pop() if len(sizes) == 1 else None)
    report.preface = preface
    for run in runs:
        for model_name, value in run.noise_floor.items():
            report.notes.append(f"{model_name} ran stochastic gates: two seeded draws on the same clean images "
                                f"differ in {100 * value:.1f}% of decisions (the noise floor of its stability "
                                "figures).")
        computed_on = {k: v for k, v in run.unit_origins.items() if not k.startswith(COPIED_FROM)}
        if len(computed_on) > 1:  # float rounding differs between devices: say so beside the run's figures
            where = "; ".join(f"{origin}: {count} units" for origin, count in computed_on.items())
            report.notes.append(f"{run.root.name} was computed on more than one device ({where}); a borderline "
                                "sample's outcome can differ between them.")
    return report

REPORT_FILES = ("summary.csv", "summary.md", "summary.tex", "layer_rates.csv", "class_rates.csv", "sanity_checks.csv",
                "index.md", "index.html")


def refuse_foreign_folder(out_dir: Path) -> None:
    """Raise ``ValueError`` where writing a report into ``out_dir`` would overwrite files no report wrote or lose the
    report later: an attack run's folder or a folder inside one (its hidden parts too), or a folder holding a report's file names without the ``provenance.json`` every report writes."""

    out_dir = Path(out_dir)
    around = enclosing_run_folder(out_dir)
    if around is not None:
        raise ValueError(f"{out_dir} lies inside the attack run folder {around}: its next --resume or rerun would "
                         "replace the report; give the report a folder outside it")
    if any((out_dir / name).exists() for name in (SPEC_FILE, RECORDS_FILE, PARTS_DIR)):
        raise ValueError(f"{out_dir} is an attack run folder: the report would overwrite its summary.csv; give the "
                         "report its own --out")
    clashing = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if clashing and not (out_dir / "provenance.json").is_file():
        raise ValueError(f"{out_dir} holds {', '.join(clashing)} but no provenance.json (not an aigrobust report): the "
                         "report would overwrite it; give another --out")


REPORT_OWNED = (*REPORT_FILES, "provenance.json", "figures")  # what a report writes, so what a new one replaces


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write tables, figures, index.md and a self-contained index.html into ``out_dir``.

    The report is built whole in a hidden folder inside ``out_dir`` and then swapped in (signals held back for the
    renames): an interrupt or a full disk leaves the previous report as it was, never new tables beside old
    figures. Files of an older report that this one does not write (a figure it no longer draws) go; files that
    no report writes (records, a README) stay.

    Args:
        report: what :func:`build_report` returned.
        out_dir: the report's folder (made if absent; never inside a run folder).

    Returns:
        The files written.

    >>> import tempfile, torch, aigrobust
    >>> from pathlib import Path
    >>> summary = aigrobust.evaluate("resnet20", torch.rand(4, 3, 32, 32), torch.arange(4), epsilons=["8/255"])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = write_report(build_report(summary.records, "FGSM"), Path(folder) / "report")
    ...     sorted(p.name for p in written if p.name.startswith("index"))
    ['index.html', 'index.md']
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-"))
    try:
        names = _write_files(report, staging)
        swap_in(staging, out_dir, REPORT_OWNED)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in names]


def _write_files(report: Report, folder: Path) -> list[str]:
    """Every file of the report into ``folder``; their paths relative to it."""
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(folder / name, data)
        written.append(name)

    table = headline(report.summary)
    caption = (f"{report.title}: robust accuracy (pointwise, worst case where named) with 95% Wilson intervals. "
               + " ".join(report.notes[:1]))
    put("summary.csv", report.summary.to_csv(index=False).encode())
    put("summary.md", to_markdown(table).encode())
    put("summary.tex", to_latex(table, caption).encode())
    if not report.layers.empty:
        put("layer_rates.csv", report.layers.to_csv(index=False).encode())
    if not report.classes.empty:
        put("class_rates.csv", report.classes.to_csv(index=False).encode())
    flags = flags_table(report.flags)
    put("sanity_checks.csv", flags.to_csv(index=False).encode())
    for name, (png, svg) in report.figures.items():
        put(f"figures/{name}.png", png)
        put(f"figures/{name}.svg", svg)
    put("provenance.json", json.dumps(report.provenance, indent=2, sort_keys=True, default=str).encode())
    put("index.md", markdown_index(report, table, flags).encode())
    put("index.html", html_index(report, table, flags).encode())
    return written


