"""Run any foolbox attack by name through the same result type: ``get_attack("foolbox:L2CarliniWagnerAttack")``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attacks.base import Attack, AttackResult, Model, validate_epsilons, validate_inputs
from attacks.distances import DISTANCES


class FoolboxAttack(Attack):
    """A foolbox attack class by name, with its keyword arguments; bounds (0, 1) as everywhere here.

    foolbox computes its own gradients through ``gradient_model`` (a torch module); success is re-judged on ``model``.
    """

    def __init__(self, attack_name: str, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(seed)
        import foolbox

        cls = getattr(foolbox.attacks, attack_name, None)
        if cls is None or not isinstance(cls, type):
            raise ValueError(f"foolbox has no attack {attack_name!r}")
        self.attack_name = attack_name
        self.kwargs = dict(kwargs)
        self.inner = cls(**kwargs)
        self.name = f"foolbox:{attack_name}"
        self.distance = DISTANCES["l2"] if attack_name.startswith("L2") else DISTANCES["linf"]

    def __call__(self, model: Model, inputs: Tensor, labels: Tensor, epsilons: Sequence[float],
                 gradient_model: Model | None = None, sample_ids: Tensor | Sequence[int] | None = None
                 ) -> AttackResult:
        import foolbox

        eps_values = validate_epsilons(epsilons)
        validate_inputs(inputs, labels)
        target = gradient_model or model
        if not isinstance(target, torch.nn.Module):
            raise TypeError("foolbox needs a torch.nn.Module")
        # foolbox draws random starts from torch's global generator, per batch: its results depend on the batch
        del sample_ids
        torch.manual_seed(self.seed)
        fmodel = foolbox.PyTorchModel(target, bounds=(0.0, 1.0), device=inputs.device)
        raw, clipped, _ = self.inner(fmodel, inputs, labels, epsilons=list(eps_values))
        raw_t = torch.stack([r.detach() for r in raw])
        clipped_t = torch.stack([c.detach() for c in clipped])
        already = self.already_adversarial(model, inputs, labels)
        raw_t[:, already] = inputs[already]
        clipped_t[:, already] = inputs[already]
        return AttackResult(eps_values, raw_t, clipped_t, judge=self.judge(model, inputs, labels))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **{k: str(v) for k, v in self.kwargs.items()}}
