"""Early-exit CIFAR ResNets: Shallow-Deep Networks (Kaya et al., ICML 2019) on the CIFAR ResNet backbone.

Internal classifiers ("exits") sit after chosen residual blocks; an image leaves at the first exit whose prediction
is confident enough (max softmax at or above the threshold, or normalised entropy at or below it), and the blocks
after that exit never run for it. The network speaks the same :class:`~aigrobust.models.dynamic.DynamicNetwork`
protocol as a gated ResNet, so every attack, record, metric and report treats exits as gates:

* a trace's unit is a residual block; ``decisions[n, b]`` says whether image ``n`` reached block ``b`` (blocks
  before the first exit always run), so the gate pattern of an early-exit network is a run of ones, then zeros,
  and its length is the exit taken;
* ``p_on[n, b]`` is the differentiable probability of continuing at the exit that decides block ``b``
  (``sigmoid(CONTINUE_SHARPNESS * margin)``, margin > 0 exactly where the image continues); for a block beyond
  the exit an image took, the exit that stopped it (continuing there is what would open the block);
* a block's FLOPs include the exit after it (and the last block's the final classifier): they run only when the
  block does;
* ``exit_logits`` holds every exit's logits (zeros where an exit was not reached), for the early-exit objective
  of the compute attack (DeepSloth, Hong et al. ICLR 2021: every internal classifier pushed toward uniform).

Gate gradients, as for gates: ``exact`` (the deployed network's own: the logits of the exit taken),
``straight-through`` (hard exit forward, the soft mixture's gradient backward; every exit computed) and ``soft``
(the surrogate: logits mixed by the probability of leaving at each exit). Modes: ``hard`` (deployed) and ``open``
(no early exit: the final classifier on every image).

The threshold is a persistent buffer, so a calibrated value ships with the weights (:meth:`calibrate_exits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aigrobust.models.cifar_resnet import CifarResNet, blocks_for_depth
from aigrobust.models.gates import GateConfig, GateExecution, GateGrad, GateMode, GateTrace
from aigrobust.models.layers import FlopProfile, count_flops
from aigrobust.models.registry import register_model

# SDN's placement: internal classifiers at about 15%, 30%, ..., 90% of the network's depth
SDN_EXIT_FRACTIONS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
# continue log-odds per unit of confidence margin: sigmoid(20 * 0.1) = 0.88 for an image 0.1 below the threshold
CONTINUE_SHARPNESS = 20.0
EXIT_CRITERIA = ("confidence", "entropy")
EXIT_POOL = 4  # SDN's feature reduction: mixed max/average pooling to 4 x 4 before the linear classifier
DEFAULT_THRESHOLD = 0.9
EARLY_EXIT_DEPTHS = (20, 32, 56)


def sdn_exit_positions(n_blocks: int) -> tuple[int, ...]:
    """After which blocks (1-based) SDN puts its internal classifiers, for a network of ``n_blocks`` blocks."""
    return tuple(sorted({min(max(round(f * n_blocks), 1), n_blocks - 1) for f in SDN_EXIT_FRACTIONS}))


def exit_scores(z: Tensor, criterion: str) -> Tensor:
    """Per image (and exit): max softmax (``confidence``) or entropy over log(classes) (``entropy``)."""
    log_p = F.log_softmax(z.float(), dim=-1)
    if criterion == "confidence":
        return log_p.exp().amax(-1)
    return -(log_p.exp() * log_p).sum(-1) / torch.log(torch.tensor(float(z.shape[-1])))


def continue_margin(z: Tensor, threshold: Tensor | float, criterion: str) -> Tensor:
    """How far an image is from leaving at the exit with logits ``z``: > 0 exactly where it continues."""
    score = exit_scores(z, criterion)
    threshold = torch.as_tensor(threshold, dtype=torch.float32, device=score.device)
    return threshold - score if criterion == "confidence" else score - threshold


def first_exit(leaves: Tensor) -> Tensor:
    """(N, K) bool 'leaves at exit k' -> index of the first exit taken (K: the final classifier)."""
    n, k = leaves.shape
    index = torch.arange(k, device=leaves.device).expand(n, k)
    return torch.where(leaves, index, torch.full_like(index, k)).amin(1)


def exit_trace(margins: Tensor, taken: Tensor, exit_logits: Tensor, deciding: Sequence[int],
               profile: FlopProfile) -> GateTrace:
    """The trace of an early-exit network from each image's continue margins (N, K) and exit taken (N,);
    ``deciding[u]`` is the exit that decides whether unit ``u`` runs (-1: before the first exit, always runs)."""
    n, num_exits = margins.shape
    decide = torch.tensor(tuple(deciding), device=margins.device)  # (L,)
    decisions = (decide.unsqueeze(0) < taken.unsqueeze(1)) | (decide < 0).unsqueeze(0)
    p_continue = torch.sigmoid(CONTINUE_SHARPNESS * margins)  # (N, K)
    # a unit beyond the exit taken is opened by continuing there: that exit's probability stands for it
    which = torch.minimum(decide.clamp_min(0).unsqueeze(0).expand(n, -1), taken.clamp_max(num_exits - 1).unsqueeze(1))
    p_on = torch.where((decide < 0).unsqueeze(0), torch.ones_like(which, dtype=p_continue.dtype),
                       p_continue.gather(1, which))
    return GateTrace(decisions=decisions, p_on=p_on, gate_values=decisions.to(p_on.dtype),
                     flops=profile.executed(decisions), exit_logits=exit_logits)


def exit_logits_as_deployed(exit_logits: Tensor, final: Tensor, margins: Tensor, taken: Tensor, trace: GateTrace,
                            config: GateConfig, profile: FlopProfile) -> tuple[Tensor, GateTrace]:
    """The logits and trace of a network whose every exit was computed, as ``config`` says: ``open``, the final
    classifier on every image; straight-through, the exit taken forward and the soft mixture's gradient backward;
    soft, the mixture itself (each exit's logits weighted by the probability of leaving there); otherwise (exact,
    mask) the exit taken."""
    every = torch.cat([exit_logits, final.unsqueeze(1)], 1)  # (N, K + 1, C)
    hard = F.one_hot(taken, margins.shape[1] + 1).to(every.dtype)
    if config.mode is GateMode.OPEN or config.grad is GateGrad.SOFT:  # every unit runs
        ran = torch.ones_like(trace.decisions)
        trace = GateTrace(decisions=ran, p_on=trace.p_on, gate_values=ran.to(trace.p_on),
                          flops=profile.executed(ran), exit_logits=exit_logits)
    if config.mode is GateMode.OPEN:
        return final, trace
    if config.grad in (GateGrad.STRAIGHT_THROUGH, GateGrad.SOFT):
        p_continue = torch.sigmoid(CONTINUE_SHARPNESS * margins)
        reach = torch.cat([torch.ones_like(p_continue[:, :1]), torch.cumprod(p_continue, 1)], 1)  # (N, K + 1)
        soft = reach * torch.cat([1 - p_continue, torch.ones_like(p_continue[:, :1])], 1)
        weights = soft if config.grad is GateGrad.SOFT else hard + (soft - soft.detach())
        return (weights.unsqueeze(2) * every).sum(1), trace
    return (hard.unsqueeze(2) * every).sum(1), trace


def calibrated_threshold(exit_logits: Tensor, final: Tensor, labels: Tensor, accuracy_loss: float,
                         criterion: str) -> float:
    """The most permissive threshold whose accuracy stays within ``accuracy_loss`` (a fraction) of the final
    classifier's on these images."""
    labels = labels.to(final.device)
    reference = float((final.argmax(1) == labels).float().mean())
    scores = exit_scores(exit_logits, criterion)  # (N, K): confidence (higher leaves) or entropy (lower leaves)
    candidates = torch.unique(torch.cat([scores.flatten(), torch.tensor([0.0, 1.0], device=scores.device)])).tolist()
    predictions_at = torch.cat([exit_logits, final.unsqueeze(1)], 1).argmax(2)  # (N, K + 1)
    for threshold in (candidates if criterion == "confidence" else reversed(candidates)):
        leaves = scores >= threshold if criterion == "confidence" else scores <= threshold
        predictions = predictions_at.gather(1, first_exit(leaves).unsqueeze(1)).squeeze(1)
        if float((predictions == labels).float().mean()) >= reference - accuracy_loss - 1e-12:
            return float(threshold)
    return 1.0 if criterion == "confidence" else 0.0


