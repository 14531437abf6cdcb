"""Older run folders, records and baselines, read as today's: every upgrade from an earlier shape of run.json, of the
records or of a baseline's metric keys lives here, so the rest of aigrobust knows today's format only. Each function
takes what was read and returns it in today's shape, in memory; nothing on disk is rewritten.

What changed, and what reads it:

* run.json named attacks as typed (``fgsm``, ``pgd:steps=20``) before it held canonical specs:
  :func:`upgrade_attack_texts` reads them by what the folder's saved batches ran, :func:`canonical_document` by
  today's defaults;
* run.json pinned no weights (``weights_sha256``) at first: :func:`upgrade_pins` compares such a folder without them;
* records named an attack by its short name (``pgd``) before they carried the canonical spec:
  :func:`upgrade_attack_names`;
* run.json carried no ``format_version`` before version 2 (every shape above is version 1): :func:`upgrade_format`
  names the version a folder's document is read as, and refuses one written by a newer aigrobust;
* an attack's defaults changed (the compute attack's earlier rule, :data:`SHORT_NAME_DEFAULTS`) and one attack's
  short name did (APGD-CE was ``apgd-ce`` in records, :data:`RECORD_ERA_NAMES`): :func:`short_name_spec`,
  :func:`canonical_attack_names`, :func:`specs_as_ran` read texts and records of that time as the attack that ran;
* baselines named attacks by short names and spelled a worst case 'worst': :func:`upgrade_metric_keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aigrobust.evaluation.metrics import WORST
from aigrobust.runs.document import FORMAT_VERSION
from aigrobust.runs.records import PARTS_DIR, RunFolderError
from aigrobust.specs import spec_name
from attacks import Attack, attack_from_spec, attack_kind

# the defaults in force while records held short names, where they differ from today's: the compute attack's earlier
# rule, 20 signed steps of 2.5 eps / 20 on the FLOPs-weighted log-odds capped at 2
_COMPUTE_BEFORE = {"steps": 20, "gate_loss": "capped", "kappa": 2.0, "schedule": "fixed"}
SHORT_NAME_DEFAULTS: dict[str, dict[str, Any]] = {"compute-inflation": _COMPUTE_BEFORE,
                                                  "compute-inflation-keep-label": _COMPUTE_BEFORE}


def short_name_spec(text: str) -> str:
    """The canonical spec an attack text meant when records held short names: its settings over the defaults then
    in force (:data:`SHORT_NAME_DEFAULTS`), so an old run's records and run.json read as the attack that made them,
    not as today's defaults."""
    return _short_name_attack(text).spec


def _short_name_attack(text: str) -> Attack:
    return attack_from_spec(text, defaults=SHORT_NAME_DEFAULTS.get(spec_name(text)))


# short names that records of that time held where they differ from the attack's registered name today
RECORD_ERA_NAMES = {"apgd": "apgd-ce", "apgd-l2": "apgd-ce-l2", "compute-inflation-l2": "compute-inflation"}


def canonical_attack_names(attack_texts: Sequence[str]) -> dict[str, str]:
    """For records written before attacks carried their canonical spec (the ``attack`` column held the attack's
    short name): short name -> canonical spec, from the spec texts in run.json, read with the defaults in force
    when such records were written (:func:`short_name_spec`). A short name two specs share cannot be told
    apart and is left out."""
    names: dict[str, list[str]] = {}
    for text in attack_texts:
        attack = _short_name_attack(text)
        names.setdefault(RECORD_ERA_NAMES.get(attack.name, attack.name), []).append(attack.spec)
    return {name: specs[0] for name, specs in names.items() if len(set(specs)) == 1}


def today_specs(texts: Sequence[str]) -> list[str]:
    """Attack texts as canonical specs under today's defaults (a text that does not parse stays as it is: the
    comparison or the run that reads it names it)."""
    specs = []
    for text in texts:
        try:
            specs.append(attack_from_spec(text).spec)
        except (ValueError, KeyError):
            specs.append(str(text))
    return specs


def specs_as_ran(texts: Sequence[str], ran: Iterable[str]) -> list[str]:
    """Attack texts of a stored run (a run.json, a baseline) as the canonical specs its records or metrics ``ran``.
    A text written before its attack's defaults changed ('compute-inflation:steps=20') reads as the one spec of that
    attack that ran, not as today's meaning; where that spec is today's, or the attack ran under several specs or
    none, as today's canonical spec. Records of short names ('pgd', older still) read with the defaults of their
    day (:func:`canonical_attack_names`)."""
    short_names = canonical_attack_names(texts)
    by_kind: dict[str, set[str]] = {}
    for spec in ran:
        spec = short_names.get(str(spec), str(spec))
        by_kind.setdefault(attack_kind(spec), set()).add(spec)
    pinned = []
    for text, today in zip(texts, today_specs(texts)):
        specs = by_kind.get(attack_kind(str(text)), set())
        pinned.append(next(iter(specs)) if today not in specs and len(specs) == 1 else today)
    return pinned


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
    spec = document.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("attacks"), list):
        return document
    return {**document, "spec": {**spec, "attacks": today_specs([str(t) for t in spec["attacks"]])}}


def upgrade_attack_texts(root: Path, previous: Any) -> Any:
    """``previous`` (a run.json) with its attacks as canonical specs, read by what the folder's saved batches ran
    (:func:`specs_as_ran`), so an old folder resumes under the same command and never as a
    different attack."""
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
    names = canonical_attack_names(attack_texts)
    return records.assign(attack=records["attack"].map(lambda a: names.get(a, a)))


def upgrade_metric_keys(rows: list[dict[str, Any]], attack_texts: list[str]) -> list[dict[str, Any]]:
    """Baselines written before settings had their present names: an attack's short name ('pgd') becomes the
    canonical spec of the baseline's attack of that name, and a worst case over gate or defense gradients, once
    spelled 'worst', is spelled WORST like the worst case over attacks."""
    names = canonical_attack_names(attack_texts)
    renamed = {"worst": WORST}
    return [{**row, "attack": names.get(row["attack"], row["attack"]),
             "gate_grad": renamed.get(row["gate_grad"], row["gate_grad"]),
             "defense_grad": renamed.get(row["defense_grad"], row["defense_grad"])} for row in rows]
