"""Copy a training run's resume point (state, last weights, log) into the repository when a session must stop.

Usage: python scripts/snapshot_training.py runs/study/aig20 reports/cifar10/training/aig20
Copies only a consistent pair: the weights' metadata epoch must equal the state's epoch (else exit 1, try again
after the next epoch ends).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click
import torch

from aigrobust.models.checkpoints import read_checkpoint


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("target", type=click.Path(path_type=Path), required=False)
@click.option("--check-only", is_flag=True, help="Only check that RUN_DIR's weights and state agree (exit 0/1).")
def main(run_dir: Path, target: Path | None, check_only: bool) -> None:
    """Snapshot RUN_DIR's resume point into TARGET."""
    state = torch.load(run_dir / "train_state.pt", map_location="cpu", weights_only=True)
    _, meta = read_checkpoint(run_dir / "last.safetensors")
    self_contained = "model" in state  # newer state files carry their own weights: always a consistent resume point
    if not self_contained and (int(meta["epoch"]) != int(state["epoch"]) or int(state.get("step", 0)) != 0):
        click.echo(f"inconsistent: weights at epoch {meta['epoch']}, state at {state['epoch']}/{state.get('step', 0)}")
        sys.exit(1)
    if check_only or target is None:
        click.echo(f"consistent at epoch {state['epoch']}")
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train_state.pt", "last.safetensors", "log.jsonl"):
        shutil.copy2(run_dir / name, target / name)
    click.echo(f"snapshot of epoch {state['epoch']} in {target}")


if __name__ == "__main__":
    main()
