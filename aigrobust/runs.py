"""A run folder: records written per batch (atomically), resumable, and finalised into one table and a summary."""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aigrobust.errors import AigrobustError
from aigrobust.files import append_line, atomic_write_bytes
from aigrobust.metrics import GROUP

RECORDS_FILE = "records.csv.gz"
SUMMARY_FILE = "summary.json"
SUMMARY_TABLE = "summary.csv"
SPEC_FILE = "run.json"
PARTS_DIR = ".parts"
LOCK_FILE = ".lock"
PROVENANCE_FILE = "unit_origins.jsonl"  # in PARTS_DIR: which device (or earlier run) made each unit
COPIED_FROM = "copied from "  # the origin of a unit copied from an earlier run: this, then the run's path
INTEGRITY_KEY = "records"  # run.json: row count and sha256 of the finished records file


class RunFolderError(AigrobustError, RuntimeError):
    """A run folder that cannot be used (not writable, another run's spec, corrupt parts)."""


def _csv_bytes(frame: pd.DataFrame, compress: bool) -> bytes:
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0} if compress else None)
    return buffer.getvalue()


def read_records(path: Path) -> pd.DataFrame:
    """Records from a run folder or a records file, with gate patterns kept as strings.

    A run folder's records are checked against the row count and sha256 its run.json recorded when the run
    finished, so a truncated or edited file is refused instead of giving figures over fewer samples."""
    path = Path(path)
    expected: dict[str, Any] | None = None
    if path.is_dir():
        expected = _recorded_integrity(path)
        path = path / RECORDS_FILE
    if not path.is_file() and (path.parent / PARTS_DIR).is_dir():
        saved = len(list((path.parent / PARTS_DIR).glob("*/batch-*.csv.gz")))
        raise RunFolderError(f"{path.parent} is not finished ({saved} batch file{'s' if saved != 1 else ''} saved, "
                             "no records yet): finish it with its aigrobust attack command and --resume")
    if not path.is_file():
        raise RunFolderError(f"no records at {path}")
    raw = path.read_bytes()  # hashed and parsed from the same bytes
    if expected is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected.get("sha256"):
            raise RunFolderError(f"{path} does not match its run.json (sha256 {digest[:12]}, recorded "
                                 f"{str(expected.get('sha256'))[:12]}): truncated or edited since the run finished")
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype={"clean_gates": str, "adv_gates": str}, keep_default_na=False,
                            compression="gzip" if path.suffix == ".gz" else None)
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise RunFolderError(f"{path}: unreadable records (truncated or corrupt: {err})") from None
    missing = [c for c in RECORD_KEY if c not in frame.columns]
    if missing:
        raise RunFolderError(f"{path}: not aigrobust records (no column {', '.join(missing)})")
    if frame.empty:
        raise RunFolderError(f"{path}: holds no records")
    _refuse_malformed_rows(frame, path)
    if expected is not None and len(frame) != expected.get("rows"):
        raise RunFolderError(f"{path}: {len(frame)} rows where run.json recorded {expected.get('rows')}")
    if "adv_draw_acc" not in frame.columns and "adv_correct" in frame.columns:  # records of deterministic models,
        frame["adv_draw_acc"] = frame["adv_correct"].astype(float)              # written before draws were judged
    return frame


NUMERIC_COLUMNS = ("epsilon", "sample", "label", "clean_pred", "adv_pred", "linf", "l2", "hamming", "clean_flops",
                   "adv_flops")
FLAG_COLUMNS = ("clean_correct", "adv_correct", "success")


