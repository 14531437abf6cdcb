"""How the command line ends: one line and exit 2 for bad input, exit 1 for a run that stopped, 74 for a full disk.
Imports neither torch nor the library, so that the group and its ``--help`` load without them."""

from __future__ import annotations

import errno
from typing import Any

import click

from aigrobust.errors import AigrobustError

EXIT_DISK = 74  # sysexits' EX_IOERR: the disk, not the input, stopped the command
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class BadInput(click.ClickException):
    """A usage error shown as one line ('Error: ...'), exit code 2 like click's own usage errors."""

    exit_code = 2


class RunStopped(click.ClickException):
    """A run that began and then stopped on an error (in the network's code, say): one line saying what stopped it
    and what its folder keeps, exit 1."""

    exit_code = 1


class OneLineErrors(click.Group):
    """The one place where errors become one line and exit 2: click's usage errors (a missing argument, a bad
    choice) and every error the library raises on purpose (:class:`aigrobust.errors.AigrobustError`) that a command
    did not already word itself."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else ctx.command_path
            raise BadInput(f"{err.format_message()} (see {where} --help)") from None
        except AigrobustError as err:
            raise BadInput(str(err).strip("'\"")) from None
