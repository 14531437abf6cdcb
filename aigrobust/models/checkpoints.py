"""Checkpoints: our safetensors format with JSON metadata, and converters for other layouts.

Our format is one ``.safetensors`` file; its header's metadata holds ``aigrobust`` -> a JSON document (model name,
constructor arguments, dataset, classes, normalisation, target rates, accuracy, recipe, data fingerprint and the
sha256 of the weights). One file means weights and metadata can never drift apart.

Other formats (akamaster's CIFAR ResNets, the ConvNet-AIG reference code, torchvision) are read with
``torch.load(weights_only=True)``, which refuses pickles that would run code, and mapped by explicit converters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from aigrobust.errors import CheckpointError
from aigrobust.files import JSONLimitError, atomic_write_bytes, parse_json, unusable_file
from aigrobust.models.base import ResNetBase
from aigrobust.models.registry import UnknownModelError, untrained_model

log = logging.getLogger(__name__)

FORMAT_NAME = "aigrobust-checkpoint"
FORMAT_VERSION = 2  # 2: model_sha256 covers the metadata that changes outputs, not only the weights
# Metadata that changes what the model computes: covered by model_sha256 together with the weights.
MAX_PARAMETERS = 10**9  # the largest registered network (aig101) has 45 million

OUTPUT_METADATA = ("model", "model_kwargs", "num_classes", "normalization", "gated")
METADATA_KEY = "aigrobust"




# --- writing ------------------------------------------------------------------------------------------------------
def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes in sorted-name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_sha256(weights_hash: str, meta: Mapping[str, Any]) -> str:
    """sha256 over the weights' hash and every metadata field that changes the model's outputs."""
    covered = json.dumps({key: meta.get(key) for key in OUTPUT_METADATA}, sort_keys=True)
    return hashlib.sha256(f"{weights_hash}|{covered}".encode()).hexdigest()


def model_metadata(model: ResNetBase, **extra: Any) -> dict[str, Any]:
    """The metadata every checkpoint of ``model`` carries; ``extra`` adds dataset, accuracy, recipe, ..."""
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": getattr(model, "registry_name", None),
        "model_kwargs": _jsonable(getattr(model, "model_kwargs", {})),
        "num_classes": model.num_classes,
        "normalization": model.normalize.as_dict(),
        "target_rates": list(model.target_rates),
        "gated": model.is_gated,
    }
    meta.update(_jsonable(extra))
    return meta


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_checkpoint(model: ResNetBase, path: Path, **metadata: Any) -> dict[str, Any]:
    """Save ``model`` as safetensors with JSON metadata, atomically (an interrupted save leaves no half file).

    Args:
        model: a registered model (its registry name and settings go into the metadata).
        path: the ``.safetensors`` file to write.
        **metadata: what else to record (recipe, accuracy, ...), JSON-serialisable.

    Returns:
        The metadata written (with the weights' sha256).

    >>> import tempfile
    >>> from pathlib import Path
    >>> from aigrobust import create_model
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = save_checkpoint(create_model("resnet20"), Path(folder) / "model.safetensors", note="example")
    >>> written["model"], written["note"]
    ('resnet20', 'example')
    """
    if getattr(model, "registry_name", None) is None:
        raise CheckpointError("only models built by create_model() can be saved (their name goes in the metadata)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = model_metadata(model, **metadata)
    meta["weights_sha256"] = weights_sha256(state)
    meta["model_sha256"] = model_sha256(meta["weights_sha256"], meta)
    atomic_write_bytes(Path(path), save(state, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)}))
    return meta


# --- reading ------------------------------------------------------------------------------------------------------
def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and metadata of one of our checkpoints, with the weights' sha256 verified.

    Args:
        path: a ``.safetensors`` file written by :func:`save_checkpoint` (or ``aigrobust train``).

    Returns:
        The weights by parameter name and the metadata.

    >>> from importlib.resources import files
    >>> weights, metadata = read_checkpoint(files("aigrobust") / "pretrained" / "aig20.safetensors")
    >>> metadata["model"], metadata["gated"]
    ('aig20', True)
    """
    path = Path(path)
    why = unusable_file(path)
    if why is not None:
        raise CheckpointError(f"checkpoint {path} {why}")
    raw = path.read_bytes()
    try:
        state = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt): {err}") from None
    meta_json = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if meta_json is None:
        raise CheckpointError(f"{path} is a safetensors file without aigrobust metadata; use a converter")
    try:
        meta = parse_json(meta_json)
    except JSONLimitError as err:
        raise CheckpointError(f"{path}: its aigrobust metadata {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its aigrobust metadata is a JSON {type(meta).__name__}, not an object")
    expected = meta.get("weights_sha256")
    actual = weights_sha256(state)
    if expected != actual:
        raise CheckpointError(f"{path}: weights sha256 {actual[:12]} does not match the metadata's {str(expected)[:12]}")
    if "model_sha256" not in meta:
        raise CheckpointError(f"{path}: format {meta.get('format_version')} checkpoint without a hash over its "
                              "metadata; re-save it with aigrobust.models.checkpoints.upgrade_checkpoint(path) if you trust it")
    if meta["model_sha256"] != model_sha256(actual, meta):
        raise CheckpointError(f"{path}: its metadata ({', '.join(OUTPUT_METADATA)}) was changed after saving: "
                              "model sha256 does not match")
    return state, meta