def _refuse_malformed_rows(frame: pd.DataFrame, path: Path) -> None:
    """A records file cut in the middle of a row (or edited) parses, with empty or text cells where numbers belong;
    without a run.json to check it against, say which row, instead of failing later on a string."""
    for column in NUMERIC_COLUMNS:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bool(bad.any()):
            row = int(bad.to_numpy().nonzero()[0][0])
            raise RunFolderError(f"{path}: row {row + 1} is cut short or malformed ({column} = "
                                 f"{frame[column].iloc[row]!r}): the file was truncated or edited")
        frame[column] = values
    for column in FLAG_COLUMNS:
        if column in frame.columns:
            ok = frame[column].astype(str).isin(("True", "False", "1", "0", "true", "false"))
            if not bool(ok.all()):
                row = int((~ok).to_numpy().nonzero()[0][0])
                raise RunFolderError(f"{path}: row {row + 1} is cut short or malformed ({column} = "
                                     f"{frame[column].iloc[row]!r}): the file was truncated or edited")


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


def _recorded_integrity(folder: Path) -> dict[str, Any] | None:
    try:
        spec = _read_json(folder / SPEC_FILE, required=False)
    except RunFolderError:
        return None  # an unreadable run.json: nothing to compare with (the run's other readers say why)
    value = spec.get(INTEGRITY_KEY) if isinstance(spec, dict) else None
    return value if isinstance(value, dict) else None  # None too for folders without run.json


RECORD_KEY = [*GROUP, "sample"]  # one row per sample and setting


def upgrade_pins(previous: Any, now: dict[str, Any]) -> dict[str, Any]:
    """``now`` as a run folder written before weights were pinned would have recorded it (without each model's
    weights_sha256), so such a folder still resumes; folders that pin them are compared hash for hash."""
    old_models = previous.get("models") if isinstance(previous, dict) else None
    if not isinstance(old_models, dict) or not isinstance(now.get("models"), dict):
        return now
    models = {label: ({k: v for k, v in entry.items() if k != "weights_sha256"}
                      if isinstance(entry, dict) and "weights_sha256" not in (old_models.get(label) or {}) else entry)
              for label, entry in now["models"].items()}
    return {**now, "models": models}


def upgrade_attack_names(records: pd.DataFrame, attack_texts: list[str]) -> pd.DataFrame:
    """Records whose ``attack`` column holds an attack's short name ('pgd', written before records carried the
    canonical spec) get the canonical spec of the run's attack of that name; canonical records pass unchanged."""
    if records.empty or not attack_texts or records["attack"].astype(str).str.contains(":").all():
        return records
    from aigrobust.evaluation import canonical_attack_names

    names = canonical_attack_names(attack_texts)
    return records.assign(attack=records["attack"].map(lambda a: names.get(a, a)))


