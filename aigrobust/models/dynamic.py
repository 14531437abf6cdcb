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

Our ResNets (gated and early-exit) implement it natively. :class:`GatedAdapter` implements it for a module whose
forward returns ``(logits, gate_logits)``, ``gate_logits`` of shape (N, L) holding each gated block's log-odds of
running (> 0: it runs), given the FLOPs of each gated block: hard gates, attacked through the network's own gradient
("exact"). :class:`EarlyExitAdapter` implements it for an early-exit network whose forward returns
``(final_logits, exit_logits)``, given the FLOPs of each segment after an exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from aigrobust.models.adapter import ModelOutputError
from aigrobust.models.early_exit import (
    EXIT_CRITERIA,
    continue_margin,
    exit_logits_as_deployed,
    exit_trace,
    first_exit,
)
from aigrobust.models.gates import GateConfig, GateExecution, GateGrad, GateMode, GateTrace
from aigrobust.models.layers import FlopProfile, count_flops


@runtime_checkable
class DynamicNetwork(Protocol):
    """What the evaluation needs of a network with per-sample gates or exits (see the module docstring).

    A structural type: any module with these methods is evaluated as a dynamic network (the shipped families, and
    a user's through :class:`GatedAdapter` or :class:`EarlyExitAdapter`).

    >>> from aigrobust import create_model
    >>> isinstance(create_model("aig20"), DynamicNetwork)
    True
    """

    is_gated: bool
    registry_name: str

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]: ...

    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile: ...

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None: ...

    def gate_settings(self, mode: Any = None, grad: Any = None, execution: Any = None
                      ) -> contextlib.AbstractContextManager[Any]: ...


class UserNetworkAdapter(nn.Module):
    """What both adapters share: the user's module, its name, its FLOPs profiles and the class count they reveal."""

    is_gated = True

    def __init__(self, module: nn.Module, name: str | None) -> None:
        super().__init__()
        self.module = module
        self.registry_name = name or type(module).__name__
        self.model_kwargs: dict[str, Any] = {}
        self._profiles: dict[tuple[int, ...], FlopProfile] = {}
        self._classes = 0

    @property
    def num_classes(self) -> int:
        """Classes the module predicts (known once one input shape has been profiled)."""
        if not self._profiles:
            raise ValueError("num_classes is known once one input shape has been seen (call flop_profile(shape))")
        return self._classes

    def _pair(self, x: Tensor, adapter: str, wanted: str) -> tuple[Tensor, Tensor]:
        """The module's two outputs on ``x``, or a ModelOutputError naming what was ``wanted``."""
        out = self.module(x)
        if not (isinstance(out, (tuple, list)) and len(out) >= 2 and all(isinstance(t, Tensor) for t in out[:2])):
            raise ModelOutputError(f"{self.registry_name} must return {wanted} for {adapter}, got "
                                   f"{type(out).__name__}")
        return out[0], out[1]

    def residual_blocks(self) -> list[nn.Module]:
        """None that our tools could reach inside: the module's blocks are its own."""
        return []

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._profiles = {}
        return super()._apply(fn, recurse)


class GatedAdapter(UserNetworkAdapter):
    """A user's dynamic network through :class:`DynamicNetwork`.

    Gates are hard; attacks use the network's own gradient (``exact``), the only gradient mode an opaque network
    offers.

    Args:
        module: ``module(x)`` returns ``(logits, gate_logits)``: logits (N, classes) of the deployed network and,
            per sample and gated block, the log-odds that the block runs (N, L), computed from the input so that they
            carry its gradient; a block runs where its log-odds are above 0.
        block_flops: (L values) what each gated block costs one sample when it runs.
        name: the label in records and reports (default: the module's class name).
        fixed_flops: what always runs (counted from one pass on a blank image when not given: the pass's FLOPs less
            the blocks that pass ran).

    >>> import torch
    >>> class TwoGates(torch.nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.body, self.gates = torch.nn.Linear(3 * 8 * 8, 10), torch.nn.Linear(3 * 8 * 8, 2)
    ...     def forward(self, x):
    ...         return self.body(x.flatten(1)), self.gates(x.flatten(1))
    >>> gated = GatedAdapter(TwoGates(), block_flops=[1000.0, 2000.0], fixed_flops=500.0)
    >>> logits, trace = gated.forward_with_gates(torch.rand(4, 3, 8, 8))
    >>> trace.decisions.shape
    torch.Size([4, 2])
    """

    supported_gate_modes = (GateMode.HARD,)
    supported_gate_grads = (GateGrad.EXACT,)

    def __init__(self, module: nn.Module, block_flops: Sequence[float], name: str | None = None,
                 fixed_flops: float | None = None) -> None:
        super().__init__(module, name)
        if not block_flops or any(not float(f) > 0 for f in block_flops):
            raise ValueError("block_flops must hold one positive FLOPs count per gated block")
        self.block_flops = tuple(float(f) for f in block_flops)
        self.fixed_flops = fixed_flops
        self.gate_mode = GateMode.HARD

    @property
    def num_blocks(self) -> int:
        """Gated blocks."""
        return len(self.block_flops)

    def _outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, gate_logits = self._pair(x, "GatedAdapter", "(logits, gate_logits)")
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


