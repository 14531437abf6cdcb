"""Reading a run's records and putting several runs' records together: the integrity check against run.json, rows
cut short, attack names from before specs were canonical, and the checks that two runs describe the same networks
and images before their records are joined. The file names of a run folder live here, the lowest layer."""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from aigrobust.errors import AigrobustError
from aigrobust.evaluation.metrics import GROUP
from aigrobust.files import NOT_FOUND, JSONLimitError, parse_json, unusable_file
from attacks import NORM_NAMES, attack_norm

if TYPE_CHECKING:
    from aigrobust.runs.folder import FinishedRun

RECORDS_FILE = "records.csv.gz"
SUMMARY_FILE = "summary.json"
SUMMARY_TABLE = "summary.csv"
SPEC_FILE = "run.json"
PARTS_DIR = ".parts"
PROVENANCE_FILE = "unit_origins.jsonl"  # in PARTS_DIR: which device (or earlier run) made each unit
COPIED_FROM = "copied from "  # the origin of a unit copied from an earlier run: this, then the run's path
INTEGRITY_KEY = "records"  # run.json: row count and sha256 of the finished records file


class RunFolderError(AigrobustError, RuntimeError):
    """A run folder that cannot be used (not writable, another run's spec, corrupt parts)."""


def csv_bytes(frame: pd.DataFrame, compress: bool) -> bytes:
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0} if compress else None)
    return buffer.getvalue()


def read_records(path: Path) -> pd.DataFrame:
    """Records from a run folder or a records file, with gate patterns kept as strings.

    A run folder's records are checked against the row count and sha256 its run.json recorded when the run
    finished, so a truncated or edited file is refused instead of giving figures over fewer samples."""
    path = Path(path)
    expected: dict[str, Any] | None = None
    attacked: int | None = None
    if path.is_dir():
        expected, attacked = _recorded_seal(path)
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
    _refuse_repeated_samples(frame, path, attacked if expected is not None else None)
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


def enclosing_run_folder(path: Path) -> Path | None:
    """The attack run folder ``path`` lies inside (run.json or hidden parts in an ancestor, or a parts folder on the
    way), or None: nothing else may write there, since a resume or a rerun replaces what it finds."""
    resolved = Path(path).resolve()
    for folder in resolved.parents:
        if folder.name == PARTS_DIR or (folder / SPEC_FILE).is_file() or (folder / PARTS_DIR).is_dir():
            return folder.parent if folder.name == PARTS_DIR else folder
    return resolved.parent if resolved.name == PARTS_DIR else None


def _refuse_repeated_samples(frame: pd.DataFrame, path: Path, n: int | None) -> None:
    """Records hold one row per setting and sample: a repeated (setting, sample) would count an image twice, and a
    setting with another number of samples than the run attacked (``n``, from run.json) describes another run."""
    repeated = frame.duplicated(RECORD_KEY)
    if bool(repeated.any()):
        row = frame[repeated].iloc[0]
        raise RunFolderError(f"{path}: {int(repeated.sum())} rows repeat a setting and sample (e.g. sample "
                             f"{row['sample']} of {row['model']}, {row['attack']}): records hold one row per setting "
                             "and sample; the file was edited or forged")
    if n is None:
        return
    counts = frame.groupby(GROUP, sort=False)["sample"].nunique()
    off = counts[counts != n]
    if len(off):
        raise RunFolderError(f"{path}: {int(off.iloc[0])} samples under {' / '.join(map(str, off.index[0]))} where "
                             f"run.json says the run attacked {n}: the records do not belong to this run.json")


def _recorded_seal(folder: Path) -> tuple[dict[str, Any] | None, int | None]:
    """From run.json, read once: the seal of the finished records (row count and sha256) and the number of images
    the run attacked; None for what it does not hold (an unreadable run.json, whose other readers say why, or none)."""
    try:
        spec = read_json(folder / SPEC_FILE, required=False)
    except RunFolderError:
        return None, None
    if not isinstance(spec, dict):
        return None, None
    seal, dataset = spec.get(INTEGRITY_KEY), spec.get("dataset")
    n = dataset.get("n") if isinstance(dataset, dict) else None
    return (seal if isinstance(seal, dict) else None,
            n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None)


RECORD_KEY = [*GROUP, "sample"]  # one row per sample and setting


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


def combined_full_flops(runs: list[FinishedRun]) -> dict[str, float]:
    """Per model label, the FLOPs with every block open, as the runs noted them (runs listed first win, as for
    their records)."""
    full_flops: dict[str, float] = {}
    for run in reversed(runs):
        full_flops.update(run.full_flops)
    return full_flops


def _refuse_mixed_norms(runs: list[FinishedRun], frames: list[pd.DataFrame]) -> None:
    """A report's worst case, tables and sanity checks compare attacks at one epsilon: one norm per report."""

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


def read_json(path: Path, required: bool) -> Any:
    why = unusable_file(path)
    if why is not None and why != NOT_FOUND:  # absent is for ``required`` to judge
        raise RunFolderError(f"{path} {why}")
    try:
        return parse_json(path.read_bytes())
    except FileNotFoundError:
        if required:
            raise RunFolderError(f"{path} is missing") from None
        return None
    except JSONLimitError as err:
        raise RunFolderError(f"{path} {err}") from None
    except OSError as err:
        raise RunFolderError(f"{path} is unreadable ({err.strerror or err})") from None
