"""The one grammar of every spec the project reads: an attack (``pgd:steps=20,restarts=2``,
``foolbox:Class:key=value``), a training method (``pgd:eps=8/255,steps=7``) and a defense (``jpeg:75``; parts
joined by ``+``: ``jpeg:50+median:2``).

``name[:key=value,...]``: a key reads ``-`` as ``_``; a value is ``true``/``false``, an integer, a number, a
fraction (``8/255``), ``auto`` (the owner chooses: None) or a word; a defense takes its one value bare. This
module is the syntax and the value rules; what each setting takes is its owner's rule, and every owner raises its
own error type, so a bad spec is one line that names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AUTO = "auto"  # the owner chooses the value (None once parsed)

# A value rule: a check and its wording ('a positive integer up to 1000'), as messages say what a setting takes.
Rule = tuple[Callable[[Any], bool], str]


@dataclass(frozen=True)
class SpecParts:
    """A spec split by the grammar: its name, each setting's value text in the order given, and a bare value
    (``jpeg:75``) where the owner takes one."""

    name: str
    settings: dict[str, str] = field(default_factory=dict)
    value: str | None = None


def split_spec(text: str, what: str = "attack", error: type[Exception] = ValueError,
               prefixed: tuple[str, ...] = ("foolbox",), bare_value: bool = False) -> SpecParts:
    """Split ``name[:key=value,...]``; a name under a prefix keeps it (``foolbox:LinfPGD:steps=5``).

    Args:
        text: the spec.
        what: the kind of spec, for messages ('attack setting ... is not key=value').
        error: the owner's error type, raised with one line.
        prefixed: names that take a second part (``foolbox:ClassName``).
        bare_value: the owner takes one value without a key (``jpeg:75``).

    Returns:
        The :class:`SpecParts`.

    >>> split_spec("pgd:steps=20,rel-stepsize=auto")
    SpecParts(name='pgd', settings={'steps': '20', 'rel_stepsize': 'auto'}, value=None)
    """
    text = text.strip()
    name = spec_name(text, prefixed)
    body = text[len(name) + 1:]
    items = [item.strip() for item in body.split(",") if item.strip()]
    if bare_value and len(items) == 1 and "=" not in items[0]:
        return SpecParts(name.strip(), {}, items[0])
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise error(f"{what} setting {item!r} in {text!r} is not key=value")
        key = key.strip().replace("-", "_")
        if key in settings:
            raise error(f"{what} setting {key!r} is given twice in {text!r}")
        settings[key] = value.strip()
    return SpecParts(name.strip(), settings)


def spec_name(text: str, prefixed: tuple[str, ...] = ("foolbox",)) -> str:
    """The name alone, without reading the settings (an old record's text need not parse).

    >>> spec_name("foolbox:LinfPGD:steps=5"), spec_name("pgd:steps=20")
    ('foolbox:LinfPGD', 'pgd')
    """
    pieces = text.strip().split(":", 2)
    return ":".join(pieces[:2]) if pieces[0] in prefixed and len(pieces) > 1 else pieces[0]


def parse_value(text: str) -> Any:
    """A setting's value: 'auto' -> None, 'true'/'false' -> bool, '20' -> 20, '0.1' -> 0.1, '8/255' -> a float,
    anything else the text itself (the owner's rule then says what it takes).

    >>> parse_value("8/255") == 8 / 255, parse_value("auto"), parse_value("false"), parse_value("l2")
    (True, None, False, 'l2')
    """
    text = text.strip()
    lowered = text.lower()
    if lowered == AUTO:
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    top, slash, bottom = text.partition("/")
    if slash:
        try:
            return float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            pass
    return text


def format_value(value: Any) -> str:
    """A setting's value as a canonical spec writes it, so that it parses back to the same value.

    >>> format_value(None), format_value(True), format_value(0.1), format_value(20)
    ('auto', 'true', '0.1', '20')
    """
    if value is None:
        return AUTO
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def require(owner: str, key: str, value: Any, rule: Rule, error: type[Exception]) -> None:
    """Raise ``error`` with one line (``"attack 'pgd': steps takes a positive integer ..., got 0"``) unless
    ``value`` passes ``rule``."""
    check, wording = rule
    if not check(value):
        raise error(f"{owner}: {key} takes {wording}, got {value!r}")


def positive_int(v: Any) -> bool:
    """An int (not a bool) of at least 1."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