class EarlyExitAdapter(UserNetworkAdapter):
    """A user's early-exit network through :class:`~aigrobust.models.dynamic.DynamicNetwork`.

    The adapter decides the exit each image takes (as :class:`~aigrobust.models.early_exit.EarlyExitResNet` does)
    and accounts the FLOPs the deployed network would run. A trace's units are the K segments. All three gate
    gradients apply (every exit is computed); modes ``hard`` and ``open``.

    Args:
        module: ``module(x)`` returns ``(final_logits, exit_logits)``: the final classifier's logits (N, C) and every
            internal classifier's (N, K, C), all computed.
        segment_flops: (K values) what runs for an image that continues past exit k, up to and including the next
            exit (the last: the final classifier).
        threshold: an image leaves at the first exit whose ``criterion`` passes it.
        criterion: ``confidence`` (the largest softmax probability, at or above the threshold leaves) or
            ``entropy`` (the entropy over log(classes), at or below it leaves).
        name: the label in records and reports (default: the module's class name).
        fixed_flops: what runs before the first exit decision (counted from one pass when not given: the pass's
            FLOPs less the segments).

    >>> import torch
    >>> class OneExit(torch.nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.early, self.final = torch.nn.Linear(3 * 8 * 8, 10), torch.nn.Linear(3 * 8 * 8, 10)
    ...     def forward(self, x):
    ...         return self.final(x.flatten(1)), self.early(x.flatten(1)).unsqueeze(1)
    >>> exiting = EarlyExitAdapter(OneExit(), segment_flops=[4000.0], threshold=0.5, fixed_flops=1000.0)
    >>> logits, trace = exiting.forward_with_gates(torch.rand(4, 3, 8, 8))
    >>> logits.shape
    torch.Size([4, 10])
    """

    supported_gate_modes = (GateMode.HARD, GateMode.OPEN)
    supported_gate_grads = (GateGrad.EXACT, GateGrad.STRAIGHT_THROUGH, GateGrad.SOFT)

    def __init__(self, module: nn.Module, segment_flops: Sequence[float], threshold: float,
                 criterion: str = "confidence", name: str | None = None, fixed_flops: float | None = None) -> None:
        super().__init__(module, name)
        if not segment_flops or any(not float(f) > 0 for f in segment_flops):
            raise ValueError("segment_flops must hold one positive FLOPs count per exit")
        if criterion not in EXIT_CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(EXIT_CRITERIA)}, got {criterion!r}")
        self.segment_flops = tuple(float(f) for f in segment_flops)
        self.threshold, self.criterion, self.fixed_flops = float(threshold), criterion, fixed_flops
        self.gate_config = GateConfig()

    @property
    def num_blocks(self) -> int:
        """Trace units: the segments after each exit."""
        return len(self.segment_flops)

    def _outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        final, exits = self._pair(x, "EarlyExitAdapter", "(final_logits, exit_logits)")
        if exits.dim() != 3 or exits.shape[:2] != (x.shape[0], self.num_blocks) or exits.shape[2] != final.shape[1]:
            raise ModelOutputError(f"{self.registry_name} returned exit logits of shape {tuple(exits.shape)}; "
                                   f"({x.shape[0]}, {self.num_blocks}, {final.shape[1]}) were expected (one row of "
                                   "logits per exit)")
        return final.float(), exits.float()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_gates(x)[0]

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """Logits of the exit each image takes (as the gate gradient says) and the trace."""
        final, exit_logits = self._outputs(x)
        profile = self.flop_profile(tuple(x.shape[1:]))
        margins = continue_margin(exit_logits, self.threshold, self.criterion)
        taken = first_exit(margins <= 0)
        trace = exit_trace(margins, taken, exit_logits, range(self.num_blocks), profile)
        return exit_logits_as_deployed(exit_logits, final, margins, taken, trace, self.gate_config, profile)

    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile:
        """Fixed FLOPs and each segment's, at ``image_shape``."""
        key = tuple(int(s) for s in image_shape)
        if key not in self._profiles:
            param = next(self.module.parameters(), None)
            x = torch.zeros((1, *key), device=param.device if param is not None else "cpu")
            with torch.no_grad():
                measured, (final, _) = count_flops(self.module, x)
            self._classes = int(final.shape[-1])
            fixed = self.fixed_flops if self.fixed_flops is not None else max(measured - sum(self.segment_flops), 0.0)
            self._profiles[key] = FlopProfile(key, stem=float(fixed), head=0.0, gates=(), shortcuts=(),
                                              residual=self.segment_flops,
                                              measured_total=float(fixed) + sum(self.segment_flops))
        return self._profiles[key]

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None:
        """``hard`` (exit at the first confident classifier) or ``open`` (never exit early)."""
        mode = GateMode(mode)
        if mode not in self.supported_gate_modes:
            raise ValueError(f"gate mode {mode.value!r} is not offered by {self.registry_name} (through "
                             f"EarlyExitAdapter: {', '.join(m.value for m in self.supported_gate_modes)})")
        self.gate_config = dataclasses.replace(self.gate_config, mode=mode)

    @contextlib.contextmanager
    def gate_settings(self, mode: GateMode | str | None = None, grad: GateGrad | str | None = None,
                      execution: GateExecution | str | None = None) -> Iterator[EarlyExitAdapter]:
        """Change the mode and gradient for the block; the previous ones back on exit."""
        saved = self.gate_config
        try:
            if mode is not None:
                self.set_gate_mode(mode)
            if grad is not None:
                self.gate_config = dataclasses.replace(self.gate_config, grad=GateGrad(grad))
            if execution is not None:
                self.gate_config = dataclasses.replace(self.gate_config, execution=GateExecution(execution))
            yield self
        finally:
            self.gate_config = saved
