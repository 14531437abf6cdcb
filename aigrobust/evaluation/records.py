"""The records' columns and canonical form: one row per (model, defense, defense_grad, attack, gate_grad, epsilon,
sample), the same dtypes and order whichever batch size or resume produced them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

RECORD_COLUMNS = (
    "model", "defense", "defense_grad", "attack", "gate_grad", "epsilon", "sample", "label", "clean_pred",
    "adv_pred", "clean_correct", "adv_correct", "success", "linf", "l2", "clean_gates", "adv_gates", "hamming",
    "clean_flops", "adv_flops", "goal", "evaluated", "adv_draw_acc",
)

NO_GATES = "none"

def gate_patterns(decisions: Tensor) -> list[str]:
    """Each sample's gate decisions as a string of 0/1, one character per block (how records store them)."""
    rows = decisions.to(torch.uint8).cpu().numpy()
    return ["".join("1" if v else "0" for v in row) for row in rows]

_DTYPES = {"epsilon": "float64", "sample": "int64", "label": "int64", "clean_pred": "int64", "adv_pred": "int64",
           "clean_correct": "bool", "adv_correct": "bool", "success": "bool", "linf": "float64", "l2": "float64",
           "hamming": "float64", "clean_flops": "float64", "adv_flops": "float64",
           "evaluated": "bool", "adv_draw_acc": "float64"}

def normalize_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Records in canonical column order and dtypes (so fresh and re-read batches serialise identically)."""
    frame = frame[list(RECORD_COLUMNS)].astype(_DTYPES)
    for column in ("clean_gates", "adv_gates"):
        frame[column] = frame[column].astype(str)
    return frame

def canonical_order(records: pd.DataFrame, sample_ids: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Records in the order one batch holding every sample would write them: per model, per setting and attack (in
    the order they ran), per epsilon, the samples in data order. So the records of a run do not depend on its batch
    size or its number of processes."""
    if records.empty:
        return records
    position = {int(v): i for i, v in enumerate(sample_ids)}
    unit = ["model", "defense", "defense_grad", "gate_grad", "attack"]
    first_seen = records[unit].drop_duplicates().reset_index(drop=True)
    rank = {tuple(row): i for i, row in enumerate(first_seen.itertuples(index=False))}
    order = pd.DataFrame({"unit": [rank[tuple(row)] for row in records[unit].itertuples(index=False)],
                          "epsilon": records["epsilon"].to_numpy(),
                          "sample": records["sample"].map(position).to_numpy()})
    index = order.sort_values(["unit", "epsilon", "sample"], kind="stable").index
    return records.loc[index].reset_index(drop=True)
