"""The ``aigrobust`` command line: thin click commands over the library, one module per command or command group
(:mod:`.commands` the group and its table of commands; :mod:`.attack`, :mod:`.evaluate`, :mod:`.train`,
:mod:`.universal`; :mod:`.readers` the commands that read what exists), their option types (:mod:`.types`), how
they end (:mod:`.exits`) and the checks of their inputs (:mod:`.inputs`, :mod:`.run_inputs`,
:mod:`.training_inputs`)."""

from aigrobust.cli.commands import cli, main

__all__ = ["cli", "main"]
