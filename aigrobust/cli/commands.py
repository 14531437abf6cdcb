"""The ``aigrobust`` group and the entry point. Each command lives in its own module of this package, imported when
it runs (or when its own ``--help`` is asked for): the table below is the one place the group names them, so that
``aigrobust --help`` and ``--version`` answer without loading torch.

Only the cli package prints, parses arguments and owns progress bars; user errors become one line and a non-zero
exit.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from aigrobust.cli.exits import DISK_ERRORS, EXIT_DISK, OneLineErrors

# command name -> (module, the click command in it); a new command is a module here and a line in this table
COMMANDS: Mapping[str, tuple[str, str]] = {
    "attack": ("aigrobust.cli.attack", "attack_command"),
    "attacks": ("aigrobust.cli.readers", "attacks_command"),
    "check": ("aigrobust.cli.readers", "check_command"),
    "eval": ("aigrobust.cli.evaluate", "eval_command"),
    "models": ("aigrobust.cli.readers", "models_command"),
    "report": ("aigrobust.cli.readers", "report_command"),
    "train": ("aigrobust.cli.train", "train_command"),
    "universal": ("aigrobust.cli.universal", "universal_command"),
}


class CommandTable(OneLineErrors):
    """A group whose commands are imported from :data:`COMMANDS` on first use (click's lazy subcommands); the
    group's own ``--help`` reads each command's first docstring line from its source without importing it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module_name), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, click.utils.make_default_short_help(command_docstring(*COMMANDS[name]), limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def command_docstring(module_name: str, function: str) -> str:
    """The docstring of the command ``function`` in ``module_name``, read from its source (nothing is imported)."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    tree = ast.parse(Path(spec.origin).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    return ast.get_docstring(node) or ""


log = logging.getLogger("aigrobust")


@click.group(cls=CommandTable, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigrobust")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """aigrobust: adversarial robustness of gated ResNets (ConvNet-AIG) and plain ResNets."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so every ``finally`` and lock release runs on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


RESUMABLE_COMMANDS = ("attack", "train")  # the commands with --resume


def _how_to_continue(arguments: list[str]) -> str:
    """What to run after a stop: the same command with --resume where it has one, else the same command again."""
    command = next((a for a in arguments if not a.startswith("-")), "")
    if command in RESUMABLE_COMMANDS:
        return "run the same command with --resume to continue"
    return "run the same command again (its outputs are written whole or not at all)"


def main() -> None:
    """Console-script entry point. SIGINT and SIGTERM end a command the same way: what was saved stays (run
    folders, training checkpoints: ``--resume`` continues), locks are released, one line on stderr, exit 128 + the
    signal number (130 for SIGINT, 143 for SIGTERM), as shells report a process killed by it. A full disk (or a
    quota, a read-only or failing one) ends it with one line and exit 74: every file is written through a temporary
    and a rename, so nothing is left half-written."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        cli(prog_name="aigrobust")
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        click.echo(f"aigrobust: {err.strerror or os.strerror(err.errno)}{where}; what was saved before is kept and "
                   f"whole: free space, then {_how_to_continue(sys.argv[1:])}", err=True)
        sys.exit(EXIT_DISK)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        click.echo(f"aigrobust: stopped by {name}; what was saved is kept: {_how_to_continue(sys.argv[1:])}",
                   err=True)
        sys.exit(128 + stop.signum)
