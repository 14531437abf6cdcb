"""Training curves of adversarial training runs, from their log.jsonl files: per epoch, clean and PGD-10
accuracy on the held-out split (left) and executed FLOPs on clean and attacked held-out images (right), one line
colour per run (solid: clean, dashed: PGD-10); an epoch with a catastrophic-overfitting warning is marked with x.

Usage: python scripts/training_curves.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --out FIGURE.png (an .svg beside it)
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def read_log(run_dir: Path) -> list[dict[str, object]]:
    """The run's epoch records, in order (a line cut short by a kill is skipped)."""
    rows = []
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True)
def main(runs: tuple[str, ...], out_path: Path) -> None:
    """Draw the curves of every LABEL=RUN_DIR into one figure (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, flops_ax) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for index, item in enumerate(runs):
        label, _, folder = item.partition("=")
        if not folder:
            raise click.BadParameter(f"{item!r}: give LABEL=RUN_DIR")
        rows = read_log(Path(folder))
        epochs = [int(r["epoch"]) for r in rows]  # type: ignore[call-overload]
        color = f"C{index}"
        acc_ax.plot(epochs, [100 * r["heldout_accuracy"] for r in rows], color=color, label=f"{label} clean")
        acc_ax.plot(epochs, [100 * r["heldout_robust_accuracy"] for r in rows], color=color, linestyle="--",
                    label=f"{label} PGD-10")
        for r in rows:
            if r.get("warning"):
                acc_ax.plot(r["epoch"], 100 * r["heldout_robust_accuracy"], "x", color=color, markersize=9)
        if rows and rows[0].get("heldout_flops_ratio") is not None and any(
                r.get("heldout_flops_ratio", 1.0) != 1.0 for r in rows):
            flops_ax.plot(epochs, [r["heldout_flops_ratio"] for r in rows], color=color, label=f"{label} clean")
            flops_ax.plot(epochs, [r["heldout_adversarial_flops_ratio"] for r in rows], color=color, linestyle="--",
                          label=f"{label} PGD-10")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("held-out accuracy (%)")
    acc_ax.legend(fontsize=7)
    flops_ax.set_xlabel("epoch")
    flops_ax.set_ylabel("executed FLOPs / every block open")
    flops_ax.legend(fontsize=7)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    fig.savefig(out_path.with_suffix(".svg"))
    click.echo(f"wrote {out_path} and {out_path.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
