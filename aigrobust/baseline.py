"""CI regression baselines: a stored evaluation spec plus the metrics it produced, and the comparison.

A baseline names its checkpoints (with sha256), data (with sample indices), attacks, epsilons, defenses and seeds.
Paths inside it are relative to the baseline file's folder, so it works from any working directory.
Robust accuracy may not fall, executed FLOPs on adversarial inputs may not rise, and gate stability may not fall
by more than their tolerances.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.checkpoints import atomic_write_bytes
from aigrobust.metrics import summarize

FORMAT = "aigrobust-baseline"
KEYS = ["model", "defense", "defense_grad", "attack", "gate_grad", "epsilon"]
DEFAULT_TOLERANCES = {"robust_acc": 0.02, "adv_flops_rel": 0.02, "unchanged_gates": 0.03}


class BaselineError(ValueError):
    """A baseline file that cannot be used (missing, malformed, or naming missing files)."""


@dataclass(frozen=True)
class Comparison:
    """One metric of one setting: baseline, now, tolerance, and whether it holds."""

    key: str
    metric: str
    baseline: float
    now: float
    tolerance: float
    holds: bool


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and validate a baseline file."""
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BaselineError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{path} is not an aigrobust baseline (format {data.get('format')!r})"
                            if isinstance(data, dict) else f"{path} is not an aigrobust baseline")
    for key in ("spec", "metrics", "tolerances"):
        if key not in data:
            raise BaselineError(f"{path} lacks '{key}'")
    spec = data["spec"]
    for key in ("models", "dataset", "sample_indices", "attacks", "epsilons"):
        if key not in spec:
            raise BaselineError(f"{path}: spec lacks '{key}'")
    return data


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
                      evaluate: Callable[[dict[str, Any], Path], pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Verify checkpoint hashes (warnings, not errors: a changed checkpoint is what CI checks) and evaluate."""
    base = Path(path).resolve().parent
    warnings = []
    for label, model in document["spec"]["models"].items():
        checkpoint = resolve(base, model.get("checkpoint"))
        if checkpoint is None:
            continue
        if not checkpoint.is_file():
            raise BaselineError(f"checkpoint of {label} not found: {checkpoint}")
        expected = model.get("sha256")
        if expected and file_sha256(checkpoint) != expected:
            warnings.append(f"{label}: checkpoint {checkpoint.name} changed since the baseline (sha256 differs)")
    return evaluate(document["spec"], base), warnings


def sample_positions(indices: list[int], available: np.ndarray) -> np.ndarray:
    """Positions in a dataset of the stored sample indices (errors if the data lacks some)."""
    lookup = {int(v): i for i, v in enumerate(available)}
    missing = [i for i in indices if int(i) not in lookup]
    if missing:
        raise BaselineError(f"the data lacks {len(missing)} of the baseline's samples (e.g. index {missing[0]})")
    return np.array([lookup[int(i)] for i in indices], dtype=np.int64)


def evaluate_spec(spec: dict[str, Any], base: Path) -> pd.DataFrame:
    """Run a baseline's stored evaluation spec and return its records."""
    from aigrobust.checkpoints import load_checkpoint
    from aigrobust.data import load_dataset
    from aigrobust.evaluate import EvalSpec, ModelEntry, run_evaluation
    from aigrobust.registry import create_model

    entries = []
    for label, entry in spec["models"].items():
        checkpoint = resolve(base, entry.get("checkpoint"))
        if checkpoint is not None:
            model, _ = load_checkpoint(checkpoint)
        else:
            model = create_model(entry["model"], pretrained=True).eval()
        entries.append(ModelEntry(label, model, source=str(checkpoint or "pretrained")))
    data = load_dataset(spec["dataset"], "test", resolve(base, spec.get("data_dir")))
    data = data.subset(sample_positions(spec["sample_indices"], np.asarray(data.indices)))  # type: ignore[attr-defined]
    eval_spec = EvalSpec(attacks=tuple(spec["attacks"]), epsilons=tuple(spec["epsilons"]),
                         gate_grads=tuple(spec.get("gate_grads", ("exact",))), gate_mode=spec.get("gate_mode", "hard"),
                         seed=int(spec.get("seed", 0)), defenses=tuple(spec.get("defenses", ("none",))),
                         defense_grads=tuple(spec.get("defense_grads", ("oblivious", "bpda", "diff"))))
    images, labels = data.tensors()  # type: ignore[attr-defined]
    run = run_evaluation(entries, eval_spec, images, labels, np.asarray(data.indices),  # type: ignore[attr-defined]
                         batch_size=int(spec.get("batch_size", 256)))
    return run.records


def spec_from_run(run_dir: Path, baseline_path: Path, records: pd.DataFrame) -> dict[str, Any]:
    """A baseline spec from a finished run folder (its run.json and records)."""
    from aigrobust.runs import SPEC_FILE

    try:
        run = json.loads((Path(run_dir) / SPEC_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BaselineError(f"{run_dir} is not a finished run folder ({err})") from None
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
        "seed": spec["seed"], "batch_size": run.get("batch_size", 256),
    }
