"""aigrobust installs like a package: a wheel built from this tree goes into a fresh virtual environment (no
editable install, no source tree on the path) and runs there with its shipped weights, model facts and type
marker inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _check_sdist(sdist: Path) -> None:
    """The source distribution holds the packages, their data, the licence and the README, and nothing else of the
    tree (tests, reports, scripts)."""
    import tarfile

    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    for inside in ("LICENSE", "README.md", "pyproject.toml", "aigrobust/pretrained/resnet20.safetensors",
                   "aigrobust/models/facts.json", "attacks/py.typed"):
        assert inside in names, inside
    assert not any(name.startswith(("tests/", "reports/", "scripts/", "benchmarks/")) for name in names)


def test_the_wheel_installs_into_a_fresh_environment_and_runs(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the 'build' package (a dev dependency) builds the wheel")
    import shutil

    # built from a copy of what the package is made of: the build writes nothing into the source tree
    source = tmp_path / "source"
    for part in ("aigrobust", "attacks", "defenses"):
        shutil.copytree(PROJECT_ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(PROJECT_ROOT / part, source / part)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", str(dist),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("aigrobust-*.whl"))
    sdist = next(dist.glob("aigrobust-*.tar.gz"))
    _check_sdist(sdist)
    if shutil.which("twine") or _has_module("twine"):  # the index's own check of both files' metadata
        twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                               capture_output=True, text=True, timeout=120)
        assert twine.returncode == 0 and twine.stdout.count("PASSED") == 2, twine.stdout + twine.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    for inside in ("aigrobust/pretrained/sdn20.safetensors", "aigrobust/pretrained/resnet20.safetensors",
                   "aigrobust/models/facts.json", "aigrobust/py.typed", "attacks/py.typed", "defenses/py.typed",
                   "aigrobust/templates/report.html"):
        assert inside in names, inside
    assert not any(name.startswith(("tests/", "reports/", "scripts/")) for name in names)
    # a fresh environment that borrows the installed dependencies (torch is large) but not aigrobust's source
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import aigrobust, attacks; print(aigrobust.__file__, attacks.__file__)"],
                           cwd=elsewhere, check=True, capture_output=True, text=True, timeout=120).stdout
    assert str(PROJECT_ROOT) not in where and str(venv) in where, where
    cli = venv / "bin" / "aigrobust"
    models = subprocess.run([str(cli), "models", "sdn*"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert models.returncode == 0 and "sdn20" in models.stdout and "shipped" in models.stdout, models.stdout
    if not (SHARED_DATA / "cifar10_test_sample.npz").is_file():
        pytest.skip(f"{SHARED_DATA} is absent: the attack on real images is not run")
    attack = subprocess.run([str(cli), "attack", "--model", "resnet20", "--attack", "fgsm", "--eps", "8/255",
                             "--n-samples", "8", "--data-dir", str(SHARED_DATA), "--out", str(tmp_path / "run")],
                            cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert attack.returncode == 0, attack.stderr
    assert (tmp_path / "run" / "records.csv.gz").is_file()
