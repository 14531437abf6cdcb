"""The GPU figures in one run: evaluation throughput of resnet50 and aig50 (batch 64 and 256,
fp32 and bf16), PGD-10 on resnet50 against torchattacks' PGD (ratio), an aig50 training step against resnet50's
(ratio), and the JPEG defense at 224 px on the device against the CPU path.

    python -m benchmarks.gpu_check             # on a CUDA machine (scripts/gpu_check.sh runs it after the cuda tests)
    python -m benchmarks.gpu_check --dry-run   # the same code on the CPU with tiny models and a few images

``--dry-run`` exists so the default test suite runs this script and it cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call (after one warm-up call), synchronising CUDA around the timing."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def autocast_for(device: torch.device, precision: str) -> Any:
    """bf16 autocast on ``device``, or no autocast for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def models(dry_run: bool, device: torch.device) -> dict[str, torch.nn.Module]:
    """resnet50 and aig50 with random weights (tiny CIFAR twins with 1000 classes in a dry run)."""
    from aigrobust import create_model

    names = {"resnet50": "tiny_resnet", "aig50": "tiny_aig"} if dry_run else {"resnet50": "resnet50", "aig50": "aig50"}
    built = {}
    for label, name in names.items():
        model = create_model(name, num_classes=1000) if dry_run else create_model(name)
        built[label] = model.eval().to(device=device, memory_format=torch.channels_last)
    return built


def eval_throughput(nets: dict[str, torch.nn.Module], device: torch.device, size: int, batches: tuple[int, ...],
                    repeats: int) -> list[str]:
    """Images per second of a forward pass, per model, batch size and precision."""
    lines = []
    for name, model in nets.items():
        for batch in batches:
            x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
            for precision in ("fp32", "bf16"):

                def forward(model: torch.nn.Module = model, x: Tensor = x, precision: str = precision) -> None:
                    with torch.no_grad(), autocast_for(device, precision):
                        model(x)

                seconds = timed(forward, device, repeats)
                lines.append(f"eval {name:<9} batch {batch:>3} {precision}: {batch / seconds:9.1f} img/s")
    return lines


def pgd_against_torchattacks(model: torch.nn.Module, device: torch.device, size: int, n: int) -> list[str]:
    """PGD-10 at 4/255 on ``n`` images: ours (first success, early exit) and torchattacks', same model and device."""
    from attacks import attack_from_spec

    x = torch.rand(n, 3, size, size, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right: every sample is attacked
    ours = attack_from_spec("pgd:steps=10")
    seconds = timed(lambda: ours(model, x, y, [4 / 255]).success, device, 1)
    lines = [f"PGD-10 ours        {n / seconds:9.1f} img/s"]
    try:
        import torchattacks
    except ImportError:
        return lines + ["PGD-10 torchattacks: not installed (pip install --no-deps torchattacks)"]
    theirs = torchattacks.PGD(model, eps=4 / 255, alpha=4 / 255 / 4, steps=10, random_start=True)
    other = timed(lambda: theirs(x, y), device, 1)
    return lines + [f"PGD-10 torchattacks {n / other:8.1f} img/s; ours / theirs {other / seconds:.2f}x"]


def training_step_ratio(nets: dict[str, torch.nn.Module], device: torch.device, size: int, batch: int,
                        repeats: int) -> list[str]:
    """One SGD step (bf16 autocast on CUDA) of aig50 with its target-rate loss against resnet50's."""
    from aigrobust.models.gates import target_rate_loss

    seconds = {}
    for name, model in nets.items():
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,), device=device)
        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer, x: Tensor = x,
                 y: Tensor = y) -> None:
            with autocast_for(device, "bf16" if device.type == "cuda" else "fp32"):
                if model.is_gated:
                    logits, trace = model.forward_with_gates(x)
                    targets = torch.full((trace.gate_values.shape[1],), 0.6, device=device)
                    loss = F.cross_entropy(logits.float(), y) + 2.0 * target_rate_loss(trace.gate_values, targets)
                else:
                    loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds[name] = timed(step, device, repeats)
        model.eval()
    # what one ImageNet epoch (1,281,167 training images) would take on 8 such GPUs at this per-GPU rate, data
    # loading aside: the README's "time per epoch" comes from this line
    epoch_minutes = {name: 1_281_167 / (8 * batch / s) / 60 for name, s in seconds.items()}
    return [f"train step batch {batch}: resnet50 {seconds['resnet50'] * 1000:.1f} ms, aig50 "
            f"{seconds['aig50'] * 1000:.1f} ms, aig50 / resnet50 {seconds['aig50'] / seconds['resnet50']:.2f}x",
            f"implied ImageNet epoch on 8 such GPUs (compute only): resnet50 {epoch_minutes['resnet50']:.1f} min, "
            f"aig50 {epoch_minutes['aig50']:.1f} min"]


def jpeg_device_against_cpu(device: torch.device, size: int, n: int) -> list[str]:
    """The JPEG-75 defense on ``n`` images at ``size`` px on the device against the CPU path."""
    from defenses import parse_defense

    defense = parse_defense("jpeg:75")
    x = torch.rand(n, 3, size, size)
    cpu = timed(lambda: defense(x), torch.device("cpu"), 2)
    on_device = timed(lambda: defense(x.to(device)), device, 2)
    return [f"JPEG-75 {size} px: cpu {n / cpu:.1f} img/s, {device.type} {n / on_device:.1f} img/s "
            f"({cpu / on_device:.2f}x)"]


class FigureFile:
    """One line per figure, printed and appended to a file at once (flushed and fsynced)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def emit(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, a few images: checks the code.")
    parser.add_argument("--results", type=Path, default=None,
                        help="Also append each figure to RESULTS/figures.txt the moment it is measured (flushed to "
                        "disk), so a job killed early keeps what it measured.")
    args = parser.parse_args()
    keep = FigureFile(args.results / "figures.txt") if args.results is not None else None
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("no CUDA device: run on a GPU machine, or --dry-run to check the script on the CPU")
    size, batches, repeats, n = (32, (4,), 1, 4) if args.dry_run else (224, (64, 256), 5, 64)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    emit = keep.emit if keep is not None else (lambda line: print(line, flush=True))
    emit(f"device: {card}; torch {torch.__version__}")
    nets = models(args.dry_run, device)
    sections: list[tuple[str, Callable[[], list[str]]]] = [
        ("evaluation throughput", lambda: eval_throughput(nets, device, size, batches, repeats)),
        ("PGD-10 against torchattacks", lambda: pgd_against_torchattacks(nets["resnet50"], device, size, n)),
        ("training step", lambda: training_step_ratio(nets, device, size, batches[0], repeats)),
        ("JPEG", lambda: jpeg_device_against_cpu(device, 224 if not args.dry_run else 32, n)),
    ]
    # each section prints as it ends, with its time, so a run cut short still shows what it measured
    for title, section in sections:
        start = time.perf_counter()
        for line in section():
            emit(line)
        emit(f"  ({title}: {time.perf_counter() - start:.1f} s)")
    emit("gpu check: done")


if __name__ == "__main__":
    main()
