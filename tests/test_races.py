"""Two writers on one run folder: the lock is taken or refused atomically, the loser is told
the truth, and a killed holder leaves no lock behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from aigrobust.runs.folder import RunFolder, RunFolderError
from aigrobust.runs.lock import LOCK_FILE


def _contend(root: str, spec_id: int, barrier: mp.Barrier, results: mp.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait()
    try:
        folder = RunFolder(Path(root), {"spec": {"epsilons": [spec_id]}}, resume=False)
    except RunFolderError as err:
        results.put((spec_id, "refused", str(err)))
        return
    results.put((spec_id, "took", ""))
    time.sleep(0.3)  # hold the folder while the other one tries
    folder.release()


@pytest.mark.parametrize("same_spec", [False, True])
def test_twenty_pairs_started_together_exactly_one_runs(same_spec: bool, tmp_path: Path) -> None:
    context = mp.get_context("fork")
    for pair in range(20):
        root = tmp_path / f"run{pair}"
        barrier, results = context.Barrier(2), context.Queue()
        ids = (1, 1) if same_spec else (1, 2)
        workers = [context.Process(target=_contend, args=(str(root), i, barrier, results)) for i in ids]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        outcomes = sorted((results.get(timeout=5) for _ in workers), key=lambda r: r[1], reverse=True)
        assert [o[1] for o in outcomes] == ["took", "refused"], (pair, outcomes)
        # the loser is told the truth: another process holds the folder (not "not writable")
        assert "another aigrobust process" in outcomes[1][2] and "not writable" not in outcomes[1][2], outcomes[1]
        assert not (root / LOCK_FILE).exists()  # released


def _hold_forever(root: str, ready: mp.Event) -> None:  # type: ignore[type-arg]
    RunFolder(Path(root), {"spec": {"epsilons": [1]}}, resume=False)
    ready.set()
    time.sleep(60)


def test_a_killed_holder_leaves_no_lock_that_blocks(tmp_path: Path) -> None:
    context = mp.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_forever, args=(str(tmp_path / "run"), ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
        RunFolder(tmp_path / "run", {"spec": {"epsilons": [1]}}, resume=True)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    RunFolder(tmp_path / "run", {"spec": {"epsilons": [1]}}, resume=True).release()  # taken over at once
