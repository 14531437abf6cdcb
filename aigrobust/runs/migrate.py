"""Older run folders, read as today's: every upgrade from an earlier shape of run.json or of the records lives here,
so the rest of :mod:`aigrobust.runs` knows today's format only. Each function takes what was read and returns it in
today's shape, in memory; nothing on disk is rewritten.

What changed, and what reads it:

* run.json named attacks as typed (``fgsm``, ``pgd:steps=20``) before it held canonical specs:
  :func:`upgrade_attack_texts` reads them by what the folder's saved batches ran, :func:`canonical_document` by
  today's defaults;
* run.json pinned no weights (``weights_sha256``) at first: :func:`upgrade_pins` compares such a folder without them;
* records named an attack by its short name (``pgd``) before they carried the canonical spec:
  :func:`upgrade_attack_names`;
* run.json carried no ``format_version`` before version 2 (every shape above is version 1): :func:`upgrade_format`
  names the version a folder's document is read as, and refuses one written by a newer aigrobust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from aigrobust.runs.document import FORMAT_VERSION
from aigrobust.runs.records import PARTS_DIR, RunFolderError


def upgrade_format(previous: Any, where: Path) -> Any:
    """``previous`` (a run.json) in today's layout version: a document without ``format_version`` is version 1, whose
    differences the upgrades here read; one from a newer version than this aigrobust knows is refused."""
    if not isinstance(previous, dict):
        return previous
    version = previous.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunFolderError(f"{where}: format_version {version!r} is not a layout version")
    if version > FORMAT_VERSION:
        raise RunFolderError(f"{where} has layout version {version}, newer than this aigrobust reads "
                             f"({FORMAT_VERSION}): update aigrobust")
    return {**previous, "format_version": FORMAT_VERSION}


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


def canonical_document(document: dict[str, Any]) -> dict[str, Any]:
    """A run document with its attacks as canonical specs (today's defaults), whoever built it."""
    from aigrobust.evaluation import today_specs

    spec = document.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("attacks"), list):
        return document
    return {**document, "spec": {**spec, "attacks": today_specs([str(t) for t in spec["attacks"]])}}


def upgrade_attack_texts(root: Path, previous: Any) -> Any:
    """``previous`` (a run.json) with its attacks as canonical specs, read by what the folder's saved batches ran
    (:func:`aigrobust.evaluation.specs_as_ran`), so an old folder resumes under the same command and never as a
    different attack."""
    from aigrobust.evaluation import specs_as_ran, today_specs

    spec = previous.get("spec") if isinstance(previous, dict) else None
    texts = spec.get("attacks") if isinstance(spec, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or today_specs(texts) == texts:
        return previous
    ran: set[str] = set()
    for part in sorted((root / PARTS_DIR).rglob("*.csv.gz")):
        try:
            ran.update(pd.read_csv(part, usecols=["attack"])["attack"].astype(str).unique())
        except (OSError, ValueError, EOFError):
            continue  # a part cut short: the resume recomputes it
    return {**previous, "spec": {**spec, "attacks": specs_as_ran(texts, sorted(ran))}}


def upgrade_attack_names(records: pd.DataFrame, attack_texts: list[str]) -> pd.DataFrame:
    """Records whose ``attack`` column holds an attack's short name ('pgd', written before records carried the
    canonical spec) get the canonical spec of the run's attack of that name; canonical records pass unchanged."""
    if records.empty or not attack_texts or records["attack"].astype(str).str.contains(":").all():
        return records
    from aigrobust.evaluation import canonical_attack_names

    names = canonical_attack_names(attack_texts)
    return records.assign(attack=records["attack"].map(lambda a: names.get(a, a)))
