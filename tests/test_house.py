"""The house: no import cycle, light modules stay light, stored model facts match a fresh count, a fast CLI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import aigrobust
from aigrobust.cli import cli
from aigrobust.cli.commands import COMMANDS
from tests.conftest import PROJECT_ROOT

PACKAGES = ("aigrobust", "attacks", "defenses")


ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere: at module level and inside functions alike (only imports under
    ``if TYPE_CHECKING:``, which never run, are left out). ``from pkg import sub`` names the submodule."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            names = subs if len(subs) == len(node.names) else [module, *subs]
        for imported in names:
            while imported and imported not in known:  # 'pkg.module.attr' -> 'pkg.module'
                imported = imported.rpartition(".")[0]
            if imported:
                found.add(imported)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    """Every project module and the project modules it imports (anywhere in it), counting the modules the command
    group and the package's public names load on first use."""
    files = _project_modules()
    graph = {name: _imports(path, name, set(files)) for name, path in files.items()}
    graph["aigrobust.cli.commands"] |= {module for module, _ in COMMANDS.values()}
    graph["aigrobust"] |= set(aigrobust._EXPORTS.values())
    return graph


def documented_layers() -> list[tuple[int, tuple[str, ...]]]:
    """The layer table of docs/architecture.md: (layer, the modules and packages it names)."""
    rows = []
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows.append((int(cells[0]), tuple(re.findall(r"`([\w.]+)`", cells[1]))))
    return rows


def layer_of(module: str, layers: list[tuple[int, tuple[str, ...]]]) -> int | None:
    """The layer of the longest documented name that ``module`` is or lies in."""
    best: tuple[int, int] | None = None
    for layer, names in layers:
        for named in names:
            if (module == named or module.startswith(named + ".")) and (best is None or len(named) > best[1]):
                best = (layer, len(named))
    return best[0] if best else None


def test_no_import_cycle_anywhere_counting_imports_inside_functions() -> None:
    graph = import_graph()
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


def test_every_import_follows_the_documented_layers() -> None:
    layers = documented_layers()
    assert [layer for layer, _ in layers] == list(range(len(layers))) and len(layers) >= 8
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != "aigrobust" and layer_of(m, layers) is None)
    assert unplaced == [], f"modules docs/architecture.md does not place: {unplaced}"
    upward = sorted(f"{a} (layer {layer_of(a, layers)}) imports {b} (layer {layer_of(b, layers)})"
                    for a, imported in graph.items() for b in imported
                    if (layer_of(b, layers) or 0) > (layer_of(a, layers) or 0))
    assert upward == [], "imports against the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_the_layer_check_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\n"
                      "def f():\n    import a.x\n    from a import y\n")
    known = {"a", "a.x", "a.y", "b"}
    assert _imports(module, "mod", known) == {"a.x", "a.y"}
    assert layer_of("aigrobust.models.registry", documented_layers()) == layer_of("aigrobust.models",
                                                                                 documented_layers())


def test_light_modules_import_alone_without_torch() -> None:
    # the command line, the registry, the error types and the file helpers must not load torch when imported
    for module in ("aigrobust", "aigrobust.cli", "aigrobust.errors", "aigrobust.files", "aigrobust.datasets"):
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
    from aigrobust.models.facts import measure_facts, stored_facts
    from aigrobust.models.registry import list_models

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
        names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
                             if not m.name.startswith(("aigrobust.__main__", "aigrobust.cli"))]
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
    from aigrobust.models.registry import UnknownModelError

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


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50  # its code, without the docstring


def test_no_module_over_400_lines_and_no_function_over_50() -> None:
    too_long = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            source = path.read_text()
            name = str(path.relative_to(PROJECT_ROOT))
            if len(source.splitlines()) > MAX_MODULE_LINES:
                too_long.append(f"{name}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    length -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_every_evaluation_setting_is_declared_once() -> None:
    """EvalSpec's defaults, the attack command's options and evaluate()'s keywords all come from (or are held to)
    aigrobust.settings."""
    import dataclasses
    import inspect

    import aigrobust
    from aigrobust.evaluation import EvalSpec
    from aigrobust.settings import EVAL_SETTINGS

    spec_defaults = {f.name: f.default for f in dataclasses.fields(EvalSpec)}
    keywords = inspect.signature(aigrobust.evaluate).parameters
    options = {p.name: p for p in cli.get_command(None, "attack").params}
    for name, setting in EVAL_SETTINGS.items():
        if name != "attacks":  # a spec needs its attacks: no default there
            assert spec_defaults[name] == setting.default, name
        if name in keywords:
            assert keywords[name].default == setting.default, name
        option = options[name]
        assert option.opts[0] == setting.option and option.default == setting.default, name
        assert setting.help.split(" (")[0].split(";")[0] in (option.help or ""), name


def test_every_training_setting_is_declared_once() -> None:
    """TrainConfig's defaults and the train command's options come from aigrobust.settings."""
    import dataclasses

    from aigrobust.settings import TRAIN_SETTINGS
    from aigrobust.training.config import TrainConfig

    config_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    options = {p.name: p for p in cli.get_command(None, "train").params}
    for name, setting in TRAIN_SETTINGS.items():
        assert config_defaults[name] == setting.default, name
        option = options[name]
        assert option.opts[0] == setting.option and option.default == setting.default, name
        assert option.help == setting.help, name


def documented_lazy_imports() -> set[str]:
    """The modules docs/architecture.md allows to be imported inside functions (its 'lazy imports:' line)."""
    line = next(x for x in ARCHITECTURE.read_text().splitlines() if x.startswith("lazy imports:"))
    return set(re.findall(r"`([\w.]+)`", line))


def test_imports_inside_functions_are_only_the_documented_lazy_ones() -> None:
    allowed = documented_lazy_imports()
    assert allowed and "torch" not in allowed
    inside = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for sub in ast.walk(node):
                    modules = ([a.name for a in sub.names] if isinstance(sub, ast.Import)
                               else [sub.module or ""] if isinstance(sub, ast.ImportFrom) else [])
                    inside += [f"{path.relative_to(PROJECT_ROOT)}:{sub.lineno} {m}" for m in modules
                               if not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not inside, inside


def test_the_group_help_lists_every_command_without_loading_torch() -> None:
    """The group's --help reads each command's first docstring line from its source; it is the line the command
    itself shows once imported, and nothing heavy loads for it."""
    import inspect

    from aigrobust.cli.commands import command_docstring

    code = ("import sys\nfrom aigrobust.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    for name, (module, attribute) in COMMANDS.items():
        assert f"  {name} " in out.stdout, name
        command = cli.get_command(None, name)
        assert command is not None and command.callback is not None
        assert command_docstring(module, attribute) == inspect.cleandoc(command.callback.__doc__ or ""), name
