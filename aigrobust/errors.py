"""The library's error types, in a module light enough for the command line to import before torch."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, tampered with, or of another architecture."""


class DataError(ValueError):
    """Data that is missing or malformed; the message says what to do."""
