"""Our `--suite standard` against torchattacks' components at AutoAttack's original settings, chained per sample.

    python -m benchmarks.autoattack_crosscheck --n 500 --eps 2 --eps 8 --model akamaster-resnet20 --model resnet20 \
        --model aig20 --out benchmarks/autoattack_crosscheck.json

Both chains run APGD-CE (100 steps), APGD-T (100 steps x 9 targets), FAB-T (100 steps x 9 targets) and Square
(5,000 queries) with early exit: each attack works only on the samples the ones before it left standing. torchattacks
3.5.1's own AutoAttack builds its components with 10 steps, so its components are called one by one here. Needs
torchattacks (``pip install --no-deps torchattacks``) and ../shared/data.

``--norm l2`` checks the L2 attacks the same way (``--eps`` then in L2 pixel units, e.g. ``--eps 0.5``): APGD-CE,
APGD-T and FAB-T at the same budgets, without Square (ours is Linf only).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from aigrobust.data import load_npz
from aigrobust.models.factory import create_model, load_checkpoint
from attacks import SUITES, attack_from_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUR_L2_CHAIN = ("apgd-l2:steps=100", "apgd-t:steps=100,n_target_classes=9,distance=l2",
                "fab-t:steps=100,n_target_classes=9,distance=l2")


def load(name: str) -> torch.nn.Module:
    """akamaster-resnet20 from ../shared, or a shipped model; contiguous memory (torchattacks' FAB views grads)."""
    if name == "akamaster-resnet20":
        model = load_checkpoint(SHARED / "pretrained" / "resnet20-12fca82f.th")[0]
    else:
        model = create_model(name, pretrained=True)
    return model.eval().to(memory_format=torch.contiguous_format)


def theirs(model: torch.nn.Module, eps: float, norm: str = "linf") -> list[Callable[[Tensor, Tensor], Tensor]]:
    """torchattacks' APGD, APGDT, FAB (multi-targeted) and, for Linf, Square at AutoAttack's original settings."""
    import torchattacks
    from torchattacks.attacks import fab

    original = fab.FAB.get_diff_logits_grads_batch_targeted

    def contiguous_grads(self, imgs, la, la_target):  # type: ignore[no-untyped-def]
        df, dg = original(self, imgs, la, la_target)
        return df, dg.contiguous()  # torchattacks .view()s a gradient torch may return channels-last

    fab.FAB.get_diff_logits_grads_batch_targeted = contiguous_grads
    their_norm = {"linf": "Linf", "l2": "L2"}[norm]
    chain = [torchattacks.APGD(model, norm=their_norm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
             torchattacks.APGDT(model, norm=their_norm, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
             torchattacks.FAB(model, norm=their_norm, eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                              n_classes=10, seed=0)]
    if norm == "linf":
        chain.append(torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0))
    return chain


def ours(model: torch.nn.Module, eps: float, norm: str = "linf") -> list[Callable[[Tensor, Tensor], Tensor]]:
    """Our --suite standard (Linf) or its L2 attacks, attack by attack."""
    def runner(spec: str) -> Callable[[Tensor, Tensor], Tensor]:
        attack = attack_from_spec(spec)
        return lambda x, y: attack(model, x, y, [eps]).clipped[0]
    return [runner(spec) for spec in (SUITES["standard"] if norm == "linf" else OUR_L2_CHAIN)]


def in_layout(model: torch.nn.Module, layout: str) -> torch.nn.Module:
    """A copy of ``model`` in ``layout``: 'contiguous' (NCHW, the layout a model comes in) or 'channels_last'
    (NHWC, the layout `aigrobust attack` moves every model to before attacking it)."""
    import copy

    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return copy.deepcopy(model).to(memory_format=memory_format)


def chain(model: torch.nn.Module, attacks: list[Callable[[Tensor, Tensor], Tensor]], x: Tensor, y: Tensor,
          eps: float, norm: str = "linf") -> dict[str, object]:
    """Run the attacks in turn on the samples still standing; per-sample fooled flags, cumulative accuracy, time."""
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    fooled_by = torch.full((len(x),), -1)
    after, seconds = [], []
    for k, attack in enumerate(attacks):
        start = time.perf_counter()
        todo = standing.nonzero().squeeze(1)
        if todo.numel():
            adv = attack(x[todo].contiguous(), y[todo])
            delta = (adv - x[todo]).flatten(1)
            assert (delta.abs().amax() if norm == "linf" else delta.norm(dim=1).amax()) <= eps + 1e-5
            with torch.no_grad():
                hit = model(adv).argmax(1) != y[todo]
            standing[todo[hit]] = False
            fooled_by[todo[hit]] = k
        seconds.append(time.perf_counter() - start)
        after.append(float(standing.float().mean()))
    return {"robust_after": after, "seconds": seconds, "standing": standing.tolist(), "fooled_by": fooled_by.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", type=float, action="append",
                        help="epsilon in /255 units for linf, in pixel units for l2 (repeatable)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--model", action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "autoattack_crosscheck.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--redo", action="store_true", help="Measure again the rows --out already holds.")
    parser.add_argument("--our-layout", choices=("contiguous", "channels_last"), default="contiguous",
                        help="Memory layout of the model our chain attacks (theirs always gets the model as it comes, "
                             "contiguous); channels_last is what `aigrobust attack` runs.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_npz(SHARED / "cifar10_test_sample.npz").subset(range(args.n))
    x, y = data.tensors()
    x = x.contiguous()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.model or ["akamaster-resnet20", "resnet20", "aig20"]:
        model = load(name)
        for eps_given in args.eps or ([2.0, 8.0] if args.norm == "linf" else [0.5]):
            budget = f"{eps_given:g}/255" if args.norm == "linf" else f"L2 {eps_given:g}"
            key = f"{name}@{budget}" + ("" if args.our_layout == "contiguous" else " (ours NHWC)")
            if key in results and not args.redo:
                continue
            eps = eps_given / 255 if args.norm == "linf" else eps_given
            our_model = in_layout(model, args.our_layout)
            row = {"ours": chain(our_model, ours(our_model, eps, args.norm), x, y, eps, args.norm),
                   "theirs": chain(model, theirs(model, eps, args.norm), x, y, eps, args.norm),
                   "our_layout": args.our_layout, "n": args.n, "norm": args.norm}
            our_standing = torch.tensor(row["ours"]["standing"])
            their_standing = torch.tensor(row["theirs"]["standing"])
            row["theirs_not_ours"] = float((~their_standing & our_standing).float().mean())
            row["ours_not_theirs"] = float((~our_standing & their_standing).float().mean())
            results[key] = row
            args.out.write_text(json.dumps(results, indent=1))
            print(summary_line(key, row), flush=True)


def summary_line(key: str, row: dict) -> str:
    """One Markdown row: each attack's cumulative robust accuracy (ours / theirs), the worst case, the times."""
    cells = [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(row["ours"]["robust_after"],
                                                              row["theirs"]["robust_after"])]
    return (f"| {key} | " + " | ".join(cells) + f" | {100 * row['theirs_not_ours']:.1f}% | "
            f"{sum(row['ours']['seconds']):.0f} s / {sum(row['theirs']['seconds']):.0f} s |")


if __name__ == "__main__":
    main()
