"""Input defenses with their attacker gradient settings; ``parse_defense("jpeg:50+median:2")``."""

from __future__ import annotations

from defenses.base import AttackerDefenseView, Compose, DefendedModel, Defense, DefenseGrad, NoDefense, bpda
from defenses.transforms import JPEG, BitDepth, MedianSmoothing, RandomResizePad, pillow_jpeg_round_trip, to_uint8

_KINDS = {"jpeg": (JPEG, int), "bits": (BitDepth, int), "median": (MedianSmoothing, int),
          "randpad": (RandomResizePad, float)}
_CAST_NAMES = {int: "an integer", float: "a number"}


class DefenseSpecError(ValueError):
    """A defense spec that cannot be parsed (unknown name or bad parameter)."""


def parse_defense(spec: str) -> Defense:
    """'none', 'jpeg:75', 'bits:4', 'median:2', 'randpad:0.875', or parts joined by '+'."""
    text = spec.strip().lower()
    if text in ("none", ""):
        return NoDefense()
    parts = []
    for part in text.split("+"):
        name, _, value = part.partition(":")
        if name == "none":
            raise DefenseSpecError(f"'none' cannot be joined with other defenses in {spec!r}; give it alone")
        if name not in _KINDS:
            raise DefenseSpecError(f"unknown defense {name!r} in {spec!r}; known: none, {', '.join(_KINDS)}")
        cls, cast = _KINDS[name]
        try:
            parts.append(cls(cast(value)) if value else cls())
        except ValueError as err:
            if "must" in str(err):
                raise DefenseSpecError(f"{spec!r}: {err}") from None
            raise DefenseSpecError(f"{spec!r}: {name} takes {_CAST_NAMES[cast]}, got {value!r}") from None
    return parts[0] if len(parts) == 1 else Compose(parts)


__all__ = ["JPEG", "AttackerDefenseView", "BitDepth", "Compose", "DefendedModel", "Defense", "DefenseGrad",
           "DefenseSpecError", "MedianSmoothing", "NoDefense", "RandomResizePad", "bpda", "parse_defense",
           "pillow_jpeg_round_trip", "to_uint8"]
