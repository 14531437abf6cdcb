"""How a report is assembled and written: registered figures, the efficacy curve with the runs' full FLOPs, and a
write that replaces the previous report whole or not at all (interrupts, a full disk)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from aigrobust.cli.commands import cli, main
from aigrobust.cli.exits import EXIT_DISK
from aigrobust.files import signals_deferred, swap_in
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.reporting import figures, plots
from aigrobust.reporting import report as reports
from aigrobust.runs.folder import FinishedRun


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def compute_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealed run of the compute attack and its random-noise control on a half-closed tiny gated network."""
    import numpy as np

    from aigrobust import create_model
    from tests.conftest import half_closed

    root = tmp_path_factory.mktemp("compute")
    checkpoint = root / "tiny_aig.safetensors"
    save_checkpoint(half_closed(create_model("tiny_aig")), checkpoint)
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    np.savez(data / "cifar10_test.npz", images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, 16).astype(np.int64))
    out = root / "run"
    code, output = invoke("attack", "--checkpoint", f"tiny={checkpoint}", "--attack", "compute-inflation:steps=3",
                          "--attack", "random-noise", "--eps", "8/255", "--data-dir", str(data), "--n-samples", "16",
                          "--out", str(out))
    assert code == 0, output
    return out


@pytest.fixture
def extra_figure() -> Iterator[str]:
    """A figure registered for one test, removed after it."""
    name = "test_extra_figure"

    @figures.register_figure(name, "A figure registered by a test.")
    def _draw(inputs: figures.FigureInputs) -> tuple[bytes, bytes] | None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(range(len(inputs.records)))
        return plots.save_figure(fig)

    yield name
    figures.FIGURES.pop(name, None)


def test_runs_note_their_models_full_flops_and_older_runs_recover_them(compute_run: Path) -> None:
    from aigrobust import create_model

    noted = FinishedRun.open(compute_run).full_flops
    assert noted == {"tiny": pytest.approx(create_model("tiny_aig").flop_profile((3, 32, 32)).full)}
    summary = json.loads((compute_run / "summary.json").read_text())
    del summary["full_flops"]  # a run sealed before the figure was noted
    (compute_run / "summary.json").write_text(json.dumps(summary))
    try:
        assert FinishedRun.open(compute_run).full_flops == {"tiny": pytest.approx(noted["tiny"], rel=1e-9)}
    finally:
        summary["full_flops"] = noted
        (compute_run / "summary.json").write_text(json.dumps(summary))


def test_report_draws_the_efficacy_curve_and_fills_the_flops_weighted_recovery(compute_run: Path,
                                                                              tmp_path: Path) -> None:
    code, output = invoke("report", str(compute_run), "--out", str(tmp_path / "report"), "--no-probe")
    assert code == 0, output
    assert (tmp_path / "report" / "figures" / "efficacy_curve.png").stat().st_size > 1000
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    compute = summary[summary["attack"].str.startswith("compute-inflation") & (summary["epsilon"] > 0)]
    sealed = pd.read_csv(compute_run / "summary.csv")
    sealed = sealed[sealed["attack"].str.startswith("compute-inflation") & (sealed["epsilon"] > 0)]
    # the report's recovery is the run's own (the runs' full FLOPs reach the report)
    assert compute["recovery"].tolist() == pytest.approx(sealed["recovery"].tolist())
    assert compute["recovery"].notna().all()
    page = (tmp_path / "report" / "index.md").read_text()
    assert figures.figure_caption("efficacy_curve") in page


def test_a_registered_figure_is_drawn_captioned_and_names_are_checked(compute_run: Path, tmp_path: Path,
                                                                     extra_figure: str) -> None:
    code, output = invoke("report", str(compute_run), "--out", str(tmp_path / "report"), "--no-probe")
    assert code == 0, output
    assert (tmp_path / "report" / "figures" / f"{extra_figure}.svg").is_file()
    assert "A figure registered by a test." in (tmp_path / "report" / "index.md").read_text()
    assert "A figure registered by a test." in (tmp_path / "report" / "index.html").read_text()
    with pytest.raises(ValueError, match="already registered"):
        figures.register_figure(extra_figure, "again")
    with pytest.raises(ValueError, match="letters, digits"):
        figures.register_figure("../escape", "a path")


def test_a_new_report_replaces_the_old_whole_and_keeps_what_no_report_wrote(compute_run: Path, tmp_path: Path,
                                                                          extra_figure: str) -> None:
    out = tmp_path / "report"
    code, output = invoke("report", str(compute_run), "--out", str(out), "--no-probe")
    assert code == 0, output
    assert (out / "figures" / f"{extra_figure}.png").is_file()
    (out / "README.md").write_text("the user's own notes")
    (out / "records").mkdir()
    (out / "records" / "kept.csv").write_text("a,b\n")
    figures.FIGURES.pop(extra_figure)  # the next report no longer draws it
    code, output = invoke("report", str(compute_run), "--out", str(out), "--no-probe")
    assert code == 0, output
    assert not (out / "figures" / f"{extra_figure}.png").exists()  # a stale figure does not outlive its report
    assert (out / "README.md").read_text() == "the user's own notes"
    assert (out / "records" / "kept.csv").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging or set-aside folder left


