"""CI regression baselines: a stored evaluation spec plus the metrics it produced, and the comparison.

A baseline names its checkpoints (with sha256), data (with sample indices), attacks, epsilons, defenses and seeds.
Paths inside it are relative to the baseline file's folder, so it works from any working directory.
Robust accuracy may not fall, executed FLOPs on adversarial inputs may not rise, and gate stability may not fall
by more than their tolerances.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from aigrobust.checks.baseline_document import (
    DEFAULT_TOLERANCES,
    FORMAT,
    KEYS,
    BaselineError,
    build_eval_spec,
    load_baseline,
)
from aigrobust.data import load_dataset
from aigrobust.evaluation import ModelEntry, run_evaluation
from aigrobust.evaluation.metrics import format_eps, summarize
from aigrobust.files import atomic_write_bytes, file_sha256
from aigrobust.models.factory import create_model, load_checkpoint
from aigrobust.models.registry import split_tag
from aigrobust.runs.folder import FinishedRun, RunFolderError
from attacks import attack_label


@dataclass(frozen=True)
class Comparison:
    """One metric of one setting: baseline, now, tolerance, and whether it holds."""

    key: str
    metric: str
    baseline: float
    now: float
    tolerance: float
    holds: bool


def contained_path(base: Path, value: str, allowed_roots: tuple[Path, ...], what: str) -> Path:
    """A path the baseline names, resolved against its folder, refused (before it is opened) unless it lies
    inside the baseline's folder or one of ``allowed_roots`` (absolute paths are always refused)."""
    if Path(value).is_absolute():
        raise BaselineError(f"{what} {value!r} is an absolute path; a baseline names paths relative to its folder")
    resolved = (base / value).resolve()
    roots = (base.resolve(), *(Path(r).resolve() for r in allowed_roots))
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise BaselineError(f"{what} {value!r} resolves to {resolved}, outside the baseline's folder and every "
                            "--allow-root; pass --allow-root DIR to allow it")
    return resolved


def resolve(base: Path, value: str | None) -> Path | None:
    """A path stored relative to the baseline's folder (absolute paths pass through)."""
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else (base / p).resolve()


def relative(base: Path, path: Path) -> str:
    """``path`` relative to ``base`` (for storing in a baseline)."""
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def metrics_rows(records: pd.DataFrame) -> list[dict[str, Any]]:
    """The compared metrics of each setting (worst cases included)."""
    summary = summarize(records)
    rows = []
    for r in summary.itertuples():
        rows.append({"model": r.model, "defense": r.defense, "defense_grad": r.defense_grad, "attack": r.attack,
                     "gate_grad": r.gate_grad, "epsilon": round(float(r.epsilon), 8), "n": int(r.n),
                     "robust_acc": round(float(r.robust_acc), 6), "adv_flops": float(r.adv_flops),
                     "unchanged_gates": round(float(r.unchanged_gates), 6)})
    return rows


def display_key(key: str) -> str:
    """A setting key as a reader scans it: the attack's short label and the epsilon as 8/255."""

    parts = key.split("/")
    if len(parts) != len(KEYS):
        return key
    parts[KEYS.index("attack")] = attack_label(parts[KEYS.index("attack")])
    parts[KEYS.index("epsilon")] = format_eps(float(parts[KEYS.index("epsilon")]))
    return "/".join(parts)


def _key(row: dict[str, Any]) -> str:
    return "/".join(str(row[k]) if k != "epsilon" else f"{float(row[k]):.6f}" for k in KEYS)


def compare(baseline_rows: list[dict[str, Any]], now_rows: list[dict[str, Any]], tolerances: dict[str, float]
            ) -> list[Comparison]:
    """Each metric of each baseline setting against now; a setting missing now is a failure."""
    now = {_key(r): r for r in now_rows}
    out = []
    for row in baseline_rows:
        key = _key(row)
        current = now.get(key)
        if current is None:
            out.append(Comparison(key, "present", 1.0, 0.0, 0.0, False))
            continue
        tol = float(tolerances.get("robust_acc", DEFAULT_TOLERANCES["robust_acc"]))
        out.append(Comparison(key, "robust_acc", row["robust_acc"], current["robust_acc"], tol,
                              current["robust_acc"] >= row["robust_acc"] - tol - 1e-12))
        tol = float(tolerances.get("adv_flops_rel", DEFAULT_TOLERANCES["adv_flops_rel"]))
        out.append(Comparison(key, "adv_flops", row["adv_flops"], current["adv_flops"], tol,
                              current["adv_flops"] <= row["adv_flops"] * (1 + tol) + 1e-6))
        tol = float(tolerances.get("unchanged_gates", DEFAULT_TOLERANCES["unchanged_gates"]))
        out.append(Comparison(key, "unchanged_gates", row["unchanged_gates"], current["unchanged_gates"], tol,
                              current["unchanged_gates"] >= row["unchanged_gates"] - tol - 1e-12))
    return out


