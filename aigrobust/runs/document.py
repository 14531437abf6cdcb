"""run.json as a typed document: what a run did (its evaluation spec) and what it was made of (each model pinned by
its weights' hash, the images by their fingerprint), read and written here only.

Old folders open too: a field a document lacks reads as unknown (None), and keys this version does not know are
kept as they were, so a document read and written back is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigrobust.evaluation import EvalSpec
from aigrobust.runs.records import INTEGRITY_KEY, RunFolderError

FORMAT_VERSION = 2  # run.json's layout; a document without the field is version 1 (see aigrobust.runs.migrate)
KNOWN_KEYS = ("format_version", "spec", "models", "dataset", "batch_size", "data", INTEGRITY_KEY)


def _fail(where: Path | str, what: str) -> RunFolderError:
    return RunFolderError(f"{where}: {what}; the run document is damaged or not aigrobust's")


def _text(value: Any, where: Path | str, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(where, f"{name} must be text, not {type(value).__name__}")
    return value


def _count(value: Any, where: Path | str, name: str, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, f"{name} must be a whole number >= 0, not {value!r:.40}")
    return value


@dataclass(frozen=True)
class ModelPin:
    """One model of a run: what built it (a registered name or tag, or 'code:module:callable'), where its weights
    came from ('pretrained', a checkpoint path, or 'code'), their sha256 (None in folders older than pinning) and,
    for a user's network returning a tuple, which output holds the logits."""

    model: str
    source: str = "pretrained"
    weights_sha256: str | None = None
    output_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; fields a run did not record are left out, as it wrote them."""
        data: dict[str, Any] = {"model": self.model, "source": self.source}
        if self.weights_sha256 is not None:
            data["weights_sha256"] = self.weights_sha256
        if self.output_index is not None:
            data["output_index"] = self.output_index
        return data

    @classmethod
    def from_dict(cls, data: Any, where: Path | str, label: str) -> ModelPin:
        """The pin a :meth:`to_dict` document describes; a wrong type is one RunFolderError line."""
        if not isinstance(data, dict):
            raise _fail(where, f"model {label!r} must be an object")
        return cls(model=str(_text(data.get("model"), where, f"model {label!r}'s name")),
                   source=str(_text(data.get("source", "pretrained"), where, f"model {label!r}'s source")),
                   weights_sha256=_text(data.get("weights_sha256"), where, f"model {label!r}'s weights_sha256", True),
                   output_index=_count(data.get("output_index"), where, f"model {label!r}'s output_index"))


@dataclass(frozen=True)
class RunDocument:
    """A run's run.json. ``spec`` is kept as :meth:`EvalSpec.to_dict` wrote it (a resume compares it as written;
    :meth:`eval_spec` parses it); ``dataset`` pins the images (name, source, n, sha256, and for an image folder its
    files); ``data`` says where to load them again; ``records`` seals the finished records (rows and sha256)."""

    spec: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelPin] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] | None = None
    format_version: int | None = None  # None: a document read from a folder written before the field (version 1)
    other: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept as they were

    @property
    def is_empty(self) -> bool:
        """True for a folder without run.json (records alone)."""
        return self == RunDocument()

    @property
    def data_sha256(self) -> str | None:
        """The fingerprint of the images the run attacked (None where unrecorded)."""
        value = self.dataset.get("sha256")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in run.json's layout (sorted keys)."""
        data: dict[str, Any] = {**self.other}
        if self.format_version is not None:
            data["format_version"] = self.format_version
        if self.spec:
            data["spec"] = self.spec
        if self.models:
            data["models"] = {label: pin.to_dict() for label, pin in self.models.items()}
        if self.dataset:
            data["dataset"] = self.dataset
        if self.batch_size is not None:
            data["batch_size"] = self.batch_size
        if self.data:
            data["data"] = self.data
        if self.records is not None:
            data[INTEGRITY_KEY] = self.records
        return json.loads(json.dumps(data, sort_keys=True))

    @classmethod
    def from_dict(cls, data: Any, where: Path | str = "run.json") -> RunDocument:
        """The document ``data`` (parsed JSON) describes; a wrong type is one RunFolderError line naming ``where``."""
        if not isinstance(data, dict):
            raise _fail(where, "it is not a JSON object")
        for key in ("spec", "dataset", "data", "models"):
            if key in data and not isinstance(data[key], dict):
                raise _fail(where, f"'{key}' must be an object")
        records = data.get(INTEGRITY_KEY)
        if records is not None and not isinstance(records, dict):
            raise _fail(where, f"'{INTEGRITY_KEY}' must be an object")
        models = {str(label): ModelPin.from_dict(pin, where, str(label))
                  for label, pin in (data.get("models") or {}).items()}
        return cls(spec=dict(data.get("spec") or {}), models=models, dataset=dict(data.get("dataset") or {}),
                   batch_size=_count(data.get("batch_size"), where, "batch_size"), data=dict(data.get("data") or {}),
                   records=records, format_version=_count(data.get("format_version"), where, "format_version"),
                   other={k: v for k, v in data.items() if k not in KNOWN_KEYS})

    def eval_spec(self) -> Any:
        """The run's :class:`aigrobust.evaluation.EvalSpec`."""

        return EvalSpec.from_dict(self.spec)


def run_document(spec: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """A run's spec and facts as run.json holds them (JSON-ready; compared on resume), in the layout of
    :class:`RunDocument`."""
    return RunDocument.from_dict(json.loads(json.dumps({"format_version": FORMAT_VERSION, "spec": spec.to_dict(),
                                                        **extra}))).to_dict()
