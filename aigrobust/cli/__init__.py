"""The ``aigrobust`` command line: thin click commands over the library, one module per command group
(:mod:`.commands` the group, ``eval`` and ``attack``; :mod:`.train`; :mod:`.readers` the commands that read what exists;
:mod:`.universal`), their option types (:mod:`.types`) and the checks of their inputs (:mod:`.inputs`)."""

from aigrobust.cli.commands import cli, main

__all__ = ["cli", "main"]
