"""The air-gapped GPU node: every third-party package the code imports is either on the node or in the
wheel list scripts/wheelhouse.sh builds, with everything those wheels need, so a new dependency cannot be forgotten."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NODE = PROJECT_ROOT / "scripts" / "gpu_node"
FIRST_PARTY = {"aigrobust", "attacks", "defenses", "benchmarks", "tests", "scripts"}
# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "git": "GitPython", "markdown_it": "markdown-it-py", "yaml": "pyyaml",
                "sklearn": "scikit-learn"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(path: Path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {_normalise(re.split(r"[=<> ]", line)[0]) for line in lines if line}


def third_party_imports() -> dict[str, set[str]]:
    """Distribution -> the files importing it, over the code the node runs (aigrobust, attacks, defenses)."""
    found: dict[str, set[str]] = {}
    for package in ("aigrobust", "attacks", "defenses"):
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in FIRST_PARTY or top in sys.stdlib_module_names:
                        continue
                    found.setdefault(_normalise(DISTRIBUTION.get(top, top)), set()).add(str(path.name))
    return found


def test_every_import_is_on_the_node_or_in_the_wheelhouse() -> None:
    available = _listed(NODE / "node_packages.txt") | _listed(NODE / "wheels.txt")
    imports = third_party_imports()
    assert {"torch", "foolbox", "kornia", "pandas"} <= set(imports)  # the scan sees the code
    missing = {name: sorted(files) for name, files in imports.items() if name not in available}
    assert not missing, f"imported but neither on the node nor in scripts/gpu_node/wheels.txt: {missing}"


def test_the_wheels_bring_what_they_need() -> None:
    available = _listed(NODE / "node_packages.txt") | _listed(NODE / "wheels.txt")
    for name in _listed(NODE / "wheels.txt"):
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its needs cannot be read on this machine
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            needed = _normalise(re.split(r"[\s;<>=!~\[(]", requirement.strip())[0])
            assert needed in available, f"{name} needs {needed}: add it to scripts/gpu_node/wheels.txt"


def test_the_wheelhouse_also_offers_the_older_manylinux_tags_of_the_same_machine() -> None:
    """pip matches a platform tag exactly, so a wheel built for manylinux_2_17 (kornia_rs 0.2.0 for cp312) is found
    for a manylinux_2_28 node only if that tag is offered too; a greedy glob once cut 'x86_64' down to '64'."""
    import os
    import subprocess

    def offered(platform: str) -> list[str]:
        done = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "wheelhouse.sh"), "3.12", platform],
                              env={**os.environ, "WHEELHOUSE_PRINT_PLATFORMS": "1"}, capture_output=True, text=True,
                              check=True)
        return done.stdout.split()[1::2]

    assert offered("manylinux_2_28_x86_64") == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                                                "manylinux2014_x86_64", "manylinux1_x86_64"]
    assert offered("manylinux_2_31_aarch64")[:2] == ["manylinux_2_31_aarch64", "manylinux_2_28_aarch64"]
    assert offered("macosx_11_0_arm64") == ["macosx_11_0_arm64"]
