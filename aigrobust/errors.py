"""The library's error types, in a module light enough for the command line to import before torch."""

from __future__ import annotations


class AigrobustError(Exception):
    """The base of every error aigrobust raises on purpose (a bad spec, a missing file, a run folder that does not
    match): ``except AigrobustError`` catches them all, and each also keeps the built-in type it always had
    (ValueError, KeyError, ...), so older ``except`` clauses still work.

    >>> import attacks
    >>> try:
    ...     attacks.get_attack("pgd", steps=0)
    ... except AigrobustError as err:
    ...     print(err)
    attack 'pgd': steps takes a positive integer up to 100000, got 0
    """


class CheckpointError(AigrobustError, ValueError):
    """A checkpoint that cannot be used: missing, corrupt, tampered with, or of another architecture."""


class DataError(AigrobustError, ValueError):
    """Data that is missing or malformed; the message says what to do."""

    def __init__(self, message: str = "") -> None:
        # raised in a DataLoader worker, it comes back as "Caught DataError in DataLoader worker process N.
        # Original Traceback ... DataError: MESSAGE": keep the message, one line as every other error
        marker = "DataError: "
        if message.startswith("Caught DataError") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


class UnknownModelError(AigrobustError, KeyError):
    """A model name that is not registered; the message suggests the closest names."""

    def __str__(self) -> str:
        return str(self.args[0])