def upgrade_checkpoint(path: Path) -> dict[str, Any]:
    """Re-save a format-1 checkpoint (weights hash only) as format 2, adding the hash over its metadata.

    Run it only on files you trust: whatever the metadata says now becomes covered by the hash."""
    path = Path(path)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"][METADATA_KEY])
    state = load(raw)
    if meta.get("weights_sha256") != weights_sha256(state):
        raise CheckpointError(f"{path}: weights sha256 does not match; refusing to upgrade")
    meta["format_version"] = FORMAT_VERSION
    meta["model_sha256"] = model_sha256(meta["weights_sha256"], meta)
    atomic_write_bytes(path, save(dict(state), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)}))
    return meta


def normalization_statistics(norm: Any) -> tuple[list[float], list[float]]:
    """Mean and std of a checkpoint's normalisation, each three finite numbers, std above zero."""
    if not isinstance(norm, Mapping):
        raise CheckpointError(f"checkpoint normalization must be an object with mean and std, got {norm!r}")
    values = []
    for key in ("mean", "std"):
        v = norm.get(key)
        if (not isinstance(v, list) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise CheckpointError(f"checkpoint normalization {key} must be three finite numbers, got {v!r}")
        values.append([float(x) for x in v])
    if min(values[1]) <= 0:
        raise CheckpointError(f"checkpoint normalization std must be above zero, got {values[1]}")
    return values[0], values[1]


def is_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors: an 8-byte header length, then a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def build_from_metadata(meta: Mapping[str, Any]) -> ResNetBase:
    """Construct the architecture a checkpoint's metadata names."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"checkpoint metadata must be a JSON object, got {type(meta).__name__}")
    name = meta.get("model")
    if not isinstance(name, str):
        raise CheckpointError("checkpoint metadata names no model")
    kwargs = meta.get("model_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"checkpoint model_kwargs must be an object, got {kwargs!r}")
    norm = meta.get("normalization")
    statistics = normalization_statistics(norm) if norm is not None else None
    try:
        # sized on the meta device first (nothing allocated): hostile model_kwargs (num_classes=10**10) would
        # otherwise ask for terabytes before any check could run
        with torch.device("meta"):
            size = sum(p.numel() for p in untrained_model(name, **dict(kwargs)).parameters())
        if size > MAX_PARAMETERS:
            raise CheckpointError(f"checkpoint model_kwargs {dict(kwargs)} describe a {name} of {size:,} parameters "
                                  f"(more than {MAX_PARAMETERS:,}): not a network this tool builds")
        model = untrained_model(name, **dict(kwargs))
    except UnknownModelError as err:
        raise CheckpointError(f"checkpoint is for {err}") from None
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"checkpoint model_kwargs {dict(kwargs)} do not fit {name}: {err}") from None
    if statistics is not None:
        model.normalize.set_statistics(*statistics)
    return model


def load_state_checked(model: ResNetBase, state: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped tensor in one clear error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} ({_preview(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} ({_preview(unexpected)})")
    if shapes:
        problems.append(f"shape mismatch {len(shapes)} ({_preview(shapes)})")
    if problems:
        name = getattr(model, "registry_name", type(model).__name__)
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _preview(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
