"""A user's own network on the command line: ``--model-code mypkg.nets:build --checkpoint PATH``.

``mypkg.nets:build`` is an import path and a callable in it (as uvicorn and gunicorn take an app); calling it with
no arguments returns the ``nn.Module``. Importing the module runs its code: give only code you trust. The weights
file is a state dict, read with ``weights_only=True`` (torch) or as safetensors, never an unrestricted pickle.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from aigrobust.errors import AigrobustError, CheckpointError
from aigrobust.models.adapter import as_evaluable
from aigrobust.models.checkpoints import is_safetensors
from aigrobust.models.dynamic import UserNetworkAdapter

CODE_PREFIX = "code:"  # how run.json names a model built from user code: code:IMPORT.PATH:CALLABLE


class ModelCodeError(AigrobustError, ValueError):
    """An import path that does not name a callable returning an nn.Module; the message is one line."""


def build_from_code(target: str) -> nn.Module:
    """Import ``module.path:callable`` and call it; the module it returns, in eval mode."""
    module_path, sep, attribute = target.partition(":")
    if not sep or not module_path or not attribute:
        raise ModelCodeError(f"--model-code {target!r}: give MODULE:CALLABLE, e.g. mypkg.nets:build")
    if "" not in sys.path:  # the working directory, as `python -m` and uvicorn search it
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_path)
    except Exception as err:  # noqa: BLE001  (the user's module may raise anything while it is imported)
        raise ModelCodeError(f"--model-code {target}: cannot import {module_path} ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise ModelCodeError(f"--model-code {target}: {module_path} has no callable {attribute!r}")
    try:
        model = factory()
    except Exception as err:  # noqa: BLE001
        raise ModelCodeError(f"--model-code {target}: calling {attribute}() raised {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(model, nn.Module):
        raise ModelCodeError(f"--model-code {target}: {attribute}() returned a {type(model).__name__}, not an "
                             "nn.Module")
    return model.eval()


def read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from safetensors or a torch file (weights_only); a {'state_dict': ...} wrapper is unwrapped."""

    try:
        if is_safetensors(path):
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch and safetensors raise many types for a bad file)
        raise CheckpointError(f"{path}: not a readable state dict ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_user_model(target: str, weights: Path | None, output_index: int | None = None) -> tuple[nn.Module, str]:
    """The user's network with its weights (strictly matched), wrapped for evaluation, and the weights file's
    sha256 ('' without a file: the callable's own initialisation)."""

    model = build_from_code(target)
    digest = ""
    if weights is not None:
        state = read_state_dict(weights)
        # a dynamic network's own state dict goes into the network inside its adapter
        holder = (model.module if isinstance(model, UserNetworkAdapter) and not all(k.startswith("module.") for k in state)
                  else model)
        try:
            holder.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{weights} does not fit {target}: {str(err).splitlines()[0]}") from None
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    wrapped = as_evaluable(model, name=target, output_index=output_index)
    wrapped.registry_name = CODE_PREFIX + target  # type: ignore[assignment]
    return wrapped.eval(), digest
