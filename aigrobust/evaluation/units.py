"""The units of an evaluation's work (one defense setting x one attack on one batch) as a run folder stores and reuses them: what a unit is to a source outside the run, and where finished units are kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class UnitRequest:
    """One unit as a source outside the run sees it (an earlier run's records): which records it needs, and the
    batch's clean outcome so the source can prove its model and images are this run's."""

    model: str
    defense: str
    defense_grad: str
    gate_grad: str
    attack: str  # the canonical spec
    epsilons: tuple[float, ...]
    sample_ids: tuple[int, ...]
    labels: np.ndarray
    clean_pred: np.ndarray
    clean_gates: tuple[str, ...]


@dataclass
class UnitStore:
    """Where finished units of a batch (one defense setting x one attack) are kept, so a killed run loses at most
    the unit in progress: ``load(unit)`` returns a saved unit's records or None, ``save(unit, frame, origin)`` keeps
    one (``origin``: None for a unit computed here, else where it was copied from). ``reuse(request)``, where given,
    supplies a unit not yet saved from elsewhere as (records, origin), or None: compute it."""

    load: Callable[[str], pd.DataFrame | None]
    save: Callable[[str, pd.DataFrame, str | None], None]
    reuse: Callable[[UnitRequest], tuple[pd.DataFrame, str] | None] | None = None


class BatchStorage(Protocol):
    """Where a run keeps its finished work (:class:`aigrobust.runs.folder.RunFolder` is one): whole batches by (model
    label, batch number), and the finished units of a batch still in progress."""

    def done_batch(self, model: str, batch: int) -> pd.DataFrame | None:
        """The records of a batch finished earlier, or None."""

    def save_batch(self, model: str, batch: int, frame: pd.DataFrame) -> None:
        """Keep a finished batch's records (its units are then no longer needed)."""

    def units_for(self, model: str, batch: int) -> UnitStore:
        """The store of the finished units of a batch in progress."""
