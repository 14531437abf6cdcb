"""Reliability: a run killed with SIGKILL resumes to identical records; same seed, byte-identical records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import half_closed, write_synthetic_npz

_ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _checkpoint(tmp_path: Path) -> Path:
    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint

    path = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), path)
    return path


def _command(checkpoint: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aigrobust", "attack", "--checkpoint", str(checkpoint), "--eps", "4/255",
            "--attack", "pgd:steps=40", "--gate-grad", "all", "--data-dir", str(data_dir), "--n-samples", "96",
            "--batch-size", "8", "--out", str(out), *extra]


@dataclass(frozen=True)
class AttackCase:
    """A tiny gated checkpoint, synthetic data and the records of one uninterrupted run of ``_command``."""

    checkpoint: Path
    data_dir: Path
    reference_records: bytes


@pytest.fixture(scope="module")
def attack_case(tmp_path_factory: pytest.TempPathFactory) -> AttackCase:
    """One uninterrupted reference run, shared by the tests that stop a run and resume it (it is the slow part)."""
    root = tmp_path_factory.mktemp("attack-case")
    data_dir = write_synthetic_npz(root)
    torch.manual_seed(0)
    checkpoint = _checkpoint(root)
    reference = root / "reference"
    subprocess.run(_command(checkpoint, data_dir, reference), check=True, capture_output=True, env=_ONE_THREAD)
    return AttackCase(checkpoint, data_dir, (reference / "records.csv.gz").read_bytes())


def _kill_once_written(command: list[str], env: dict[str, str], folder: Path, pattern: str, count: int) -> int:
    """Start ``command``, SIGKILL it as soon as ``count`` files matching ``pattern`` exist under ``folder`` (or after
    two minutes), and return how many exist once it is dead."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob(pattern))) < count:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(list(folder.glob(pattern)))


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_mid_run_then_resume_gives_identical_records(attack_case: AttackCase, tmp_path: Path) -> None:
    case = attack_case
    killed = tmp_path / "killed"
    finished_parts = _kill_once_written(_command(case.checkpoint, case.data_dir, killed), _ONE_THREAD,
                                        killed / ".parts", "*/*.csv.gz", 3)
    assert 3 <= finished_parts < 12, "the run should have been killed mid-way"
    assert not (killed / "records.csv.gz").exists()  # nothing final, nothing half-written
    done = subprocess.run(_command(case.checkpoint, case.data_dir, killed, "--resume"), capture_output=True,
                          text=True, env=_ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert (killed / "records.csv.gz").read_bytes() == case.reference_records
    assert not list(killed.rglob("*.tmp"))  # a write cut by the kill leaves no debris after the resume


def test_torchrun_two_cpu_processes_merge_to_the_single_process_records(synthetic_npz_dir: Path,
                                                                        tmp_path: Path) -> None:
    import shutil

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    checkpoint = _checkpoint(tmp_path)
    args = ["attack", "--checkpoint", str(checkpoint), "--eps", "4/255", "--attack", "fgsm", "--attack",
            "pgd:steps=2", "--data-dir", str(synthetic_npz_dir), "--n-samples", "40", "--batch-size", "8"]
    env = _ONE_THREAD
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "aigrobust", *args, "--attack", "square:n_queries=10", "--out", str(single)],
                   check=True, capture_output=True, env=env)
    sharded = tmp_path / "sharded"
    # another batch size too: per-sample seeds make the records independent of both
    sharded_args = [*args[:-1], "5", "--attack", "square:n_queries=10"]
    done = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29517", "-m", "aigrobust", *sharded_args,
                           "--out", str(sharded)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (sharded / "records.csv.gz").read_bytes() == (single / "records.csv.gz").read_bytes()


