"""The factory: build a registered model and load weights into it (shipped files, our checkpoints, converted
foreign ones, torchvision's download). It sits above the leaf registry, our checkpoint format and the converters.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from aigrobust.files import unusable_file
from aigrobust.models import registry
from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import (
    CheckpointError,
    build_from_metadata,
    is_safetensors,
    load_state_checked,
    normalization_statistics,
    read_checkpoint,
)
from aigrobust.models.converters import convert_checkpoint, convert_torchvision
from aigrobust.models.registry import (
    ModelInfo,
    get_model_info,
    pretrained_file,
    split_tag,
    untrained_model,
)

log = logging.getLogger(__name__)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> ResNetBase:
    """Build a registered model. ``pretrained=True`` loads shipped CIFAR weights or torchvision's ImageNet weights;
    a tagged name picks shipped weights by tag (``"aig20.at"``: adversarially trained; a bare name means ``.std``).

    Args:
        name: a registered name (:func:`list_models`) or a tagged one (:func:`list_pretrained`).
        pretrained: load the weights the name ships with (refused with one line where it has none).
        **kwargs: go to the constructor (``shortcut="B"``, ``target_rate=0.5``, ``num_classes=100``).

    Returns:
        The network in training mode (call ``.eval()`` before attacking it), taking [0, 1] images.

    >>> model = create_model("resnet20", pretrained=True).eval()
    >>> model.is_gated, create_model("aig20").is_gated
    (False, True)
    """
    model = untrained_model(name, **kwargs)
    if pretrained:
        load_pretrained_into(model, get_model_info(name), tag=split_tag(name)[1])
    return model


def load_checkpoint(path: Path, expect_model: str | None = None) -> tuple[ResNetBase, dict[str, Any]]:
    """Load any supported checkpoint into a model: ours (.safetensors) or a converted format.

    Args:
        path: the weights file: our ``.safetensors`` (architecture and settings in its metadata), akamaster's
            CIFAR ResNets (``.th``), the ConvNet-AIG reference code's or torchvision's files.
        expect_model: a registry name; a checkpoint of another architecture is then an error.

    Returns:
        The model (in eval mode) and the checkpoint's metadata (model, recipe, accuracy, hashes, ...).

    >>> from importlib.resources import files
    >>> model, metadata = load_checkpoint(files("aigrobust") / "pretrained" / "resnet20.safetensors")
    >>> model.registry_name, metadata["dataset"]
    ('resnet20', 'cifar10')
    """
    path = Path(path)
    why = unusable_file(path)
    if why is not None:
        raise CheckpointError(f"checkpoint {path} {why}")
    if path.suffix == ".safetensors" or is_safetensors(path):  # by content, not by suffix: a renamed file is still what it is
        state, meta = read_checkpoint(path)
        model = build_from_metadata(meta)
        if expect_model is not None and meta.get("model") != expect_model:
            raise CheckpointError(f"{path} holds weights of {meta.get('model')}, not of {expect_model}")
        load_state_checked(model, state, str(path))
        model.eval()
        return model, meta
    model, meta = convert_checkpoint(path, expect_model)
    model.eval()
    return model, meta


def _check_pinned(shipped: Path) -> None:
    """The shipped file must be the one this version of aigrobust pins, byte for byte."""

    pinned = registry.PINNED_SHA256.get(shipped.name)  # read at call time: the pins of this installation
    actual = hashlib.sha256(shipped.read_bytes()).hexdigest()
    if pinned is None:
        raise CheckpointError(f"shipped weights {shipped} are not pinned by this version of aigrobust (sha256 "
                              f"{actual[:12]}); reinstall aigrobust, or load the file with --checkpoint if you trust it")
    if actual != pinned:
        raise CheckpointError(f"shipped weights {shipped} were changed on disk (sha256 {actual[:12]}, pinned "
                              f"{pinned[:12]}); reinstall aigrobust, or load the file with --checkpoint if you trust it")


def load_pretrained_into(model: ResNetBase, info: ModelInfo, tag: str | None = None) -> None:
    """Fill ``model`` with its pretrained weights: shipped CIFAR files (by ``tag``; None: the default), or
    torchvision's ImageNet download. ``model.pretrained_name`` then names them ('aig20.at'; 'aig20' untagged)."""
    shipped = pretrained_file(info.name if tag is None else f"{info.name}.{tag}")
    model.pretrained_name = info.name if tag is None else f"{info.name}.{tag}"  # type: ignore[assignment]
    if shipped.is_file():
        _check_pinned(shipped)
        state, meta = read_checkpoint(shipped)
        if meta.get("normalization") is not None:
            model.normalize.set_statistics(*normalization_statistics(meta["normalization"]))
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
