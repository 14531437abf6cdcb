"""Any classifier in: a plain ``nn.Module`` that maps [0, 1] images to logits, seen through the small interface the
evaluation needs of a model (logits, a gate trace, FLOPs per sample, gate settings), as a network without gates.

``as_evaluable(module)`` returns our own networks unchanged and wraps anything else in :class:`PlainModel`; a
module that expects normalised input goes in as ``normalized(module, mean, std)``, as foolbox and RobustBench
expect normalisation inside the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aigrobust.errors import AigrobustError
from aigrobust.models.gates import GateMode, GateTrace
from aigrobust.models.layers import FlopProfile, InputNormalization, count_flops


class ModelOutputError(AigrobustError, TypeError):
    """A model whose forward does not return one logits tensor (a tuple, a dict): the message says what to do."""


class PlainModel(nn.Module):
    """A user's classifier as a network without gates.

    Every attack on accuracy, clean and robust accuracy and its static FLOPs per sample work on it; gate modes other
    than hard/open are refused where they would be silently ignored.

    Args:
        module: any PyTorch classifier taking images in [0, 1] (wrap it with :func:`normalized` if it expects
            normalised inputs).
        name: the label in records and reports (default: the module's class name).
        output_index: where the module returns a tuple or list (``(logits, extra)``), the element holding the
            logits; without it such a module is refused with one line.

    >>> import torch
    >>> plain = PlainModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), name="linear")
    >>> plain(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    is_gated = False
    num_blocks = 0

    def __init__(self, module: nn.Module, name: str | None = None, output_index: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.output_index = output_index
        self.registry_name = name or type(module).__name__
        self.model_kwargs: dict[str, Any] = {}
        self.gate_mode = GateMode.HARD
        self._flop_profiles: dict[tuple[int, ...], FlopProfile] = {}

    @property
    def num_classes(self) -> int:
        """Classes the module predicts (its output width on one image of the shape last profiled)."""
        if not self._flop_profiles:
            raise ValueError("num_classes is known once one input shape has been seen (call flop_profile(shape))")
        return self._classes

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if self.output_index is not None and isinstance(out, (tuple, list)):
            if not -len(out) <= self.output_index < len(out):
                raise ModelOutputError(f"{self.registry_name} returns {len(out)} outputs: output_index "
                                       f"(--output-index) {self.output_index} names none of them; give 0 to "
                                       f"{len(out) - 1}")
            out = out[self.output_index]
        if not isinstance(out, Tensor):
            kind = type(out).__name__
            raise ModelOutputError(f"{self.registry_name} returns a {kind}, not a logits tensor: wrap it so forward "
                                   "returns the logits, or give output_index=K (--output-index K) for the element "
                                   "holding them")
        if out.dim() != 2:
            raise ModelOutputError(f"{self.registry_name} returns a tensor of shape {tuple(out.shape)}; logits of "
                                   "shape (N, classes) are needed")
        return out

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """Logits and an empty trace (no gated blocks); every sample executes the module's full FLOPs."""
        logits = self(x)
        n = x.shape[0]
        empty = torch.zeros((n, 0), device=x.device)
        full = self.flop_profile(tuple(x.shape[1:])).full
        return logits, GateTrace(decisions=empty.bool(), p_on=empty, gate_values=empty,
                                 flops=torch.full((n,), full, dtype=torch.float64, device=x.device))

    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile:
        """The module's FLOPs per sample at ``image_shape``, counted once by torch's flop counter."""
        key = tuple(int(s) for s in image_shape)
        if key not in self._flop_profiles:
            param = next(self.module.parameters(), None)
            x = torch.zeros((1, *key), device=param.device if param is not None else "cpu",
                            dtype=param.dtype if param is not None else torch.float32)
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    flops, out = count_flops(self, x)
            finally:
                self.train(was_training)
            self._classes = int(out.shape[-1])
            self._flop_profiles[key] = FlopProfile(key, stem=flops, head=0.0, gates=(), shortcuts=(), residual=(),
                                                   measured_total=flops)
        return self._flop_profiles[key]

    def residual_blocks(self) -> list[nn.Module]:
        """None: the module has no gated residual blocks."""
        return []

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None:
        """Only 'hard' (the default) and 'open' mean anything without gates."""
        mode = GateMode(mode)
        if mode not in (GateMode.HARD, GateMode.OPEN):
            raise ValueError(f"gate mode {mode.value!r} needs gates, and {self.registry_name} has none")
        self.gate_mode = mode

    @contextlib.contextmanager
    def gate_settings(self, mode: Any = None, grad: Any = None, execution: Any = None) -> Iterator[PlainModel]:
        """Nothing to change without gates (the same call as on a gated network)."""
        yield self

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._flop_profiles = {}
        return super()._apply(fn, recurse)


def normalized(module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """``module`` behind a normalisation layer, for a classifier trained on normalised input: the result takes
    [0, 1] images, as every attack here does.

    Args:
        module: the classifier, expecting ``(x - mean) / std``.
        mean: the per-channel mean it was trained with.
        std: the per-channel standard deviation it was trained with.

    Returns:
        An ``nn.Sequential`` of the normalisation and ``module``.

    >>> import torch
    >>> net = normalized(torch.nn.Flatten(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    >>> net(torch.full((1, 3, 1, 1), 0.75)).tolist()
    [[1.0, 1.0, 1.0]]
    """
    return nn.Sequential(InputNormalization(mean, std), module)


def as_evaluable(module: nn.Module, name: str | None = None, output_index: int | None = None) -> nn.Module:
    """Our networks (and any module offering ``forward_with_gates`` and ``flop_profile``) as they are; anything
    else as a :class:`PlainModel`.

    Args:
        module: the network; it takes [0, 1] images (see :func:`normalized`).
        name: the name its records carry (default: the class name).
        output_index: which output holds the logits, for a module returning several (a tuple or a list).

    Returns:
        A module the evaluation can run: per-sample gate traces and FLOPs (for a plain network, one fixed cost).

    >>> import torch
    >>> net = as_evaluable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)))
    >>> type(net).__name__, net.is_gated
    ('PlainModel', False)
    """
    if hasattr(module, "forward_with_gates") and hasattr(module, "flop_profile") and hasattr(module, "is_gated"):
        return module
    return PlainModel(module, name=name, output_index=output_index)
