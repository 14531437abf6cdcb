"""Why do our resnet20/aig20 keep ~23% at 2/255 where akamaster's resnet20 keeps ~0%? One factor at a time.

    python scripts/robustness_gap_factors.py --out reports/cifar10/robustness_gap_factors.json

1. Logit scale and margins of all four models on the 1000 test images: mean logit norm, mean top-1 margin, and the
   share of correct images whose margin exceeds eps * ||grad_x margin||_1 (robust to first order at eps = 2/255).
2. The training data, alone: akamaster's resnet20 (trained on the original PNG images) fine-tuned for one epoch on
   the JPEG-75 copy of the training images our models were trained on, at a small learning rate; then its APGD-CE
   robust accuracy at 2/255 on the first 500 test images and its margins, against the same model before.
3. The dose (``--dose 50 --dose 30``): the same fine-tune on those images compressed once more at a lower quality.
   A rise that grows with the compression is the JPEG artefacts' doing; a flat one is fine-tuning's own.
   ``--only-dose`` adds these arms to an existing --out file without recomputing the rest.
4. The recipe (``--recipe-arm CHECKPOINT``, repeatable): our resnet20 trained from scratch with the shipped recipe on
   the same JPEG-75 images at another epoch count (``aigrobust train --epochs N ...``) or another weight decay
   (akamaster's 1e-4); its APGD-CE robust accuracy at 2/255 and margins against the shipped 30-epoch weights.
   Added to an existing --out file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aigrobust import create_model
from aigrobust.data import load_npz
from aigrobust.models.factory import load_checkpoint
from aigrobust.training.loop import augment_batch
from attacks import attack_from_spec
from defenses import pillow_jpeg_round_trip

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EPS = 2 / 255


def margins(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Logit norm, top-1 margin and the first-order robust share at EPS over the correctly classified images."""
    x = x.clone().requires_grad_(True)
    logits = model(x).float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    margin = true - other
    (grad,) = torch.autograd.grad(margin.sum(), x)
    right = margin.detach() > 0
    slope = grad.flatten(1).abs().sum(1)
    return {"clean_acc": float(right.float().mean()),
            "logit_norm": float(logits.detach().norm(dim=1).mean()),
            "margin_correct": float(margin.detach()[right].mean()),
            "grad_l1_correct": float(slope[right].mean()),
            "first_order_robust_share": float((margin.detach() > EPS * slope)[right].float().mean())}


def apgd_robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """APGD-CE-100 robust accuracy at EPS."""
    result = attack_from_spec("apgd:steps=100")(model, x, y, [EPS])
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    return float((clean & ~result.success[0]).float().mean())