def make_baseline(spec: dict[str, Any], records: pd.DataFrame, tolerances: dict[str, float] | None = None
                  ) -> dict[str, Any]:
    """A baseline document from a spec and the records it produced."""
    return {"format": FORMAT, "version": 1, "spec": spec, "tolerances": dict(tolerances or DEFAULT_TOLERANCES),
            "metrics": metrics_rows(records)}


def write_baseline(path: Path, document: dict[str, Any]) -> None:
    """Write a baseline atomically (never half-written)."""
    atomic_write_bytes(Path(path), (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def run_baseline_spec(path: Path, document: dict[str, Any],
                      evaluate: Callable[[dict[str, Any], Path], pd.DataFrame],
                      allowed_roots: tuple[Path, ...] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Verify checkpoint hashes (warnings, not errors: a changed checkpoint is what CI checks) and evaluate.

    Every path the baseline names must lie inside its folder or ``allowed_roots``; that is checked first."""
    base = Path(path).resolve().parent
    spec = document["spec"]
    if spec.get("data_dir") is not None:
        contained_path(base, spec["data_dir"], allowed_roots, "data_dir")
    for label, model in spec["models"].items():
        if model.get("checkpoint") is not None:
            contained_path(base, model["checkpoint"], allowed_roots, f"checkpoint of {label}")
    warnings = []
    for label, model in spec["models"].items():
        checkpoint = resolve(base, model.get("checkpoint"))
        if checkpoint is None:
            continue
        if not checkpoint.is_file():
            raise BaselineError(f"checkpoint of {label} not found: {checkpoint}")
        expected = model.get("sha256")
        if expected and file_sha256(checkpoint) != expected:
            warnings.append(f"{label}: checkpoint {checkpoint.name} changed since the baseline (sha256 differs)")
    return evaluate(document["spec"], base), warnings


class BaselineCheck(NamedTuple):
    """A baseline re-run: the document, each metric against it, the figures now and notes (changed checkpoints)."""

    document: dict[str, Any]
    results: list[Comparison]
    now: list[dict[str, Any]]
    notes: list[str]

    def table_lines(self) -> list[str]:
        """Every robust-accuracy figure and every metric that moved out of its tolerance, then the tally."""
        lines = [f"{'setting':<70} {'metric':<16} {'baseline':>10} {'now':>10} {'tolerance':>9}  status"]
        for r in self.results:
            if not r.holds or r.metric == "robust_acc":
                lines.append(f"{display_key(r.key):<70} {r.metric:<16} {r.baseline:>10.4g} {r.now:>10.4g} "
                             f"{r.tolerance:>9.3g}  {'ok' if r.holds else 'REGRESSION'}")
        return lines + [f"{len(self.results) - self.regressions} of {len(self.results)} metrics hold"]

    @property
    def regressions(self) -> int:
        """How many metrics moved out of their tolerance."""
        return sum(not r.holds for r in self.results)


def recheck(path: Path, allowed_roots: tuple[Path, ...] = ()) -> BaselineCheck:
    """Load a baseline, re-run its spec and compare every metric with its tolerance."""
    document = load_baseline(path)
    records, notes = run_baseline_spec(path, document, evaluate_spec, allowed_roots)
    now = metrics_rows(records)
    return BaselineCheck(document, compare(document["metrics"], now, document["tolerances"]), now, notes)


def sample_positions(indices: list[int], available: np.ndarray) -> np.ndarray:
    """Positions in a dataset of the stored sample indices (errors if the data lacks some)."""
    lookup = {int(v): i for i, v in enumerate(available)}
    missing = [i for i in indices if int(i) not in lookup]
    if missing:
        raise BaselineError(f"the data lacks {len(missing)} of the baseline's samples (e.g. index {missing[0]})")
    return np.array([lookup[int(i)] for i in indices], dtype=np.int64)


def evaluate_spec(spec: dict[str, Any], base: Path) -> pd.DataFrame:
    """Run a baseline's stored evaluation spec and return its records."""

    entries = []
    for label, entry in spec["models"].items():
        checkpoint = resolve(base, entry.get("checkpoint"))
        if checkpoint is not None:
            model, _ = load_checkpoint(checkpoint)
            if split_tag(entry["model"])[0] != model.registry_name:
                raise BaselineError(f"spec model {label!r} names a {entry['model']}, but its checkpoint holds a "
                                    f"{model.registry_name}")
        else:
            model = create_model(entry["model"], pretrained=True).eval()
        entries.append(ModelEntry(label, model, source=str(checkpoint or "pretrained")))
    data = load_dataset(spec["dataset"], "test", resolve(base, spec.get("data_dir")))
    data = data.subset(sample_positions(spec["sample_indices"], np.asarray(data.indices)))  # type: ignore[attr-defined]
    expected = spec.get("data_sha256")
    if expected and data.fingerprint() != expected:  # type: ignore[attr-defined]
        raise BaselineError(f"the baseline's images differ from the data found: sha256 {data.fingerprint()[:16]} "  # type: ignore[attr-defined]
                            f"where the baseline recorded {str(expected)[:16]}")
    images, labels = data.tensors()  # type: ignore[attr-defined]
    indices = np.asarray(data.indices)  # type: ignore[attr-defined]
    frames = []
    for attacks, n in attack_groups(spec):  # per-sample keyed randomness: the first n samples' records are the same
        run = run_evaluation(entries, build_eval_spec({**spec, "attacks": attacks}), images[:n], labels[:n],
                             indices[:n], batch_size=int(spec.get("batch_size", 256)))
        frames.append(run.records)
    return pd.concat(frames, ignore_index=True)


def attack_groups(spec: dict[str, Any]) -> list[tuple[list[str], int]]:
    """The spec's attacks grouped by how many of its samples each runs on (``attack_samples``: the first n of
    ``sample_indices``; every sample where it is not named), the group on the most samples first."""
    limits = spec.get("attack_samples", {})
    groups: dict[int, list[str]] = {}
    for attack in spec["attacks"]:
        groups.setdefault(int(limits.get(attack, len(spec["sample_indices"]))), []).append(attack)
    return [(attacks, n) for n, attacks in sorted(groups.items(), key=lambda group: -group[0])]


def spec_from_run(run_dir: Path, baseline_path: Path, records: pd.DataFrame) -> dict[str, Any]:
    """A baseline spec from a finished run folder (its run.json and records)."""

    try:
        run = FinishedRun.open(Path(run_dir)).document.to_dict()
    except RunFolderError as err:
        raise BaselineError(f"{run_dir} is not a finished run folder ({err})") from None
    if "models" not in run:
        raise BaselineError(f"{run_dir} is not a finished run folder (no run.json)")
    base = Path(baseline_path).resolve().parent
    models = {}
    for label, info in run["models"].items():
        source = info.get("source", "pretrained")
        if source == "pretrained":
            models[label] = {"model": info["model"], "checkpoint": None, "sha256": None}
        else:
            models[label] = {"model": info["model"], "checkpoint": relative(base, Path(source)),
                             "sha256": file_sha256(Path(source))}
    data = run.get("data", {})
    spec = run["spec"]
    return {
        "models": models,
        "dataset": data.get("dataset", run["dataset"]["name"]),
        "data_dir": relative(base, Path(data["data_dir"])) if data.get("data_dir") else None,
        "data_sha256": run["dataset"].get("sha256"),
        "sample_indices": sorted({int(s) for s in records["sample"]}),
        "attacks": spec["attacks"], "epsilons": spec["epsilons"], "gate_grads": spec["gate_grads"],
        "gate_mode": spec["gate_mode"], "defenses": spec["defenses"], "defense_grads": spec["defense_grads"],
        "seed": spec["seed"], "batch_size": run.get("batch_size", 256), "early_exit": spec.get("early_exit", False),
        **({"fold_batchnorm": True} if spec.get("fold_batchnorm") else {}),  # a check reruns the run as it ran
    }