def combine_records(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
    """Concatenate the records of several runs; where two runs hold the same sample under the same setting
    (the key :data:`RECORD_KEY`), the run listed first wins, so no sample counts twice in one figure.

    Returns the combined records and how many duplicate rows were dropped.
    """
    combined = pd.concat(frames, ignore_index=True)
    duplicated = combined.duplicated(subset=RECORD_KEY, keep="first")
    return combined[~duplicated].reset_index(drop=True), int(duplicated.sum())


CLEAN_DISAGREEMENT_LIMIT = 0.01  # floats of two devices may flip a borderline image; other weights flip many


def combine_runs(runs: list[FinishedRun]) -> tuple[pd.DataFrame, int]:
    """The records of finished runs joined as :func:`combine_records` joins them, after checking that a model label
    names one network on one set of images in every run that holds it: the same label on each shared sample, the
    same clean prediction (all but ``CLEAN_DISAGREEMENT_LIMIT`` of them, between hard-gate runs), and for a gated
    model the same gate mode. Else rows of two networks, or of two image sets, would merge into one figure.

    Raises RunFolderError naming the two runs and what differs.
    """
    frames = [run.records() for run in runs]
    _refuse_mixed_norms(runs, frames)
    first: dict[str, tuple[FinishedRun, pd.DataFrame]] = {}  # model label -> the first run holding it, its rows
    for run, frame in zip(runs, frames):
        clean = frame[frame["defense"] == "none"].drop_duplicates(["model", "sample"])
        for label, rows in clean.groupby("model"):
            if label not in first:
                first[label] = (run, rows)
                continue
            earlier, earlier_rows = first[label]
            _check_same_network(str(label), earlier, earlier_rows, run, rows)
    return combine_records(frames)


def _refuse_mixed_norms(runs: list[FinishedRun], frames: list[pd.DataFrame]) -> None:
    """A report's worst case, tables and sanity checks compare attacks at one epsilon: one norm per report."""
    from attacks import NORM_NAMES, attack_norm

    first_of: dict[str, Path] = {}
    for run, frame in zip(runs, frames):
        for spec in frame["attack"].unique():
            first_of.setdefault(attack_norm(str(spec)), run.root)
    if len(first_of) > 1:
        where = " and ".join(f"{NORM_NAMES.get(norm, norm)} attacks in {root}" for norm, root in first_of.items())
        raise RunFolderError(f"these runs hold {where}: a report compares attacks at one epsilon, so report each "
                             "norm apart")


def _check_same_network(label: str, run_a: FinishedRun, rows_a: pd.DataFrame, run_b: FinishedRun,
                        rows_b: pd.DataFrame) -> None:
    needed = {"sample", "label", "clean_pred", "clean_gates"}
    if not (needed <= set(rows_a.columns) and needed <= set(rows_b.columns)):
        return  # records of another layout: nothing to compare by
    mode_a, mode_b = run_a.spec.get("gate_mode"), run_b.spec.get("gate_mode")
    gated = any(rows["clean_gates"].astype(str).str.contains("0").any() for rows in (rows_a, rows_b))
    if gated and mode_a and mode_b and mode_a != mode_b:
        raise RunFolderError(f"{label} ran with {mode_a} gates in {run_a.root} and {mode_b} gates in {run_b.root}: "
                             "one report cannot mix them (report the runs apart)")
    shared = rows_a.merge(rows_b, on="sample", suffixes=("_a", "_b"))
    if shared.empty:
        return
    other_labels = int((shared["label_a"] != shared["label_b"]).sum())
    if other_labels:
        raise RunFolderError(f"{run_a.root} and {run_b.root} give {other_labels} of the {len(shared)} samples both "
                             f"hold other labels: they attacked other images, whose rows would merge")
    if "stochastic" in (mode_a, mode_b):
        return  # random gates: clean predictions are draws
    other_predictions = int((shared["clean_pred_a"] != shared["clean_pred_b"]).sum())
    if other_predictions > CLEAN_DISAGREEMENT_LIMIT * len(shared):
        raise RunFolderError(f"{label} predicts {other_predictions} of the {len(shared)} clean images both runs hold "
                             f"differently in {run_a.root} and {run_b.root}: two networks under one name (give one "
                             "another label: --checkpoint LABEL=PATH)")


class RunFolder:
    """Holds a run's spec, its finished batches and, at the end, its records and summary."""

    def __init__(self, root: Path, spec: dict[str, Any], resume: bool, lock: bool = True) -> None:
        """``lock``: take the folder's lock (the writer does; the other ranks of a torchrun join without it)."""
        self.root = Path(root)
        self.spec = {k: v for k, v in spec.items() if k != INTEGRITY_KEY}  # the command, not a past outcome
        # what computes the units this process saves (set by the caller; floats differ between devices)
        self.made_on = "unrecorded device"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not lock:  # the writer's lock proves the folder writable; a rank without it probes
                probe = self.root / f".write-test-{os.getpid()}"  # per process: two runs never unlink each other's
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as err:
            raise RunFolderError(f"output folder {self.root} is not writable ({err.strerror})") from None
        if lock:
            self._take_lock()
        try:
            spec_path = self.root / SPEC_FILE
            if spec_path.exists():
                try:
                    previous = json.loads(spec_path.read_text())
                except json.JSONDecodeError:
                    raise RunFolderError(f"{spec_path} is corrupt; pick another --out") from None
                if not resume:
                    raise RunFolderError(f"{self.root} already holds a run; pass --resume to continue it or pick another "
                                         "--out")
                if isinstance(previous, dict):
                    previous.pop(INTEGRITY_KEY, None)  # written when the run finished; not part of the command
                now = upgrade_pins(previous, json.loads(json.dumps(self.spec)))
                if previous != now:
                    raise RunFolderError(f"{self.root} holds a run with another spec ({describe_differences(previous, now)}); "
                                         "--resume needs the same command")
                for debris in self.root.rglob(".*.tmp"):  # temporary files of writes a kill cut short
                    debris.unlink(missing_ok=True)
            else:
                foreign = [n for n in (RECORDS_FILE, SUMMARY_TABLE, SUMMARY_FILE, PARTS_DIR) if (self.root / n).exists()]
                if foreign:  # a report folder, or a run whose run.json was lost: never overwrite what it holds
                    raise RunFolderError(f"{self.root} holds {', '.join(foreign)} but no {SPEC_FILE} (not an aigrobust "
                                         "run): the run would overwrite it; pick another --out")
                atomic_write_bytes(spec_path, json.dumps(self.spec, indent=2, sort_keys=True).encode())
        except BaseException:
            self.release()  # a refused folder keeps no lock of ours
            raise

    def _take_lock(self) -> None:
        """One writer per folder, taken or refused atomically: an exclusive flock on ``.lock``, which the kernel
        drops when its process dies (no stale lock survives a kill -9). The holder's pid, start time and host are
        written into the file for the loser's message; a lock file replaced while it was being taken is retried."""
        path = self.root / LOCK_FILE
        held = _HELD_LOCKS.get(str(path.resolve()))
        if held is not None:  # an earlier RunFolder of this very process (a finished command in the same
            self._lock_fd, self._lock_path = held, path  # interpreter): the lock passes on, as a pid check allowed
            return
        for _ in range(20):
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as err:
                raise RunFolderError(f"output folder {self.root} is not writable ({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = LockHolder.parse(os.pread(fd, 200, 0).decode(errors="replace"))
                os.close(fd)
                self._refuse_holder(path, holder, locked=True)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and removed) it between our open and our lock: take the new one
                os.close(fd)
                continue
            # the kernel lock is ours; the file may still name a writer that locks by the file alone (an older
            # aigrobust, or another host sharing this folder, whose locks this host cannot see)
            holder = LockHolder.parse(os.pread(fd, 200, 0).decode(errors="replace"))
            try:
                self._refuse_holder(path, holder, locked=False)
            except RunFolderError:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, LockHolder.of_this_process().text().encode(), 0)
            self._lock_fd = fd
            self._lock_path = path
            _HELD_LOCKS[str(path.resolve())] = fd
            atexit.register(self.release)
            return
        raise RunFolderError(f"cannot take the lock {path}")

    def _refuse_holder(self, path: Path, holder: LockHolder | None, locked: bool) -> None:
        """Raise the one line that names who holds the folder: always where another process holds the kernel lock
        (``locked``); where the file alone names a writer, only if it runs on another host or is alive here."""
        if holder is not None and holder.host not in (None, socket.gethostname()):
            if locked:
                raise RunFolderError(f"{path} is held by pid {holder.pid} on host {holder.host}; wait for it to "
                                     "finish or pick another --out")
            raise RunFolderError(f"{path} was written by pid {holder.pid} on host {holder.host}, whose processes "
                                 "cannot be seen from here; if that run is gone, delete the lock file and --resume")
        if locked or (holder is not None and holder.pid != os.getpid() and holder.alive()):
            who = f" (pid {holder.pid})" if holder is not None else ""
            raise RunFolderError(f"another aigrobust process{who} is writing to {self.root}; wait for it to finish "
                                 "or pick another --out")

    def release(self) -> None:
        """Drop the folder's lock (also at interpreter exit)."""
        lock_path = getattr(self, "_lock_path", None)
        if lock_path is not None:
            if _HELD_LOCKS.get(str(lock_path.resolve())) == self._lock_fd:
                del _HELD_LOCKS[str(lock_path.resolve())]
                lock_path.unlink(missing_ok=True)  # before the unlock: whoever opens the path now gets a new file
                os.close(self._lock_fd)
            self._lock_path = None

    def _part(self, model: str, batch: int) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        return self.root / PARTS_DIR / safe / f"batch-{batch:05d}.csv.gz"

    def done_batch(self, model: str, batch: int) -> pd.DataFrame | None:
        """The records of a batch finished earlier, or None."""
        path = self._part(model, batch)
        return read_records(path) if path.is_file() else None

    def save_batch(self, model: str, batch: int, frame: pd.DataFrame) -> None:
        """Persist one batch's records atomically (its units are then no longer needed)."""
        atomic_write_bytes(self._part(model, batch), _csv_bytes(frame, compress=True))
        shutil.rmtree(self._units_dir(model, batch), ignore_errors=True)

    def _units_dir(self, model: str, batch: int) -> Path:
        part = self._part(model, batch)
        return part.with_name(part.name.replace(".csv.gz", ".units"))

    def units_for(self, model: str, batch: int) -> Any:
        """The store of the finished units (one setting x one attack) of a batch still in progress."""
        from aigrobust.evaluation import UnitStore

        folder = self._units_dir(model, batch)

        def load(unit: str) -> pd.DataFrame | None:
            path = folder / f"{unit}.csv.gz"
            return read_records(path) if path.is_file() else None

        def save(unit: str, frame: pd.DataFrame, origin: str | None = None) -> None:
            atomic_write_bytes(folder / f"{unit}.csv.gz", _csv_bytes(frame, compress=True))
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
        data = _csv_bytes(records, compress=True)
        atomic_write_bytes(self.root / RECORDS_FILE, data)
        sealed = {**self.spec, INTEGRITY_KEY: {"rows": len(records), "sha256": hashlib.sha256(data).hexdigest()}}
        atomic_write_bytes(self.root / SPEC_FILE, json.dumps(sealed, indent=2, sort_keys=True).encode())
        atomic_write_bytes(self.root / SUMMARY_TABLE, _csv_bytes(summary, compress=False))
        payload = {**info, "spec": self.spec, "summary": json.loads(summary.to_json(orient="records"))}
        atomic_write_bytes(self.root / SUMMARY_FILE, json.dumps(payload, indent=2, sort_keys=True).encode())
        shutil.rmtree(self.root / PARTS_DIR, ignore_errors=True)
        self.release()
        return origins