def test_a_full_disk_leaves_the_previous_report_untouched(compute_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code, output = invoke("report", str(compute_run), "--out", str(out), "--no-probe")
    assert code == 0, output
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_write = reports.atomic_write_bytes
    calls = {"n": 0}

    def fill_up(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 4:  # a few files fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(reports, "atomic_write_bytes", fill_up)
    monkeypatch.setattr(sys, "argv", ["aigrobust", "report", str(compute_run), "--out", str(out), "--no-probe",
                                      "--title", "a new title"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == EXIT_DISK
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigrobust: No space left on device writing ")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_swap_in_is_not_cut_by_a_signal(tmp_path: Path) -> None:
    """SIGTERM sent while the renames run is delivered after them: the target holds the whole new set."""
    target, staging = tmp_path / "target", tmp_path / "staging"
    target.mkdir()
    staging.mkdir()
    for name in ("a.csv", "index.md"):
        (target / name).write_text("old")
        (staging / name).write_text("new")
    (target / "figures").mkdir()
    (target / "figures" / "old.png").write_text("old")
    (staging / "figures").mkdir()
    (staging / "figures" / "new.png").write_text("new")
    seen: list[str] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(f"signal with index {(target / 'index.md').read_text()}")

    previous = signal.signal(signal.SIGTERM, handler)
    real_replace = os.replace

    def replace_then_signal(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        real_replace(src, dst)
        if Path(dst).name == "a.csv":
            os.kill(os.getpid(), signal.SIGTERM)  # mid-swap

    try:
        os.replace = replace_then_signal  # type: ignore[assignment]
        swap_in(staging, target, ("a.csv", "index.md", "figures", "gone.csv"))
    finally:
        os.replace = real_replace
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["signal with index new"]
    assert sorted(p.name for p in target.rglob("*")) == ["a.csv", "figures", "index.md", "new.png"]


def test_signals_deferred_delivers_held_signals_on_exit() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_records_cut_mid_row_without_run_json_are_refused_with_the_row(compute_run: Path, tmp_path: Path) -> None:
    import csv
    import gzip
    import io

    lines = gzip.decompress((compute_run / "records.csv.gz").read_bytes()).decode().splitlines()
    fields = next(csv.reader([lines[10]]))
    half = io.StringIO()
    csv.writer(half, lineterminator="").writerow(fields[:7])  # a writer stopped in the middle of a row
    cut = lines[:10] + [half.getvalue()]
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "records.csv.gz").write_bytes(gzip.compress(("\n".join(cut) + "\n").encode()))
    code, output = invoke("report", str(loose), "--out", str(tmp_path / "report"), "--no-probe", "--unsealed")
    assert code == 2, output
    assert "row 10 is cut short or malformed" in output and "Traceback" not in output
    assert not (tmp_path / "report" / "index.md").exists()


@pytest.mark.slow  # about 40 s; the swap it relies on is tested in-process above
@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_a_report_stopped_by_sigterm_leaves_the_old_report_or_the_new_one_whole(compute_run: Path,
                                                                                tmp_path: Path) -> None:
    """End to end: SIGTERM at several moments of a report that overwrites an older one; each
    time the folder holds one report whole (its index, tables and figures all of the old title or all of the new),
    and nothing hidden is left behind."""
    import subprocess
    import time

    out = tmp_path / "report"
    code, output = invoke("report", str(compute_run), "--out", str(out), "--no-probe", "--title", "old title")
    assert code == 0, output
    codes = []
    for delay in (0.5, 2.0, 4.0, 8.0):
        process = subprocess.Popen([sys.executable, "-m", "aigrobust", "report", str(compute_run), "--out", str(out),
                                    "--no-probe", "--title", f"new title {delay}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        codes.append(process.returncode)
        assert process.returncode in (0, 143), err
        if process.returncode == 143:
            assert err.strip().splitlines()[-1].startswith("aigrobust: stopped by SIGTERM"), err
        index = (out / "index.md").read_text()
        tex = (out / "summary.tex").read_text()
        title = "old title" if "# old title" in index else f"new title {delay}"
        assert f"# {title}" in index and title in tex, (delay, process.returncode)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], delay
        if title != "old title":  # the next round overwrites this one
            invoke("report", str(compute_run), "--out", str(out), "--no-probe", "--title", "old title")
    assert 143 in codes  # at least one round was really cut short
