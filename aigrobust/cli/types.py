"""click parameter types of the command line: text becomes objects once, at parse time, and every bad value is
one line (exit 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click

from aigrobust.evaluation import parse_epsilon
from aigrobust.files import unusable_file
from attacks import AttackSpecError, UnknownAttackError, attack_from_spec
from defenses import DefenseSpecError, parse_defense


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (which compare False with every bound and would pass it)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):  # before the range: 'inf' is not a number out of range but no number at all
            self.fail(f"{value!r} is not a finite number", param, ctx)  # one line: OneLineErrors formats it
        return super().convert(number, param, ctx)


class ParsedSpec(NamedTuple):
    """A spec as typed (what run.json stores) and the object parsed from it once."""

    text: str
    value: Any


class EpsilonType(click.ParamType):
    """'0.03' or '8/255' -> a float in [0, 1]; ``positive`` refuses 0 (where a radius of 0 leaves nothing to do)."""

    name = "epsilon"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            epsilon = parse_epsilon(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)
        if self.positive and epsilon == 0:
            self.fail(f"epsilon {value!r} is 0: a perturbation of radius 0 changes nothing; give a radius above 0",
                      param, ctx)
        return epsilon


class SpecType(click.ParamType):
    """A spec string -> ParsedSpec(text, object), through ``parse``, failing with one line on ``errors``."""

    def __init__(self, name: str, parse: Callable[[str], Any], errors: tuple[type[Exception], ...]) -> None:
        self.name = name
        self.parse, self.errors = parse, errors

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ParsedSpec:
        if isinstance(value, ParsedSpec):
            return value
        try:
            return ParsedSpec(str(value), self.parse(str(value)))
        except self.errors as err:
            self.fail(str(err), param, ctx)


# 'pgd:steps=40' -> ParsedSpec(text, Attack), every setting typed and range-checked; 'jpeg:75' -> ParsedSpec(text, Defense)
ATTACK_SPEC = SpecType("attack", attack_from_spec, (UnknownAttackError, AttackSpecError))
DEFENSE_SPEC = SpecType("defense", parse_defense, (DefenseSpecError,))


class CheckpointRef(NamedTuple):
    """A checkpoint as given: the label its records carry ('' for the model's own name) and its path."""

    label: str
    path: Path


class CheckpointType(click.ParamType):
    """'[LABEL=]PATH' -> CheckpointRef; the file must exist (its content is checked when it is loaded)."""

    name = "checkpoint"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> CheckpointRef:
        if isinstance(value, CheckpointRef):
            return value
        label, sep, path = str(value).partition("=")
        if not sep or not label or "/" in label or Path(str(value)).exists():
            label, path = "", str(value)
        why = unusable_file(Path(path))
        if why is not None:
            self.fail(f"checkpoint {path} {why}", param, ctx)
        return CheckpointRef(label, Path(path))


class LazyHelpOption(click.Option):
    """An option whose help text is computed when it is read (from a registry), so that a part registered after the
    command was built shows too; ``--help`` and the generated reference read it alike."""

    def __init__(self, *args: Any, help_from: Any = None, **kwargs: Any) -> None:
        self._help_from = help_from
        self._help_text: str | None = None
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def help(self) -> str | None:
        # computed at each reading: a part registered after the command line was built shows too
        return self._help_from() if self._help_from is not None else self._help_text

    @help.setter
    def help(self, value: str | None) -> None:
        self._help_text = value


def given_on_command_line(name: str) -> bool:
    """Whether the current command's parameter ``name`` was typed (not left at its default)."""
    return click.get_current_context().get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
