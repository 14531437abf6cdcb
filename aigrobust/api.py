"""The one-call Python API: ``aigrobust.evaluate(models, images, labels, attacks=..., epsilons=...)``.

In the spirit of RobustBench's ``benchmark``: everything the command line's ``attack`` does for a run folder, for
tensors already in memory, returning the summary table and the per-sample records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from aigrobust.evaluation import EvalSpec, ModelEntry, parse_epsilon, run_evaluation
from aigrobust.evaluation.fit import channels_last_hint, check_fit, declared_input_shape
from aigrobust.evaluation.metrics import WORST, summarize
from aigrobust.models.adapter import as_evaluable
from aigrobust.models.factory import create_model
from aigrobust.models.facts import weights_available
from aigrobust.models.folding import why_not_foldable
from attacks import attack_from_spec
from attacks.base import validate_inputs


@dataclass(frozen=True)
class Summary:
    """The outcome of :func:`evaluate`.

    Args:
        table: one row per model, defense setting, attack, gate gradient and epsilon (worst cases included), with
            robust accuracy, its interval, FLOPs clean and attacked and gate stability; the columns are listed on
            the Outputs page.
        records: one row per sample of each of those settings (the columns of ``records.csv.gz``).
        spec: the :class:`~aigrobust.evaluation.EvalSpec` that made them.

    >>> import pandas as pd
    >>> from aigrobust.evaluation import EvalSpec
    >>> summary = Summary(pd.DataFrame(), pd.DataFrame(), EvalSpec(attacks=("fgsm",), epsilons=(8 / 255,)))
    >>> summary.spec.attacks
    ('fgsm',)
    """

    table: pd.DataFrame
    records: pd.DataFrame
    spec: EvalSpec

    def robust_accuracy(self, model: str, epsilon: float, attack: str = WORST, defense: str = "none") -> float:
        """Robust accuracy of one model at one epsilon (default: the worst case over every attack run); ``attack``
        in any spelling of its spec ('pgd', 'pgd:steps=20')."""
        if attack != WORST:
            attack = attack_from_spec(attack).spec
        rows = self.table[(self.table["model"] == model) & (self.table["attack"] == attack)
                          & (self.table["defense"] == defense) & np.isclose(self.table["epsilon"], epsilon)]
        if attack == WORST and rows.empty:  # a single attack: its own rows are the worst case
            rows = self.table[(self.table["model"] == model) & (self.table["defense"] == defense)
                              & np.isclose(self.table["epsilon"], epsilon)]
        if rows.empty:
            raise KeyError(f"no result for {model!r}, {attack!r}, {defense!r} at epsilon {epsilon}")
        return float(rows["robust_acc"].min())


def evaluate(models: nn.Module | str | Sequence[nn.Module | str] | Mapping[str, nn.Module | str],
             images: Tensor, labels: Tensor, *, attacks: Sequence[str] = ("fgsm",),
             epsilons: Sequence[float | str] = (8 / 255,), defenses: Sequence[str] = ("none",),
             defense_grads: Sequence[str] = ("oblivious", "bpda", "diff"), gate_grads: Sequence[str] = ("exact",),
             gate_mode: str = "hard", seed: int = 0, batch_size: int = 256, early_exit: bool = False,
             device: torch.device | str = "cpu", progress: bool = False, fold_batchnorm: bool = False) -> Summary:
    """Attack ``models`` on ``images`` (float (N, C, H, W) in [0, 1]) with ``labels`` at every epsilon.

    ``models``: a model, a registered name (its shipped or torchvision weights), or several as a list or as a
    mapping from the names the records should carry. Attack and defense specs are the command line's
    (``"pgd:steps=20"``, ``"jpeg:75"``); epsilons may be numbers or fractions (``"8/255"``). Bad input raises
    ``ValueError`` naming it, before any attack runs. Your modules are evaluated in eval mode and left in the mode
    they were given in. ``progress=True`` shows the command line's progress bar (images done, over every model) on
    standard error. ``fold_batchnorm=True`` attacks copies of aigrobust's own networks with their BatchNorm folded
    into the convolutions (faster; outcomes agree, records not bit for bit those of an unfolded run).

    Args:
        models: the networks (modules, registered names, or a mapping from the names the records carry).
        images: float (N, C, H, W) in [0, 1].
        labels: N integer class indices.
        attacks: attack specs, as ``--attack`` takes them.
        epsilons: the sweep (numbers or fractions); 0, the clean reference, is always added.
        defenses: input defenses (``"jpeg:75"``); ``"none"`` is always run.
        defense_grads: how attackers treat a defense: ``oblivious``, ``bpda``, ``diff``, ``eot``.
        gate_grads: how gradients pass hard gates: ``exact``, ``straight-through``, ``soft``.
        gate_mode: the deployed network's gates: ``hard`` or ``stochastic``.
        seed: the seed of every keyed random draw (random starts, Square's proposals, stochastic gates).
        batch_size: images per batch (the records do not depend on it).
        early_exit: attack a sample only while it is still robust (the attacks as a chain).
        device: where to run.
        progress: show a progress bar on standard error.
        fold_batchnorm: attack BatchNorm-folded copies (see above).

    Returns:
        A :class:`Summary`: the per-sample records and the summary table, as ``aigrobust attack`` writes them.

    >>> import torch, aigrobust
    >>> x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    >>> summary = aigrobust.evaluate("resnet20", x, y, attacks=["fgsm"], epsilons=["8/255"])
    >>> summary.table[["model", "attack_label"]].drop_duplicates().values.tolist()
    [['resnet20', 'FGSM']]
    >>> summary.table["epsilon"].round(4).tolist()
    [0.0, 0.0314]
    >>> 0.0 <= summary.robust_accuracy("resnet20", 8 / 255) <= 1.0
    True
    """
    given = [models] if isinstance(models, nn.Module) else list(models.values()) if isinstance(models, Mapping) \
        else list(models) if isinstance(models, Sequence) and not isinstance(models, str) else []
    modes = [(m, m.training) for top in given if isinstance(top, nn.Module) for m in top.modules()]
    try:
        return _evaluate(models, images, labels, attacks=attacks, epsilons=epsilons, defenses=defenses,
                         defense_grads=defense_grads, gate_grads=gate_grads, gate_mode=gate_mode, seed=seed,
                         batch_size=batch_size, early_exit=early_exit, device=device, progress=progress,
                         fold_batchnorm=fold_batchnorm)
    finally:
        for module, training in modes:  # the caller's modules as they came, whatever happened
            module.training = training


def _evaluate(models: Any, images: Any, labels: Any, *, attacks: Sequence[str], epsilons: Sequence[float | str],
              defenses: Sequence[str], defense_grads: Sequence[str], gate_grads: Sequence[str], gate_mode: str,
              seed: int, batch_size: int, early_exit: bool, device: torch.device | str, progress: bool,
              fold_batchnorm: bool = False) -> Summary:
    """:func:`evaluate` once the caller's modules' modes are saved."""
    if isinstance(epsilons, (str, float, int)) or not len(epsilons):
        raise ValueError("give epsilons as a non-empty list, e.g. [8/255] (0 is added as the clean reference)")
    entries = _entries(models)
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor (N, C, H, W) with values in [0, 1]")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"give as many labels as images (and at least one): {len(images)} images, "
                         f"{len(labels)} labels")
    labels = torch.as_tensor(labels)  # arrays and lists too; the attacks take tensors
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D tensor of integer class indices, got {tuple(labels.shape)} "
                         f"{labels.dtype}")
    labels = labels.to(torch.int64)
    images = images.detach()  # the attacks make their own leaves; a caller's graph stays the caller's
    validate_inputs(images, labels)  # finite [0, 1] pixels: the attacks' own check, before any model runs
    for entry in entries:
        _check_declared_input(entry, images)
        check_fit(entry.name, entry.model, images, labels, deterministic=gate_mode != "stochastic")
        why = why_not_foldable(entry.model) if fold_batchnorm else None
        if why is not None:
            raise ValueError(f"fold_batchnorm: {entry.name}: {why}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # the spec parses every attack and defense once, here, so a bad one fails before the first batch
    spec = EvalSpec(attacks=tuple(attacks), epsilons=tuple(parse_epsilon(e) for e in epsilons),
                    gate_grads=tuple(gate_grads), gate_mode=gate_mode, seed=seed, defenses=tuple(defenses),
                    defense_grads=tuple(defense_grads), early_exit=early_exit, fold_batchnorm=fold_batchnorm)
    with tqdm(total=len(labels) * len(entries), unit="img", disable=not progress) as bar:
        run = run_evaluation(entries, spec, images, labels, np.arange(len(labels)), batch_size=batch_size,
                             device=device, on_batch=lambda _model, n: bar.update(n))
    full_flops = {e.name: float(e.model.flop_profile(tuple(images.shape[1:])).full) for e in entries}
    return Summary(table=summarize(run.records, full_flops=full_flops, input_values=int(images[0].numel())),
                   records=run.records, spec=spec)


def _check_declared_input(entry: ModelEntry, images: Tensor) -> None:
    """A registered model's images must have its declared shape: a CIFAR ResNet also runs 64x64 images (its pooling
    is global), and would be evaluated on inputs it was never meant for."""
    declared = declared_input_shape(entry.model)
    if declared is not None and tuple(images.shape[1:]) != declared:
        raise ValueError(f"images of shape {tuple(images.shape[1:])} (C, H, W) do not fit {entry.name}, which takes "
                         f"{declared}{channels_last_hint(images)}")


def _entries(models: nn.Module | str | Sequence[nn.Module | str] | Mapping[str, nn.Module | str]) -> list[ModelEntry]:
    if isinstance(models, (nn.Module, str)):
        models = [models]
    named = (list(models.items()) if isinstance(models, Mapping)
             else [(m if isinstance(m, str) else getattr(m, "registry_name", type(m).__name__), m) for m in models])
    if not named:
        raise ValueError("give at least one model")
    entries = []
    for name, model in named:
        if not isinstance(model, (nn.Module, str)):
            raise ValueError(f"{name}: a model must be a torch nn.Module or a registered name, got "
                             f"{type(model).__name__}")
        if isinstance(model, str) and weights_available(model) == "torchvision*":  # as the CLI refuses it
            raise ValueError(f"{model}'s gates have no published weights (torchvision has only its residual "
                             "branches): pass a trained model, e.g. load_checkpoint(path)[0]")
        built = create_model(model, pretrained=True) if isinstance(model, str) else as_evaluable(model, str(name))
        entries.append(ModelEntry(str(name), built.eval(), source="pretrained" if isinstance(model, str) else "memory"))
    if len({e.name for e in entries}) != len(entries):
        raise ValueError("two models share a name; pass a mapping {name: model}")
    return entries
