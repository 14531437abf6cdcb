"""Do adversarials crafted through a defense also fool the bare model? A check on undefended robust accuracy.

An attacker who differentiates through a defense (e.g. JPEG) finds inputs that fool the defended pipeline. Those
inputs are also candidates against the bare model: where they fool it on samples that a direct white-box attack left
standing, the direct attack was held back (masked or noisy gradients) and the bare model's figure is overstated.

Usage: python scripts/transfer_check.py --model resnet20 --model aig20 --data-dir ../shared/data --n-samples 250 \
           --defense jpeg:75 --defense-grad diff --attack apgd:steps=50 --eps 2/255
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import torch
from torch import Tensor, nn

from aigrobust import create_model
from aigrobust.data import DataError, load_dataset
from aigrobust.evaluation import parse_epsilon
from aigrobust.models.registry import UnknownModelError
from attacks import Attack, attack_from_spec
from defenses import AttackerDefenseView, DefendedModel, Defense, DefenseSpecError, parse_defense

TRANSFER_WARNING = 0.01  # more than 1% of samples fooled only by the transferred inputs: worth a warning


@dataclass(frozen=True)
class TransferResult:
    """Shares of the samples (pointwise: correct on the clean input too)."""

    clean: float
    direct: float  # robust to the attack on the bare model
    defended: float  # the defended pipeline, robust to the attack through the defense
    transferred: float  # the bare model, robust to the inputs crafted through the defense
    transfer_only: float  # robust to the direct attack, fooled by the transferred inputs


def transfer_check(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, attack: Attack, defense: Defense,
                   defense_grad: str) -> TransferResult:
    """Attack ``model`` directly and through ``defense`` at ``epsilon``; evaluate both sets on the bare model."""
    defended = DefendedModel(model, defense)
    direct = attack(model, x, y, [epsilon])
    through = attack(defended, x, y, [epsilon], gradient_model=AttackerDefenseView(model, defense, defense_grad))
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        direct_ok = clean_ok & (model(direct.clipped[0]).argmax(1) == y)
        transferred_ok = clean_ok & (model(through.clipped[0]).argmax(1) == y)
        defended_ok = (defended(x).argmax(1) == y) & (defended(through.clipped[0]).argmax(1) == y)
    share = lambda flags: float(flags.float().mean())  # noqa: E731
    return TransferResult(clean=share(clean_ok), direct=share(direct_ok), defended=share(defended_ok),
                          transferred=share(transferred_ok), transfer_only=share(direct_ok & ~transferred_ok))


@click.command()
@click.option("--model", "models", multiple=True, required=True, help="registered model with shipped weights")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="folder with the CIFAR-10 .npz files")
@click.option("--n-samples", type=int, default=250, show_default=True)
@click.option("--eps", "eps_text", default="2/255", show_default=True)
@click.option("--attack", "attack_spec", default="apgd:steps=50", show_default=True)
@click.option("--defense", "defense_spec", default="jpeg:75", show_default=True)
@click.option("--defense-grad", type=click.Choice(["bpda", "diff"]), default="diff", show_default=True)
def main(models: tuple[str, ...], data_dir: Path | None, n_samples: int, eps_text: str, attack_spec: str,
         defense_spec: str, defense_grad: str) -> None:
    """One line per model: clean, direct attack, through the defense, transferred, and a warning if needed."""
    try:
        epsilon = parse_epsilon(eps_text)
        attack = attack_from_spec(attack_spec)
        defense = parse_defense(defense_spec)
        loaded = {name: create_model(name, pretrained=True).eval() for name in models}
        data = load_dataset("cifar10", "test", data_dir)
    except (ValueError, DefenseSpecError, DataError, UnknownModelError) as err:
        error = click.ClickException(str(err))
        error.exit_code = 2  # bad input: the project's rule (README)
        raise error from None
    x, y = data.subset(range(min(n_samples, len(data)))).tensors()
    click.echo(f"{len(x)} images, {attack_spec} at {eps_text}, {defense_spec} ({defense_grad}); robust accuracy %")
    for name, model in loaded.items():
        r = transfer_check(model, x, y, epsilon, attack, defense, defense_grad)
        verdict = (f"WARNING: {100 * r.transfer_only:.1f}% fooled only by the transferred inputs; the direct attack "
                   "understates the bare model's weakness" if r.transfer_only > TRANSFER_WARNING else "ok")
        click.echo(f"{name}: clean {100 * r.clean:.1f} | direct {100 * r.direct:.1f} | through the defense "
                   f"{100 * r.defended:.1f} | transferred to the bare model {100 * r.transferred:.1f} | fooled only by the "
                   f"transferred {100 * r.transfer_only:.1f} | {verdict}")


if __name__ == "__main__":
    main()
