"""The house: no import cycle, light modules stay light, stored model facts match a fresh count, a fast CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from aigrobust.cli import cli
from tests.conftest import PROJECT_ROOT

PACKAGES = ("aigrobust", "attacks", "defenses")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported at module level (imports inside functions run later and cannot form a cycle)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycle_anywhere() -> None:
    files = {_module_name(p): p for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*.py")}
    graph = {name: _module_level_imports(path, set(files)) - {name} for name, path in files.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(graph) > 30


def test_light_modules_import_alone_without_torch() -> None:
    # the command line, the registry, the error types and the file helpers must not load torch when imported
    for module in ("aigrobust", "aigrobust.cli", "aigrobust.registry", "aigrobust.errors", "aigrobust.files",
                   "aigrobust.model_facts"):
        code = f"import sys, {module}; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
        assert out.stdout.strip() == "False", module


# Imported once in the parent below: a child forked from it starts with these loaded, exactly as if the module had
# imported them itself, but without paying their ~3 s import each time (this test took 87 s with a fresh interpreter
# per module).
HEAVY_THIRD_PARTY = ("torch", "torchvision", "numpy", "pandas", "click", "PIL.Image")

IMPORT_EACH_IN_A_FORKED_CHILD = """
import importlib, os, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
failed = []
for module in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:  # the child: only the third-party libraries above are loaded, none of the project's modules
        try:
            importlib.import_module(module)
        except BaseException:
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(module)
print(",".join(failed))
"""


def test_every_module_imports_alone() -> None:
    # each module alone, in a child that holds no other project module: an import that only works after another
    # project module fails here
    modules = sorted({_module_name(p) for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*.py")})
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH_IN_A_FORKED_CHILD, ",".join(HEAVY_THIRD_PARTY), *modules],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, check=True, timeout=600)
    assert out.stdout.strip() == "", f"modules that fail to import alone: {out.stdout.strip()}"
    assert len(modules) > 30


def test_stored_model_facts_match_a_fresh_count() -> None:
    from aigrobust.model_facts import measure_facts, stored_facts
    from aigrobust.registry import list_models

    stored = stored_facts()
    assert set(stored) == set(list_models())
    for name in list_models():
        assert stored[name] == measure_facts(name), name


def test_models_lists_weights_and_details_counts_live() -> None:
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert " shipped " in lines["aig20"] and " shipped " in lines["resnet20"]
    assert " torchvision " in lines["resnet50"] and " torchvision* " in lines["aig50"]
    assert " none " in lines["aig56"]
    details = CliRunner().invoke(cli, ["models", "tiny*", "--details"])
    assert details.exit_code == 0 and "12,362" in details.output  # tiny_aig's parameters, counted now


def test_every_error_the_library_defines_has_one_base() -> None:
    """One error base class: each error type aigrobust, attacks and defenses define derives from AigrobustError."""
    import importlib
    import inspect
    import pkgutil

    from aigrobust.errors import AigrobustError

    found = []
    for package in ("aigrobust", "attacks", "defenses"):
        root = importlib.import_module(package)
        names = [package] + [f"{package}.{m.name}" for m in pkgutil.walk_packages(root.__path__)
                             if not m.name.startswith(("__main__", "cli"))]
        for name in names:
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == name and issubclass(cls, Exception) and cls.__name__.endswith("Error"):
                    found.append(cls)
    assert len(found) >= 10
    assert [c.__qualname__ for c in found if not issubclass(c, AigrobustError)] == []


def test_the_cli_turns_any_library_error_into_one_line_in_one_place() -> None:
    import click
    from click.testing import CliRunner

    from aigrobust.cli import cli
    from aigrobust.registry import UnknownModelError

    @click.command("raise-library-error")
    def raising() -> None:
        raise UnknownModelError("unknown model 'x'; did you mean y?")

    cli.add_command(raising)
    try:
        result = CliRunner().invoke(cli, ["raise-library-error"])
    finally:
        cli.commands.pop("raise-library-error")
    assert result.exit_code == 2
    assert result.output.splitlines() == ["Error: unknown model 'x'; did you mean y?"]
