"""A baseline document (reports/ci/baseline.json) read and checked: its format, spec, metrics and tolerances, each refused in one line before anything runs."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from aigrobust.datasets import DATASETS
from aigrobust.errors import AigrobustError
from aigrobust.evaluation import EvalSpec, parse_epsilon
from aigrobust.evaluation.metrics import GROUP
from aigrobust.files import JSONLimitError, parse_json, unusable_file
from aigrobust.models.registry import UnknownModelError, get_model_info
from aigrobust.runs.migrate import specs_as_ran, upgrade_metric_keys

FORMAT = "aigrobust-baseline"


KEYS = GROUP  # the one setting key: model, defense, defense_grad, attack, gate_grad, epsilon


DEFAULT_TOLERANCES = {"robust_acc": 0.02, "adv_flops_rel": 0.02, "unchanged_gates": 0.03}


MAX_TOLERANCE = 0.1  # a looser tolerance would let a real regression pass (1e9 passes anything)


METRIC_FIELDS = ("robust_acc", "adv_flops", "unchanged_gates")


class BaselineError(AigrobustError, ValueError):
    """A baseline file that cannot be used (missing, malformed, or naming missing files)."""


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a baseline file and validate it as a typed document (every field checked before any work)."""
    path = Path(path)
    why = unusable_file(path)
    if why is not None:
        raise BaselineError(f"baseline {path} {why}")
    try:
        data = parse_json(path.read_bytes())
    except JSONLimitError as err:
        raise BaselineError(f"{path} {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{path} is not an aigrobust baseline (format {data.get('format')!r})"
                            if isinstance(data, dict) else f"{path} is not an aigrobust baseline")
    for key in ("spec", "metrics", "tolerances"):
        if key not in data:
            raise BaselineError(f"{path} lacks '{key}'")
    try:
        check_spec(data["spec"])
        check_tolerances(data["tolerances"])
        check_metrics(data["metrics"])
    except BaselineError as err:
        raise BaselineError(f"{path}: {err}") from None
    data["metrics"] = upgrade_metric_keys(data["metrics"], data["spec"]["attacks"])
    # the attacks as its metrics were measured, so ``check`` reruns those (a text written before an attack's defaults
    # changed means what it meant then) and compares like with like
    written = data["spec"]["attacks"]
    ran = specs_as_ran(written, (str(row["attack"]) for row in data["metrics"]))
    samples = data["spec"].get("attack_samples", {})
    data["spec"] = {**data["spec"], "attacks": ran,
                    **({"attack_samples": {now: samples[then] for then, now in zip(written, ran) if then in samples}}
                       if samples else {})}
    return data


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_tolerances(tolerances: Any) -> None:
    if not isinstance(tolerances, dict):
        raise BaselineError("tolerances must be an object")
    for name, value in tolerances.items():
        if name not in DEFAULT_TOLERANCES:
            raise BaselineError(f"unknown tolerance {name!r}; known: {', '.join(DEFAULT_TOLERANCES)}")
        if not _finite(value) or not 0 <= value <= MAX_TOLERANCE:
            raise BaselineError(f"tolerance {name} must be a number in [0, {MAX_TOLERANCE}], got {value!r}")


def check_metrics(metrics: Any) -> None:
    if not isinstance(metrics, list) or not metrics:
        raise BaselineError("metrics must be a non-empty list (a baseline that checks nothing passes anything)")
    for i, row in enumerate(metrics):
        if not isinstance(row, dict):
            raise BaselineError(f"metric {i} is not an object")
        for key in KEYS[:-1]:
            if not isinstance(row.get(key), str):
                raise BaselineError(f"metric {i} lacks {key!r} (a string)")
        if not _finite(row.get("epsilon")) or not 0 <= row["epsilon"] <= 1:
            raise BaselineError(f"metric {i}: epsilon must be a number in [0, 1], got {row.get('epsilon')!r}")
        for key in METRIC_FIELDS:
            if not _finite(row.get(key)):
                raise BaselineError(f"metric {i} ({row['model']} {row['attack']}) lacks {key!r} (a number)")


