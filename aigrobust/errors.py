"""The library's error types, in a module light enough for the command line to import before torch."""

from __future__ import annotations


class AigrobustError(Exception):
    """The base of every error aigrobust raises on purpose (a bad spec, a missing file, a run folder that does not
    match): ``except AigrobustError`` catches them all, and each also keeps the built-in type it always had
    (ValueError, KeyError, ...), so older ``except`` clauses still work."""


class CheckpointError(AigrobustError, ValueError):
    """A checkpoint that cannot be used: missing, corrupt, tampered with, or of another architecture."""


class DataError(AigrobustError, ValueError):
    """Data that is missing or malformed; the message says what to do."""