_HELD_LOCKS: dict[str, int] = {}  # lock file -> the descriptor that holds its flock, in this process


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class LockHolder:
    """Who wrote a run folder's lock: pid, the process's start time and the host. A pid alone is not enough: after
    a restart (or on another machine) the same pid can belong to an unrelated process, which would block a resume."""

    pid: int
    start: str | None = None
    host: str | None = None

    @classmethod
    def of_this_process(cls) -> LockHolder:
        return cls(os.getpid(), _process_start(os.getpid()), socket.gethostname())

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """'PID START HOST' (or a bare PID, as older versions wrote); None for an empty or garbled lock."""
        parts = text.split()
        try:
            pid = int(parts[0]) if parts else 0
        except ValueError:
            return None
        if pid <= 0:
            return None
        start = parts[1] if len(parts) > 1 and parts[1] != "-" else None
        return cls(pid, start, parts[2] if len(parts) > 2 else None)

    def text(self) -> str:
        return f"{self.pid} {self.start or '-'} {self.host or socket.gethostname()}"

    def alive(self) -> bool:
        """Whether the writer still runs on this host: its pid exists and, where known, started when it did."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return self.start is None or _process_start(self.pid) in (None, self.start)


@dataclass(frozen=True)
class FinishedRun:
    """A run folder as ``report``, ``check`` and baselines read it: run.json, the extras of summary.json (noise
    floors), the records (checked against run.json), and on request the models and data the run used."""

    root: Path
    document: dict[str, Any]
    extras: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> FinishedRun:
        """Read a run folder; a folder holding only records (no run.json) opens too, with an empty document."""
        root = Path(path)
        document = _read_json(root / SPEC_FILE, required=False)
        if document is not None and not isinstance(document, dict):
            raise RunFolderError(f"{root / SPEC_FILE} is not a run document")
        extras = _read_json(root / SUMMARY_FILE, required=False) or {}
        return cls(root, document or {}, {k: v for k, v in extras.items() if k != "summary"})

    @property
    def spec(self) -> dict[str, Any]:
        """The evaluation spec (as EvalSpec.to_dict wrote it)."""
        return dict(self.document.get("spec", {}))

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
    def full_flops(self) -> dict[str, float]:
        """Per model, the FLOPs with every block open at the run's input size (what the share of saved compute
        an attack takes back is measured against). Runs sealed before it was noted give it through their summary's
        efficacy, mean(1 - F / F_full) = 1 - mean(F) / F_full; a model without either is left out."""
        noted = self.extras.get("full_flops")
        if isinstance(noted, dict):
            return {str(k): float(v) for k, v in noted.items()}
        recovered: dict[str, float] = {}
        for row in (_read_json(self.root / SUMMARY_FILE, required=False) or {}).get("summary", []):
            efficacy, clean = row.get("efficacy_clean"), row.get("clean_flops")
            if isinstance(efficacy, float) and isinstance(clean, float) and 0 <= efficacy < 1:
                recovered.setdefault(str(row.get("model")), clean / (1 - efficacy))
        return recovered

    def records(self) -> pd.DataFrame:
        """The run's records, refused where they no longer match run.json; records from before attacks carried
        their canonical spec get it from run.json's attack specs."""
        return upgrade_attack_names(read_records(self.root), self.spec.get("attacks", []))

    def models(self) -> dict[str, Any]:
        """The run's models by label, loaded as the run loaded them (shipped weights or their checkpoint)."""
        from aigrobust.factory import create_model, load_checkpoint

        if "models" not in self.document:
            raise RunFolderError(f"{self.root} is not a run folder (no readable {SPEC_FILE})")
        from aigrobust.checkpoints import weights_sha256

        models = {}
        for label, info in self.document["models"].items():
            source = info.get("source", "pretrained")
            if str(info["model"]).startswith("code:"):  # a user's network: its code, then its weights file
                from aigrobust.user_models import load_user_model

                models[label] = load_user_model(str(info["model"])[5:], None if source == "code" else Path(source),
                                                info.get("output_index"))[0]
            else:
                models[label] = (create_model(info["model"], pretrained=True) if source == "pretrained"
                                 else load_checkpoint(Path(source))[0]).eval()
            pinned = info.get("weights_sha256")
            if pinned is not None and weights_sha256(models[label].state_dict()) != pinned:
                raise RunFolderError(f"{label}'s weights ({source}) changed since the run {self.root} used them "
                                     f"(pinned sha256 {str(pinned)[:12]}); its records describe another network")
        return models

    def data(self) -> Any:
        """The test split the run attacked (its dataset and folder as run.json recorded them)."""
        from aigrobust.data import load_dataset

        info = self.document.get("data", {})
        return load_dataset(info.get("dataset", "cifar10"), "test",
                            Path(info["data_dir"]) if info.get("data_dir") else None, False)


def _read_json(path: Path, required: bool) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise RunFolderError(f"{path} is missing") from None
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path} is unreadable ({err})") from None
