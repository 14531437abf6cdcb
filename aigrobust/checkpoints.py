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
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from aigrobust.models.base import IMAGENET_MEAN, IMAGENET_STD, ResNetBase
from aigrobust.registry import UnknownModelError, create_model

if TYPE_CHECKING:
    from aigrobust.registry import ModelInfo

log = logging.getLogger(__name__)

FORMAT_NAME = "aigrobust-checkpoint"
FORMAT_VERSION = 2  # 2: model_sha256 covers the metadata that changes outputs, not only the weights
# Metadata that changes what the model computes: covered by model_sha256 together with the weights.
OUTPUT_METADATA = ("model", "model_kwargs", "num_classes", "normalization", "gated")
METADATA_KEY = "aigrobust"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, tampered with, or of another architecture."""


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    """Save ``model`` as safetensors with JSON metadata (atomically); returns the metadata written."""
    from safetensors.torch import save

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
    """Weights and metadata of one of our checkpoints, with the weights' sha256 verified."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
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
        meta = json.loads(meta_json)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its aigrobust metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its aigrobust metadata is a JSON {type(meta).__name__}, not an object")
    expected = meta.get("weights_sha256")
    actual = weights_sha256(state)
    if expected != actual:
        raise CheckpointError(f"{path}: weights sha256 {actual[:12]} does not match the metadata's {str(expected)[:12]}")
    if "model_sha256" not in meta:
        raise CheckpointError(f"{path}: format {meta.get('format_version')} checkpoint without a hash over its "
                              "metadata; re-save it with aigrobust.checkpoints.upgrade_checkpoint(path) if you trust it")
    if meta["model_sha256"] != model_sha256(actual, meta):
        raise CheckpointError(f"{path}: its metadata ({', '.join(OUTPUT_METADATA)}) was changed after saving: "
                              "model sha256 does not match")
    return state, meta


def upgrade_checkpoint(path: Path) -> dict[str, Any]:
    """Re-save a format-1 checkpoint (weights hash only) as format 2, adding the hash over its metadata.

    Run it only on files you trust: whatever the metadata says now becomes covered by the hash."""
    from safetensors.torch import load, save

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


def _statistics(norm: Any) -> tuple[list[float], list[float]]:
    """Mean and std of a checkpoint's normalisation, each three finite numbers, std above zero."""
    import math

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
    statistics = _statistics(norm) if norm is not None else None
    try:
        model = create_model(name, **dict(kwargs))
    except UnknownModelError as err:
        raise CheckpointError(f"checkpoint is for {err}") from None
    except (TypeError, ValueError) as err:
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


def load_checkpoint(path: Path, expect_model: str | None = None) -> tuple[ResNetBase, dict[str, Any]]:
    """Load any supported checkpoint into a model: ours (.safetensors) or a converted format.

    ``expect_model`` (a registry name) makes a checkpoint of another architecture an error.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors" or is_safetensors(path):  # by content, not by suffix: a renamed file is still what it is
        state, meta = read_checkpoint(path)
        model = build_from_metadata(meta)
        if expect_model is not None and meta.get("model") != expect_model:
            raise CheckpointError(f"{path} holds a {meta.get('model')}, not a {expect_model}")
        load_state_checked(model, state, str(path))
        model.eval()
        return model, meta
    model, meta = convert_checkpoint(path, expect_model)
    model.eval()
    return model, meta


# --- converters ---------------------------------------------------------------------------------------------------
def torch_load_safely(path: Path) -> Any:
    """``torch.load`` that only unpickles tensors and plain containers (code-running pickles are refused)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes from the restricted unpickler
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle, zip and unpickler errors come in many types)
        text = str(err).strip()
        if "Weights only load failed" in text:
            after = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
            detail = after[0].strip() if after and "WeightsUnpickler" in text else "unsupported content"
            reason = (f"refused ({detail}): it holds objects other than tensors and plain containers (a pickle "
                      "that could run code) or is not a checkpoint")
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointError(f"{path} could not be loaded safely (weights only): {reason}") from None


def _extract_state(obj: Any, path: Path) -> OrderedDict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return OrderedDict((k.removeprefix("module."), v) for k, v in obj.items())


def detect_layout(state: Mapping[str, Tensor]) -> str:
    """Name the layout of a foreign state dict: 'akamaster', 'aig-reference', or 'torchvision'."""
    keys = set(state)
    if "fc.weight" in keys and "conv1.weight" in keys:
        return "torchvision"
    if any(re.search(r"\.fc1bn\.", k) for k in keys):
        return "aig-reference"
    if "linear.weight" in keys and any(k.startswith("layer3.") for k in keys):
        return "akamaster"
    raise CheckpointError("unrecognised checkpoint layout (expected ours, akamaster, ConvNet-AIG reference or torchvision)")


def _cifar_depth(state: Mapping[str, Tensor]) -> int:
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer1\.(\d+)\.", k))}
    return 6 * len(blocks) + 2


def convert_akamaster(state: Mapping[str, Tensor]) -> ResNetBase:
    """akamaster/pytorch_resnet_cifar10 weights (option A, ImageNet normalisation) -> our plain CIFAR ResNet."""
    depth = _cifar_depth(state)
    num_classes = int(state["linear.weight"].shape[0])
    model = create_model(f"resnet{depth}", num_classes=num_classes)
    model.normalize.set_statistics(IMAGENET_MEAN, IMAGENET_STD)  # akamaster's trainer.py normalises this way
    own = model.state_dict()
    filled = dict(state)
    for k, v in own.items():  # pre-0.4 files carry no BatchNorm counters
        if k.endswith("num_batches_tracked") and k not in filled:
            filled[k] = torch.zeros_like(v)
    load_state_checked(model, filled, "akamaster checkpoint")
    return model


