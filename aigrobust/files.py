"""File helpers shared by runs, reports, baselines and checkpoints: atomic writes, folder swaps and hashes.

A leaf module: it imports neither torch nor the models, so readers of run folders stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aigrobust.errors import AigrobustError

NOT_FOUND = "not found"  # unusable_file's word for a path with nothing there (some readers accept that)


def unusable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None where it can: missing, a folder, a broken link, or not a
    regular file (reading a pipe, socket or device would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken link" if os.path.islink(path) else NOT_FOUND
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, socket or device)"
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_line(path: Path, line: str) -> None:
    """Append one line of text to ``path``. A line cut short before (a kill, a full disk) stays cut, and readers skip
    it, but the new line starts on a line of its own instead of being glued to it."""
    data = line.encode() + b"\n"
    with open(path, "ab+") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back for the duration and raised again on exit (to the handlers in place before),
    so a short sequence of renames is done whole or not begun. The Python-level handlers are swapped, not the
    thread's signal mask: in a process with other threads (torch's) the kernel may hand the signal to any of them.
    A no-op off the main thread, where handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def swap_in(staging: Path, target: Path, owned: Iterable[str]) -> None:
    """Move every entry of ``staging`` into ``target``, replacing the entries of the same names, and remove the
    entries named in ``owned`` that the staging folder does not hold (what an older version wrote and this one no
    longer does). Entries of ``target`` neither in ``staging`` nor in ``owned`` stay. Signals are held back while it
    runs, so an interrupt leaves either the old set or the new one, never a mix. Folders are swapped whole: the old
    one is renamed aside first, then removed."""
    staging, target = Path(staging), Path(target)
    new = sorted(p.name for p in staging.iterdir())
    # index files last: a reader who follows the index finds what it names
    new.sort(key=lambda name: name.startswith("index."))
    stale = [name for name in owned if name not in new and (target / name).exists()]
    aside = Path(tempfile.mkdtemp(dir=target, prefix=".replaced-"))
    with signals_deferred():
        for name in new:
            existing = target / name
            if existing.is_dir() and not existing.is_symlink() or (existing.exists() and (staging / name).is_dir()):
                os.replace(existing, aside / name)
            os.replace(staging / name, target / name)
        for name in stale:
            os.replace(target / name, aside / name)
    shutil.rmtree(aside, ignore_errors=True)


JSON_MAX_BYTES = 256 * 2**20  # far above any run.json, summary or baseline aigrobust writes
JSON_MAX_DEPTH = 64  # aigrobust's documents nest a handful of levels
JSON_MAX_INT = 2**63 - 1  # seeds, counts and sizes: what a 64-bit integer holds


class JSONLimitError(AigrobustError, ValueError):
    """A JSON document past the limits every reader of aigrobust applies (size, nesting, integer size) or not
    JSON at all; the message is one line."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(int(text)) > JSON_MAX_INT:
        raise JSONLimitError(f"holds the integer {text[:24]}{'...' if len(text) > 24 else ''}, larger than "
                             f"{JSON_MAX_INT} (no field takes one)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONLimitError(f"holds the number {text[:24]}, past what a 64-bit float holds")
    return value


def _refuse_constant(name: str) -> float:
    raise JSONLimitError(f"holds {name}, which is not JSON")


def parse_json(text: str | bytes) -> Any:
    """A JSON document parsed within the limits (size, nesting depth, integers of 64 bits, no NaN or Infinity):
    the one JSON reader for every file the tool reads. Raises :class:`JSONLimitError` in one line."""
    if len(text) > JSON_MAX_BYTES:
        raise JSONLimitError(f"is {len(text):,} bytes, more than the {JSON_MAX_BYTES:,} any document here holds")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONLimitError(f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    # nesting counted outside strings, before the parser recurses into it
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", re.sub(r'"(?:\\.|[^"\\])*"', "", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > JSON_MAX_DEPTH:
            raise JSONLimitError(f"nests deeper than {JSON_MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise JSONLimitError(f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise JSONLimitError(f"nests deeper than {JSON_MAX_DEPTH} levels") from None
