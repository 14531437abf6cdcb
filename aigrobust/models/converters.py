"""Converters from foreign checkpoint layouts into our models: akamaster's CIFAR ResNets, the ConvNet-AIG reference
code and torchvision. Files are read with ``torch.load(weights_only=True)``, which refuses pickles that would run code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import CheckpointError, load_state_checked, model_metadata
from aigrobust.models.layers import IMAGENET_MEAN, IMAGENET_STD
from aigrobust.models.registry import untrained_model

log = logging.getLogger(__name__)


def torch_load_safely(path: Path) -> Any:
    """``torch.load`` that only unpickles tensors and plain containers (code-running pickles are refused)."""
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
        elif not _looks_like_torch_file(path):
            reason = "it is not a PyTorch checkpoint (neither a zip archive nor a pickle)"
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointError(f"{path} could not be loaded safely (weights only): {reason}") from None


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts as ``torch.save`` files do: a zip archive, or a pickle (protocol 2 or later)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # unreadable: torch's own error says why
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


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
    model = untrained_model(f"resnet{depth}", num_classes=num_classes)
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
        model = untrained_model(name, num_classes=int(renamed["fc.weight"].shape[0]))
    else:
        depth = _cifar_depth(renamed)
        model = untrained_model(f"aig{depth}", shortcut="B", num_classes=int(renamed["linear.weight"].shape[0]))
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
    model = untrained_model(name, num_classes=int(state["fc.weight"].shape[0]))
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
        raise CheckpointError(f"{path} holds weights of {name} ({layout} layout), not of {expect_model}")
    meta = model_metadata(model, source=str(path), source_layout=layout,
                          source_sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest())
    log.info("converted %s (%s layout) into %s", path, layout, name)
    return model, meta
