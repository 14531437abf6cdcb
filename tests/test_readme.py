"""The README's first two commands stay true: CI runs the very test command the README gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SHARED_DATA, require


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


@pytest.mark.slow  # about 75 s on 2 cores: 200 real images, two models, FGSM and PGD-20, with and without JPEG
def test_the_readme_python_examples_run_and_use_trained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """The README's Python blocks, run as written (the data path made absolute, the working directory a temporary
    one, since the first block writes records.csv.gz there)."""
    require(SHARED_DATA / "cifar10_test_sample.npz")
    text = (PROJECT_ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    code = code.replace('"../shared/data"', repr(str(SHARED_DATA)))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    summary = scope["summary"]
    assert (tmp_path / "records.csv.gz").is_file()
    clean = summary.table[(summary.table["model"] == "aig20") & (summary.table["epsilon"] == 0)]  # type: ignore[attr-defined]
    assert float(clean["robust_acc"].max()) > 0.8  # shipped weights, not random ones
    result = scope["result"]
    assert result.success.shape == (2, 200)  # type: ignore[attr-defined]
    assert float(result.success[0].float().mean()) > 0.5  # type: ignore[attr-defined]
