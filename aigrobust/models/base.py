"""The shared machinery of plain and gated ResNets: normalisation, gate modes, gated forward, traces and FLOPs."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.models.gates import (
    GateConfig,
    GateExecution,
    GateGrad,
    GateMode,
    GateTrace,
    gumbel_straight_through,
)
from aigrobust.models.layers import FlopProfile, InputNormalization, ResidualBlock, count_flops
from aigrobust.randomness import input_row_keys, keyed_uniform


class ResNetBase(nn.Module):
    """Base class of every network in aigrobust: plain and gated ResNets share one forward.

    ``model(x)`` takes [0, 1] images and returns logits only; ``model.forward_with_gates(x)`` also returns a
    :class:`GateTrace`. Plain ResNets report every gate open.
    """

    num_classes: int

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        # one frozen value, replaced whole; stochastic eval draws are keyed by (seed, input row, draw_key, block),
        # not drawn from the generator: a row's gates then do not depend on its batch
        self.gate_config = GateConfig()
        self._gate_generator = torch.Generator().manual_seed(self.gate_config.seed)
        self._flop_profiles: dict[tuple[int, ...], FlopProfile] = {}
        self.target_rates: tuple[float, ...] = ()

    # --- structure, provided by each family -------------------------------------------------------------------
    def stem(self, x: Tensor) -> Tensor:
        """Everything before the first residual block (on normalised input)."""
        raise NotImplementedError

    def head(self, x: Tensor) -> Tensor:
        """Everything after the last residual block: pooling and classifier."""
        raise NotImplementedError

    def residual_blocks(self) -> list[ResidualBlock]:
        """The residual blocks in forward order."""
        return [m for m in self.modules() if isinstance(m, ResidualBlock)]

    @property
    def is_gated(self) -> bool:
        """True when at least one block has a gate."""
        return any(b.gate is not None for b in self.residual_blocks())

    @property
    def num_blocks(self) -> int:
        """Number of residual blocks (the L of a trace)."""
        return len(self.residual_blocks())

    @property
    def decided_blocks(self) -> int:
        """Blocks that a per-image decision may skip (here the gated ones)."""
        return sum(b.gate is not None for b in self.residual_blocks())

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the gates (the reference code trains them with their own learning-rate factor)."""
        for block in self.residual_blocks():
            if block.gate is not None:
                yield from block.gate.parameters()

    def is_decision_state(self, key: str) -> bool:
        """Whether a state-dict key belongs to the parts that decide what runs (gates here, exits in early-exit
        networks): starting from a plain network's weights, these keep their fresh initialisation."""
        return ".gate." in key

    def auxiliary_loss(self, trace: GateTrace, labels: Tensor) -> Tensor | None:
        """A training loss beyond the final classifier's cross-entropy (an early-exit network's exits); None here."""
        return None

    # --- gate settings: views of the one GateConfig, and the ways to replace it ------------------------------------
    @property
    def gate_mode(self) -> GateMode:
        """How gates decide in eval (the current GateConfig's)."""
        return self.gate_config.mode

    @property
    def gate_grad(self) -> GateGrad:
        """How an attacker's gradient passes a hard gate (the current GateConfig's)."""
        return self.gate_config.grad

    @property
    def draw_key(self) -> str:
        """The name of the current stochastic draw (aigrobust.randomness.keyed_draw sets it, replacing the config)."""
        return self.gate_config.draw_key

    @draw_key.setter
    def draw_key(self, key: str) -> None:
        self.gate_config = dataclasses.replace(self.gate_config, draw_key=str(key))

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None:
        """Choose the eval-time gate mode; ``seed`` re-seeds the generator of stochastic draws."""
        mode = GateMode(mode)
        if mode is GateMode.TRAIN:
            raise ValueError("'train' is the mode of model.train(); pick hard, stochastic, soft or open for eval")
        self.gate_config = dataclasses.replace(self.gate_config, mode=mode)
        if seed is not None:
            self.reset_gate_generator(seed)

    def set_gate_grad(self, grad: GateGrad | str) -> None:
        """Choose how an attacker's gradient passes a hard gate decision."""
        self.gate_config = dataclasses.replace(self.gate_config, grad=GateGrad(grad))

    def reset_gate_generator(self, seed: int) -> None:
        """Re-seed the Gumbel draws: the generator of training and the key of stochastic eval's draws."""
        self.gate_config = dataclasses.replace(self.gate_config, seed=int(seed))
        self._gate_generator.manual_seed(int(seed))

    def gate_generator_state(self) -> Tensor:
        """State of the Gumbel generator, for resumable training."""
        return self._gate_generator.get_state()

    def set_gate_generator_state(self, state: Tensor) -> None:
        """Restore the Gumbel generator's state."""
        self._gate_generator.set_state(state)

    @contextlib.contextmanager
    def gate_settings(
        self,
        mode: GateMode | str | None = None,
        grad: GateGrad | str | None = None,
        execution: GateExecution | str | None = None,
    ) -> Iterator[ResNetBase]:
        """Temporarily change gate mode, gradient mode and/or execution: one new GateConfig for the block, the
        previous one back on exit."""
        saved = self.gate_config
        try:
            if mode is not None:
                self.set_gate_mode(mode)
            if grad is not None:
                self.set_gate_grad(grad)
            if execution is not None:
                self.gate_config = dataclasses.replace(self.gate_config, execution=GateExecution(execution))
            yield self
        finally:
            self.gate_config = saved

    # --- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        config = self.gate_config
        if self._decides_only(config):
            return self._run_decisions_only(x)
        logits, _, _, _ = self._run(x, config)
        return logits

    def _decides_only(self, config: GateConfig) -> bool:
        # Logits alone under deterministic hard gates with exact gradients: no trace is wanted, so the per-block
        # softmax and gate values can be skipped (they cost as much as a small block at batch 1).
        return (not self.training and config.mode is GateMode.HARD and config.grad is GateGrad.EXACT
                and config.execution is GateExecution.SKIP)

    def _run_decisions_only(self, x: Tensor) -> Tensor:
        h = self.stem(self.normalize(x))
        for block in self.residual_blocks():
            if block.gate is None:
                h = F.relu(block.shortcut_path(h) + block.residual(h))
                continue
            logits = block.gate.eval_logits(h)
            is_open = logits[:, 1] > logits[:, 0]
            if h.shape[0] == 1:
                # batch 1 (or any batch that agrees): run or skip the whole block, no gather or scatter
                if bool(is_open):
                    h = F.relu(block.shortcut_path(h) + block.residual(h))
                elif not block.has_identity_shortcut:
                    h = F.relu(block.shortcut_path(h))
                # a closed block with an identity shortcut returns relu(h) = h: features are already >= 0
                continue
            if torch.is_grad_enabled():
                h = F.relu(self._skip_closed(block, h, block.shortcut_path(h), is_open))
            else:
                h = self._skip_closed_in_place(block, h, is_open)
        return self.head(h)

    @staticmethod
    def _skip_closed_in_place(block: ResidualBlock, x: Tensor, is_open: Tensor) -> Tensor:
        """:meth:`_skip_closed` plus the ReLU without autograd: the branch is added into the shortcut in place, which
        saves two passes over the batch's features (the forward owns ``x``: it is its own intermediate)."""
        index = is_open.nonzero().squeeze(1)
        if index.numel() == 0:
            return x if block.has_identity_shortcut else F.relu(block.shortcut_path(x))
        if index.numel() == x.shape[0]:
            return block.residual(x).add_(block.shortcut_path(x)).relu_()
        branch = block.residual(x.index_select(0, index))
        return block.shortcut_path(x).index_add_(0, index, branch.to(x.dtype)).relu_()

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """Logits and the per-sample gate trace, in one pass.

        Args:
            x: images in [0, 1], (N, 3, H, W); the network normalises them itself.

        Returns:
            The logits (N, classes) and a :class:`~aigrobust.models.gates.GateTrace` (decisions, p_on, applied gate
            values, executed FLOPs per sample).

        >>> import torch
        >>> from aigrobust import create_model
        >>> logits, trace = create_model("aig20", pretrained=True).eval().forward_with_gates(torch.rand(2, 3, 32, 32))
        >>> logits.shape, trace.decisions.shape
        (torch.Size([2, 10]), torch.Size([2, 9]))
        """
        profile = self.flop_profile(tuple(x.shape[1:]))
        logits, decisions, p_on, values = self._run(x, self.gate_config)
        decided = torch.stack(decisions, dim=1)
        trace = GateTrace(
            decisions=decided,
            p_on=torch.stack(p_on, dim=1),
            gate_values=torch.stack(values, dim=1),
            flops=profile.executed(decided),
        )
        return logits, trace

    def _run(self, x: Tensor, config: GateConfig) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """The forward under one GateConfig, read once: what a block does depends on its input, the config and
        (in training) the Gumbel generator, nothing set on the model along the way."""
        keyed = not self.training and config.mode is GateMode.STOCHASTIC and self.is_gated
        row_keys = input_row_keys(x) if keyed else None
        h = self.stem(self.normalize(x))
        decisions: list[Tensor] = []
        p_on: list[Tensor] = []
        values: list[Tensor] = []
        for index, block in enumerate(self.residual_blocks()):
            h, d, p, v = self._run_block(block, h, index, config, row_keys)
            decisions.append(d)
            p_on.append(p)
            values.append(v)
        return self.head(h), decisions, p_on, values

    def _effective_mode(self, config: GateConfig) -> GateMode:
        if self.training:
            return GateMode.TRAIN
        if config.mode in (GateMode.HARD, GateMode.STOCHASTIC) and config.grad is GateGrad.SOFT:
            # The soft gradient mode is a surrogate network: its forward is the soft-gated one.
            return GateMode.SOFT
        return config.mode

    def _gumbel(self, logits: Tensor, block_index: int, config: GateConfig, row_keys: Tensor | None) -> Tensor:
        if self.training or row_keys is None:
            # Training: drawn on the CPU from one seeded generator, so draws repeat across devices and on resume.
            uniform = torch.rand(tuple(logits.shape), generator=self._gate_generator).to(logits.device)
        else:
            uniform = keyed_uniform(row_keys, config.seed, f"{config.draw_key}/{block_index}", tuple(logits.shape))
        return gumbel_straight_through(logits, uniform)

    def _run_block(self, block: ResidualBlock, x: Tensor, block_index: int, config: GateConfig,
                   row_keys: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n = x.shape[0]
        shortcut = block.shortcut_path(x)
        mode = self._effective_mode(config)
        gate = block.gate
        if gate is None or mode is GateMode.OPEN:
            ones = torch.ones(n, device=x.device)
            p_on = ones if gate is None else F.softmax(gate(x).float(), dim=1)[:, 1]
            out = shortcut + block.residual(x)
            return F.relu(out), ones.bool(), p_on, ones

        logits = gate(x).float()
        p_on = F.softmax(logits, dim=1)[:, 1]
        if mode is GateMode.TRAIN:
            # Every branch runs (BatchNorm needs the whole batch); the sample multiplies it, straight-through.
            g = self._gumbel(logits, block_index, config, row_keys)
            out = shortcut + g.to(x.dtype).view(-1, 1, 1, 1) * block.residual(x)
            return F.relu(out), g.detach() > 0.5, p_on, g
        if mode is GateMode.SOFT:
            out = shortcut + p_on.to(x.dtype).view(-1, 1, 1, 1) * block.residual(x)
            return F.relu(out), torch.ones(n, dtype=torch.bool, device=x.device), p_on, p_on

        if mode is GateMode.STOCHASTIC:
            straight_through = self._gumbel(logits, block_index, config, row_keys)
            is_open = straight_through.detach() > 0.5
        else:  # HARD: deterministic
            is_open = logits[:, 1] > logits[:, 0]
            hard = is_open.to(p_on.dtype)
            straight_through = hard + (p_on - p_on.detach())

        if config.grad is GateGrad.STRAIGHT_THROUGH:
            # The softmax gradient needs F(x) for closed samples too, so every branch is computed.
            out = shortcut + straight_through.to(x.dtype).view(-1, 1, 1, 1) * block.residual(x)
            return F.relu(out), is_open, p_on, straight_through
        hard_values = is_open.to(p_on.dtype)
        if config.execution is GateExecution.MASK:
            out = shortcut + hard_values.to(x.dtype).view(-1, 1, 1, 1) * block.residual(x)
            return F.relu(out), is_open, p_on, hard_values
        return F.relu(self._skip_closed(block, x, shortcut, is_open)), is_open, p_on, hard_values

    @staticmethod
    def _skip_closed(block: ResidualBlock, x: Tensor, shortcut: Tensor, is_open: Tensor) -> Tensor:
        """shortcut + F(x) on the open samples only; F never runs for a closed sample (autograd still works)."""
        n_open = int(is_open.sum())
        if n_open == x.shape[0]:
            return shortcut + block.residual(x)
        if n_open == 0:
            return shortcut
        index = is_open.nonzero().squeeze(1)
        branch = block.residual(x.index_select(0, index))
        return shortcut.index_add(0, index, branch.to(shortcut.dtype))

    # --- FLOPs ------------------------------------------------------------------------------------------------
    def flop_profile(self, image_shape: tuple[int, ...]) -> FlopProfile:
        """Per-sample FLOPs of each part for images of ``image_shape`` (C, H, W), measured once and cached."""
        key = tuple(int(s) for s in image_shape)
        if key in self._flop_profiles:
            return self._flop_profiles[key]
        was_training = self.training
        param = next(self.parameters())
        self.eval()
        try:
            with torch.no_grad():
                profile = self._measure_flop_profile(torch.zeros((1, *key), device=param.device, dtype=param.dtype))
        finally:
            self.train(was_training)
        self._flop_profiles[key] = profile
        return profile

    def _measure_flop_profile(self, x: Tensor) -> FlopProfile:
        """Count each part's FLOPs on one blank image ``x`` (in eval mode, without autograd)."""
        with self.gate_settings(mode=GateMode.OPEN):
            h = self.normalize(x)
            stem, h = count_flops(self.stem, h)
            gates, shortcuts, residual = [], [], []
            for index, block in enumerate(self.residual_blocks()):
                gate_flops = count_flops(block.gate, h)[0] if block.gate is not None else 0.0
                shortcut_flops, _ = count_flops(block.shortcut_path, h)
                residual_flops, _ = count_flops(block.residual, h)
                gates.append(gate_flops)
                shortcuts.append(shortcut_flops)
                residual.append(residual_flops)
                h = self._run_block(block, h, index, self.gate_config, None)[0]
            head, _ = count_flops(self.head, h)
            measured_total, _ = count_flops(self, x)
        return FlopProfile(tuple(x.shape[1:]), stem, head, tuple(gates), tuple(shortcuts), tuple(residual),
                           measured_total)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        # Moving or casting the model invalidates nothing in FLOP counts, but keep caches simple and exact.
        self._flop_profiles = {}
        return super()._apply(fn, recurse)
