"""click parameter types and error handling of the command line: text becomes objects once, at parse time, and
every user error is one line (exit 2)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, NamedTuple

import click

from aigrobust.files import unusable_file

EXIT_DISK = 74  # sysexits' EX_IOERR: the disk, not the input, stopped the command
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class BadInput(click.ClickException):
    """A usage error shown as one line ('Error: ...'), exit code 2 like click's own usage errors."""

    exit_code = 2


class RunStopped(click.ClickException):
    """A run that began and then stopped on an error (in the network's code, say): one line saying what stopped it
    and what its folder keeps, exit 1."""

    exit_code = 1


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (which compare False with every bound and would pass it)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

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
        from aigrobust.evaluation import parse_epsilon

        try:
            epsilon = parse_epsilon(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)
        if self.positive and epsilon == 0:
            self.fail(f"epsilon {value!r} is 0: a perturbation of radius 0 changes nothing; give a radius above 0",
                      param, ctx)
        return epsilon


class SpecType(click.ParamType):
    """A spec string -> ParsedSpec(text, object), through ``parse`` (imported on first use: the module path and the
    function name), failing with one line on the errors it names."""

    def __init__(self, name: str, module: str, parse: str, errors: tuple[str, ...]) -> None:
        self.name = name
        self._where = (module, parse, errors)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ParsedSpec:
        if isinstance(value, ParsedSpec):
            return value
        import importlib

        module_name, parse_name, error_names = self._where
        module = importlib.import_module(module_name)
        errors = tuple(getattr(module, e) for e in error_names)
        try:
            return ParsedSpec(str(value), getattr(module, parse_name)(str(value)))
        except errors as err:
            self.fail(str(err), param, ctx)


# 'pgd:steps=40' -> ParsedSpec(text, Attack), every setting typed and range-checked; 'jpeg:75' -> ParsedSpec(text, Defense)
ATTACK_SPEC = SpecType("attack", "attacks", "attack_from_spec", ("UnknownAttackError", "AttackSpecError"))
DEFENSE_SPEC = SpecType("defense", "defenses", "parse_defense", ("DefenseSpecError",))


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
    """An option whose help text is computed when it is read (from a registry that imports torch), so that loading
    the command line stays fast; ``--help`` and the generated reference read it alike."""

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


class OneLineErrors(click.Group):
    """The one place where errors become one line and exit 2: click's usage errors (a missing argument, a bad
    choice) and every error the library raises on purpose (:class:`aigrobust.errors.AigrobustError`) that a command
    did not already word itself."""

    def invoke(self, ctx: click.Context) -> Any:
        from aigrobust.errors import AigrobustError

        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else ctx.command_path
            raise BadInput(f"{err.format_message()} (see {where} --help)") from None
        except AigrobustError as err:
            raise BadInput(str(err).strip("'\"")) from None


def given_on_command_line(name: str) -> bool:
    """Whether the current command's parameter ``name`` was typed (not left at its default)."""
    return click.get_current_context().get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
