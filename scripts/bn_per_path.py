"""Batch-norm statistics per path, and their control: two copies of a gated checkpoint whose BatchNorm statistics are
re-estimated on the same adversarial training images under the same hard gate decisions, once from the images that
run each block (per path) and once from every image (the control), written as checkpoints for ``aigrobust attack``.

    python scripts/bn_per_path.py reports/cifar10-robust/training/aig20-from-at-deployed/model.safetensors \\
        --data-dir ../shared/data --out runs/at/bn-per-path

The adversarial images: N-FGSM at ``--eps`` on the deployed source network (hard gates, straight-through gate
gradient, running statistics), as the deployed-network route's training attacked it, on ``--n-images`` training images
in a seeded order; the noise is keyed by the seed and the batch, so both copies see the very same images.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from aigrobust.data import load_cifar10
from aigrobust.evaluation import parse_epsilon
from aigrobust.models.base import ResNetBase
from aigrobust.models.checkpoints import save_checkpoint
from aigrobust.models.factory import load_checkpoint
from aigrobust.training.inner_attacks import NFGSM
from aigrobust.training.recalibration import recalibrate_batchnorm


def adversarial_batches(model: ResNetBase, images: torch.Tensor, labels: torch.Tensor, eps: float,
                        batch_size: int, seed: int) -> list[torch.Tensor]:
    """N-FGSM images against the deployed ``model``, batch by batch (noise keyed by seed and batch index)."""
    attack = NFGSM(eps=eps)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return model(x), None

    batches = []
    model.eval()
    with model.gate_settings(mode="hard", grad="straight-through"):
        for start in range(0, len(images), batch_size):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
            batches.append(attack.perturb(forward, x, y, generator))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for per-path.safetensors and all.safetensors")
    parser.add_argument("--n-images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source, metadata = load_checkpoint(args.checkpoint)
    data = load_cifar10("train", args.data_dir)
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(args.seed))[: args.n_images]
    images = torch.from_numpy(data.images[order.numpy()]).permute(0, 3, 1, 2).float().div(255)
    labels = torch.from_numpy(data.labels[order.numpy()].astype("int64"))
    batches = adversarial_batches(source, images, labels, parse_epsilon(args.eps), args.batch_size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, per_path in (("per-path", True), ("all", False)):
        model = copy.deepcopy(source)
        seen = recalibrate_batchnorm(model, batches, per_path=per_path)
        recalibration = {"source": str(args.checkpoint), "per_path": per_path, "images": seen, "eps": args.eps,
                         "attack": "n-fgsm on the deployed network", "seed": args.seed}
        save_checkpoint(model, args.out / f"{name}.safetensors", recipe=metadata.get("recipe"),
                        batchnorm_recalibration=recalibration)
        print(json.dumps({"checkpoint": str(args.out / f"{name}.safetensors"), **recalibration}))


if __name__ == "__main__":
    main()
