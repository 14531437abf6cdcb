"""Which settings a spec runs on a model: the gate gradients that apply to it and every (defense, defense gradient, gate gradient) combination."""

from __future__ import annotations

from typing import Any

from aigrobust.evaluation.records import NO_GATES
from aigrobust.evaluation.spec import EvalSpec
from aigrobust.models.gates import GateGrad


def gate_grads_for(spec: EvalSpec, model: Any) -> tuple[str, ...]:
    """The gate-gradient modes to run on ``model``: none without gates; where the network offers fewer modes than
    ours (``supported_gate_grads``, e.g. a user's network through GatedAdapter), 'all' means all it offers and a
    mode it lacks, named alone, is refused."""
    if not model.is_gated:
        return (NO_GATES,)
    offered = getattr(model, "supported_gate_grads", None)
    if offered is None:
        return spec.gate_grads
    offered = tuple(str(GateGrad(g)) for g in offered)
    if set(spec.gate_grads) == {str(g) for g in GateGrad}:  # 'all'
        return offered
    missing = [g for g in spec.gate_grads if g not in offered]
    if missing:
        raise ValueError(f"{model.registry_name} offers gate gradient {', '.join(offered)} only, not "
                         f"{', '.join(missing)}")
    return spec.gate_grads


def settings_for(spec: EvalSpec, model: Any) -> list[tuple[str, str, str]]:
    """(defense, defense_grad, gate_grad) combinations to run for one model."""
    combos = []
    gate_grads = gate_grads_for(spec, model)
    for defense_spec in spec.defenses:
        defense = spec.defense(defense_spec)
        if defense.name == "none":
            grads: tuple[str, ...] = ("none",)
        else:
            grads = tuple(g for g in spec.defense_grads if g != "eot" or defense.randomized)
        for defense_grad in grads:
            for gate_grad in gate_grads:
                combos.append((defense_spec, defense_grad, gate_grad))
    return combos
