"""AutoAttack's chain on robust models, where most images survive: ours against torchattacks' components and against
the network's own forward/backward limit.

    python -m benchmarks.robust_suite --n 200 --model resnet20.at --model aig20.at --runs 3 --theirs

The chain is APGD-CE (100 steps), APGD-T (100 steps x 9 targets), Square (1,000 queries), each on the samples the
ones before it left standing (``--suite standard`` runs the full standard suite instead: FAB-T and Square-5000 too).
Both sides attack the shipped model in the layout ``aigrobust attack`` uses (channels_last), 8/255, the first ``--n``
test images of ../shared/data.

Besides the wall time, every model call is counted: rows that needed an input gradient (forward and backward) and
rows only classified. The forward/backward limit is what those rows cost at the network's own throughput, measured
at batch 256 (``limit = grad_rows / grad_rate + forward_rows / forward_rate``); the rest of the wall time is the
attack's own work (bookkeeping, small batches). ``--profile`` prints the operators that took the time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attacks import SUITES, attack_from_spec
from benchmarks.common import SHARED, best_time, machine_line

CHAIN = ("apgd:steps=100", "apgd-t:steps=100,n_target_classes=9", "square:n_queries=1000")


class CallCounter(nn.Module):
    """Wraps a model: counts the rows it classified with and without autograd, and the calls."""

    def __init__(self, model: nn.Module) -> None:
        nn.Module.__init__(self)
        self.model = model
        self.grad_rows = 0
        self.forward_rows = 0
        self.calls = 0
        self.eval()  # torchattacks keeps the mode it finds: a module left in training mode would switch BatchNorm

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_rows += len(x)
        else:
            self.forward_rows += len(x)
        return self.model(x)


@dataclass
class ChainTiming:
    """One chain's outcome: per attack wall seconds, rows, and who stands at the end."""

    seconds: list[float] = field(default_factory=list)
    grad_rows: list[int] = field(default_factory=list)
    forward_rows: list[int] = field(default_factory=list)
    standing: list[int] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)


def throughput(model: nn.Module, x: Tensor, y: Tensor, repeats: int = 3) -> tuple[float, float]:
    """(input-gradient rows per second, forward rows per second) at the batch given, best of ``repeats``."""
    def grad_pass() -> None:
        xg = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)

    def forward_pass() -> None:
        with torch.no_grad():
            model(x)

    return len(x) / best_time(grad_pass, repeats), len(x) / best_time(forward_pass, repeats)


def run_chain(model: nn.Module, attacks: list[Callable[[nn.Module, Tensor, Tensor], Tensor]], x: Tensor, y: Tensor,
              eps: float) -> ChainTiming:
    """The attacks in turn, each on the samples still standing."""
    counter = CallCounter(model)
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    timing = ChainTiming()
    for attack in attacks:
        counter.grad_rows = counter.forward_rows = 0
        todo = standing.nonzero().squeeze(1)
        start = time.perf_counter()
        if todo.numel():
            adv = attack(counter, x[todo], y[todo])
            assert float((adv.detach() - x[todo]).abs().amax()) <= eps + 1e-6
            with torch.no_grad():
                standing[todo[model(adv).argmax(1) != y[todo]]] = False
        timing.seconds.append(time.perf_counter() - start)
        timing.grad_rows.append(counter.grad_rows)
        timing.forward_rows.append(counter.forward_rows)
        timing.standing.append(int(standing.sum()))
    timing.flags = standing.tolist()
    return timing


def ours(specs: tuple[str, ...], eps: float) -> list[Callable[[nn.Module, Tensor, Tensor], Tensor]]:
    """Our attacks, called as the evaluation calls them (the model judges, the same model gives gradients)."""
    def runner(spec: str) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
        attack = attack_from_spec(spec)
        return lambda model, x, y: attack(model, x, y, [eps]).clipped[0]
    return [runner(spec) for spec in specs]


