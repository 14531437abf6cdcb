"""Robustness evaluation: attack models at a sweep of epsilons and record one row per sample.

One long table, one row per (model, defense, defense_grad, attack, gate_grad, epsilon, sample): label, clean and
adversarial prediction, perturbation norms, clean and adversarial gate patterns, executed FLOPs. Every reported
figure is an aggregate of these rows (see :mod:`aigrobust.evaluation.metrics`). :mod:`.spec` (what runs),
:mod:`.attacker_views` (the attacker's views of a model), :mod:`.engine` (running it in resumable units), :mod:`.units` (the
units as a run folder stores and reuses them), :mod:`.batches` (numbered batches, in memory or streamed),
:mod:`.records` (the rows' canonical form) and :mod:`.metrics` (aggregates of the rows).
"""

from aigrobust.evaluation.attacker_views import (  # noqa: F401
    AttackerGateView,
    EOTView,
    draw_accuracy,
)
from aigrobust.evaluation.batches import iterate_numbered_batches  # noqa: F401
from aigrobust.evaluation.engine import (  # noqa: F401
    WORST_SO_FAR_TENSORS,
    EvalRun,
    WorstSoFar,
    evaluate_batch,
    run_evaluation,
    stochastic_noise_floor,
)
from aigrobust.evaluation.records import (  # noqa: F401
    NO_GATES,
    RECORD_COLUMNS,
    canonical_order,
    gate_patterns,
    normalize_records,
)
from aigrobust.evaluation.spec import (  # noqa: F401
    EPSILON_RESOLUTION,
    SPEC_FIELDS,
    EvalSpec,
    ModelEntry,
    parse_epsilon,
    refuse_mixed_norms,
    refuse_repeated_attacks,
    with_zero,
)
from aigrobust.evaluation.units import BatchStorage, UnitRequest, UnitStore  # noqa: F401
