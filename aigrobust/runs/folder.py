"""A run folder: records written per batch (atomically), resumable, and finalised into one table and a summary;
a finished run read back (``FinishedRun``). Its lock lives in :mod:`aigrobust.runs.lock`, reading and joining
records in :mod:`aigrobust.runs.records`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aigrobust.data import load_dataset
from aigrobust.evaluation import UnitStore
from aigrobust.files import JSONLimitError, append_line, atomic_write_bytes, parse_json
from aigrobust.models.checkpoints import weights_sha256
from aigrobust.models.factory import create_model, load_checkpoint
from aigrobust.models.user_code import CODE_PREFIX, load_user_model
from aigrobust.runs.document import FORMAT_VERSION, RunDocument
from aigrobust.runs.lock import FolderLock, LockRefused
from aigrobust.runs.migrate import (
    canonical_document,
    specs_as_ran,
    today_specs,
    upgrade_attack_names,
    upgrade_attack_texts,
    upgrade_format,
    upgrade_pins,
)
from aigrobust.runs.records import (
    INTEGRITY_KEY,
    PARTS_DIR,
    PROVENANCE_FILE,
    RECORDS_FILE,
    SPEC_FILE,
    SUMMARY_FILE,
    SUMMARY_TABLE,
    RunFolderError,
    csv_bytes,
    read_json,
    read_records,
)


def label_folder(label: str) -> str:
    """The folder name of a model label's parts: the label itself where it is a safe name, else its safe characters
    and a hash of the whole label ('a b' and 'a_b' never share a folder; '.' and '..' never name one)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    if safe == label and not label.startswith("."):
        return label
    return f"{safe.lstrip('.')}~{hashlib.sha256(label.encode()).hexdigest()[:12]}"


