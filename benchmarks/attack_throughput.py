"""PGD-10 and APGD-100 against torchattacks' PGD and APGD: same model, images, epsilon, steps and step size.

Each timing is one attack plus one forward that judges its adversarials (ours: ``result.success``; theirs: the
model on the returned images), so both sides deliver the same thing: adversarials and who is fooled. Both run on
the same channels_last model (the layout our evaluation uses). Ratios are torchattacks' time over ours, per run.

Usage: python -m benchmarks.attack_throughput [--batch 256] [--runs 3] [--model resnet20 --model aig20]
torchattacks is optional: pip install --no-deps torchattacks (it pins an old requests release).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import click
import torch

from attacks import get_attack
from benchmarks.common import benchmark_batch, machine_line

EPSILONS = {"2/255": 2 / 255, "8/255": 8 / 255}
PGD_STEPS, PGD_REL_STEP = 10, 0.25
APGD_STEPS = 100


def load_model(name: str) -> tuple[torch.nn.Module, str]:
    """akamaster's resnet20 ('resnet20', from ../shared/data) or a model shipped with aigrobust ('aig20')."""
    from benchmarks.common import benchmark_model

    if name == "resnet20":
        model, desc = benchmark_model("resnet20")
    else:
        from aigrobust import create_model

        model, desc = create_model(name, pretrained=True).eval(), f"{name} (shipped weights)"
    return model.to(memory_format=torch.channels_last), desc


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_pair(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float) -> tuple[float, float, int, int]:
    """(our seconds, torchattacks' seconds, images we fool, images they fool) for one attack at one epsilon."""
    import torchattacks

    if attack == "pgd":
        ours = get_attack("pgd", steps=PGD_STEPS, rel_stepsize=PGD_REL_STEP)
        theirs = torchattacks.PGD(model, eps=eps, alpha=PGD_REL_STEP * eps, steps=PGD_STEPS, random_start=True)
    else:
        ours = get_attack("apgd", steps=APGD_STEPS)
        theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=APGD_STEPS, n_restarts=1, loss="ce")
    outcome: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        outcome["ours"] = ours(model, x, y, [eps]).success[0]

    def run_theirs() -> None:
        adversarial = theirs(x, y)
        with torch.no_grad():
            outcome["theirs"] = model(adversarial).argmax(1) != y

    t_ours, t_theirs = seconds(run_ours), seconds(run_theirs)
    return t_ours, t_theirs, int(outcome["ours"].sum()), int(outcome["theirs"].sum())


@click.command()
@click.option("--batch", type=int, default=256, show_default=True, help="Real test images attacked per PGD timing.")
@click.option("--apgd-batch", type=int, default=32, show_default=True,
              help="Images per APGD-100 timing (torchattacks needs about 5 minutes for 256 on 2 cores).")
@click.option("--runs", type=int, default=3, show_default=True, help="Timings per setting (the range is printed).")
@click.option("--model", "models", multiple=True, default=("resnet20", "aig20"), show_default=True)
@click.option("--attack", "attack_names", multiple=True, type=click.Choice(["pgd", "apgd"]), default=("pgd", "apgd"),
              show_default=True)
def main(batch: int, apgd_batch: int, runs: int, models: tuple[str, ...], attack_names: tuple[str, ...]) -> None:
    """Print, per model, attack and epsilon, both throughputs and the ratio range over ``runs`` timings."""
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        raise click.ClickException("torchattacks is not installed: pip install --no-deps torchattacks") from None
    x_all, y_all, data_desc = benchmark_batch(max(batch, apgd_batch))
    click.echo(machine_line())
    click.echo(f"{data_desc}; PGD-{PGD_STEPS} (step {PGD_REL_STEP} eps, random start), APGD-CE-{APGD_STEPS} "
               f"(1 restart); time = attack + one judging forward")
    for name in models:
        model, desc = load_model(name)
        model(x_all[:8])  # warm-up
        for attack in attack_names:
            n = batch if attack == "pgd" else apgd_batch
            x, y = x_all[:n], y_all[:n]
            for label, eps in EPSILONS.items():
                results = [timed_pair(model, x, y, attack, eps) for _ in range(runs)]
                ratios = [theirs / ours for ours, theirs, _, _ in results]
                best_ours = min(r[0] for r in results)
                best_theirs = min(r[1] for r in results)
                click.echo(f"{desc:32} {attack:>4}-{PGD_STEPS if attack == 'pgd' else APGD_STEPS:<3} {label:>5}: "
                           f"ours {n / best_ours:6.0f} img/s, torchattacks {n / best_theirs:6.0f} img/s, "
                           f"ratio {min(ratios):.2f}-{max(ratios):.2f}x over {runs} runs | fooled: ours "
                           f"{results[0][2]}, torchattacks {results[0][3]} of {n}")


if __name__ == "__main__":
    main()
