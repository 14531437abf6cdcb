"""Input defenses with their attacker gradient settings; ``parse_defense("jpeg:50+median:2")``."""

from __future__ import annotations

from dataclasses import dataclass

from aigrobust.errors import AigrobustError
from aigrobust.registry import Registry
from aigrobust.specs import split_spec
from defenses.base import AttackerDefenseView, Compose, DefendedModel, Defense, DefenseGrad, NoDefense, bpda
from defenses.transforms import JPEG, BitDepth, MedianSmoothing, RandomResizePad, pillow_jpeg_round_trip, to_uint8


@dataclass(frozen=True)
class DefenseEntry:
    """One registered defense: its class, the type of its one parameter, and an example for the help text."""

    cls: type[Defense]
    cast: type = int
    example: str = ""


_DEFENSES: Registry[DefenseEntry] = Registry("defense")
_CAST_NAMES = {int: "an integer", float: "a number"}


def register_defense(name: str, cls: type[Defense], cast: type = int, example: str = "") -> None:
    """Add a defense under ``name`` (``name:VALUE`` in specs): the one place the parser, the help texts and the
    catalogue read. A randomised defense says so with ``randomized = True`` on its class (and ``reseed(seed)``).

    Args:
        name: the name in specs; new, and not ``none``.
        cls: the :class:`~defenses.base.Defense` subclass; it is built with the spec's one value.
        cast: the type of that value (``int`` for ``jpeg:75``, ``float`` for ``randpad:0.875``).
        example: the spelling help texts show (default: the name alone).

    >>> class Blur(BitDepth):
    ...     name = "blur"
    >>> register_defense("blur", Blur, int, "blur:3")  # doctest: +SKIP
    >>> defense_examples()  # what the registrations give the help texts
    'none, jpeg:75, bits:4, median:2, randpad:0.875'
    """
    if name == "none":
        raise ValueError("defense 'none' is the reference every run holds: it cannot be registered")
    _DEFENSES.add(name, DefenseEntry(cls, cast, example or name))


register_defense("jpeg", JPEG, int, "jpeg:75")
register_defense("bits", BitDepth, int, "bits:4")
register_defense("median", MedianSmoothing, int, "median:2")
register_defense("randpad", RandomResizePad, float, "randpad:0.875")


def defense_examples() -> str:
    """'none, jpeg:75, bits:4, ...': one example per registered defense, for help texts."""
    return ", ".join(["none", *(e.example for e in _DEFENSES.values())])


class DefenseSpecError(AigrobustError, ValueError):
    """A defense spec that cannot be parsed (unknown name or bad parameter)."""


def parse_defense(spec: str) -> Defense:
    """A defense from its spec: ``none``, one registered defense, or parts joined by ``+`` (applied in order).

    Args:
        spec: ``'none'``, ``'jpeg:75'``, ``'bits:4'``, ``'median:2'``, ``'randpad:0.875'``, or e.g.
            ``'jpeg:50+median:2'``; a registered name alone takes its default.

    Returns:
        The :class:`~defenses.base.Defense` (a :class:`Compose` for several parts); a bad spec raises
        ``DefenseSpecError`` naming it.

    >>> parse_defense("jpeg:50+median:2").spec
    'jpeg:50+median:2'
    """
    text = spec.strip().lower()
    if text in ("none", ""):
        return NoDefense()
    parts = []
    for part in text.split("+"):
        split = split_spec(part, "defense", DefenseSpecError, prefixed=(), bare_value=True)
        name, value = split.name, split.value or ""
        if split.settings:  # 'jpeg:quality=75'
            raise DefenseSpecError(f"{spec!r}: a defense takes its one value bare, as in {defense_examples()}")
        if name == "none":
            raise DefenseSpecError(f"'none' cannot be joined with other defenses in {spec!r}; give it alone")
        if name not in _DEFENSES:
            raise DefenseSpecError(f"unknown defense {name!r} in {spec!r}; known: none, {', '.join(_DEFENSES)}")
        cls, cast = _DEFENSES[name].cls, _DEFENSES[name].cast
        try:
            parts.append(cls(cast(value)) if value else cls())
        except ValueError as err:
            if "must" in str(err):
                raise DefenseSpecError(f"{spec!r}: {err}") from None
            raise DefenseSpecError(f"{spec!r}: {name} takes {_CAST_NAMES[cast]}, got {value!r}") from None
    return parts[0] if len(parts) == 1 else Compose(parts)


__all__ = ["JPEG", "AttackerDefenseView", "DefenseEntry", "defense_examples", "register_defense", "BitDepth", "Compose", "DefendedModel", "Defense", "DefenseGrad",
           "DefenseSpecError", "MedianSmoothing", "NoDefense", "RandomResizePad", "bpda", "parse_defense",
           "pillow_jpeg_round_trip", "to_uint8"]
