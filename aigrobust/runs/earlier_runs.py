"""Units of a new run read from earlier runs' records instead of attacked again.

Every random number of an attack is keyed by (run seed, sample id, draw), so a sample's records under one setting
(defense, defense gradient, gate gradient) depend only on the model, the image, the seed and the attack chain, not
on the batch, the run or what else the run holds. A run against JPEG therefore need not attack its undefended
reference again when an earlier run of the same model, data, seed and attacks already did: those units are copied
from that run's records. What must match is checked once when the earlier run is opened, and per unit the copied
rows must reproduce this run's labels and clean predictions and gates (computed afresh), so a different model or
image set under the same label is refused, never mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aigrobust.evaluation import UnitRequest
from aigrobust.runs.document import RunDocument
from aigrobust.runs.folder import FinishedRun
from aigrobust.runs.migrate import today_specs
from aigrobust.runs.records import COPIED_FROM, RunFolderError

# run.json spec fields a sample's records depend on besides its setting (the attack chain matters whole: with early
# exit an attack sees only the samples the attacks before it left standing)
MUST_MATCH = ("attacks", "epsilons", "seed", "gate_mode", "early_exit", "eot_draws", "judge_draws", "fold_batchnorm")
UNIT_COLUMNS = ["model", "defense", "defense_grad", "gate_grad", "attack"]


@dataclass
class EarlierRun:
    """One earlier, finished run whose records can supply units."""

    root: Path
    units: dict[tuple[str, ...], pd.DataFrame]

    def unit(self, request: UnitRequest) -> pd.DataFrame | None:
        """The unit's rows (per epsilon in the run's order, samples in batch order), or None where this run lacks
        the setting or any of its samples. Raises RunFolderError where the rows contradict the batch's labels or
        clean outcome."""
        key = (request.model, request.defense, request.defense_grad, request.gate_grad, request.attack)
        group = self.units.get(key)
        if group is None:
            return None
        rows = group[group["sample"].isin(request.sample_ids)]
        if len(rows) != len(request.sample_ids) * len(request.epsilons):
            return None
        position = {sample: i for i, sample in enumerate(request.sample_ids)}
        rows = rows.assign(_eps=rows["epsilon"].map(lambda e: _epsilon_index(float(e), request.epsilons)),
                           _pos=rows["sample"].map(position))
        if (rows["_eps"] < 0).any() or rows["_eps"].value_counts().ne(len(request.sample_ids)).any():
            return None
        rows = rows.sort_values(["_eps", "_pos"], kind="stable")
        # the run's own epsilon values, not their CSV round trip, so the copied rows serialise like computed ones
        rows = rows.assign(epsilon=[request.epsilons[i] for i in rows["_eps"]]).drop(columns=["_eps", "_pos"])
        n = len(request.sample_ids)
        for column, expected in (("label", request.labels), ("clean_pred", request.clean_pred),
                                 ("clean_gates", np.asarray(request.clean_gates))):
            got = rows[column].to_numpy()
            if not np.array_equal(got.astype(str), np.tile(np.asarray(expected).astype(str), len(request.epsilons))):
                raise RunFolderError(f"--reuse-from {self.root}: its {column} of {request.model} on samples "
                                     f"{request.sample_ids[0]}..{request.sample_ids[n - 1]} differ from this run's: "
                                     "another model or other images under the same names")
        return rows.reset_index(drop=True)


@dataclass
class EarlierRuns:
    """Earlier runs tried in the order given; the first that holds a unit supplies it."""

    earlier_runs: list[EarlierRun]

    def __call__(self, request: UnitRequest) -> tuple[pd.DataFrame, str] | None:
        """The unit's rows and the run they came from, or None where no earlier run holds it."""
        for earlier_run in self.earlier_runs:
            frame = earlier_run.unit(request)
            if frame is not None:
                return frame, f"{COPIED_FROM}{earlier_run.root.resolve()}"
        return None


def _epsilon_index(value: float, epsilons: tuple[float, ...]) -> int:
    """Position of ``value`` among ``epsilons`` (equal to within a CSV round trip), or -1."""
    for i, eps in enumerate(epsilons):
        if abs(value - eps) <= 1e-12:
            return i
    return -1


def open_earlier_run(path: Path, document: dict[str, Any] | RunDocument) -> EarlierRun:
    """The finished run at ``path`` as a source of units for the run described by ``document`` (its run.json).

    Raises RunFolderError, naming what differs, where the earlier run cannot supply this one: not finished, other
    data, another model under a shared label, or another spec in a field the records depend on."""
    root = Path(path)
    earlier = FinishedRun.open(root)
    ours_typed = document if isinstance(document, RunDocument) else RunDocument.from_dict(document)
    theirs_typed = earlier.document
    if not theirs_typed.models:
        raise RunFolderError(f"--reuse-from {root}: not a finished run folder (no readable run.json)")
    # attacks compared as canonical specs: an earlier run written before run.json held them names them as typed
    ours = {**ours_typed.spec, "attacks": today_specs([str(a) for a in ours_typed.spec.get("attacks", [])])}
    theirs = {**earlier.spec, "attacks": earlier.attack_specs()}
    for name in MUST_MATCH:
        if ours.get(name) != theirs.get(name):
            raise RunFolderError(f"--reuse-from {root}: its {name} is {theirs.get(name)!r}, this run's "
                                 f"{ours.get(name)!r}; records carry over only under the same {name}")
    if ours_typed.data_sha256 != theirs_typed.data_sha256:
        raise RunFolderError(f"--reuse-from {root}: it attacked other images (dataset sha256 "
                             f"{str(theirs_typed.data_sha256)[:12]}, this run's {str(ours_typed.data_sha256)[:12]})")
    shared = set(ours_typed.models) & set(theirs_typed.models)
    for label in sorted(shared):
        if ours_typed.models[label] != theirs_typed.models[label]:
            raise RunFolderError(f"--reuse-from {root}: its model {label!r} is {theirs_typed.models[label].to_dict()}, "
                                 f"this run's {ours_typed.models[label].to_dict()}")
    if not shared:
        raise RunFolderError(f"--reuse-from {root}: it holds none of this run's models "
                             f"({', '.join(sorted(ours_typed.models))})")
    records = earlier.records()
    records = records[records["model"].isin(shared)]
    units = {tuple(str(v) for v in key): group for key, group in records.groupby(UNIT_COLUMNS, sort=False)}
    return EarlierRun(root, units)


def open_earlier_runs(paths: list[Path], document: dict[str, Any]) -> EarlierRuns | None:
    """The earlier runs named by ``--reuse-from`` (None where none was named)."""
    return EarlierRuns([open_earlier_run(p, document) for p in paths]) if paths else None
