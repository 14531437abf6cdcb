"""``aigrobust eval``: clean accuracy, execution rates and executed FLOPs of one model."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from aigrobust.cli import inputs
from aigrobust.cli.exits import BadInput
from aigrobust.cli.inputs import known_models
from aigrobust.cli.options import batch_size_option, data_dir_option, device_option, download_option
from aigrobust.datasets import DATASETS
from aigrobust.evaluation.clean_accuracy import evaluate_clean
from aigrobust.models.registry import get_model_info


@click.command("eval")
@click.option("--model", "model_name", default=None, help="Registered model name.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Our .safetensors checkpoint or a convertible file (akamaster, ConvNet-AIG, torchvision).")
@click.option("--pretrained/--random-weights", default=True, show_default=True,
              help="--model's weights: its shipped (or torchvision) ones, or random ones (gate rates and FLOPs of an "
              "untrained model; its accuracy is chance).")
@click.option("--dataset", type=click.Choice(DATASETS), default=None, help="Default: the model's own dataset.")
@data_dir_option()
@download_option()
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="First N samples only.")
@batch_size_option()
@click.option("--gate-mode", type=click.Choice(["hard", "stochastic", "soft", "open"]), default="hard",
              show_default=True, help="How gates decide: hard (deployed), stochastic (sampled), soft (every block "
              "scaled by its gate's probability) or open (every block runs).")
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_command(model_name: str | None, checkpoint: Path | None, pretrained: bool, dataset: str | None,
                 data_dir: Path | None, download: bool, n_samples: int | None, batch_size: int, gate_mode: str,
                 device: str, as_json: bool) -> None:
    """Clean accuracy, per-layer execution rates and mean executed FLOPs."""
    dev = inputs.device(device)
    if model_name is not None:
        known_models([model_name])  # a bad name fails before any data is read
    if checkpoint is not None and not pretrained:
        raise BadInput("--random-weights and --checkpoint contradict each other: give one")
    if model_name is not None and checkpoint is None and pretrained:
        # as `attack` does: never a random model's accuracy unasked
        inputs.require_weights((model_name,), labelled_checkpoints=False,
                               otherwise=", or --random-weights for an untrained one")
    model, _ = inputs.load_model(model_name, checkpoint, pretrained)  # a checkpoint, where given, is what loads
    dataset = dataset or get_model_info(model.registry_name).default_dataset
    data = inputs.heldout_split(dataset, data_dir, download)
    name = model.registry_name
    if checkpoint is None and not pretrained:
        click.echo(f"warning: {name} has random weights (--random-weights): its accuracy is chance", err=True)
    data = inputs.first_samples(data, n_samples)
    inputs.check_classes(name, model, data)
    if getattr(data, "note", ""):
        click.echo(f"note: {data.note}", err=True)  # type: ignore[attr-defined]
    model.to(dev)
    with tqdm(total=len(data), unit="img", leave=False, disable=None) as bar:  # type: ignore[arg-type]
        result = evaluate_clean(model, data, batch_size=batch_size, device=dev, gate_mode=gate_mode,
                                on_batch=bar.update)
    if as_json:
        click.echo(json.dumps({"model": name, "dataset": dataset, **result.to_dict()}, indent=2))
        return
    click.echo(f"{name} on {dataset} ({result.n_samples} images, gates {result.gate_mode}): "
               f"accuracy {100 * result.accuracy:.2f}%")
    click.echo(f"executed FLOPs {result.mean_flops / 1e6:.2f} M of {result.full_flops / 1e6:.2f} M "
               f"({100 * result.flops_ratio:.1f}%)")
    if model.is_gated:
        click.echo("execution rate per block: " + " ".join(f"{v:.2f}" for v in result.execution_rates))
