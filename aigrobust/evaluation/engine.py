"""The engine: every defense setting, attack, gate-gradient mode and epsilon on each batch, in units that are saved
and replayed on resume, with each sample's standing outcome carried from attack to attack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from aigrobust.evaluation.attacker_views import AttackerGateView, EOTView, draw_accuracy
from aigrobust.evaluation.batches import iterate_numbered_batches
from aigrobust.evaluation.metrics import format_eps
from aigrobust.evaluation.records import NO_GATES, RECORD_COLUMNS, canonical_order, gate_patterns, normalize_records
from aigrobust.evaluation.settings import settings_for
from aigrobust.evaluation.spec import EvalSpec, ModelEntry
from aigrobust.evaluation.units import BatchStorage, UnitRequest, UnitStore
from aigrobust.models.dynamic import DynamicNetwork
from aigrobust.models.folding import fold_batchnorm
from aigrobust.models.gates import GateMode
from aigrobust.randomness import keyed_draw
from attacks import Attack, attack_label
from defenses import AttackerDefenseView, DefendedModel, DefenseGrad

# per sample, what stands as its outcome: tensors, and the adversarial gate pattern (a list of strings)
WORST_SO_FAR_TENSORS = ("adv_pred", "linf", "l2", "hamming", "adv_flops", "adv_draw_acc")


@dataclass
class WorstSoFar:
    """Per sample of a batch, at one epsilon, the outcome that stands so far: the clean input to start with (a clean
    mistake is its own adversarial), replaced by the first adversarial that fools it. Attacks with early exit work on
    the samples still standing, and each unit's records show the standing outcome of the samples it did not attack."""

    adv_pred: Tensor
    linf: Tensor
    l2: Tensor
    hamming: Tensor
    adv_flops: Tensor
    adv_draw_acc: Tensor
    adv_gates: list[str]

    @classmethod
    def clean(cls, setting: _PreparedSetting, n: int) -> WorstSoFar:
        """Every sample standing on its clean outcome."""
        return cls(adv_pred=setting.clean_pred.clone(), linf=torch.zeros(n), l2=torch.zeros(n),
                   hamming=torch.zeros(n), adv_flops=setting.clean_trace_flops.clone(),
                   adv_draw_acc=setting.clean_draw_acc.clone(), adv_gates=list(setting.clean_gates))

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, like: WorstSoFar) -> WorstSoFar:
        """The outcome a saved unit's records hold (one row per sample of the batch, in order)."""
        tensors = {key: torch.as_tensor(rows[key].to_numpy(copy=True), dtype=getattr(like, key).dtype,
                                        device=getattr(like, key).device) for key in WORST_SO_FAR_TENSORS}
        return cls(**tensors, adv_gates=rows["adv_gates"].astype(str).tolist())

    def copy(self) -> WorstSoFar:
        """An independent copy (an attack's outcome starts from the standing one)."""
        return WorstSoFar(**{key: getattr(self, key).clone() for key in WORST_SO_FAR_TENSORS},
                        adv_gates=list(self.adv_gates))

    def take_fooled(self, outcome: WorstSoFar, labels: Tensor) -> None:
        """Samples that ``outcome`` fools and that stood until now take it as their standing outcome."""
        newly = (outcome.adv_pred != labels) & (self.adv_pred == labels)
        if not newly.any():
            return
        keep = newly.cpu()
        for key in WORST_SO_FAR_TENSORS:
            mask = newly if key == "adv_pred" else keep  # adv_pred lives on the model's device, the rest on the CPU
            getattr(self, key)[mask] = getattr(outcome, key)[mask]
        for i in keep.nonzero().squeeze(1).tolist():
            self.adv_gates[i] = outcome.adv_gates[i]


