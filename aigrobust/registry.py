"""One registry type for every kind of named part: models, attacks, defenses, report figures, training methods.

A :class:`Registry` is a dict of name -> entry in registration order that refuses a name registered twice and
suggests close names for an unknown one; each kind keeps its own entry type and its own register function."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Named entries of one ``kind`` ('model', 'attack', ...), in registration order."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def check_free(self, name: str) -> None:
        """A ValueError ('... is already registered') where ``name`` is taken."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice: it is already registered")

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a name already taken: see :meth:`check_free`)."""
        self.check_free(name)
        self[name] = entry
        return entry

    def close_names(self, name: str, n: int = 3) -> list[str]:
        """Registered names that look like ``name`` (for 'did you mean ...?')."""
        return difflib.get_close_matches(name, list(self), n=n, cutoff=0.5)
