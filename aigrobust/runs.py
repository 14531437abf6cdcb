"""A run folder: records written per batch (atomically), resumable, and finalised into one table and a summary."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from aigrobust.checkpoints import atomic_write_bytes
from aigrobust.metrics import GROUP

RECORDS_FILE = "records.csv.gz"
SUMMARY_FILE = "summary.json"
SUMMARY_TABLE = "summary.csv"
SPEC_FILE = "run.json"
PARTS_DIR = ".parts"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used (not writable, another run's spec, corrupt parts)."""


def _csv_bytes(frame: pd.DataFrame, compress: bool) -> bytes:
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0} if compress else None)
    return buffer.getvalue()


def read_records(path: Path) -> pd.DataFrame:
    """Records from a run folder or a records file, with gate patterns kept as strings."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.is_file():
        raise RunFolderError(f"no records at {path}")
    try:
        return pd.read_csv(path, dtype={"clean_gates": str, "adv_gates": str}, keep_default_na=False)
    except (OSError, ValueError, EOFError) as err:
        raise RunFolderError(f"{path}: unreadable records ({err})") from None


RECORD_KEY = [*GROUP, "sample"]  # one row per sample and setting


def combine_records(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    """Concatenate the records of several runs; where two runs hold the same sample under the same setting
    (the key :data:`RECORD_KEY`), the run listed first wins, so no sample counts twice in one figure.

    Returns the combined records and how many duplicate rows were dropped.
    """
    combined = pd.concat(frames, ignore_index=True)
    duplicated = combined.duplicated(subset=RECORD_KEY, keep="first")
    return combined[~duplicated].reset_index(drop=True), int(duplicated.sum())


class RunFolder:
    """Holds a run's spec, its finished batches and, at the end, its records and summary."""

    def __init__(self, root: Path, spec: dict[str, Any], resume: bool) -> None:
        self.root = Path(root)
        self.spec = spec
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise RunFolderError(f"output folder {self.root} is not writable ({err.strerror})") from None
        spec_path = self.root / SPEC_FILE
        if spec_path.exists():
            try:
                previous = json.loads(spec_path.read_text())
            except json.JSONDecodeError:
                raise RunFolderError(f"{spec_path} is corrupt; pick another --out") from None
            if not resume:
                raise RunFolderError(f"{self.root} already holds a run; pass --resume to continue it or pick another "
                                     "--out")
            if previous != json.loads(json.dumps(spec)):
                raise RunFolderError(f"{self.root} holds a run with another spec; --resume needs the same command")
            for debris in self.root.rglob(".*.tmp"):  # temporary files of writes a kill cut short
                debris.unlink(missing_ok=True)
        else:
            atomic_write_bytes(spec_path, json.dumps(spec, indent=2, sort_keys=True).encode())

    def _part(self, model: str, batch: int) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        return self.root / PARTS_DIR / safe / f"batch-{batch:05d}.csv.gz"

    def done_batch(self, model: str, batch: int) -> pd.DataFrame | None:
        """The records of a batch finished earlier, or None."""
        path = self._part(model, batch)
        return read_records(path) if path.is_file() else None

    def save_batch(self, model: str, batch: int, frame: pd.DataFrame) -> None:
        """Persist one batch's records atomically."""
        atomic_write_bytes(self._part(model, batch), _csv_bytes(frame, compress=True))

    def finalize(self, records: pd.DataFrame, summary: pd.DataFrame, info: dict[str, Any]) -> None:
        """Write the records, the summary table and summary.json (each atomically), then drop the parts."""
        atomic_write_bytes(self.root / RECORDS_FILE, _csv_bytes(records, compress=True))
        atomic_write_bytes(self.root / SUMMARY_TABLE, _csv_bytes(summary, compress=False))
        payload = {**info, "spec": self.spec, "summary": json.loads(summary.to_json(orient="records"))}
        atomic_write_bytes(self.root / SUMMARY_FILE, json.dumps(payload, indent=2, sort_keys=True).encode())
        shutil.rmtree(self.root / PARTS_DIR, ignore_errors=True)
