"""The README's first two commands stay true: CI runs the very test command the README gives."""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT


def _code_blocks() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    setup_and_run, test_command = _code_blocks()[:2]
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    # the main job's command names only shipped models or files that exist beside a checkout
    assert "aigrobust attack" in setup_and_run and "pip install" in setup_and_run
    for model in re.findall(r"--model (\S+)", setup_and_run):
        assert (PROJECT_ROOT / "aigrobust" / "pretrained" / f"{model}.safetensors").is_file(), model