def check_spec(spec: Any) -> None:
    """A baseline's spec, every field typed and in range before anything runs; one ``BaselineError`` line."""

    if not isinstance(spec, dict):
        raise BaselineError("spec must be an object")
    for key in ("models", "dataset", "sample_indices", "attacks", "epsilons"):
        if key not in spec:
            raise BaselineError(f"spec lacks '{key}'")
    _check_models(spec["models"])
    if not _is_sha256(spec.get("data_sha256")):
        raise BaselineError("spec data_sha256 is missing or malformed: the fingerprint of the baseline's images, "
                            "without which another image set would pass unnoticed")
    if spec["dataset"] not in DATASETS:
        raise BaselineError(f"spec dataset must be one of {', '.join(DATASETS)}, got {spec['dataset']!r}")
    indices = spec["sample_indices"]
    if (not isinstance(indices, list) or not indices
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices)):
        raise BaselineError("spec sample_indices must be a non-empty list of sample numbers")
    repeated = sorted({i for i in indices if indices.count(i) > 1}) if len(set(indices)) < len(indices) else []
    if repeated:  # a sample counted twice would weigh twice in every rate and collide in the per-sample records
        raise BaselineError(f"spec sample_indices repeats sample {repeated[0]}"
                            + (f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else ""))
    if not isinstance(spec["attacks"], list) or not spec["attacks"]:
        raise BaselineError("spec attacks must be a non-empty list of attack specs")
    if not isinstance(spec["epsilons"], list) or not spec["epsilons"]:
        raise BaselineError("spec epsilons must be a non-empty list")
    _check_attack_samples(spec)
    batch_size = spec.get("batch_size", 256)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise BaselineError(f"spec batch_size must be a positive integer, got {batch_size!r}")
    try:
        for eps in spec["epsilons"]:
            if isinstance(eps, bool):
                raise ValueError(f"epsilon {eps!r} is not a number")
            parse_epsilon(eps)
        build_eval_spec(spec)
    except (ValueError, KeyError) as err:  # unknown attacks, bad epsilons, gate or defense settings
        raise BaselineError(f"spec: {str(err).strip(chr(39))}") from None



def _check_attack_samples(spec: dict[str, Any]) -> None:
    """``attack_samples``: attack (as the spec lists it) -> n, the attack run on the first n samples only."""
    samples = spec.get("attack_samples", {})
    if not isinstance(samples, dict):
        raise BaselineError("spec attack_samples must be an object of attack -> number of samples")
    for attack, n in samples.items():
        if attack not in spec["attacks"]:
            raise BaselineError(f"spec attack_samples names {attack!r}, which is not one of the spec's attacks")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(spec["sample_indices"]):
            raise BaselineError(f"spec attack_samples: {attack} takes a number of samples from 1 to "
                                f"{len(spec['sample_indices'])}, got {n!r}")


def _check_models(models: Any) -> None:
    """The spec's models: label -> {model, checkpoint, sha256}, each a registered model, a checkpoint pinned."""

    if not isinstance(models, dict) or not models:
        raise BaselineError("spec models must be an object of label -> {model, checkpoint, sha256}")
    for label, entry in models.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise BaselineError(f"spec model {label!r} must be an object naming its model")
        try:
            get_model_info(entry["model"])
        except UnknownModelError as err:
            raise BaselineError(f"spec model {label!r}: {err}") from None
        if not isinstance(entry.get("checkpoint"), (str, type(None))):
            raise BaselineError(f"spec model {label!r}: checkpoint must be a relative path or null")
        if entry.get("checkpoint") is not None and not _is_sha256(entry.get("sha256")):
            raise BaselineError(f"spec model {label!r}: its checkpoint's sha256 is missing or malformed (without it a "
                                "replaced checkpoint would pass unnoticed)")


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def build_eval_spec(spec: dict[str, Any]) -> Any:
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return EvalSpec(attacks=tuple(spec["attacks"]), epsilons=tuple(spec["epsilons"]),
                    gate_grads=tuple(spec.get("gate_grads", ("exact",))), gate_mode=spec.get("gate_mode", "hard"),
                    seed=seed, defenses=tuple(spec.get("defenses", ("none",))),
                    defense_grads=tuple(spec.get("defense_grads", ("oblivious", "bpda", "diff"))),
                    early_exit=bool(spec.get("early_exit", False)),
                    fold_batchnorm=_flag(spec, "fold_batchnorm"))


def _flag(spec: dict[str, Any], name: str) -> bool:
    """A yes/no field of a baseline spec (absent: no); anything but true or false is refused."""
    value = spec.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}: give true or false")
    return value
