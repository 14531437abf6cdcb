"""What an evaluation can be asked, declared once: each setting's default, choices and meaning.

:class:`~aigrobust.evaluation.EvalSpec` takes its defaults from here, ``aigrobust attack`` builds its options from
here (default, choices and help), and a test holds :func:`aigrobust.evaluate`'s keyword defaults to the same values.
Light on purpose (no torch), so the command line builds its options without loading the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GATE_GRADS = ("exact", "straight-through", "soft")
DEFENSE_GRADS = ("oblivious", "bpda", "diff", "eot")


@dataclass(frozen=True)
class EvalSetting:
    """One setting of an evaluation: its name (EvalSpec's field, evaluate()'s keyword), the command line's option,
    its default, its choices (empty: any value its type allows) and what it means."""

    name: str
    option: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


EVAL_SETTINGS: dict[str, EvalSetting] = {s.name: s for s in (
    EvalSetting("attacks", "--attack", ("fgsm",),
                "Attack name or spec (pgd, pgd:steps=40, apgd, square, gate-flip, foolbox:LinfDeepFoolAttack)."),
    EvalSetting("gate_grads", "--gate-grad", ("exact",), "How attack gradients pass hard gates.", GATE_GRADS),
    EvalSetting("gate_mode", "--gate-mode", "hard", "stochastic: random gates; attack gradients average --eot-draws "
                "draws, each input is judged on 10.", ("hard", "stochastic")),
    EvalSetting("eot_draws", "--eot-draws", 20, "Draws each EOT gradient averages: of stochastic gates and of "
                "randomised defenses under --defense-grad eot, drawn together where both are random."),
    EvalSetting("defenses", "--defense", ("none",), "Parts join with '+' (jpeg:50+median:2); repeatable; 'none' is "
                "always run as the reference."),
    EvalSetting("defense_grads", "--defense-grad", ("oblivious", "bpda", "diff"),
                "How attackers treat a defense (eot only for randomised ones).", DEFENSE_GRADS),
    EvalSetting("seed", "--seed", 0, "Seeds the per-image randomness (random starts, noise, stochastic gates): the "
                "same seed, the same records at any batch size."),
    EvalSetting("early_exit", "--early-exit", False, "Attack a sample only while still robust (faster worst case; "
                "the attacks run as a chain in the order given, and each attack's row is the chain up to it)."),
    EvalSetting("fold_batchnorm", "--fold-batchnorm", False, "Attack a copy of each network with its BatchNorm folded "
                "into the convolutions (aigrobust's families only): about 1.3-1.5x faster input gradients on the CPU; "
                "logits equal up to float rounding, so outcomes agree but records are not bit for bit those of an "
                "unfolded run (run.json says it folded)."),
)}


def default(name: str) -> Any:
    """The default of one setting.

    >>> default("gate_mode"), default("defense_grads")
    ('hard', ('oblivious', 'bpda', 'diff'))
    """
    return EVAL_SETTINGS[name].default