@dataclass
class _PreparedSetting:
    """One (defense, defense grad, gate grad) combination of a batch: the deployed and attacker models and the
    clean outcome every attack starts from."""

    defense_name: str
    defense_grad: str
    gate_grad: str
    deployed: nn.Module
    view: nn.Module
    same_network: bool
    clean_pred: Tensor
    clean_gates: list[str]
    clean_decisions: Tensor
    clean_flops: np.ndarray
    clean_trace_flops: Tensor
    clean_draw_acc: Tensor  # share of judged draws right on the clean input (0 or 1 for a deterministic model)
    judge_draws: int  # 1 for a deterministic model

    def gradient_view(self, attack: Attack) -> nn.Module:
        """The attacker's view for ``attack``: one that averages its own EOT draws (``eot_draws`` > 1) gets a
        single-draw view (of the gates, or of a randomised defense through BPDA), so the two averages do not nest
        (20 x 20 forwards per step)."""

        if getattr(attack, "eot_draws", 1) == 1:
            return self.view
        if isinstance(self.view, EOTView):
            return self.view.model
        if isinstance(self.view, AttackerDefenseView) and self.view.grad is DefenseGrad.EOT:
            return AttackerDefenseView(self.view.model, self.view.defense, DefenseGrad.BPDA)
        return self.view

