"""The figures of each training epoch on the held-out images: clean accuracy, execution rates and FLOPs, and in
adversarial training PGD-10 at the training radius, with each gate's execution rate on the clean and on the
attacked images (routing collapse shows there first); early-exit thresholds are calibrated there first."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from aigrobust.data import ArrayDataset
from aigrobust.evaluation.clean_accuracy import evaluate_clean, iterate_batches
from aigrobust.models.base import ResNetBase
from aigrobust.training.config import EpochRecord, TrainConfig, overfitting_warning
from aigrobust.training.inner_attacks import InnerAttack
from aigrobust.training.state import Run
from attacks import attack_from_spec

VALIDATION_ATTACK = "pgd:steps=10,rel_stepsize=0.25"  # Madry's evaluation budget: 10 steps of eps/4, random start


@dataclass(frozen=True)
class RobustValidation:
    """Clean and PGD-10 accuracy on a validation split, execution rates per block and FLOPs ratios of both."""

    n_samples: int
    clean_accuracy: float
    robust_accuracy: float
    clean_execution_rates: tuple[float, ...]
    adversarial_execution_rates: tuple[float, ...]
    clean_flops_ratio: float
    adversarial_flops_ratio: float


def validate_robust(model: ResNetBase, dataset: Dataset, eps: float, batch_size: int = 250,
                    device: torch.device | str = "cpu", seed: int = 0) -> RobustValidation:
    """PGD-10 (step eps/4, random start keyed by sample position and ``seed``) against ``model`` in eval mode;
    a sample is robust when it is right on the clean image and on the attacked one."""

    attack = attack_from_spec(VALIDATION_ATTACK + f",seed={seed}")
    was_training = model.training
    model.eval()
    n = correct = robust = 0
    clean_open = adv_open = None
    clean_flops = adv_flops = 0.0
    full = 0.0
    try:
        for images, labels in iterate_batches(dataset, batch_size):
            images, labels = images.to(device), labels.to(device)
            with torch.no_grad():
                logits, clean_trace = model.forward_with_gates(images)
            result = attack(model, images, labels, [eps], sample_ids=torch.arange(n, n + len(labels)))
            with torch.no_grad():
                adv_logits, adv_trace = model.forward_with_gates(result.clipped[0])
            right = logits.argmax(1) == labels
            correct += int(right.sum())
            robust += int((right & (adv_logits.argmax(1) == labels)).sum())
            c, a = clean_trace.decisions.double().sum(0).cpu(), adv_trace.decisions.double().sum(0).cpu()
            clean_open = c if clean_open is None else clean_open + c
            adv_open = a if adv_open is None else adv_open + a
            clean_flops += float(clean_trace.flops.double().sum())
            adv_flops += float(adv_trace.flops.double().sum())
            full = model.flop_profile(tuple(images.shape[1:])).full
            n += len(labels)
    finally:
        model.train(was_training)
    if n == 0 or clean_open is None or adv_open is None:
        raise ValueError("the validation split is empty")
    return RobustValidation(
        n_samples=n, clean_accuracy=correct / n, robust_accuracy=robust / n,
        clean_execution_rates=tuple(round(float(v) / n, 4) for v in clean_open),
        adversarial_execution_rates=tuple(round(float(v) / n, 4) for v in adv_open),
        clean_flops_ratio=clean_flops / n / full, adversarial_flops_ratio=adv_flops / n / full)


def calibrate_exits(published: nn.Module, trained: nn.Module, heldout: Any, accuracy_loss: float,
                    device: torch.device) -> None:
    """Set an early-exit network's threshold on the held-out images (``published``: the network the figures and
    checkpoints describe, the weight average where one is kept); the trained network takes the same threshold."""
    images, labels = heldout.tensors()
    threshold = published.calibrate_exits(images.to(device), labels.to(device), accuracy_loss)  # type: ignore[operator]
    trained.exit_threshold.fill_(threshold)  # type: ignore[operator]


def epoch_record(run: Run, config: TrainConfig, inner: InnerAttack | None, heldout: ArrayDataset | None,
                 device: torch.device, epoch: int, lr: float, tally: Any, started: float) -> EpochRecord:
    """One epoch's figures: the training tally, and on the held-out images PGD-10 (adversarial training) or clean
    accuracy, execution rates and FLOPs. An early-exit network's threshold is calibrated on the held-out images
    first, so that the figures (and the checkpoints) describe the network as it will be deployed."""
    if heldout is not None and hasattr(run.published, "calibrate_exits"):
        calibrate_exits(run.published, run.model, heldout, config.exit_accuracy_loss, device)
    if inner is not None and heldout is not None:
        robust = _robust_figures(run, heldout, inner.eps, device, config.seed)
        evaluation = None
    else:
        robust = {}
        evaluation = (evaluate_clean(run.published, heldout, batch_size=256, device=device)
                      if heldout is not None else None)
    return EpochRecord(
        epoch=epoch + 1,
        lr=lr,
        train_loss=tally.loss / tally.seen,
        train_accuracy=tally.correct / tally.seen,
        rate_loss=tally.rate / tally.seen,
        train_execution_rates=tuple(round(float(v), 4) for v in tally.executed / tally.seen),
        **({} if robust else {
            "heldout_accuracy": evaluation.accuracy if evaluation else None,
            "heldout_execution_rates": (tuple(round(v, 4) for v in evaluation.execution_rates)
                                        if evaluation else ()),
            "heldout_flops_ratio": evaluation.flops_ratio if evaluation else None}),
        seconds=time.perf_counter() - started,
        heldout_top5=evaluation.top5_accuracy if evaluation else None,
        **robust,
    )


def _robust_figures(run: Run, heldout: ArrayDataset, eps: float, device: torch.device, seed: int) -> dict[str, Any]:
    """The epoch's validation figures under PGD-10 as EpochRecord fields: clean ones in the held-out fields, the
    best-so-far flag, and a warning where robust accuracy fell by more than OVERFITTING_DROP since the last epoch."""
    figures = validate_robust(run.published, heldout, eps, device=device, seed=seed)
    earlier = [r.heldout_robust_accuracy for r in run.history if r.heldout_robust_accuracy is not None]
    warning = overfitting_warning(earlier[-1] if earlier else None, figures.robust_accuracy)
    return {
        "heldout_accuracy": figures.clean_accuracy,
        "heldout_execution_rates": figures.clean_execution_rates,
        "heldout_flops_ratio": figures.clean_flops_ratio,
        "heldout_robust_accuracy": figures.robust_accuracy,
        "heldout_adversarial_execution_rates": figures.adversarial_execution_rates,
        "heldout_adversarial_flops_ratio": figures.adversarial_flops_ratio,
        "best": not earlier or figures.robust_accuracy > max(earlier),
        "warning": warning,
    }
