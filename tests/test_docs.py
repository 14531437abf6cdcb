"""The documentation site: it builds in strict mode (broken links, missing references fail), its CLI
reference is generated from click itself, and every Python block of the guides runs against the shipped models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, TEST_SAMPLE, require

DOCS = PROJECT_ROOT / "docs"


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for option in ("--adversarial", "--model-code", "--defense-grad", "--baseline"):  # click's own options
        assert option in cli_page, option
    assert "Sentinel" not in cli_page and "N/A" not in cli_page  # every default and every help rendered
    assert "runs/&lt;date&gt;" in cli_page  # text in angle brackets shown, not swallowed as HTML
    api_page = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "evaluate" in api_page and "ComputeInflation" in api_page


def test_every_option_of_every_command_says_what_it_does() -> None:
    import click

    from aigrobust.cli import cli

    ctx = click.Context(cli)
    silent = [f"{name} {p.opts[0]}" for name in cli.list_commands(ctx) for p in cli.get_command(ctx, name).params
              if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert silent == []


def test_a_broken_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    import shutil

    site = tmp_path / "project"
    shutil.copytree(DOCS, site / "docs")
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", site / "mkdocs.yml")
    index = site / "docs" / "index.md"
    index.write_text(index.read_text() + "\n[a section that is not there](guides/commands.md#no-such-anchor)\n")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=site, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode != 0 and "no-such-anchor" in done.stderr + done.stdout


def _python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)):
            blocks.append((f"{page.relative_to(DOCS)}#{i + 1}", code))
    return blocks


@pytest.mark.parametrize("name,code", _python_blocks(), ids=[b[0] for b in _python_blocks()])
def test_every_python_block_of_the_docs_runs(name: str, code: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    require(TEST_SAMPLE)
    monkeypatch.chdir(PROJECT_ROOT)  # the blocks read ../shared/data as a reader runs them: from the project root
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.strip(), f"{name} printed nothing"


def _documented(section: str) -> list[str]:
    """The first-column names of the table under ``## section`` of the Outputs page."""
    page = (DOCS / "reference" / "outputs.md").read_text()
    part = page.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", part, flags=re.M)


def test_the_outputs_page_documents_every_column_and_field(synthetic_npz_dir: Path, tmp_path: Path) -> None:
    import json

    import torch

    import aigrobust
    from aigrobust.evaluation.records import RECORD_COLUMNS

    assert _documented("records.csv.gz") == list(RECORD_COLUMNS)
    summary = aigrobust.evaluate(aigrobust.create_model("tiny_aig"), torch.rand(4, 3, 32, 32), torch.arange(4),
                                 attacks=["fgsm", "compute-inflation:steps=2"], epsilons=["8/255"])
    assert _documented("summary.csv") == list(summary.table.columns)
    from click.testing import CliRunner

    from aigrobust.cli import cli

    data = synthetic_npz_dir
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model", "aig20", "--attack", "fgsm", "--eps", "8/255",
                                      "--n-samples", "4", "--data-dir", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(_documented("summary.json")) == set(json.loads((out / "summary.json").read_text()))
    assert set(_documented("run.json")) >= set(json.loads((out / "run.json").read_text()))


PUBLIC_FUNCTIONS = ("aigrobust:create_model", "aigrobust:evaluate", "aigrobust:get_model_info", "aigrobust:list_models",
                    "aigrobust:list_pretrained", "aigrobust:as_evaluable", "aigrobust:normalized",
                    "attacks:get_attack", "attacks:attack_from_spec", "attacks:list_attacks",
                    "aigrobust.data:load_dataset", "aigrobust.data:load_npz")


def _api_page_entries() -> list[str]:
    """Every object the API page renders (``::: module.name``), as ``module:qualname``."""
    import importlib

    entries = []
    for dotted in re.findall(r"^::: (\S+)", (DOCS / "reference" / "api.md").read_text(), re.M):
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            entries.append(".".join(parts[:cut]) + ":" + ".".join(parts[cut:]))
            break
    return entries


def test_every_public_function_and_class_names_each_parameter_and_has_an_example_that_runs() -> None:
    """The API page is read from these docstrings: each names every parameter, says what a function returns, and
    carries an example; the examples run."""
    import doctest
    import importlib
    import inspect

    targets = sorted({*PUBLIC_FUNCTIONS, *_api_page_entries()})
    assert len(targets) > 50
    for target in targets:
        module_name, qualname = target.split(":")
        documented = importlib.import_module(module_name)
        for name in qualname.split("."):
            documented = getattr(documented, name)
        doc = inspect.getdoc(documented) or ""
        try:
            parameters = [p for p in inspect.signature(documented).parameters if p != "self"]
        except ValueError:  # an exception type: no signature of its own
            parameters = []
        if getattr(documented, "_is_protocol", False):  # a structural type: nothing is built from it
            parameters = []
        described = set(re.findall(r"^\s+\**(\w+): ", doc.split("Args:", 1)[-1], re.M)) if "Args:" in doc else set()
        missing = [p for p in parameters if p not in described]
        returns = inspect.isfunction(documented) and inspect.signature(documented).return_annotation not in (None, "None")
        assert not missing and ">>>" in doc and (not returns or "Returns:" in doc), (target, missing)
        examples = doctest.DocTestFinder().find(documented, qualname, globs=vars(inspect.getmodule(documented)))
        for example in examples:
            result = doctest.DocTestRunner().run(example)
            assert result.failed == 0, target
