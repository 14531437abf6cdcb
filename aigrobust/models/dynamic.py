"""Any dynamic network in: the protocol the gate attacks, gate stability and FLOPs accounting need of a network that
decides per image which blocks to run, and an adapter that gives it to a user's own network (a SkipNet, a BlockDrop
policy, a ConvNet-AIG variant in their code).

What the evaluation really needs of a gated network, and nothing more (:class:`DynamicNetwork`):

* ``forward(x)``: logits, as the deployed network computes them (closed blocks skipped or masked);
* ``forward_with_gates(x) -> (logits, GateTrace)``: per sample and gated block the decision, the probability of
  'on' (differentiable in the input: the compute and gate-flip attacks ascend it) and the executed FLOPs;
* ``flop_profile(shape)``: FLOPs that always run and each gated block's cost, so that recovery and efficacy can be
  measured against every block open;
* ``set_gate_mode`` / ``gate_settings``: the gate modes and attacker gradient modes it supports, named in
  ``supported_gate_modes`` and ``supported_gate_grads`` (a setting it lacks is refused, never silently ignored).

Our ResNets implement it natively. :class:`GatedAdapter` implements it for a module whose forward returns
``(logits, gate_logits)``, ``gate_logits`` of shape (N, L) holding each gated block's log-odds of running (> 0: it
runs), given the FLOPs of each gated block: hard gates, attacked through the network's own gradient ("exact").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from aigrobust.models.adapter import ModelOutputError
from aigrobust.models.gates import GateGrad, GateMode, GateTrace
from aigrobust.models.layers import FlopProfile, count_flops


@runtime_checkable
class DynamicNetwork(Protocol):
    """What the evaluation needs of a network with per-sample gates (see the module docstring)."""

    is_gated: bool
    registry_name: str

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]: ...

    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile: ...

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None: ...

    def gate_settings(self, mode: Any = None, grad: Any = None, execution: Any = None
                      ) -> contextlib.AbstractContextManager[Any]: ...


class GatedAdapter(nn.Module):
    """A user's dynamic network through :class:`DynamicNetwork`.

    ``module(x)`` must return ``(logits, gate_logits)``: logits (N, classes) of the deployed network and, per sample
    and gated block, the log-odds that the block runs (N, L), computed from the input so that they carry its
    gradient; a block runs where its log-odds are above 0. ``block_flops`` (L values) is what each gated block costs
    one sample when it runs; ``fixed_flops`` what always runs (counted from one pass on a blank image when not
    given: the pass's FLOPs less the blocks that pass ran). Gates are hard; attacks use the network's own gradient
    (``exact``), the only gradient mode an opaque network offers."""

    is_gated = True
    supported_gate_modes = (GateMode.HARD,)
    supported_gate_grads = (GateGrad.EXACT,)

    def __init__(self, module: nn.Module, block_flops: Sequence[float], name: str | None = None,
                 fixed_flops: float | None = None) -> None:
        super().__init__()
        if not block_flops or any(not float(f) > 0 for f in block_flops):
            raise ValueError("block_flops must hold one positive FLOPs count per gated block")
        self.module = module
        self.block_flops = tuple(float(f) for f in block_flops)
        self.fixed_flops = fixed_flops
        self.registry_name = name or type(module).__name__
        self.model_kwargs: dict[str, Any] = {}
        self.gate_mode = GateMode.HARD
        self._profiles: dict[tuple[int, ...], FlopProfile] = {}
        self._classes = 0

    @property
    def num_blocks(self) -> int:
        """Gated blocks."""
        return len(self.block_flops)

    @property
    def num_classes(self) -> int:
        """Classes the module predicts (known once one input shape has been profiled)."""
        if not self._profiles:
            raise ValueError("num_classes is known once one input shape has been seen (call flop_profile(shape))")
        return self._classes

    def _outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.module(x)
        if not (isinstance(out, (tuple, list)) and len(out) >= 2 and all(isinstance(t, Tensor) for t in out[:2])):
            raise ModelOutputError(f"{self.registry_name} must return (logits, gate_logits) for GatedAdapter, got "
                                   f"{type(out).__name__}")
        logits, gate_logits = out[0], out[1]
        if gate_logits.shape != (x.shape[0], self.num_blocks):
            raise ModelOutputError(f"{self.registry_name} returned gate log-odds of shape {tuple(gate_logits.shape)};"
                                   f" ({x.shape[0]}, {self.num_blocks}) were expected (one per gated block)")
        return logits, gate_logits

    def forward(self, x: Tensor) -> Tensor:
        return self._outputs(x)[0]

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """Logits and the trace: decisions (log-odds > 0), p_on (their sigmoid), executed FLOPs per sample."""
        logits, gate_logits = self._outputs(x)
        decisions = gate_logits.detach() > 0
        profile = self.flop_profile(tuple(x.shape[1:]))
        return logits, GateTrace(decisions=decisions, p_on=torch.sigmoid(gate_logits.float()),
                                 gate_values=decisions.to(logits.dtype), flops=profile.executed(decisions))

    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile:
        """Fixed FLOPs and each gated block's, at ``image_shape``."""
        key = tuple(int(s) for s in image_shape)
        if key not in self._profiles:
            param = next(self.module.parameters(), None)
            x = torch.zeros((1, *key), device=param.device if param is not None else "cpu")
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    measured, (logits, gate_logits) = count_flops(self.module, x)
            finally:
                self.train(was_training)
            ran = float((gate_logits[0] > 0).double() @ torch.tensor(self.block_flops, dtype=torch.float64))
            fixed = self.fixed_flops if self.fixed_flops is not None else max(measured - ran, 0.0)
            self._classes = int(logits.shape[-1])
            self._profiles[key] = FlopProfile(key, stem=float(fixed), head=0.0, gates=(), shortcuts=(),
                                              residual=self.block_flops, measured_total=float(fixed) + sum(
                                                  self.block_flops))
        return self._profiles[key]

    def residual_blocks(self) -> list[nn.Module]:
        """None that our tools could reach inside: the module's blocks are its own."""
        return []

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None:
        """Only hard gates: the network decides as it was built to."""
        self.gate_mode = self._checked_mode(mode)

    def _checked_mode(self, mode: GateMode | str) -> GateMode:
        mode = GateMode(mode)
        if mode not in self.supported_gate_modes:
            raise ValueError(f"gate mode {mode.value!r} is not offered by {self.registry_name} (through "
                             f"GatedAdapter: {', '.join(m.value for m in self.supported_gate_modes)})")
        return mode

    @contextlib.contextmanager
    def gate_settings(self, mode: Any = None, grad: Any = None, execution: Any = None) -> Iterator[GatedAdapter]:
        """Check the requested settings against what the adapter offers; nothing to change."""
        if mode is not None:
            self._checked_mode(mode)
        if grad is not None and GateGrad(grad) not in self.supported_gate_grads:
            raise ValueError(f"gate gradient {GateGrad(grad).value!r} is not offered by {self.registry_name} "
                             "(through GatedAdapter: exact)")
        yield self

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._profiles = {}
        return super()._apply(fn, recurse)