def fine_tune_on_jpeg(model: torch.nn.Module, epochs: int, lr: float, seed: int = 0,
                      recompress: int | None = None) -> float:
    """One pass (or ``epochs``) of SGD on the JPEG-75 training images (compressed once more at quality
    ``recompress`` where given), crop + flip; returns seconds."""
    train = load_npz(SHARED / "cifar10_train_jpeg75.npz")
    pixels = train.images if recompress is None else pillow_jpeg_round_trip(train.images, recompress)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    labels = torch.from_numpy(train.labels.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(128):
            x = augment_batch(images[idx].float().div_(255.0), generator)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - started


def dose_arms(qualities: list[int], epochs: int, lr: float, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """Per quality, a fresh copy of akamaster's resnet20 fine-tuned on the training images recompressed at it."""
    arms = {}
    for quality in qualities:
        model = load_checkpoint(SHARED / "pretrained" / "resnet20-12fca82f.th")[0]
        seconds = fine_tune_on_jpeg(model, epochs, lr, recompress=quality)
        arms[str(quality)] = {"epochs": epochs, "lr": lr, "seconds": seconds,
                              "apgd_robust_2_255": apgd_robust(model, x[:500], y[:500]), "margins": margins(model, x, y)}
        print(quality, json.dumps(arms[str(quality)]), flush=True)
    return arms


def recipe_key(epochs: int, weight_decay: float) -> str:
    """An arm's key: what differs from the shipped recipe (the epochs, and the weight decay where it is not 5e-4)."""
    return str(epochs) + ("" if weight_decay == 5e-4 else f"-wd{weight_decay:g}")


def merge_into(out: Path, section: str, arms: dict[str, dict]) -> None:
    """Add ``arms`` to ``section`` of the existing result file ``out``."""
    result = json.loads(out.read_text())
    result[section] = {**result.get(section, {}), **arms}
    out.write_text(json.dumps(result, indent=1) + "\n")


def recipe_arms(checkpoints: list[Path], x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """Per checkpoint of our recipe at another epoch count: its budget, held-out accuracy, APGD-CE and margins."""
    arms = {}
    for path in checkpoints:
        model, meta = load_checkpoint(path, expect_model="resnet20")
        recipe = meta.get("recipe", {})
        if meta.get("epoch") != recipe.get("epochs"):
            raise SystemExit(f"{path}: epoch {meta.get('epoch')} of {recipe.get('epochs')}; the recipe control needs "
                             "a finished run (its model.safetensors)")
        key = recipe_key(recipe["epochs"], recipe["weight_decay"])
        arms[key] = {"checkpoint": str(path), "recipe": recipe, "heldout_accuracy": meta["accuracy"],
                     "apgd_robust_2_255": apgd_robust(model, x[:500], y[:500]), "margins": margins(model, x, y)}
        print(key, json.dumps(arms[key]), flush=True)
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--dose", type=int, action="append", default=[],
                        help="Also fine-tune on the training images recompressed at this JPEG quality (repeatable).")
    parser.add_argument("--only-dose", action="store_true", help="Add the --dose arms to an existing --out file.")
    parser.add_argument("--recipe-arm", type=Path, action="append", default=[],
                        help="A finished resnet20 run of our recipe at another --epochs (its model.safetensors); "
                             "added to an existing --out file (repeatable).")
    parser.add_argument("--has-recipe-arm", nargs=2, metavar=("EPOCHS", "WEIGHT_DECAY"),
                        help="Exit 0 if the --out file holds this recipe arm, 1 if not (computes nothing).")
    args = parser.parse_args()
    if args.has_recipe_arm:
        held = json.loads(args.out.read_text()).get("recipe_epochs", {})
        raise SystemExit(0 if recipe_key(int(args.has_recipe_arm[0]), float(args.has_recipe_arm[1])) in held else 1)
    torch.manual_seed(0)
    x, y = load_npz(SHARED / "cifar10_test_sample.npz").tensors()
    if args.recipe_arm:
        merge_into(args.out, "recipe_epochs", recipe_arms(args.recipe_arm, x, y))
        return
    if args.only_dose:
        merge_into(args.out, "jpeg_dose", dose_arms(args.dose, args.epochs, args.lr, x, y))
        return
    models = {"resnet20 (ours)": create_model("resnet20", pretrained=True),
              "aig20 (ours)": create_model("aig20", pretrained=True),
              "akamaster-resnet20": load_checkpoint(SHARED / "pretrained" / "resnet20-12fca82f.th")[0],
              "akamaster-resnet56": load_checkpoint(SHARED / "pretrained" / "resnet56-4bfd9763.th")[0]}
    result: dict[str, object] = {"margins": {name: margins(m.eval(), x, y) for name, m in models.items()}}
    for name, row in result["margins"].items():  # type: ignore[union-attr]
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    subset_x, subset_y = x[:500], y[:500]
    aka = models["akamaster-resnet20"]
    before = apgd_robust(aka, subset_x, subset_y)
    seconds = fine_tune_on_jpeg(aka, args.epochs, args.lr)
    after = apgd_robust(aka, subset_x, subset_y)
    result["jpeg_fine_tune"] = {"epochs": args.epochs, "lr": args.lr, "seconds": seconds,
                                "apgd_robust_2_255_before": before, "apgd_robust_2_255_after": after,
                                "margins_after": margins(aka, x, y),
                                "ours_apgd_robust_2_255": {n: apgd_robust(models[n], subset_x, subset_y)
                                                           for n in ("resnet20 (ours)", "aig20 (ours)")}}
    print(json.dumps(result["jpeg_fine_tune"], indent=1), flush=True)
    if args.dose:
        result["jpeg_dose"] = dose_arms(args.dose, args.epochs, args.lr, x, y)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
