"""A full disk: the command ends with one line and exit 74, nothing is left half-written, and once there is room
the same command (with --resume) finishes with the records a roomy disk gives. Once on a real, tiny tmpfs (where
this machine lets the tests mount one), once everywhere by making the n-th write fail."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from aigrobust.cli import commands as cli_module
from aigrobust.runs import folder as runs
from tests.conftest import half_closed


def _checkpoint(tmp_path: Path) -> Path:
    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint

    path = tmp_path / "tiny.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), path)
    return path


def _attack_args(checkpoint: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["attack", "--checkpoint", f"tiny={checkpoint}", "--attack", "fgsm", "--attack", "pgd:steps=2",
            "--eps", "2/255", "--eps", "8/255", "--data-dir", str(data_dir), "--n-samples", "40", "--batch-size", "8",
            "--out", str(out), *extra]


def _main(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``aigrobust ARGS`` through the console entry point (which turns a full disk into one line), in process."""
    monkeypatch.setattr(sys, "argv", ["aigrobust", *args])
    with pytest.raises(SystemExit) as stop:
        cli_module.main()
    return int(stop.value.code or 0)


def _records(folder: Path) -> pd.DataFrame:
    return runs.read_records(folder).sort_values(["attack", "epsilon", "gate_grad", "sample"]).reset_index(drop=True)


def test_a_write_failing_for_space_ends_in_one_line_and_resume_finishes(synthetic_npz_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = _checkpoint(tmp_path)
    roomy = tmp_path / "roomy"
    assert _main(_attack_args(checkpoint, synthetic_npz_dir, roomy), monkeypatch) == 0
    capsys.readouterr()
    real_write = runs.atomic_write_bytes
    writes = {"n": 0}

    def full_after_three(path: Path, data: bytes) -> None:
        writes["n"] += 1
        if writes["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", full_after_three)
    full = tmp_path / "full"
    assert _main(_attack_args(checkpoint, synthetic_npz_dir, full), monkeypatch) == cli_module.EXIT_DISK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aigrobust: No space left on device writing ") and "--resume" in err[0]
    assert not list(full.rglob("*.tmp")) and not (full / "records.csv.gz").exists()
    monkeypatch.setattr(runs, "atomic_write_bytes", real_write)  # room again
    assert _main(_attack_args(checkpoint, synthetic_npz_dir, full, "--resume"), monkeypatch) == 0
    pd.testing.assert_frame_equal(_records(full), _records(roomy))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.slow  # the failing-write test above covers the same path in the default run
def test_a_real_full_tmpfs_then_room_again(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small tmpfs")
    disk = Path("/tmp") / f"aigrobust-full-{uuid.uuid4().hex[:8]}"
    if not _mount_tmpfs(disk, "24k"):
        pytest.skip("this machine does not let the tests mount a tmpfs (needs root); the write-failure test covers it")
    try:
        checkpoint = _checkpoint(tmp_path)
        command = [sys.executable, "-m", "aigrobust"]
        roomy = tmp_path / "roomy"
        done = subprocess.run(command + _attack_args(checkpoint, synthetic_npz_dir, roomy), capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        out = disk / "run"
        done = subprocess.run(command + _attack_args(checkpoint, synthetic_npz_dir, out), capture_output=True,
                              text=True)
        assert done.returncode == 74, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], done.stderr
        assert not list(out.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        done = subprocess.run(command + _attack_args(checkpoint, synthetic_npz_dir, out, "--resume"),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        pd.testing.assert_frame_equal(_records(out), _records(roomy))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
        shutil.rmtree(disk, ignore_errors=True)
