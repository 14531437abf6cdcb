"""One attack run into its folder: evaluate (sharded under torchrun, resumable), then summarise and seal.

The command line owns the progress bar and the printing; this module owns the order of the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from aigrobust.distributed import barrier, finish
from aigrobust.evaluation import (
    EvalSpec,
    ModelEntry,
    UnitRequest,
    UnitStore,
    run_evaluation,
    stochastic_noise_floor,
)
from aigrobust.evaluation.metrics import summarize
from aigrobust.models.checkpoints import weights_sha256
from aigrobust.runs.document import run_document
from aigrobust.runs.folder import FinishedRun, RunFolder
from aigrobust.runs.records import RECORDS_FILE, read_records


class SealedRun(NamedTuple):
    """A finished run: its records, summary, the stochastic-gate noise floor per model (empty for hard gates) and
    how many units each origin made (a device, or "copied from RUN"), over every process that worked on it."""

    records: pd.DataFrame
    summary: pd.DataFrame
    noise_floor: dict[str, float]
    unit_origins: dict[str, int]


def run_info(entries: list[ModelEntry], data: Any, dataset: str, data_dir: Path | None, batch_size: int
             ) -> dict[str, Any]:
    """What run.json records beside the spec: models and their sources, the data and its fingerprint."""
    dataset_info = {"name": data.name, "source": data.source, "n": len(data), "sha256": data.fingerprint()}
    if hasattr(data, "files"):  # an image folder: which images, by name and position, so any machine can check
        dataset_info.update({"files": data.files(), "indices": [int(i) for i in data.indices]})
    # a pretrained model is named with its tag ('aig20.at'), so a reload takes the same weights
    # each model's weights are pinned by hash, so a resume (or a report) on weights changed in between is refused
    return {"models": {e.name: {"model": (getattr(e.model, "pretrained_name", e.model.registry_name)
                                          if e.source == "pretrained" else e.model.registry_name),
                                "source": e.source,
                                "weights_sha256": weights_sha256(e.model.state_dict()),
                                **({"output_index": e.model.output_index}
                                   if getattr(e.model, "output_index", None) is not None else {})}
                       for e in entries},
            "dataset": dataset_info,
            "batch_size": batch_size,
            "data": {"dataset": dataset, "data_dir": str(Path(data_dir).resolve()) if data_dir else None}}


def open_folder(out_dir: Path, spec: EvalSpec, info: dict[str, Any], resume: bool, rank: int, world: int
                ) -> RunFolder:
    """Rank 0 makes (or checks, on resume) the run folder; the other ranks join it. Raises RunFolderError."""
    document = run_document(spec, info)
    folder = RunFolder(out_dir, document, resume) if rank == 0 else None
    barrier(world)
    return folder if folder is not None else RunFolder(out_dir, document, resume=True, lock=False)


def device_description(device: torch.device) -> str:
    """What computes a run's units, as summary.json notes it: float rounding, and so a borderline sample's outcome,
    can differ between a GPU and the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"{device.type} (torch {torch.__version__}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class ReusingStorage:
    """A run folder whose units not yet saved may be supplied by ``reuse`` (see :mod:`aigrobust.runs.earlier_runs`)."""

    folder: RunFolder
    reuse: Callable[[UnitRequest], tuple[pd.DataFrame, str] | None] | None

    def done_batch(self, model: str, batch: int) -> pd.DataFrame | None:
        """The folder's finished batch, or None."""
        return self.folder.done_batch(model, batch)

    def save_batch(self, model: str, batch: int, frame: pd.DataFrame) -> None:
        """Into the folder."""
        self.folder.save_batch(model, batch, frame)

    def units_for(self, model: str, batch: int) -> UnitStore:
        """The folder's units of the batch, with ``reuse`` as their supplier."""
        return replace(self.folder.units_for(model, batch), reuse=self.reuse)


def evaluate_into(folder: RunFolder, entries: list[ModelEntry], spec: EvalSpec, data: Any, batch_size: int,
                  device: torch.device, rank: int, world: int, on_batch: Callable[[int], None],
                  describe: Callable[[str], Any],
                  reuse: Callable[[UnitRequest], tuple[pd.DataFrame, str] | None] | None = None
                  ) -> pd.DataFrame | None:
    """Every batch of every model into the folder; the records on rank 0, None on the other ranks.

    ``reuse`` (see :mod:`aigrobust.runs.earlier_runs`) supplies units from earlier runs instead of attacking again."""
    # in-memory uint8 arrays are converted batch by batch, image folders decoded batch by batch by a DataLoader:
    # either way memory stays flat in the number of samples
    folder.made_on = device_description(device)
    images = data.images if hasattr(data, "images") else data
    labels = torch.from_numpy(data.labels.astype(np.int64))
    sample_ids = np.asarray(data.indices)
    run = run_evaluation(entries, spec, images, labels, sample_ids, batch_size=batch_size, device=device,
                         on_batch=lambda _m, n: on_batch(n), storage=ReusingStorage(folder, reuse),
                         shard=(rank, world), describe=describe)
    if world > 1:
        barrier(world)
        if rank != 0:
            finish()
            return None
        # every shard's batches are saved: rank 0 reads them back in order
        run = run_evaluation(entries, spec, images, labels, sample_ids, batch_size=batch_size, device=device,
                             storage=folder)
        finish()
    return run.records


def seal(folder: RunFolder, records: pd.DataFrame, entries: list[ModelEntry], spec: EvalSpec, data: Any,
         device: torch.device) -> SealedRun:
    """Summarise (with the stochastic-gate noise floor beside every stability figure) and finalise the folder."""
    shape = tuple(data[0][0].shape)  # one image (C, H, W): the models' full FLOPs at this input size
    full_flops = {e.name: float(e.model.flop_profile(shape).full) for e in entries}
    input_values = int(np.prod(shape))
    noise: dict[str, float] = {}
    if spec.gate_mode == "stochastic":
        probe = data.subset(range(min(len(data), 512))).tensors()[0].to(device)
        noise = {e.name: stochastic_noise_floor(e.model, probe) for e in entries if e.model.is_gated}
    summary = _summary(records, full_flops, input_values, noise if spec.gate_mode == "stochastic" else None)
    origins = folder.finalize(records, summary, {"noise_floor_hamming": noise, "torch": torch.__version__,
                                                       "full_flops": full_flops, "input_values": input_values})
    return SealedRun(records, summary, noise, origins)


def answer_finished(folder: RunFolder) -> SealedRun | None:
    """The sealed outcome of a run that already finished in ``folder`` with the same command (run.json holds the row
    count and hash of its records), read back instead of attacking again; None where it has not finished."""

    run = FinishedRun.open(folder.root)
    if run.document.records is None or not (folder.root / RECORDS_FILE).is_file():
        return None
    records = read_records(folder.root)  # refused if it no longer matches the row count and hash
    noise = run.noise_floor if run.spec.get("gate_mode") == "stochastic" else None
    return SealedRun(records, _summary(records, run.full_flops, run.input_values, noise), run.noise_floor,
                     run.unit_origins)


def _summary(records: pd.DataFrame, full_flops: dict[str, float], input_values: int | None,
             noise: dict[str, float] | None) -> pd.DataFrame:
    """A run's summary table; with ``noise`` (stochastic gates) the noise floor beside every stability figure."""
    summary = summarize(records, full_flops=full_flops, input_values=input_values)
    if noise is not None:
        summary["noise_floor_hamming"] = summary["model"].map(noise).fillna(0.0)
    return summary
