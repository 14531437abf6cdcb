"""Registry of named model constructors: ``create_model("aig110")``, ``list_models("aig*")``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigrobust.datasets import DATASETS  # noqa: F401  (the datasets a model names as its own)
from aigrobust.errors import UnknownModelError  # noqa: F401  (raised here; defined with every error type)
from aigrobust.registry import Registry

if TYPE_CHECKING:
    from aigrobust.models.base import ResNetBase


# shipped weights: NAME.safetensors (the default tag, 'std') and NAME.TAG.safetensors (e.g. aig20.at)
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_TAG = "std"  # a bare name means this tag, as timm's bare names mean their default pretrained tag
# sha256 of each shipped file, pinned in the code: a shipped file changed on disk is refused even where its own
# declared hashes were recomputed to match (shipping new weights means adding their pin here)
PINNED_SHA256 = {
    "aig20.safetensors": "5ce03348dbdb41a74774470c021acdfbb05be83ec63d523fb273c88dac1e3e18",
    "resnet20.safetensors": "575b1187b2a44503d07fa364649162c0f64bb56b5efc728aba057108651e9f97",
    "aig20.at.safetensors": "1faa94d47cbc2e2b141b4b80e9ea38e3225a862d56e1613b85c05ab440d94740",  # N-FGSM 8/255, target rate 0.6, best of epoch 28
    "aig20.at_compute.safetensors": "cd3712ada0d624f47541a720d651e0cfbff79cd6f1929b022e396a68220bac76",  # N-FGSM 8/255 on accuracy and compute, penalty 4
    "aig20.at_rslad_compute.safetensors": "ac2e7aec185b6c790d57c99a75ad365723cead63bfe847cf9c6a7cde8d705ce9",  # aig20 distilled from resnet20.at, then 3 epochs against the compute attack, target rate 0.75
    "resnet20.at.safetensors": "e461a5347764dd01089aae7d7b2f6e6c1fcd91de8d3ab9a59f75cbd2aff6e842",  # N-FGSM 8/255, 30 epochs, best of epoch 28
    "resnet14.at.safetensors": "b625108661167dd389f742f0bf9ad97b7407ba04f3d05c7be6aced2b2fe2f5c8",  # N-FGSM 8/255, 30 epochs, best of epoch 30
    "resnet32.at.safetensors": "ae6e26d6759d87cf24297f397180d51b42986e009f3ca7a8026125a2bdc3d923",  # N-FGSM 8/255, 30 epochs, best of epoch 30
    "aig32.at_deployed.safetensors": "29734ecdc4af5fdfbe85da1d614a7fbc4a5a3fa964b15d88f1bfbf581ce3d1c9",  # resnet32.at's branches, 6 epochs, deployed network attacked
    "aig32.at_rslad.safetensors": "2cb11c956601a59406d7fb196cfc0da89f54a3f2ebbb19d4e1f366098e23a035",  # resnet32.at distilled on the deployed network, target rate 0.4, 10 epochs
    "sdn20.safetensors": "fd2882502ebbba439be3c7c3acb46bf7eb9e9dc4754ff1b885792ad212501375",  # exits only on resnet20, 12 epochs
    "sdn20.at.safetensors": "3388375423e2309707c52233bc5d864d752985be1cb7b5495dc4eeb3fdfc12a4",  # exits only on resnet20.at, N-FGSM, 8 epochs
}




@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model name."""

    name: str
    family: str
    description: str
    input_shape: tuple[int, int, int]
    default_dataset: str
    builder: Callable[..., ResNetBase]
    torchvision_weights: str | None = None


_REGISTRY: Registry[ModelInfo] = Registry("model")


def register_model(
    name: str,
    *,
    family: str,
    description: str,
    input_shape: tuple[int, int, int],
    default_dataset: str,
    torchvision_weights: str | None = None,
) -> Callable[[Callable[..., ResNetBase]], Callable[..., ResNetBase]]:
    """Decorator that registers a model constructor under ``name``."""

    def decorate(builder: Callable[..., ResNetBase]) -> Callable[..., ResNetBase]:
        _REGISTRY.add(name, ModelInfo(name, family, description, input_shape, default_dataset, builder,
                                      torchvision_weights))
        return builder

    return decorate


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (and ``family`` if given), sorted naturally.

    Args:
        pattern: a shell-style pattern (``"aig*"``).
        family: only this family (``"cifar"``, ``"aig-cifar"``, ...).

    Returns:
        The names, ``resnet20`` before ``resnet110``.

    >>> list_models("sdn*")
    ['sdn20', 'sdn32', 'sdn56']
    """
    names = [n for n, info in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (family in (None, info.family))]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else -1


def split_tag(name: str) -> tuple[str, str | None]:
    """'aig20.at' -> ('aig20', 'at'); a bare name has no tag."""
    arch, dot, tag = name.partition(".")
    return arch, (tag if dot else None)


def pretrained_file(name: str) -> Path:
    """Where a (tagged) name's shipped weights live: NAME.safetensors for the default tag, NAME.TAG.safetensors."""
    arch, tag = split_tag(name)
    return PRETRAINED_DIR / (f"{arch}.safetensors" if tag in (None, DEFAULT_TAG) else f"{arch}.{tag}.safetensors")


def pretrained_tags(arch: str) -> list[str]:
    """The tags whose weights ship for ``arch`` (read from the files present), the default first."""
    tags = [DEFAULT_TAG] if (PRETRAINED_DIR / f"{arch}.safetensors").is_file() else []
    return tags + sorted(p.name[len(arch) + 1:-len(".safetensors")] for p in PRETRAINED_DIR.glob(f"{arch}.*.safetensors"))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Every tagged name with shipped weights ('resnet20.std', 'aig20.at', ...) matching ``pattern``.

    Args:
        pattern: a shell-style pattern over the tagged names.

    Returns:
        The tagged names, architectures in natural order, the default tag first.

    >>> list_pretrained("resnet*")
    ['resnet14.at', 'resnet20.std', 'resnet20.at', 'resnet32.at']
    """
    names = [f"{arch}.{tag}" for arch in list_models() for tag in pretrained_tags(arch)]
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_model_info(name: str) -> ModelInfo:
    """Registry entry for ``name`` (a tagged name's architecture); raises :class:`UnknownModelError` with
    suggestions, for an unknown tag too.

    Args:
        name: a registered or tagged name.

    Returns:
        The :class:`ModelInfo`: family, description, input shape, default dataset, constructor.

    >>> get_model_info("aig20.at").input_shape
    (3, 32, 32)
    """
    arch, tag = split_tag(name)
    if tag is not None and arch in _REGISTRY:
        if tag not in pretrained_tags(arch):
            shipped = ", ".join(pretrained_tags(arch)) or "none"
            raise UnknownModelError(f"unknown pretrained tag {tag!r} for {arch}; shipped tags: {shipped}")
        return _REGISTRY[arch]
    if name not in _REGISTRY:
        close = _REGISTRY.close_names(name)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def untrained_model(name: str, **kwargs: Any) -> ResNetBase:
    """A registered model with fresh (untrained) weights; :func:`~aigrobust.models.factory.create_model` adds the
    weights a name ships with.

    Keyword arguments go to the constructor (e.g. ``shortcut="B"``, ``target_rate=0.5``, ``num_classes=100``).
    """
    info = get_model_info(name)
    model = info.builder(**kwargs)
    model.registry_name = info.name  # type: ignore[assignment]
    model.model_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model
