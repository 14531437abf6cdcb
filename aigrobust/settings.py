"""What an evaluation and a training run can be asked, declared once: each setting's default, choices and meaning.

:class:`~aigrobust.evaluation.EvalSpec` and :class:`~aigrobust.training.config.TrainConfig` take their defaults from
here, ``aigrobust attack`` and ``aigrobust train`` build their options from here (default, choices and help), and a
test holds :func:`aigrobust.evaluate`'s keyword defaults to the same values. Light on purpose (no torch), so the
command line builds its options without loading the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GATE_GRADS = ("exact", "straight-through", "soft")
DEFENSE_GRADS = ("oblivious", "bpda", "diff", "eot")


@dataclass(frozen=True)
class Setting:
    """One setting: its name (the field of EvalSpec or TrainConfig, evaluate()'s keyword), the command line's option,
    its default, its choices (empty: any value its type allows) and what it means."""

    name: str
    option: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


EVAL_SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("attacks", "--attack", ("fgsm",),
                "Attack name or spec (pgd, pgd:steps=40, apgd, square, gate-flip, foolbox:LinfDeepFoolAttack)."),
    Setting("gate_grads", "--gate-grad", ("exact",), "How attack gradients pass hard gates.", GATE_GRADS),
    Setting("gate_mode", "--gate-mode", "hard", "stochastic: random gates; attack gradients average --eot-draws "
                "draws, each input is judged on 10.", ("hard", "stochastic")),
    Setting("eot_draws", "--eot-draws", 20, "Draws each EOT gradient averages: of stochastic gates and of "
                "randomised defenses under --defense-grad eot, drawn together where both are random."),
    Setting("defenses", "--defense", ("none",), "Parts join with '+' (jpeg:50+median:2); repeatable; 'none' is "
                "always run as the reference."),
    Setting("defense_grads", "--defense-grad", ("oblivious", "bpda", "diff"),
                "How attackers treat a defense (eot only for randomised ones).", DEFENSE_GRADS),
    Setting("seed", "--seed", 0, "Seeds the per-image randomness (random starts, noise, stochastic gates): the "
                "same seed, the same records at any batch size."),
    Setting("early_exit", "--early-exit", False, "Attack a sample only while still robust (faster worst case; "
                "the attacks run as a chain in the order given, and each attack's row is the chain up to it)."),
    Setting("fold_batchnorm", "--fold-batchnorm", False, "Attack a copy of each network with its BatchNorm folded "
                "into the convolutions (aigrobust's families only): about 1.3-1.5x faster input gradients on the CPU; "
                "logits equal up to float rounding, so outcomes agree but records are not bit for bit those of an "
                "unfolded run (run.json says it folded)."),
)}


TRAIN_SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("epochs", "--epochs", 200, "Passes over the training set."),
    Setting("batch_size", "--batch-size", 128, "Images per optimiser step (over every process under torchrun)."),
    Setting("lr", "--lr", 0.1, "Peak learning rate of SGD (the schedule shapes it)."),
    Setting("momentum", "--momentum", 0.9, "SGD momentum."),
    Setting("weight_decay", "--weight-decay", 1e-4, "L2 weight decay of SGD."),
    Setting("schedule", "--schedule", "step", "step: x0.1 at 50% and 75% of the run (the paper's); cosine or "
            "onecycle for short CPU budgets.", ("step", "cosine", "onecycle")),
    Setting("gate_lambda", "--gate-lambda", 2.0, "Weight of the target-rate loss."),
    Setting("gate_lr_factor", "--gate-lr-factor", 1.0, "The gates' learning rate as a multiple of --lr (the reference "
            "code trains them faster)."),
    Setting("target_warmup", "--target-warmup", 0.0, "Over this fraction of the run, lower every gate's target from "
            "1.0 (all blocks run) to its own (gated models): a start from a plain network's weights (--init) keeps "
            "them while the gates learn."),
    Setting("seed", "--seed", 0, "Seeds the initialisation, the data order, augmentation, Gumbel draws and the inner "
            "attack: a resumed run continues as if never stopped."),
    Setting("init", "--init", None, "Start from other weights: 'torchvision' (ImageNet models: a download), a weights "
            "file (ours, akamaster's, torchvision's layout) or a shipped name (resnet20.at). The same architecture "
            "gives every weight; the plain twin of a gated model its residual branches, the gates starting fresh."),
    Setting("adversarial", "--adversarial", None, "Adversarial training: n-fgsm (the recommended one), fgsm-rs, pgd, "
            "trades or rslad (distillation from a robust teacher), e.g. n-fgsm:eps=8/255; compute=W (gated models) also attacks and defends the compute. "
            "Validates on --val-samples held out of the training set (PGD-10 each epoch; best.safetensors keeps the "
            "best)."),
    Setting("compute_penalty", "--compute-penalty", 4.0, "Weight of per-sample execution above the target rate on "
            "compute-attacked batches (--adversarial ...,compute=W)."),
    Setting("ema", "--ema", None, "Keep an exponential moving average of the weights and BatchNorm statistics with "
            "this decay (e.g. 0.999); it is what is validated and saved."),
    Setting("inner_network", "--inner-network", "training", "What --adversarial's attack runs on: the network as it "
            "trains (sampled gates, batch statistics), as it is deployed and evaluated (hard gates, straight-through "
            "gate gradient, running statistics), or sampled gates with running statistics (the control between the "
            "two).", ("training", "deployed", "running-statistics")),
    Setting("exits_only", "--exits-only", False, "Early-exit networks: train the exits only, on the frozen backbone "
            "of --init (SDN's IC-only)."),
    Setting("exit_accuracy_loss", "--exit-accuracy-loss", 0.01, "Early-exit networks: after each epoch the exit "
            "threshold is set on the held-out images (--val-samples) to the most permissive one that loses at most "
            "this much accuracy against no early exit."),
)}


def eval_default(name: str) -> Any:
    """The default of one evaluation setting.

    >>> eval_default("gate_mode"), eval_default("defense_grads")
    ('hard', ('oblivious', 'bpda', 'diff'))
    """
    return EVAL_SETTINGS[name].default


def train_default(name: str) -> Any:
    """The default of one training setting.

    >>> train_default("schedule"), train_default("exit_accuracy_loss")
    ('step', 0.01)
    """
    return TRAIN_SETTINGS[name].default
