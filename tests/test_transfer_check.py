"""scripts/transfer_check.py: inputs crafted through a defense, evaluated on the bare model."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from aigrobust import create_model
from attacks import attack_from_spec
from defenses import JPEG
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))


def test_shipped_resnet20_is_not_flattered_by_its_direct_attack(cifar_test) -> None:
    from transfer_check import transfer_check

    x, y = cifar_test.subset(range(64)).tensors()
    model = create_model("resnet20", pretrained=True).eval()
    r = transfer_check(model, x, y, 2 / 255, attack_from_spec("pgd:steps=5"), JPEG(75), "diff")
    assert r.clean > 0.8
    assert r.direct < r.clean - 0.3 and r.defended < r.clean - 0.3  # both attacks work on their target
    assert r.transferred > r.direct  # JPEG-shaped inputs are weaker on the bare model than its own attack
    assert 0.0 <= r.transfer_only <= r.direct and r.transfer_only < 0.05  # measured 0 on 250 images (APGD-50)


def test_bad_input_gets_one_line(tmp_path: Path) -> None:
    from transfer_check import main

    for args, needle in ((["--model", "nonesuch"], "nonesuch"), (["--model", "resnet20", "--eps", "2"], "epsilon"),
                         (["--model", "resnet20", "--defense", "jpeg:0"], "1..100"),
                         (["--model", "resnet20", "--data-dir", str(tmp_path)], "no .npz file")):
        result = CliRunner().invoke(main, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and needle in result.output, result.output