def describe_differences(before: Any, now: Any, prefix: str = "") -> str:
    """What differs between two stored documents (a run's spec, a training run's configuration), by dotted key
    (nested objects one key at a time), for the messages that refuse a resume."""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return f"{prefix or 'the whole document'} {before!r} -> {now!r}"
    parts = [describe_differences(before.get(key), now.get(key), f"{prefix}{key}.")
             if isinstance(before.get(key), dict) and isinstance(now.get(key), dict)
             else f"{prefix}{key} {before.get(key)!r} -> {now.get(key)!r}"
             for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    text = "; ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."


class RunFolder:
    """Holds a run's spec, its finished batches and, at the end, its records and summary."""

    def __init__(self, root: Path, spec: dict[str, Any], resume: bool, lock: bool = True) -> None:
        """``lock``: take the folder's lock (the writer does; the other ranks of a torchrun join without it)."""
        self.root = Path(root)
        # the command, not a past outcome; attacks canonical, so a later change of defaults cannot change its meaning
        # written by today's code: today's layout version, whatever the caller's document says of it
        self.spec = canonical_document({**{k: v for k, v in spec.items() if k != INTEGRITY_KEY},
                                        "format_version": FORMAT_VERSION})
        # what computes the units this process saves (set by the caller; floats differ between devices)
        self.made_on = "unrecorded device"
        self.made_here = not self.root.exists()  # this process made the folder: it may take it away again
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not lock:  # the writer's lock proves the folder writable; a rank without it probes
                probe = self.root / f".write-test-{os.getpid()}"  # per process: two runs never unlink each other's
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as err:
            why = ("exists and is not a folder" if self.root.exists() and not self.root.is_dir()
                   else f"is not writable ({err.strerror})")
            raise RunFolderError(f"output folder {self.root} {why}") from None
        self._lock: FolderLock | None = None
        if lock:
            try:
                self._lock = FolderLock.take(self.root)
            except LockRefused as err:
                raise RunFolderError(str(err)) from None
        try:
            self._open_document(resume)
        except BaseException:
            self.release()  # a refused folder keeps no lock of ours
            raise

    def _open_document(self, resume: bool) -> None:
        """Check run.json against this run's spec (a resume of the same command only), or write it for a new run
        in a folder that holds no one else's files."""
        spec_path = self.root / SPEC_FILE
        if not spec_path.exists():
            foreign = [n for n in (RECORDS_FILE, SUMMARY_TABLE, SUMMARY_FILE, PARTS_DIR) if (self.root / n).exists()]
            if foreign:  # a report folder, or a run whose run.json was lost: never overwrite what it holds
                raise RunFolderError(f"{self.root} holds {', '.join(foreign)} but no {SPEC_FILE} (not an aigrobust "
                                     "run): the run would overwrite it; pick another --out")
            atomic_write_bytes(spec_path, json.dumps(self.spec, indent=2, sort_keys=True).encode())
            return
        try:
            previous = parse_json(spec_path.read_bytes())
        except JSONLimitError as err:
            raise RunFolderError(f"{spec_path} is corrupt ({err}); pick another --out") from None
        if not resume:
            raise RunFolderError(f"{self.root} already holds a run; pass --resume to continue it or pick another --out")
        if isinstance(previous, dict):
            previous.pop(INTEGRITY_KEY, None)  # written when the run finished; not part of the command
        previous = upgrade_attack_texts(self.root, upgrade_format(previous, spec_path))
        now = upgrade_pins(previous, json.loads(json.dumps(self.spec)))
        if previous != now:
            raise RunFolderError(f"{self.root} holds a run with another spec ({describe_differences(previous, now)}); "
                                 "--resume needs the same command")
        for debris in self.root.rglob(".*.tmp"):  # temporary files of writes a kill cut short
            debris.unlink(missing_ok=True)

    def saved_work(self) -> int:
        """How many finished batches and units the folder holds (what ``--resume`` would continue from)."""
        parts = self.root / PARTS_DIR
        return len(list(parts.glob("*/batch-*.csv.gz"))) + len(list(parts.glob("*/*/*.csv.gz"))) if parts.is_dir() else 0

    def discard_if_unused(self) -> bool:
        """Take away a folder this process made and nothing was saved into (a run that stopped before its first unit),
        so that a rerun starts afresh; True if it was taken away. A folder that existed before is left as it was."""
        if not self.made_here or self.saved_work():
            return False
        self.release()
        shutil.rmtree(self.root, ignore_errors=True)
        return not self.root.exists()

    def release(self) -> None:
        """Drop the folder's lock (also at interpreter exit)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.release()  # type: ignore[union-attr]

    def _part(self, model: str, batch: int) -> Path:
        return self.root / PARTS_DIR / label_folder(model) / f"batch-{batch:05d}.csv.gz"

    def done_batch(self, model: str, batch: int) -> pd.DataFrame | None:
        """The records of a batch finished earlier, or None; a file that holds another model's rows is refused."""
        path = self._part(model, batch)
        if not path.is_file():
            return None
        frame = read_records(path)
        others = sorted(set(frame["model"].astype(str)) - {model})
        if others:
            raise RunFolderError(f"{path} holds records of {', '.join(map(repr, others))}, not of {model!r}: the "
                                 "run folder was edited or written by another version; start the run afresh")
        return frame

    def save_batch(self, model: str, batch: int, frame: pd.DataFrame) -> None:
        """Persist one batch's records atomically (its units are then no longer needed)."""
        atomic_write_bytes(self._part(model, batch), csv_bytes(frame, compress=True))
        shutil.rmtree(self._units_dir(model, batch), ignore_errors=True)

    def _units_dir(self, model: str, batch: int) -> Path:
        part = self._part(model, batch)
        return part.with_name(part.name.replace(".csv.gz", ".units"))

    def units_for(self, model: str, batch: int) -> Any:
        """The store of the finished units (one setting x one attack) of a batch still in progress."""

        folder = self._units_dir(model, batch)

        def load(unit: str) -> pd.DataFrame | None:
            path = folder / f"{unit}.csv.gz"
            return read_records(path) if path.is_file() else None

        def save(unit: str, frame: pd.DataFrame, origin: str | None = None) -> None:
            atomic_write_bytes(folder / f"{unit}.csv.gz", csv_bytes(frame, compress=True))
            self._note_origin(model, batch, unit, origin or self.made_on)

        return UnitStore(load=load, save=save)

    def _note_origin(self, model: str, batch: int, unit: str, origin: str) -> None:
        # one JSON line per saved unit; a line cut short by a kill or a full disk is skipped when read
        append_line(self.root / PARTS_DIR / PROVENANCE_FILE,
                    json.dumps({"model": model, "batch": batch, "unit": unit, "origin": origin}))

    def unit_origins(self) -> dict[str, int]:
        """How many of the run's units each origin made ("cpu (torch 2.14.1, 2 threads)", "copied from RUN"), counted
        over every process that worked on the run; units saved before origins were noted are not counted."""
        path = self.root / PARTS_DIR / PROVENANCE_FILE
        latest: dict[tuple[str, int, str], str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    latest[(entry["model"], int(entry["batch"]), entry["unit"])] = str(entry["origin"])
                except (ValueError, KeyError, TypeError):
                    continue
        return dict(sorted(Counter(latest.values()).items()))

    def finalize(self, records: pd.DataFrame, summary: pd.DataFrame, info: dict[str, Any]) -> dict[str, int]:
        """Write the records, the summary table and summary.json (each atomically, summary.json with the units'
        origins), then drop the parts; returns the units' origins."""
        origins = self.unit_origins()
        info = {**info, "unit_origins": origins}
        data = csv_bytes(records, compress=True)
        atomic_write_bytes(self.root / RECORDS_FILE, data)
        sealed = {**self.spec, INTEGRITY_KEY: {"rows": len(records), "sha256": hashlib.sha256(data).hexdigest()}}
        atomic_write_bytes(self.root / SPEC_FILE, json.dumps(sealed, indent=2, sort_keys=True).encode())
        atomic_write_bytes(self.root / SUMMARY_TABLE, csv_bytes(summary, compress=False))
        payload = {**info, "spec": self.spec, "summary": json.loads(summary.to_json(orient="records"))}
        atomic_write_bytes(self.root / SUMMARY_FILE, json.dumps(payload, indent=2, sort_keys=True).encode())
        shutil.rmtree(self.root / PARTS_DIR, ignore_errors=True)
        self.release()
        return origins


@dataclass(frozen=True)
class FinishedRun:
    """A run folder as ``report``, ``check`` and baselines read it: run.json, the extras of summary.json (noise
    floors), the records (checked against run.json), and on request the models and data the run used."""

    root: Path
    document: RunDocument  # empty for a folder holding only records
    extras: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> FinishedRun:
        """Read a run folder; a folder holding only records (no run.json) opens too, with an empty document."""
        root = Path(path)
        document = read_json(root / SPEC_FILE, required=False)
        typed = RunDocument() if document is None else RunDocument.from_dict(upgrade_format(document, root / SPEC_FILE),
                                                                             root / SPEC_FILE)
        extras = read_json(root / SUMMARY_FILE, required=False) or {}
        if not isinstance(extras, dict):
            raise RunFolderError(f"{root / SUMMARY_FILE} is not a run summary (not a JSON object)")
        return cls(root, typed, {k: v for k, v in extras.items() if k != "summary"})

    @property
    def spec(self) -> dict[str, Any]:
        """The evaluation spec (as EvalSpec.to_dict wrote it)."""
        return dict(self.document.spec)

    def attack_specs(self) -> list[str]:
        """The run's attacks as canonical specs: as run.json stores them, or, for a folder written before it did,
        as its records ran them (today's canonical spec for an attack its records do not hold)."""

        texts = [str(t) for t in self.spec.get("attacks", [])]
        if today_specs(texts) == texts:
            return texts
        return specs_as_ran(texts, read_records(self.root)["attack"].unique())

    @property
    def noise_floor(self) -> dict[str, float]:
        """Per model, the share of gate decisions two clean stochastic draws disagree on (stochastic-gate runs)."""
        return dict(self.extras.get("noise_floor_hamming") or {})

    @property
    def unit_origins(self) -> dict[str, int]:
        """Units per origin (the device that computed them, or the run they were copied from); empty for runs
        finished before origins were noted."""
        return {str(k): int(v) for k, v in (self.extras.get("unit_origins") or {}).items()}

    @property
    def input_values(self) -> int | None:
        """Values per image (C x H x W) of the run's images, for the perturbation's MSE and PSNR; None for runs
        sealed before it was noted."""
        value = self.extras.get("input_values")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def full_flops(self) -> dict[str, float]:
        """Per model, the FLOPs with every block open at the run's input size (what the share of saved compute
        an attack takes back is measured against). Runs sealed before it was noted give it through their summary's
        efficacy, mean(1 - F / F_full) = 1 - mean(F) / F_full; a model without either is left out."""
        noted = self.extras.get("full_flops")
        if isinstance(noted, dict):
            return {str(k): float(v) for k, v in noted.items()}
        recovered: dict[str, float] = {}
        for row in (read_json(self.root / SUMMARY_FILE, required=False) or {}).get("summary", []):
            efficacy, clean = row.get("efficacy_clean"), row.get("clean_flops")
            if isinstance(efficacy, float) and isinstance(clean, float) and 0 <= efficacy < 1:
                recovered.setdefault(str(row.get("model")), clean / (1 - efficacy))
        return recovered

    def records(self) -> pd.DataFrame:
        """The run's records, refused where they no longer match run.json; records from before attacks carried
        their canonical spec get it from run.json's attack specs."""
        return upgrade_attack_names(read_records(self.root), self.spec.get("attacks", []))

    def code_models(self) -> dict[str, str]:
        """Per label, the ``module:callable`` that run.json says built a user's network (what the run would import:
        never imported on the folder's word alone)."""
        return {label: pin.model[len(CODE_PREFIX):] for label, pin in self.document.models.items()
                if pin.model.startswith(CODE_PREFIX)}

    def models(self, code: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The run's models by label, loaded as the run loaded them (shipped weights or their checkpoint).

        A user's network is built only from ``code`` (label -> ``module:callable``), code the caller named: what
        run.json names is data and is never imported on its own word. Labels of user code missing from ``code`` are
        left out (:meth:`code_models` lists them)."""

        if not self.document.models:
            raise RunFolderError(f"{self.root} is not a run folder (no readable {SPEC_FILE})")

        code = dict(code or {})
        models = {}
        for label, pin in self.document.models.items():
            source = pin.source
            if pin.model.startswith(CODE_PREFIX):  # a user's network: the code the caller named, then its weights
                if label not in code:
                    continue

                models[label] = load_user_model(code[label], None if source == "code" else Path(source),
                                                pin.output_index)[0]
            else:
                models[label] = (create_model(pin.model, pretrained=True) if source == "pretrained"
                                 else load_checkpoint(Path(source))[0]).eval()
            pinned = pin.weights_sha256
            if pinned is not None and weights_sha256(models[label].state_dict()) != pinned:
                raise RunFolderError(f"{label}'s weights ({source}) changed since the run {self.root} used them "
                                     f"(pinned sha256 {str(pinned)[:12]}); its records describe another network")
        return models

    def data(self) -> Any:
        """The test split the run attacked (its dataset and folder as run.json recorded them)."""

        info = self.document.data
        data = load_dataset(info.get("dataset", "cifar10"), "test",
                            Path(info["data_dir"]) if info.get("data_dir") else None, False)
        recorded, n = self.document.data_sha256, self.document.dataset.get("n")
        if recorded and isinstance(n, int) and not isinstance(n, bool) and 0 < n <= len(data):
            # before any image is decoded: the images found there must be the ones the run attacked
            found = data.subset(range(n)).fingerprint()
            if found != recorded:
                raise RunFolderError(f"the images at {data.source} are not the ones {self.root} attacked (sha256 "
                                     f"{found[:12]} of its first {n}, run.json records {recorded[:12]})")
        elif recorded and isinstance(n, int) and n > len(data):
            raise RunFolderError(f"{data.source} holds {len(data)} images, fewer than the {n} {self.root} attacked")
        return data