def evaluate_batch(entry: ModelEntry, spec: EvalSpec, attacks: Sequence[Attack], images: Tensor, labels: Tensor,
                   sample_ids: Sequence[int], units: UnitStore | None = None,
                   describe: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every defense setting, attack, gate-gradient mode and epsilon on one batch: the records of that batch.

    Work is done in units (one setting x one attack); with ``units``, finished units are saved and, on a rerun,
    read back instead of recomputed (their effect on the per-sample standing outcome replayed), so the records are
    the same either way."""
    model = entry.model
    model.eval()
    frames = []
    clean_cache: dict[str, tuple[Tensor, Any]] = {}
    for s, (defense_spec, defense_grad, gate_grad) in enumerate(settings_for(spec, model)):
        setting = _prepare_setting(model, spec, defense_spec, defense_grad, gate_grad, images, labels, clean_cache)
        standing = {eps: WorstSoFar.clean(setting, len(labels)) for eps in spec.epsilons}
        for a, attack in enumerate(attacks):
            if attack.goal == "gates" and not model.is_gated:
                continue
            unit = f"setting-{s:03d}-attack-{a:03d}"
            saved = units.load(unit) if units is not None else None
            if saved is None and units is not None and units.reuse is not None:
                saved = _reused_unit(units, unit, entry.name, setting, attack, spec, labels, sample_ids)
            if saved is not None:
                _replay_unit(saved, standing, labels, attack.goal)
                frames.append(saved)
                continue
            # canonical dtypes before saving, so a unit read back serialises exactly like a fresh one
            if describe is not None:  # what runs now, for a progress display
                eps_text = ", ".join(format_eps(e) for e in spec.epsilons if e > 0)
                where = "" if setting.defense_name == "none" else f" | {setting.defense_name} {setting.defense_grad}"
                describe(f"{entry.name}{where} | {attack_label(attack.spec)} | {setting.gate_grad} | {eps_text}")
            unit_frame = normalize_records(_run_unit(entry.name, spec, attack, setting, standing, images, labels,
                                                     sample_ids))
            if units is not None and not unit_frame.empty:
                units.save(unit, unit_frame, None)
            frames.append(unit_frame)
    model.set_gate_mode(spec.gate_mode, seed=spec.seed)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return normalize_records(pd.DataFrame(columns=list(RECORD_COLUMNS)))
    return normalize_records(pd.concat(frames, ignore_index=True))

def _reused_unit(units: UnitStore, unit: str, model_name: str, setting: _PreparedSetting, attack: Attack, spec: EvalSpec,
                 labels: Tensor, sample_ids: Sequence[int]) -> pd.DataFrame | None:
    """A unit supplied by ``units.reuse`` (saved like a computed one, so a resume reads it back), or None."""
    assert units.reuse is not None
    request = UnitRequest(model=model_name, defense=setting.defense_name, defense_grad=setting.defense_grad,
                          gate_grad=setting.gate_grad, attack=attack.spec, epsilons=tuple(spec.epsilons),
                          sample_ids=tuple(int(i) for i in sample_ids), labels=labels.cpu().numpy(),
                          clean_pred=setting.clean_pred.cpu().numpy(), clean_gates=tuple(setting.clean_gates))
    supplied = units.reuse(request)
    if supplied is None:
        return None
    frame = normalize_records(supplied[0].reset_index(drop=True))
    units.save(unit, frame, supplied[1])
    return frame

def _prepare_setting(model: DynamicNetwork, spec: EvalSpec, defense_spec: str, defense_grad: str, gate_grad: str,
                     images: Tensor, labels: Tensor, clean_cache: dict[str, tuple[Tensor, Any]]
                     ) -> _PreparedSetting:
    """The models of one setting and its clean pass (cached per defense: the clean pass ignores attacker views)."""

    defense = spec.defense(defense_spec)
    defense.to(images.device)

    # stochastic gates and randomised defenses draw by (run seed, input row, draw name), so one seeding holds for the
    # whole setting, whatever batch or pass (aigrobust.randomness)
    model.set_gate_mode(spec.gate_mode, seed=spec.seed)
    for part in defense.modules():
        if getattr(part, "randomized", False) and hasattr(part, "reseed"):  # a randomised defense says so itself
            part.reseed(spec.seed)
    deployed = DefendedModel(model, defense)
    if defense_spec not in clean_cache:
        with torch.no_grad(), keyed_draw(deployed, "judge/0"):
            clean_cache[defense_spec] = deployed.forward_with_gates(images)
    clean_logits, clean_trace = clean_cache[defense_spec]
    base: nn.Module = AttackerGateView(model, gate_grad) if model.is_gated else model
    random_gates = model.is_gated and spec.gate_mode == "stochastic"
    # One EOT average per gradient, over every random part at once: with random gates the EOTView below draws the
    # gates and a randomised defense together (its keyed draws rename both), so the defense view takes one draw.
    inner_grad = "bpda" if defense_grad == "eot" and random_gates else defense_grad
    view: nn.Module = base if defense.name == "none" else AttackerDefenseView(base, defense, inner_grad,
                                                                                 eot_samples=spec.eot_draws)
    # No defense, exact gate gradients, deterministic gates: the attacker differentiates the deployed network
    # itself, so the attack gets one object for both and judges success from its gradient pass's logits.
    same_network = defense.name == "none" and gate_grad in ("exact", NO_GATES) and spec.gate_mode == "hard"
    if random_gates and spec.eot_draws > 1:
        view = EOTView(view, spec.eot_draws)
    judge_draws = spec.judge_draws if random_gates else 1
    clean_pred = clean_logits.argmax(1)
    clean_draws = draw_accuracy(deployed, images, labels, judge_draws, clean_pred)
    return _PreparedSetting(defense.name, defense_grad, gate_grad, deployed, view, same_network, clean_pred,
                    gate_patterns(clean_trace.decisions), clean_trace.decisions, clean_trace.flops.cpu().numpy(),
                    clean_trace.flops.detach().cpu(), clean_draws, judge_draws)

def _run_unit(model_name: str, spec: EvalSpec, attack: Attack, setting: _PreparedSetting,
              standing: dict[float, WorstSoFar], images: Tensor, labels: Tensor, sample_ids: Sequence[int]
              ) -> pd.DataFrame:
    """One attack under one setting at every epsilon: its records; ``standing`` takes the samples it fooled."""
    n = len(labels)
    everyone = torch.arange(n, device=labels.device)
    early = spec.early_exit and attack.goal == "misclassify"
    if early:  # per epsilon, only the samples that still stand
        groups = [((eps,), (standing[eps].adv_pred == labels).nonzero().squeeze(1)) for eps in spec.epsilons]
    else:
        groups = [(spec.epsilons, everyone)]
    frames = []
    for eps_group, idx in groups:
        result = None
        if idx.numel():
            # the attack's draws are keyed by (run seed, sample id): a sample's adversarial does not depend on its batch
            attack.seed = spec.seed
            target = setting.view if setting.same_network and attack.goal == "misclassify" else setting.deployed
            result = attack(target, images[idx], labels[idx], eps_group, gradient_model=setting.gradient_view(attack),
                            sample_ids=torch.as_tensor(list(sample_ids), dtype=torch.int64)[idx.cpu()])
        for k, eps in enumerate(eps_group):
            values, evaluated, success = _outcome(setting, standing[eps], result, k, attack.goal, images, labels, idx)
            if attack.goal == "misclassify":
                success[~evaluated] = (values.adv_pred != labels).cpu()[~evaluated]
                standing[eps].take_fooled(values, labels)
            rows = (everyone if early else idx).cpu().tolist()
            frames.append(_unit_records(model_name, setting, attack, eps, rows, values, evaluated, success, labels,
                                        sample_ids))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RECORD_COLUMNS))

def _outcome(setting: _PreparedSetting, standing: WorstSoFar, result: Any, k: int, goal: str, images: Tensor,
             labels: Tensor, idx: Tensor) -> tuple[WorstSoFar, Tensor, Tensor]:
    """Each sample's values at one epsilon: the attacked samples' adversarial outcome, the standing one for the
    rest; which samples were attacked; and the success of each."""
    n = len(labels)
    values = standing.copy()
    evaluated = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    if result is None:
        return values, evaluated, success
    adv = result.clipped[k]
    with torch.no_grad(), keyed_draw(setting.deployed, "judge/0"):
        adv_logits, adv_trace = setting.deployed.forward_with_gates(adv)
    pred = adv_logits.argmax(1)
    delta = (adv - images[idx]).flatten(1)
    n_blocks = setting.clean_decisions.shape[1]
    ham = ((adv_trace.decisions != setting.clean_decisions[idx]).float().mean(1) if n_blocks
           else torch.zeros(len(idx)))
    pos = idx.cpu()
    values.adv_pred[idx] = pred
    values.linf[pos] = delta.abs().amax(1).cpu()
    values.l2[pos] = delta.norm(dim=1).cpu()
    values.hamming[pos] = ham.cpu()
    values.adv_flops[pos] = adv_trace.flops.detach().cpu()
    values.adv_draw_acc[pos] = draw_accuracy(setting.deployed, adv, labels[idx], setting.judge_draws, pred)
    gates_now = gate_patterns(adv_trace.decisions)
    for j, i in enumerate(pos.tolist()):
        values.adv_gates[i] = gates_now[j]
    evaluated[pos] = True
    # misclassification is read off the prediction just made; gate goals need the attack's judge
    success[pos] = ((pred != labels[idx]) if goal == "misclassify" else result.success[k]).cpu()
    return values, evaluated, success

def _replay_unit(frame: pd.DataFrame, standing: dict[float, WorstSoFar], labels: Tensor, goal: str) -> None:
    """Apply a saved unit's records to ``standing`` as computing it would have (its rows hold every sample of the
    batch in order, per epsilon)."""
    if goal != "misclassify":
        return
    for eps, rows in frame.groupby("epsilon", sort=False):
        target = standing[_standing_key(standing, float(eps))]
        if len(rows) != len(labels):
            raise ValueError(f"a saved unit holds {len(rows)} rows at epsilon {eps}, not the batch's {len(labels)}")
        target.take_fooled(WorstSoFar.from_rows(rows, target), labels)

def _standing_key(standing: dict[float, WorstSoFar], eps: float) -> float:
    # epsilons come back from CSV as the same float64; match exactly, else the nearest (never more than 1e-12 off)
    return eps if eps in standing else min(standing, key=lambda e: abs(e - eps))

def _unit_records(model_name: str, setting: _PreparedSetting, attack: Attack, eps: float, rows: list[int],
                  values: WorstSoFar, evaluated: Tensor, success: Tensor, labels: Tensor,
                  sample_ids: Sequence[int]) -> pd.DataFrame:
    """The records of ``rows`` at one epsilon of one unit."""
    label_np = labels.cpu().numpy()
    clean_np = setting.clean_pred.cpu().numpy()
    adv_np = values.adv_pred.cpu().numpy()
    return pd.DataFrame({
        "model": model_name,
        "defense": setting.defense_name,
        "defense_grad": setting.defense_grad,
        "attack": attack.spec,
        "gate_grad": setting.gate_grad,
        "epsilon": eps,
        "sample": [int(sample_ids[i]) for i in rows],
        "label": label_np[rows],
        "clean_pred": clean_np[rows],
        "adv_pred": adv_np[rows],
        "clean_correct": (clean_np == label_np)[rows],
        "adv_correct": (adv_np == label_np)[rows],
        "success": success.numpy()[rows],
        "linf": values.linf.numpy()[rows],
        "l2": values.l2.numpy()[rows],
        "clean_gates": [setting.clean_gates[i] for i in rows],
        "adv_gates": [values.adv_gates[i] for i in rows],
        "hamming": values.hamming.numpy()[rows],
        "clean_flops": setting.clean_flops[rows],
        "adv_flops": values.adv_flops.numpy()[rows],
        "goal": attack.goal,
        "evaluated": evaluated.numpy()[rows],
        "adv_draw_acc": values.adv_draw_acc.numpy()[rows],
    })


@dataclass
class EvalRun:
    """The records of a run and the spec that made them."""

    records: pd.DataFrame
    spec: EvalSpec
    info: dict[str, Any] = field(default_factory=dict)

def run_evaluation(
    entries: Sequence[ModelEntry],
    spec: EvalSpec,
    images: Tensor | np.ndarray,
    labels: Tensor,
    sample_ids: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    on_batch: Callable[[str, int], None] | None = None,
    storage: BatchStorage | None = None,
    shard: tuple[int, int] = (0, 1),
    describe: Callable[[str], None] | None = None,
) -> EvalRun:
    """Evaluate every model on the samples; ``storage`` (a run folder) keeps finished batches and the finished
    units of the batch in progress, so a rerun resumes and a kill loses at most one unit.

    ``shard=(rank, world)`` evaluates only the batches with ``batch % world == rank`` (the records returned are
    those of this shard; a merge reads every shard's saved batches)."""
    rank, world = shard
    attacks = list(spec.parsed_attacks)
    frames = []
    for entry in entries:
        # NHWC convolutions: about 1.5x faster input gradients for resnet20 on this CPU, identical semantics
        entry.model.to(device=device, memory_format=torch.channels_last)
        fold_pending = spec.fold_batchnorm
        for b, x, y, ids in iterate_numbered_batches(images, labels, sample_ids, batch_size):
            if b % world != rank:
                continue
            cached = storage.done_batch(entry.name, b) if storage is not None else None
            if cached is not None:
                frames.append(cached)
            else:
                if fold_pending:  # once, on the first batch that is attacked: its images check the folded copy
                    entry, fold_pending = folded_entry(entry, x[:8].to(device)), False
                frame = evaluate_batch(entry, spec, attacks, x.to(device), y.to(device), ids.tolist(),
                                       units=storage.units_for(entry.name, b) if storage is not None else None,
                                       describe=describe)
                if storage is not None:
                    storage.save_batch(entry.name, b, frame)
                frames.append(frame)
            if on_batch is not None:
                on_batch(entry.name, len(y))
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RECORD_COLUMNS))
    return EvalRun(records=canonical_order(normalize_records(records), sample_ids), spec=spec)

def folded_entry(entry: ModelEntry, probe: Tensor) -> ModelEntry:
    """The entry with its network's BatchNorm folded into the convolutions (checked on the ``probe`` images)."""

    try:
        folded = fold_batchnorm(entry.model, probe)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"{entry.name}: {err}") from None
    return replace(entry, model=folded.to(memory_format=torch.channels_last))


def stochastic_noise_floor(model: DynamicNetwork, images: Tensor, seeds: tuple[int, int] = (1, 2)) -> float:
    """Mean normalised Hamming distance between two seeded stochastic draws on the same clean images (0 for a
    network whose decisions have no stochastic mode: an early-exit network, a user's network through an adapter)."""
    if not model.is_gated or GateMode.STOCHASTIC not in getattr(model, "supported_gate_modes", GateMode):
        return 0.0
    patterns = []
    with torch.no_grad(), model.gate_settings(mode="stochastic"):
        for seed in seeds:
            model.reset_gate_generator(seed)
            patterns.append(model.forward_with_gates(images)[1].decisions)
    return float((patterns[0] != patterns[1]).float().mean())
