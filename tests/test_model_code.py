"""--model-code MODULE:CALLABLE: a user's own network through the CLI, named by its import path and
its weights file's sha256, reloaded by reports; a (logits, extra) network refused with one line or unwrapped."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.runs.folder import FinishedRun
from tests.user_nets import build


def _attack(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["attack", "--data-dir", str(data), "--eps", "4/255", "--attack", "fgsm",
                                      "--out", str(out), *extra])
    return result.exit_code, result.output


def test_a_users_network_runs_and_is_named_by_its_import_path(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    trained = build()
    with torch.no_grad():
        trained.head.bias.add_(0.5)  # not the callable's own initialisation: the file must be loaded
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "run"
    code, output = _attack(synthetic_npz_dir, out, "--model-code", "tests.user_nets:build", "--checkpoint",
                           str(weights))
    assert code == 0, output
    entry = json.loads((out / "run.json").read_text())["models"]["tests.user_nets:build"]
    assert entry["model"] == "code:tests.user_nets:build" and entry["source"] == str(weights.resolve())
    run = FinishedRun.open(out)
    assert run.models() == {}  # the folder names code: it is not imported on the folder's word
    reloaded = run.models({"tests.user_nets:build": "tests.user_nets:build"})["tests.user_nets:build"]
    assert torch.equal(reloaded.module.head.bias, trained.head.bias)


def test_logits_and_extra_refused_or_unwrapped(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    code, output = _attack(synthetic_npz_dir, tmp_path / "a", "--model-code", "tests.user_nets:build_with_extra")
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("warning")]
    assert code == 2 and len(lines) == 1 and "--output-index" in lines[0], output
    code, output = _attack(synthetic_npz_dir, tmp_path / "b", "--model-code", "tests.user_nets:build_with_extra",
                           "--output-index", "0")
    assert code == 0, output


def test_bad_import_paths_get_one_line(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    for target, needle in (("nosuch_module_xyz:build", "cannot import nosuch_module_xyz"),
                           ("tests.user_nets:nothing", "has no callable 'nothing'"),
                           ("tests.user_nets", "give MODULE:CALLABLE")):
        code, output = _attack(synthetic_npz_dir, tmp_path / "c", "--model-code", target)
        assert code == 2 and needle in output and "Traceback" not in output, output
        assert not (tmp_path / "c").exists()


def _code_run(data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    code, output = _attack(data, out, "--model-code", "tests.user_nets:build")
    assert code == 0, output
    return out


def _name_code(run: Path, target: str) -> None:
    document = json.loads((run / "run.json").read_text())
    document["models"]["tests.user_nets:build"]["model"] = "code:" + target
    (run / "run.json").write_text(json.dumps(document))


def test_data_never_names_code_report_and_check_sanity(synthetic_npz_dir: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    """A run folder whose run.json names other code (an edited or a received folder): neither ``report`` nor
    ``check --sanity`` imports or calls it; the probes are skipped with one line, the report still writes."""
    run = _code_run(synthetic_npz_dir, tmp_path)
    evil_dir = tmp_path / "cwd"
    evil_dir.mkdir()
    marker = tmp_path / "ran"
    (evil_dir / "evilrun.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
                                         "def build():\n    raise SystemExit(0)\n")
    monkeypatch.chdir(evil_dir)
    made = set(Path(__import__("tempfile").gettempdir()).iterdir())
    for target in ("evilrun:build", "tempfile:mkdtemp"):
        _name_code(run, target)
        result = CliRunner().invoke(cli, ["check", "--sanity", str(run)])
        assert "skipped: its network is user code" in result.output and "Traceback" not in result.output, \
            result.output
        result = CliRunner().invoke(cli, ["report", str(run), "--out", str(tmp_path / f"rep-{target[:4]}")])
        assert result.exit_code == 0, result.output
        assert "model probes skipped" in result.output
    assert not marker.exists()  # evilrun was never imported
    assert set(Path(__import__("tempfile").gettempdir()).iterdir()) <= made | {evil_dir}  # mkdtemp never called
    assert "evilrun" not in __import__("sys").modules


def test_code_named_on_the_command_line_is_probed(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    run = _code_run(synthetic_npz_dir, tmp_path)
    for extra in (["--model-code", "tests.user_nets:build"],
                  ["--model-code", "tests.user_nets:build=tests.user_nets:build"], ["--trust-code"]):
        result = CliRunner().invoke(cli, ["check", "--sanity", str(run), *extra])
        assert "skipped: its network is user code" not in result.output, result.output
        assert "zero" in result.output.lower() or "OK" in result.output, result.output
    result = CliRunner().invoke(cli, ["check", "--sanity", str(run), "--trust-code"])
    assert "--trust-code: importing tests.user_nets" in result.output
    result = CliRunner().invoke(cli, ["check", "--sanity", str(run), "--model-code", "=x:y"])
    assert result.exit_code == 2 and "[LABEL=]MODULE:CALLABLE" in result.output