def test_torchrun_training_with_distributed_data_parallel(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    import shutil

    from aigrobust.models.factory import load_checkpoint

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29519", "-m", "aigrobust", "train",
                           "--model", "tiny_aig", "--data-dir", str(synthetic_npz_dir), "--out", str(out),
                           "--epochs", "1", "--batch-size", "32", "--device", "cpu"],
                          capture_output=True, text=True, env=_ONE_THREAD, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DistributedDataParallel over 2 processes" in done.stdout
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["epoch"] == 1 and model.registry_name == "tiny_aig"


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_training_killed_with_sigkill_mid_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from aigrobust.models.checkpoints import read_checkpoint

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 640), ("test", 16)):
        np.savez(data / f"cifar10_{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.int64))

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "aigrobust", "train", "--model", "tiny_aig", "--data-dir", str(data), "--out",
                str(out), "--epochs", "2", "--batch-size", "16", "--schedule", "cosine", "--device", "cpu",
                "--threads", "1", "--checkpoint-every", "5", *extra]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = killed / "train_state.pt"
    deadline = time.monotonic() + 120
    position = (0, 0)
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.exists():
            try:
                state = torch.load(state_file, weights_only=True)
                position = (int(state["epoch"]), int(state["step"]))
            except Exception:  # noqa: BLE001  (the file is replaced atomically; a read may race the rename)
                pass
            if position >= (1, 10):  # inside the second epoch
                break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert position >= (1, 10) and not (killed / "model.safetensors").exists(), "killed mid-run"
    subprocess.run(command(killed, "--resume"), check=True, capture_output=True)
    a, _ = read_checkpoint(reference / "model.safetensors")
    b, _ = read_checkpoint(killed / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # SIGTERM: one line, exit 143, the last checkpoint whole, --resume to the same weights
    termed = tmp_path / "termed"
    process = subprocess.Popen(command(termed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (termed / "last.safetensors").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("\r")]
    assert process.returncode == 143 and lines[-1].startswith("aigrobust: stopped by SIGTERM"), err
    assert "Traceback" not in err and not (termed / "model.safetensors").exists()
    subprocess.run(command(termed, "--resume"), check=True, capture_output=True)
    c, _ = read_checkpoint(termed / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], c[key]), key


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_inside_the_first_batch_keeps_finished_units(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    # one batch of 48 and six units (3 gate-gradient settings x 2 attacks); with --early-exit each unit after the
    # first depends on what the earlier ones fooled, so a resume must replay the saved units, not just skip them
    checkpoint = _checkpoint(tmp_path)
    env = _ONE_THREAD

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "aigrobust", "attack", "--checkpoint", str(checkpoint), "--eps", "4/255",
                "--attack", "fgsm", "--attack", "pgd:steps=60", "--gate-grad", "all", "--early-exit", "--data-dir",
                str(synthetic_npz_dir), "--n-samples", "48", "--batch-size", "48", "--out", str(out), *extra]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True, env=env)
    killed = tmp_path / "killed"
    units = killed / ".parts"
    saved = _kill_once_written(command(killed), env, units, "*/*.units/*.csv.gz", 3)
    assert 3 <= saved < 6, "the run should have been killed inside its only batch"
    assert not list(units.glob("*/batch-*.csv.gz"))  # the batch itself never finished
    done = subprocess.run(command(killed, "--resume"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr  # replaying saved units is silent (torch once warned here)
    assert (killed / "records.csv.gz").read_bytes() == (reference / "records.csv.gz").read_bytes()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to tell a process's start time")
def test_a_lock_whose_pid_was_reused_is_stale_and_a_foreign_host_lock_is_named(tmp_path: Path) -> None:
    """A run folder's lock names pid, start time and host: a live process that reuses the pid (after a restart)
    does not block a resume; a lock written on another host is refused with its host and what to do."""
    import socket

    from aigrobust.runs.folder import RunFolder, RunFolderError
    from aigrobust.runs.lock import LOCK_FILE, LockHolder

    spec = {"spec": {"attacks": ["fgsm"]}}
    folder = RunFolder(tmp_path / "run", spec, resume=False)
    written = (tmp_path / "run" / LOCK_FILE).read_text().split()
    assert written[0] == str(os.getpid()) and written[2] == socket.gethostname()
    folder.release()
    lock = tmp_path / "run" / LOCK_FILE
    parent = os.getppid()  # alive, not us
    lock.write_text(f"{parent} 1 {socket.gethostname()}")  # the parent's pid, but not the parent's start time
    assert not LockHolder.parse(lock.read_text()).alive()
    RunFolder(tmp_path / "run", spec, resume=True).release()  # taken over
    lock.write_text(LockHolder(parent, None, socket.gethostname()).text())
    with pytest.raises(RunFolderError, match=f"pid {parent}"):
        RunFolder(tmp_path / "run", spec, resume=True)  # the parent itself: still refused
    lock.write_text(f"{parent} 1 elsewhere-node-7")
    with pytest.raises(RunFolderError, match="on host elsewhere-node-7.*delete the lock file"):
        RunFolder(tmp_path / "run", spec, resume=True)
    assert lock.read_text() == f"{parent} 1 elsewhere-node-7"  # a refused folder keeps the other's lock


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_sigterm_and_sigint_end_an_attack_cleanly_and_resume_finishes_it(attack_case: AttackCase,
                                                                          tmp_path: Path) -> None:
    """One line naming the signal, exit 128 + signum, the lock released, --resume gives the bytes of an
    uninterrupted run."""
    from aigrobust.runs.lock import LOCK_FILE

    case = attack_case
    for signum in (signal.SIGTERM, signal.SIGINT):
        stopped = tmp_path / f"stopped-{signum}"
        process = subprocess.Popen(_command(case.checkpoint, case.data_dir, stopped), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=_ONE_THREAD)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((stopped / ".parts").glob("*/*.csv.gz"))) < 2:
            time.sleep(0.02)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 128 + signum, err
        name = signal.Signals(signum).name
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("\r")]
        assert lines[-1].startswith(f"aigrobust: stopped by {name}") and "Traceback" not in err, err
        assert not (stopped / LOCK_FILE).exists()
        assert not (stopped / "records.csv.gz").exists()
        done = subprocess.run(_command(case.checkpoint, case.data_dir, stopped, "--resume"), capture_output=True,
                              text=True, env=_ONE_THREAD)
        assert done.returncode == 0, done.stderr
        assert (stopped / "records.csv.gz").read_bytes() == case.reference_records
