"""Attacks on [0, 1] images: ``attack(model, inputs, labels, epsilons=[...]) -> AttackResult``.

``get_attack("pgd", steps=40)``, ``get_attack("foolbox:LinfDeepFoolAttack")``, or a spec string
``attack_from_spec("pgd:steps=40,restarts=2")``. This package depends on torch (and foolbox for the bridge) only.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from attacks.base import DISTANCES, Attack, AttackResult, Distance, L2Distance, LinfDistance, validate_epsilons
from attacks.gate_attacks import ComputeInflation, GateFlip
from attacks.gradient import APGD, BIM, FGSM, MIFGSM, PGD, apgd_checkpoints
from attacks.square import SquareAttack

_ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "fgm-l2": lambda **kw: FGSM(distance="l2", **kw),
    "bim": BIM,
    "pgd": PGD,
    "pgd-l2": lambda **kw: PGD(distance="l2", **kw),
    "mifgsm": MIFGSM,
    "apgd": APGD,
    "apgd-l2": lambda **kw: APGD(distance="l2", **kw),
    "square": SquareAttack,
    "compute-inflation": ComputeInflation,
    "compute-inflation-keep-label": lambda **kw: ComputeInflation(keep_label=True, **kw),
    "gate-flip": GateFlip,
}


class UnknownAttackError(KeyError):
    """An attack name that is not registered; the message suggests the closest."""

    def __str__(self) -> str:
        return str(self.args[0])


def list_attacks() -> list[str]:
    """Native attack names (any foolbox attack is reachable as 'foolbox:ClassName')."""
    return sorted(_ATTACKS)


def get_attack(name: str, **kwargs: Any) -> Attack:
    """An attack by name with its settings."""
    if name.startswith("foolbox:"):
        from attacks.foolbox_bridge import FoolboxAttack

        try:
            return FoolboxAttack(name.split(":", 1)[1], **kwargs)
        except ValueError as err:
            raise UnknownAttackError(str(err)) from None
    if name not in _ATTACKS:
        close = difflib.get_close_matches(name, list(_ATTACKS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_attacks())}, foolbox:NAME"
        raise UnknownAttackError(f"unknown attack {name!r}{hint}")
    try:
        return _ATTACKS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad settings for attack {name!r}: {err}") from None


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def attack_from_spec(spec: str) -> Attack:
    """'name' or 'name:key=value,key=value' (foolbox: 'foolbox:Class:key=value')."""
    if spec.startswith("foolbox:"):
        parts = spec.split(":", 2)
        name, settings = ":".join(parts[:2]), (parts[2] if len(parts) > 2 else "")
    else:
        name, _, settings = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"attack setting {item!r} in {spec!r} is not key=value")
        kwargs[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return get_attack(name, **kwargs)


__all__ = [
    "APGD", "BIM", "DISTANCES", "FGSM", "MIFGSM", "PGD", "Attack", "AttackResult", "ComputeInflation", "Distance",
    "GateFlip", "L2Distance", "LinfDistance", "SquareAttack", "UnknownAttackError", "apgd_checkpoints",
    "attack_from_spec", "get_attack", "list_attacks", "validate_epsilons",
]