def convert_aig_reference(state: Mapping[str, Tensor]) -> ResNetBase:
    """ConvNet-AIG reference code weights (1x1-conv gates, projection shortcuts) -> our aig model."""
    renamed: dict[str, Tensor] = {}
    for k, v in state.items():
        k2 = re.sub(r"\.(fc1|fc1bn|fc2)\.", r".gate.\1.", k)
        if re.search(r"\.gate\.fc[12]\.weight$", k2) and v.dim() == 4:
            v = v.flatten(1)  # 1x1 conv on a pooled map == linear layer
        renamed[k2] = v
    if "linear.weight" in renamed and any(k.startswith("layer4.") for k in renamed):
        blocks = [sum(1 for k in renamed if re.match(rf"layer{s}\.\d+\.conv1\.weight$", k)) for s in (1, 2, 3, 4)]
        name = {(3, 4, 6, 3): "aig50", (3, 4, 23, 3): "aig101"}.get(tuple(blocks))
        if name is None:
            raise CheckpointError(f"ConvNet-AIG ImageNet checkpoint with blocks {blocks} has no registered twin")
        renamed = {re.sub(r"\.shortcut\.", ".downsample.", k): v for k, v in renamed.items()}
        renamed["fc.weight"], renamed["fc.bias"] = renamed.pop("linear.weight"), renamed.pop("linear.bias")
        model = create_model(name, num_classes=int(renamed["fc.weight"].shape[0]))
    else:
        depth = _cifar_depth(renamed)
        model = create_model(f"aig{depth}", shortcut="B", num_classes=int(renamed["linear.weight"].shape[0]))
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in renamed:
            renamed[k] = torch.zeros_like(v)
    load_state_checked(model, renamed, "ConvNet-AIG reference checkpoint")
    return model


def convert_torchvision(state: Mapping[str, Tensor], model_name: str | None = None) -> ResNetBase:
    """torchvision ResNet-50/101 weights -> resnet50/101, or into the residual weights of aig50/101 (gates fresh)."""
    n_blocks = sum(1 for k in state if re.match(r"layer\d\.\d+\.conv1\.weight$", k))
    depth = {16: 50, 33: 101}.get(n_blocks)
    if depth is None:
        raise CheckpointError(f"torchvision checkpoint with {n_blocks} bottleneck blocks is not ResNet-50/101")
    name = model_name or f"resnet{depth}"
    if not re.fullmatch(rf"(resnet|aig){depth}", name):
        raise CheckpointError(f"torchvision ResNet-{depth} weights do not fit {name}")
    model = create_model(name, num_classes=int(state["fc.weight"].shape[0]))
    filled = dict(state)
    for k, v in model.state_dict().items():
        if ".gate." in k:
            filled[k] = v  # gates are not in torchvision's weights: they start from their initialisation
    load_state_checked(model, filled, "torchvision checkpoint")
    return model


def convert_checkpoint(path: Path, expect_model: str | None = None) -> tuple[ResNetBase, dict[str, Any]]:
    """Load a foreign checkpoint through the converter its layout needs."""
    state = _extract_state(torch_load_safely(path), path)
    layout = detect_layout(state)
    if layout == "akamaster":
        model = convert_akamaster(state)
    elif layout == "aig-reference":
        model = convert_aig_reference(state)
    else:
        model = convert_torchvision(state, expect_model)
    name = model.registry_name  # type: ignore[attr-defined]
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{path} holds a {name} ({layout} layout), not a {expect_model}")
    meta = model_metadata(model, source=str(path), source_layout=layout,
                          source_sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest())
    log.info("converted %s (%s layout) into %s", path, layout, name)
    return model, meta


# --- pretrained entries -------------------------------------------------------------------------------------------
def load_pretrained_into(model: ResNetBase, info: ModelInfo) -> None:
    """Fill ``model`` with its pretrained weights: shipped CIFAR files, or torchvision's ImageNet download."""
    shipped = PRETRAINED_DIR / f"{info.name}.safetensors"
    if shipped.is_file():
        state, meta = read_checkpoint(shipped)
        norm = meta.get("normalization")
        if norm:
            model.normalize.set_statistics(norm["mean"], norm["std"])
        load_state_checked(model, state, str(shipped))
        model.pretrained_metadata = meta  # type: ignore[assignment]
        return
    if info.torchvision_weights is None:
        raise CheckpointError(f"no pretrained weights are shipped for {info.name}; train one with 'aigrobust train' "
                              "or pass a checkpoint")
    import torchvision.models as tvm

    weights = tvm.get_weight(f"{info.torchvision_weights}.DEFAULT")
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # noqa: BLE001  (urllib raises many types when offline)
        raise CheckpointError(f"could not download torchvision weights {weights} ({type(err).__name__}); "
                              "without a network, pass a local checkpoint with --checkpoint") from None
    converted = convert_torchvision(state, info.name)
    model.load_state_dict(converted.state_dict())
    model.pretrained_metadata = {"source": f"torchvision {weights}"}  # type: ignore[assignment]
    if model.is_gated:
        log.warning("%s: residual weights from torchvision, gates untrained; fine-tune before evaluating", info.name)
