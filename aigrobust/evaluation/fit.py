"""The fit check every evaluation makes before any attack, from the command line and from Python alike: a network is
checked before it is believed. Each failure is one ``ValueError`` line naming what is wrong and what to do."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aigrobust.models.adapter import ModelOutputError
from aigrobust.models.registry import UnknownModelError, get_model_info


def check_fit(name: str, model: nn.Module, images: Tensor, labels: Tensor, deterministic: bool = True) -> None:
    """Two clean passes of a few images through ``model`` (already in eval mode): the images' shape fits it, its
    logits are floating point, (N, classes), on the model's device and finite, every label names one of its classes,
    the two passes agree (``deterministic``: a hard-gated or plain network), and the forward leaves the model in eval
    mode with its buffers unchanged (no batch statistics updated behind the attacks)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: a model must be a torch nn.Module (or a registered name), got {type(model).__name__}")
    probe = images[:2].detach()
    device = next(model.parameters(), probe).device
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        with torch.no_grad():
            first = model(probe.to(device))
            second = model(probe.to(device))
    except ModelOutputError:
        raise  # already one line naming the network and what to give
    except (RuntimeError, ValueError, TypeError) as err:
        said = str(err).splitlines()[0] if str(err) else "(no message)"
        raise ValueError(f"{name} failed on two clean images of shape {tuple(probe.shape[1:])} ({type(err).__name__}: "
                         f"{said}): the images do not fit it{channels_last_hint(images)}, or its code fails "
                         "before any attack") from None
    _check_logits(name, first, len(probe), device)
    if not bool(torch.isfinite(first).all()):
        raise ValueError(f"{name} gives non-finite logits (NaN or inf) on clean images: every attack would be "
                         "meaningless (no gradient moves a NaN); fix the network or its weights")
    if deterministic and not torch.equal(first, second):
        raise ValueError(f"{name} gives different logits in two passes on the same images (random layers, or state "
                         "kept between calls): evaluate it with stochastic gates and EOT, or make it deterministic")
    if any(m.training for m in model.modules()):
        raise ValueError(f"{name} switched itself to training mode during a forward: its batch statistics would "
                         "change under attack; keep it in eval mode")
    if any(not torch.equal(a, b.detach()) for a, b in zip(buffers, model.buffers())):
        raise ValueError(f"{name} changed its buffers (e.g. batch-norm running statistics) during a forward in eval "
                         "mode: its outputs would depend on what ran before; keep them fixed at evaluation")
    n_classes = int(first.shape[-1])
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1} ({name} predicts {n_classes} classes), got "
                         f"{int(labels.min())}..{int(labels.max())}")


def declared_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The (C, H, W) a registered model takes; None for a user's network (its first pass says what fits)."""

    try:
        return tuple(get_model_info(str(getattr(model, "registry_name", ""))).input_shape)
    except UnknownModelError:
        return None


def channels_last_hint(images: Tensor) -> str:
    """What to say where (N, H, W, 3) images were given for (N, 3, H, W)."""
    return " (channels last? permute(0, 3, 1, 2))" if images.shape[-1] == 3 and images.shape[1] != 3 else ""


def _check_logits(name: str, logits: object, n: int, device: torch.device) -> None:
    """Floating (N, classes) logits on the model's device."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} returns a {type(logits).__name__}, not a tensor of logits (a network returning a "
                         "tuple: give the element that holds the logits)")
    if not logits.is_floating_point():
        raise ValueError(f"{name} returns {logits.dtype} logits: attacks need floating-point logits to differentiate")
    if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(f"{name} returns logits of shape {tuple(logits.shape)} for {n} images: expected ({n}, "
                         "classes) with at least two classes")
    if logits.device != device:
        raise ValueError(f"{name} returns logits on {logits.device} for a model on {device}: keep them on one device")
