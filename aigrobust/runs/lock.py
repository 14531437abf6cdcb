"""One writer per run folder: an exclusive flock on the folder's ``.lock``, taken or refused atomically, with the
holder (pid, start time, host) written into the file for the loser's message. The kernel drops a flock when its
process dies, so no stale lock survives a kill -9."""

from __future__ import annotations

import atexit
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from aigrobust.errors import AigrobustError

LOCK_FILE = ".lock"


class LockRefused(AigrobustError, RuntimeError):
    """The folder is held by another writer (the message names it), or its lock cannot be taken."""


_HELD_LOCKS: dict[str, int] = {}  # lock file -> the descriptor that holds its flock, in this process


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class LockHolder:
    """Who wrote a run folder's lock: pid, the process's start time and the host. A pid alone is not enough: after
    a restart (or on another machine) the same pid can belong to an unrelated process, which would block a resume."""

    pid: int
    start: str | None = None
    host: str | None = None

    @classmethod
    def of_this_process(cls) -> LockHolder:
        return cls(os.getpid(), _process_start(os.getpid()), socket.gethostname())

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """'PID START HOST' (or a bare PID, as older versions wrote); None for an empty or garbled lock."""
        parts = text.split()
        try:
            pid = int(parts[0]) if parts else 0
        except ValueError:
            return None
        if pid <= 0:
            return None
        start = parts[1] if len(parts) > 1 and parts[1] != "-" else None
        return cls(pid, start, parts[2] if len(parts) > 2 else None)

    def text(self) -> str:
        return f"{self.pid} {self.start or '-'} {self.host or socket.gethostname()}"

    def alive(self) -> bool:
        """Whether the writer still runs on this host: its pid exists and, where known, started when it did."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return self.start is None or _process_start(self.pid) in (None, self.start)


class FolderLock:
    """The lock of one run folder, held by this process until :meth:`release` (or interpreter exit)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None

    @classmethod
    def take(cls, root: Path) -> FolderLock:
        """Take the lock of ``root`` or raise :class:`LockRefused` naming who holds it."""
        lock = cls(root)
        lock._take()
        return lock

    def _take(self) -> None:
        """One writer per folder, taken or refused atomically: an exclusive flock on ``.lock``, which the kernel
        drops when its process dies (no stale lock survives a kill -9). The holder's pid, start time and host are
        written into the file for the loser's message; a lock file replaced while it was being taken is retried."""
        path = self.path
        held = _HELD_LOCKS.get(str(path.resolve()))
        if held is not None:  # an earlier RunFolder of this very process (a finished command in the same
            self._fd = held  # interpreter): the lock passes on, as a pid check allowed
            return
        for _ in range(20):
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as err:
                raise LockRefused(f"output folder {self.root} is not writable ({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = LockHolder.parse(os.pread(fd, 200, 0).decode(errors="replace"))
                os.close(fd)
                self._refuse_holder(path, holder, locked=True)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and removed) it between our open and our lock: take the new one
                os.close(fd)
                continue
            # the kernel lock is ours; the file may still name a writer that locks by the file alone (an older
            # aigrobust, or another host sharing this folder, whose locks this host cannot see)
            holder = LockHolder.parse(os.pread(fd, 200, 0).decode(errors="replace"))
            try:
                self._refuse_holder(path, holder, locked=False)
            except LockRefused:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, LockHolder.of_this_process().text().encode(), 0)
            self._fd = fd
            _HELD_LOCKS[str(path.resolve())] = fd
            atexit.register(self.release)
            return
        raise LockRefused(f"cannot take the lock {path}")

    def _refuse_holder(self, path: Path, holder: LockHolder | None, locked: bool) -> None:
        """Raise the one line that names who holds the folder: always where another process holds the kernel lock
        (``locked``); where the file alone names a writer, only if it runs on another host or is alive here."""
        if holder is not None and holder.host not in (None, socket.gethostname()):
            if locked:
                raise LockRefused(f"{path} is held by pid {holder.pid} on host {holder.host}; wait for it to "
                                     "finish or pick another --out")
            raise LockRefused(f"{path} was written by pid {holder.pid} on host {holder.host}, whose processes "
                                 "cannot be seen from here; if that run is gone, delete the lock file and --resume")
        if locked or (holder is not None and holder.pid != os.getpid() and holder.alive()):
            who = f" (pid {holder.pid})" if holder is not None else ""
            raise LockRefused(f"another aigrobust process{who} is writing to {self.root}; wait for it to finish "
                                 "or pick another --out")

    def release(self) -> None:
        """Drop the folder's lock (also at interpreter exit)."""
        if self._fd is not None:
            if _HELD_LOCKS.get(str(self.path.resolve())) == self._fd:
                del _HELD_LOCKS[str(self.path.resolve())]
                self.path.unlink(missing_ok=True)  # before the unlock: whoever opens the path now gets a new file
                os.close(self._fd)
            self._fd = None