def theirs(specs: tuple[str, ...], eps: float) -> list[Callable[[nn.Module, Tensor, Tensor], Tensor]]:
    """torchattacks' components at the same settings."""
    import torchattacks

    def build(spec: str) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
        name, _, settings = spec.partition(":")
        values = dict(item.split("=") for item in settings.split(",") if item)
        steps = int(values.get("steps", 100))

        def attack(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            if name == "apgd":
                return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce",
                                         seed=0)(x, y)
            if name == "apgd-t":
                return torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=10,
                                          seed=0)(x, y)
            if name == "fab-t":
                return torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                                        n_classes=10, seed=0)(x.contiguous(), y)
            return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=int(values["n_queries"]),
                                       n_restarts=1, seed=0)(x, y)
        return attack
    return [build(spec) for spec in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", action="append")
    parser.add_argument("--eps", type=float, default=8.0, help="in /255 units")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--suite", choices=("chain", "standard"), default="chain")
    parser.add_argument("--theirs", action="store_true", help="also run torchattacks' components")
    parser.add_argument("--profile", action="store_true", help="print the operators of one run of ours")
    parser.add_argument("--fold", action="store_true",
                        help="ours also on the BatchNorm-folded copy (`aigrobust attack --fold-batchnorm`)")
    args = parser.parse_args()
    from aigrobust import create_model
    from aigrobust.data import load_npz

    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    specs = CHAIN if args.suite == "chain" else SUITES["standard"]
    eps = args.eps / 255
    x, y = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(max(args.n, 256))).tensors()
    for name in args.model or ["resnet20.at", "aig20.at"]:
        model = create_model(name, pretrained=True).eval().to(memory_format=torch.channels_last)
        grad_rate, forward_rate = throughput(model, x[:256], y[:256])
        print(f"{name}: {grad_rate:.0f} input-gradient rows/s, {forward_rate:.0f} forward rows/s at batch 256",
              flush=True)
        variants = [("ours", model)]
        if args.fold:
            from aigrobust.models.folding import fold_batchnorm

            variants.append(("ours folded", fold_batchnorm(model, x[:16]).to(memory_format=torch.channels_last)))
        for run in range(args.runs):
            timings = {}
            for label, attacked in variants:
                if args.profile and run == 0:
                    with torch.profiler.profile() as prof:
                        timings[label] = run_chain(attacked, ours(specs, eps), x[:args.n], y[:args.n], eps)
                    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
                else:
                    timings[label] = run_chain(attacked, ours(specs, eps), x[:args.n], y[:args.n], eps)
            if args.theirs:
                timings["torchattacks"] = run_chain(model, theirs(specs, eps), x[:args.n], y[:args.n], eps)
            print(report_lines(name, run, specs, timings, grad_rate, forward_rate, args.n), flush=True)


def report_lines(name: str, run: int, specs: tuple[str, ...], timings: dict[str, ChainTiming], grad_rate: float,
                 forward_rate: float, n: int) -> str:
    """Per variant: total and per-attack seconds against the limit, robust count, torchattacks' time over it."""
    lines = []
    for label, timing in timings.items():
        limit = [g / grad_rate + f / forward_rate for g, f in zip(timing.grad_rows, timing.forward_rows)]
        ratio = ""
        if "torchattacks" in timings and label != "torchattacks":
            ratio = f", torchattacks / this {sum(timings['torchattacks'].seconds) / sum(timing.seconds):.2f}x"
        same = ""
        if label != "ours" and "ours" in timings:
            same = f", {sum(a != b for a, b in zip(timing.flags, timings['ours'].flags))} images robust differently"
        lines.append(f"{name} run {run + 1} {label}: {sum(timing.seconds):.1f} s ({sum(timing.seconds) / sum(limit):.2f}x"
                     f" the limit {sum(limit):.1f} s){ratio}; robust {timing.standing[-1]}/{n}{same}")
        lines.append("    " + ", ".join(
            f"{s.split(':')[0]} {t:.1f} s ({g} grad + {f} fwd rows; {left} left)" for s, t, g, f, left in
            zip(specs, timing.seconds, timing.grad_rows, timing.forward_rows, timing.standing)))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
