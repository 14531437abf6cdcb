"""CUDA paths (marked `cuda`, skipped without a device; scripts/gpu_check.sh runs them): gates skip work on CUDA
too, attacks and defenses run there, one training step, and a checkpoint saved from CUDA reloads on the CPU with
equal outputs. The GPU check's own CPU dry run is in the default suite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import PROJECT_ROOT, half_closed

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    # from the checkout, not an install: the script sets PYTHONPATH=. and runs from the project root
    results = tmp_path / "results"
    done = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(results)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for needle in ("eval resnet50", "eval aig50", "bf16", "PGD-10 ours", "train step", "JPEG-75", "gpu check: done"):
        assert needle in done.stdout, needle
    kept = (results / "figures.txt").read_text().splitlines()  # every figure also on disk, one line each
    assert kept[0].startswith("device: cpu") and kept[-1] == "gpu check: done" and len(kept) >= 10


@pytest.mark.cuda
@cuda
def test_gates_skip_work_on_cuda_and_match_the_cpu() -> None:
    from aigrobust import create_model

    model = half_closed(create_model("tiny_aig")).eval()
    x = torch.rand(16, 3, 32, 32)
    expected, trace_cpu = model.forward_with_gates(x)
    on_gpu = model.to("cuda")
    logits, trace = on_gpu.forward_with_gates(x.cuda())
    assert torch.equal(trace.decisions.cpu(), trace_cpu.decisions)
    assert torch.allclose(logits.cpu(), expected, atol=1e-4)
    assert float(trace.flops.mean()) < on_gpu.flop_profile((3, 32, 32)).full  # closed blocks cost nothing


@pytest.mark.cuda
@cuda
def test_attacks_and_defenses_run_on_cuda() -> None:
    from aigrobust import create_model
    from attacks import attack_from_spec
    from defenses import parse_defense

    model = half_closed(create_model("tiny_aig")).eval().cuda()
    x, y = torch.rand(8, 3, 32, 32, device="cuda"), torch.arange(8, device="cuda") % 10
    for spec in ("fgsm", "pgd:steps=3", "apgd-t:steps=3,n_target_classes=2", "fab-t:steps=3,n_target_classes=2",
                 "square:n_queries=10"):
        result = attack_from_spec(spec)(model, x, y, [8 / 255])
        assert result.clipped.device.type == "cuda" and (result.clipped[0] - x).abs().amax() <= 8 / 255 + 1e-6
    for spec in ("jpeg:75", "bits:4", "median:2"):
        assert parse_defense(spec)(x).device.type == "cuda"


@pytest.mark.cuda
@cuda
def test_one_training_step_and_a_cuda_checkpoint_reloads_on_the_cpu(tmp_path: Path) -> None:
    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint
    from aigrobust.models.factory import load_checkpoint

    model = create_model("tiny_aig").cuda().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, 3, 32, 32, device="cuda"), torch.arange(8, device="cuda") % 10
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    optimizer.step()
    model.eval()
    path = tmp_path / "cuda.safetensors"
    save_checkpoint(model, path)
    reloaded, _ = load_checkpoint(path)
    probe = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(probe), model(probe.cuda()).cpu(), atol=1e-4)
