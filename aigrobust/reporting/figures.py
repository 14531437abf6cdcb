"""The figures a report draws: a registry of named figure builders (:func:`register_figure`), each taking the report's aggregated inputs and returning (PNG, SVG) bytes or None where it does not apply."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aigrobust.registry import Registry
from aigrobust.reporting.gate_plots import (
    figure_class_rates,
    figure_efficacy_curve,
    figure_flip_heatmap,
    figure_flops_ratio,
    figure_gate_raster,
    figure_layer_rates,
    gate_raster_rows,
)
from aigrobust.reporting.plots import figure_accuracy_vs_epsilon, figure_robustness_per_flop
from aigrobust.reporting.tables import robustness_per_flop_points


@dataclass(frozen=True)
class FigureInputs:
    """What a report figure is drawn from: the records and the tables the report derives from them.

    Args:
        records: the per-sample records (as ``records.csv.gz``).
        summary: one row per setting with every metric (as ``summary.csv``).
        layers: per model, setting and block, the execution rate clean and attacked.
        classes: per model and class, clean and attacked execution and accuracy.
        gate_epsilon: the epsilon the gate figures look at.
        full_flops: per model label, the FLOPs with every block open (empty where unknown).
        sample_images: reads the images of given sample ids (H x W x 3 uint8), for the gate raster; None: patterns
            only.

    >>> import dataclasses
    >>> ", ".join(f.name for f in dataclasses.fields(FigureInputs))
    'records, summary, layers, classes, gate_epsilon, full_flops, sample_images'
    """

    records: pd.DataFrame
    summary: pd.DataFrame
    layers: pd.DataFrame
    classes: pd.DataFrame
    gate_epsilon: float  # where the gate figures look: see gate_figure_epsilon
    full_flops: dict[str, float]  # per model label, FLOPs with every block open (empty where unknown)
    sample_images: Callable[[list[int]], dict[int, np.ndarray]] | None = None


FigureBuilder = Callable[[FigureInputs], "tuple[bytes, bytes] | None"]


@dataclass(frozen=True)
class FigureEntry:
    """A registered report figure: its file name, its caption, and what draws it (None: nothing to show here)."""

    name: str
    caption: str
    build: FigureBuilder
    gated_only: bool = False  # drawn only where the records hold a gated model


FIGURES: Registry[FigureEntry] = Registry("figure")


def register_figure(name: str, caption: str, gated_only: bool = False) -> Callable[[FigureBuilder], FigureBuilder]:
    """Decorator: add a figure to every report, in registration order.

    The builder takes :class:`FigureInputs` and returns (png, svg) bytes (:func:`~aigrobust.reporting.plots.save_figure`),
    or None where the records hold nothing for it (the figure is then left out).

    Args:
        name: the file name under figures/; new, and a plain word (letters, digits, _ and -).
        caption: the sentence under the figure in the report.
        gated_only: not asked where no dynamic (gated or early-exit) model ran.

    Returns:
        The decorator, which registers the builder and returns it unchanged.

    >>> @register_figure("robust_accuracy_bars", "Robust accuracy per model.")  # doctest: +SKIP
    ... def _bars(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    ...     ...
    >>> list(FIGURES)[0]  # the registered figures, in the order reports draw them
    'accuracy_vs_epsilon'
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"figure name {name!r} must be letters, digits, _ or -")
    FIGURES.check_free(name)

    def add(build: FigureBuilder) -> FigureBuilder:
        FIGURES.add(name, FigureEntry(name, caption, build, gated_only))
        return build

    return add


def figure_caption(name: str) -> str:
    """The registered caption of a figure (its name where none is registered)."""
    entry = FIGURES.get(name)
    return entry.caption if entry is not None else name


@register_figure("accuracy_vs_epsilon",
                 "Robust accuracy versus epsilon, one panel per defense setting, one colour per model: bold, the worst "
                 "case over the attacks run (dynamic models: also over the gate gradients run) with its 95% interval "
                 "shaded; faint, each single attack. Lines join only epsilons run next to each other; a lone marker "
                 "is an epsilon whose neighbours were not run.")
def _accuracy_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    if not (inputs.summary["goal"] == "misclassify").any():  # only attacks on the gates ran
        return None
    return figure_accuracy_vs_epsilon(inputs.summary)


@register_figure("layer_execution_rates",
                 "Per-block execution rate, a row per dynamic model: clean, and under the strongest attack of each kind "
                 "(accuracy, gates, compute, noise control; exact gate gradient where run), at the epsilon where the "
                 "gate attacks (else the most attacks) ran; a panel identical to another is left out.",
                 gated_only=True)
def _layer_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_layer_rates(inputs.layers, inputs.gate_epsilon)


@register_figure("gate_flip_heatmap",
                 "Share of samples whose gate flips, per block (columns) and epsilon (rows); square-root colour "
                 "scale, so small rates stay visible.", gated_only=True)
def _flip_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_flip_heatmap(inputs.layers)


@register_figure("flops_clean_vs_adversarial",
                 "Per dynamic model, the per-image ratio of executed FLOPs attacked / clean under its strongest compute "
                 "attack (red) and under the random-noise control (grey), at the epsilon of the gate figures; boxes "
                 "hold the middle half of the images, whiskers 5-95%, the dotted line is no change.", gated_only=True)
def _flops_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_flops_ratio(inputs.records, inputs.gate_epsilon)


@register_figure("efficacy_curve",
                 "DeepSloth's efficacy curve per gated model: the share of images (y) that run at most a given share "
                 "of the full network's FLOPs (x), clean and under each compute attack and its random-noise control "
                 "at the largest epsilon they ran; the area above a curve is its efficacy (1: nothing computed, 0: "
                 "every block for every image). An attack that takes back the savings pushes its curve to the right "
                 "edge.")
def _efficacy_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_efficacy_curve(inputs.records, inputs.full_flops)


@register_figure("gate_raster",
                 "Gate patterns of a few test images, clean against adversarial (the attack that changed the most "
                 "patterns, at the epsilon of the gate figures), with each image beside its rows.", gated_only=True)
def _raster_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    raster = gate_raster_rows(inputs.records, inputs.gate_epsilon)
    if raster.empty:
        return None
    ids = [int(i) for i in raster["sample"]]
    return figure_gate_raster(raster, inputs.sample_images(ids) if inputs.sample_images else {})


@register_figure("class_execution_rates", "Clean execution rate of each block per class.")
def _class_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return None if inputs.classes.empty else figure_class_rates(inputs.classes)


@register_figure("robust_accuracy_vs_flops",
                 "Robust accuracy (worst case over the accuracy attacks run, 95% interval) against executed MFLOPs per "
                 "clean image (95% interval over images), undefended, one panel per epsilon; an arrow leads to the "
                 "FLOPs under the strongest compute attack run; the grey line joins the most robust plain model at each cost "
                 "(where plain models of two or more costs ran): a gated model above it buys robustness per FLOP.", gated_only=True)
def _robust_flops_figure(inputs: FigureInputs) -> tuple[bytes, bytes] | None:
    return figure_robustness_per_flop(robustness_per_flop_points(inputs.records, inputs.summary))