class ExitHead(nn.Module):
    """An internal classifier: SDN's mixed max/average pooling to 4 x 4 (the mix learned), then a linear layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(()))  # sigmoid(0) = 0.5: max and average pooling in equal parts
        self.linear = nn.Linear(channels * EXIT_POOL * EXIT_POOL, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        weight = torch.sigmoid(self.mix)
        pooled = weight * F.adaptive_max_pool2d(h, EXIT_POOL) + (1 - weight) * F.adaptive_avg_pool2d(h, EXIT_POOL)
        return self.linear(pooled.flatten(1))


class EarlyExitResNet(CifarResNet):
    """A CIFAR ResNet with internal classifiers: the image leaves at the first confident exit.

    Args:
        blocks_per_stage: residual blocks in each of the three stages (3 for the ResNet-20 backbone, 9 for
            ResNet-56).
        exit_after: the blocks (1-based, increasing, before the last) after which an internal classifier sits;
            default SDN's placement (after about 15, 30, 45, 60, 75 and 90% of the blocks).
        threshold: an image leaves at the first exit whose ``criterion`` passes it (calibrated in training and
            stored in the weights file).
        criterion: ``confidence`` (the largest softmax probability, at or above the threshold leaves) or
            ``entropy`` (the entropy over log(classes), at or below it leaves).
        **kwargs: the backbone's settings (``num_classes``, ...).

    >>> import torch
    >>> network = EarlyExitResNet(3, exit_after=[3, 6], threshold=0.9).eval()
    >>> logits, trace = network.forward_with_gates(torch.rand(2, 3, 32, 32))
    >>> tuple(trace.exit_logits.shape)
    (2, 2, 10)
    """

    supported_gate_modes = (GateMode.HARD, GateMode.OPEN)
    supported_gate_grads = (GateGrad.EXACT, GateGrad.STRAIGHT_THROUGH, GateGrad.SOFT)

    def __init__(self, blocks_per_stage: int, exit_after: Sequence[int] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, criterion: str = "confidence", **kwargs: object) -> None:
        super().__init__(blocks_per_stage, gated=False, **kwargs)  # type: ignore[arg-type]
        n_blocks = self.num_blocks
        positions = tuple(int(p) for p in exit_after) if exit_after is not None else sdn_exit_positions(n_blocks)
        if not positions or list(positions) != sorted(set(positions)) or not 1 <= positions[0] <= positions[-1] < n_blocks:
            raise ValueError(f"exit_after must name increasing blocks between 1 and {n_blocks - 1}, got {positions}")
        if criterion not in EXIT_CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(EXIT_CRITERIA)}, got {criterion!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.exit_after = positions
        self.criterion = criterion
        blocks = self.residual_blocks()
        self.exits = nn.ModuleList(ExitHead(blocks[p - 1].bn2.num_features, self.num_classes) for p in positions)
        # persistent: the calibrated threshold travels in the weights file
        self.register_buffer("exit_threshold", torch.tensor(float(threshold)))
        # per block, the exit that decides whether it runs (-1: before the first exit, always runs)
        self._deciding_exit = tuple(max((k for k, p in enumerate(positions) if p <= b), default=-1)
                                    for b in range(n_blocks))
        self._frozen_backbone = False

    # --- what the protocol asks -----------------------------------------------------------------------------
    @property
    def is_gated(self) -> bool:
        """An early-exit network decides per image which blocks run."""
        return True

    @property
    def decided_blocks(self) -> int:
        """Blocks after the first exit: an image that leaves early skips them."""
        return self.num_blocks - self.exit_after[0]

    @property
    def num_exits(self) -> int:
        """Internal classifiers (the final classifier not counted)."""
        return len(self.exits)

    def is_decision_state(self, key: str) -> bool:
        """The exits and their threshold: fresh when the backbone comes from a plain network."""
        return key.startswith("exits.") or key == "exit_threshold"

    def set_gate_mode(self, mode: GateMode | str, seed: int | None = None) -> None:
        """``hard`` (exit at the first confident classifier) or ``open`` (never exit early)."""
        mode = GateMode(mode)
        if mode not in self.supported_gate_modes:
            raise ValueError(f"gate mode {mode.value!r} is not offered by {self.registry_name} (an early-exit "
                             f"network: {', '.join(m.value for m in self.supported_gate_modes)})")
        super().set_gate_mode(mode, seed)

    # --- training ---------------------------------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Train the exits only (SDN's "IC-only"): the backbone's weights stop learning and its BatchNorm keeps
        its running statistics in training mode too."""
        self._frozen_backbone = True
        exit_ids = {id(p) for p in self.exits.parameters()}
        for p in self.parameters():
            if id(p) not in exit_ids:
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EarlyExitResNet:
        super().train(mode)
        if self._frozen_backbone:
            for name, module in self.named_children():
                if name != "exits":
                    module.eval()
        return self

    def auxiliary_loss(self, trace: GateTrace, labels: Tensor) -> Tensor:
        """SDN's training loss beyond the final classifier's: each exit's cross-entropy, weighted by its depth."""
        assert trace.exit_logits is not None
        weights = [p / self.num_blocks for p in self.exit_after]
        return sum(w * F.cross_entropy(trace.exit_logits[:, k], labels) for k, w in enumerate(weights))  # type: ignore[return-value]

    @torch.no_grad()
    def calibrate_exits(self, images: Tensor, labels: Tensor, accuracy_loss: float, batch_size: int = 250) -> float:
        """Set the threshold to the most permissive one whose accuracy on ``images`` stays within ``accuracy_loss``
        (a fraction) of the network without early exits. Returns the threshold."""
        was_training = self.training
        self.eval()
        try:
            exit_logits, final = [], []
            for start in range(0, len(images), batch_size):
                _, trace, z_final = self._run_all(images[start:start + batch_size], self.gate_config)
                exit_logits.append(trace.exit_logits)
                final.append(z_final)
        finally:
            self.train(was_training)
        best = calibrated_threshold(torch.cat(exit_logits), torch.cat(final), labels, accuracy_loss, self.criterion)
        self.exit_threshold.fill_(best)
        return best

    # --- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_gates(x)[0]

    def forward_with_gates(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """Logits of the exit each image takes and the trace (see the module docstring)."""
        config = self.gate_config
        if self.training or config.mode is GateMode.OPEN:
            logits, trace, final = self._run_all(x, config)
            return final, trace
        if config.grad is GateGrad.EXACT and config.execution is GateExecution.SKIP:
            return self._run_exiting(x)
        logits, trace, _ = self._run_all(x, config)
        return logits, trace

    def _continue_margin(self, z: Tensor) -> Tensor:
        return continue_margin(z, self.exit_threshold, self.criterion)

    def _trace(self, margins: Tensor, taken: Tensor, exit_logits: Tensor, shape: tuple[int, ...]) -> GateTrace:
        return exit_trace(margins, taken, exit_logits, self._deciding_exit, self.flop_profile(shape))

    def _run_exiting(self, x: Tensor) -> tuple[Tensor, GateTrace]:
        """The deployed network: an image's later blocks never run once it has left (autograd still works)."""
        n, shape = x.shape[0], tuple(int(s) for s in x.shape[1:])
        h = self.stem(self.normalize(x))
        active = torch.arange(n, device=x.device)
        out: Tensor | None = None
        # per exit, every image's margin and logits (zeros where the exit was not reached: unread by the trace)
        margin_cols = [x.new_zeros(n, dtype=torch.float32) for _ in self.exits]
        logit_cols = [x.new_zeros((n, self.num_classes), dtype=torch.float32) for _ in self.exits]
        taken = torch.full((n,), self.num_exits, dtype=torch.long, device=x.device)
        k = 0
        for b, block in enumerate(self.residual_blocks()):
            h = F.relu(block.shortcut_path(h) + block.residual(h))
            if k == self.num_exits or b + 1 != self.exit_after[k]:
                continue
            z = self.exits[k](h).float()
            margin = self._continue_margin(z)
            margin_cols[k] = margin_cols[k].index_copy(0, active, margin)
            logit_cols[k] = logit_cols[k].index_copy(0, active, z)
            leaving = margin <= 0
            if bool(leaving.any()):
                rows = active[leaving]
                out = (out if out is not None else x.new_zeros((n, self.num_classes), dtype=torch.float32)
                       ).index_copy(0, rows, z[leaving])
                taken[rows] = k
                active, h = active[~leaving], h[~leaving]
                if active.numel() == 0:
                    break
            k += 1
        if active.numel() > 0:
            z = self.head(h).float()
            out = z if out is None else out.index_copy(0, active, z)
        assert out is not None
        return out, self._trace(torch.stack(margin_cols, 1), taken, torch.stack(logit_cols, 1), shape)

    def _every_classifier(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every block on every image: each exit's logits (N, K, C) and the final classifier's (N, C)."""
        h = self.stem(self.normalize(x))
        zs: list[Tensor] = []
        for b, block in enumerate(self.residual_blocks()):
            h = F.relu(block.shortcut_path(h) + block.residual(h))
            if len(zs) < self.num_exits and b + 1 == self.exit_after[len(zs)]:
                zs.append(self.exits[len(zs)](h).float())
        return torch.stack(zs, 1), self.head(h).float()

    def _run_all(self, x: Tensor, config: GateConfig) -> tuple[Tensor, GateTrace, Tensor]:
        """Every block and exit on every image: (logits as ``config`` says, trace, final classifier's logits); in
        training, the final classifier's logits (the exits learn through :meth:`auxiliary_loss`)."""
        shape = tuple(int(s) for s in x.shape[1:])
        exit_logits, final = self._every_classifier(x)
        margins = self._continue_margin(exit_logits)
        taken = first_exit(margins <= 0)
        trace = self._trace(margins, taken, exit_logits, shape)
        if self.training:
            return final, trace, final
        logits, trace = exit_logits_as_deployed(exit_logits, final, margins, taken, trace, config,
                                                self.flop_profile(shape))
        return logits, trace, final

    # --- FLOPs ------------------------------------------------------------------------------------------------
    def _measure_flop_profile(self, x: Tensor) -> FlopProfile:
        """Per block, what runs once an image reaches it: the block, the exit after it (the last block: the final
        classifier); fixed, the stem."""
        stem, h = count_flops(lambda t: self.stem(self.normalize(t)), x)
        costs, k = [], 0
        for b, block in enumerate(self.residual_blocks()):
            cost, h = count_flops(lambda t, blk=block: F.relu(blk.shortcut_path(t) + blk.residual(t)), h)
            if k < self.num_exits and b + 1 == self.exit_after[k]:
                cost += count_flops(self.exits[k], h)[0]
                k += 1
            costs.append(cost)
        costs[-1] += count_flops(self.head, h)[0]
        measured_total, _ = count_flops(self._every_classifier, x)  # an independent count: one pass through all
        return FlopProfile(tuple(x.shape[1:]), stem=stem, head=0.0, gates=(), shortcuts=(), residual=tuple(costs),
                           measured_total=measured_total)


def _make_early_exit(depth: int):  # type: ignore[no-untyped-def]
    def build(**kwargs: object) -> EarlyExitResNet:
        return EarlyExitResNet(blocks_for_depth(depth), **kwargs)  # type: ignore[arg-type]

    return build


for _depth in EARLY_EXIT_DEPTHS:
    register_model(
        f"sdn{_depth}",
        family="cifar",
        description=f"Shallow-Deep Network on CIFAR ResNet-{_depth}: internal classifiers at SDN's depths, an image "
                    f"leaves at the first confident one (max softmax >= threshold, {DEFAULT_THRESHOLD} until calibrated)",
        input_shape=(3, 32, 32),
        default_dataset="cifar10",
    )(_make_early_exit(_depth))


@register_model("tiny_sdn", family="test", description="tiny test early-exit ResNet (widths 4/8/16, 2 blocks per "
                "stage, exits after blocks 1-5)", input_shape=(3, 32, 32), default_dataset="cifar10")
def tiny_sdn(**kwargs: object) -> EarlyExitResNet:
    """The early-exit twin of ``tiny_resnet``."""
    return EarlyExitResNet(2, widths=(4, 8, 16), **kwargs)  # type: ignore[arg-type]
