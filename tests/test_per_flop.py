"""The robust study's per-FLOP comparison: a gated model against the line through the plain models, image by image."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from attacks import SUITES, attack_from_spec
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))

EPS = 8 / 255


def _records() -> pd.DataFrame:
    """Plain models at 80 and 140 MFLOPs robust on 40 and 46 of 100 images, a gated one at 100-120 MFLOPs (110 on
    average) robust on 30, and one whose gates all agree at 50 MFLOPs robust on 45; the gated ones also under the
    compute attack."""
    suite = [attack_from_spec(spec).spec for spec in SUITES["standard"]]
    compute = attack_from_spec("compute-inflation").spec
    models = {"plain-a": (40, 80e6, None), "plain-b": (46, 140e6, None), "gated": (30, None, 130e6),
              "cheap": (45, 50e6, 60e6)}
    rows = []
    for model, (kept, cost, attacked) in models.items():
        for sample in range(100):
            flops = cost if cost is not None else (100e6 if sample % 2 else 120e6)
            gated = model in ("gated", "cheap")
            base = dict(model=model, defense="none", defense_grad="none", sample=sample, clean_correct=True,
                        clean_flops=flops, adv_flops=flops, gate_grad="exact" if gated else "none")
            rows.append({**base, "attack": suite[0], "epsilon": 0.0, "adv_correct": True})
            for i, spec in enumerate(suite):
                rows.append({**base, "attack": spec, "epsilon": EPS,
                             "adv_correct": not (sample >= kept and i == len(suite) - 1)})
            if attacked is not None:
                rows.append({**base, "attack": compute, "epsilon": EPS, "adv_correct": True, "adv_flops": attacked})
    return pd.DataFrame(rows)


def _interval(values: np.ndarray, statistic) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """A stand-in for the bootstrap: the statistic of the whole sample, +-1 point."""
    value = statistic(values)
    return value - 0.01, value + 0.01


def test_a_gated_model_is_compared_with_the_plain_line_at_its_own_flops() -> None:
    from per_flop import per_flop_rows
    from study_findings import short_names

    rows, verdicts = per_flop_rows(short_names(_records()), EPS, _interval)
    table = {row[0]: row for row in rows}
    # 110 MFLOPs lies half way between 80 and 140: the line there is (40 + 46) / 2 = 43%, the gated model 13 below
    assert table["gated"][1:4] == ["100", "30.0", "110.0"]
    assert table["gated"][4] == "43.0" and table["gated"][5].startswith("**-13.0**")
    # under the compute attack (130 MFLOPs: 1/6 of the way from 140) the line is 45%
    assert table["gated"][6] == "130.0" and table["gated"][7] == "45.0" and table["gated"][8].startswith("**-15.0**")
    # cheaper than every plain model: compared with the cheapest, where it is more robust
    assert table["cheap"][4] == "40.0" and table["cheap"][5].startswith("**+5.0**")
    assert verdicts["gated"] == ["below", "below"] and verdicts["cheap"] == ["above", "above"]
    assert "plain-a (80.0 MFLOPs), plain-b (140.0 MFLOPs)" in verdicts["plain models of the line"][0]


def test_the_line_at_a_cost_blends_the_two_plain_models_around_it() -> None:
    from per_flop import line_weights

    assert line_weights(80.0, [80.0, 140.0]) == (0, 0, 1.0)
    assert line_weights(140.0, [80.0, 140.0]) == (1, 1, 1.0)
    i, j, w = line_weights(125.0, [80.0, 100.0, 140.0])
    assert (i, j) == (1, 2) and w == pytest.approx(0.375)
