"""The robust-models study's answers in plain words, every number computed from the runs' records.

    python scripts/robust_findings.py runs/robust/standard-8-resnet20.at ... --out runs/robust/findings.md

The output is Markdown for ``aigrobust report --preface``. Runs listed first win where two runs hold the same sample
under the same setting (as in ``aigrobust report``). Models are found by their labels (``--plain-at``,
``--gated-at``, ``--compute-at`` for the three robust models; ``--plain``, ``--gated`` for the standard twins).
Intervals: Wilson for a share; for a difference between two models on the same images, or a mean FLOPs ratio, a
percentile bootstrap over the images (2000 resamples, seed 0), so the pairing of the images is kept.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from per_flop import per_flop_section, robust_flags
from study_findings import STANDARD_NAMES, pct, short_names, table

from aigrobust.evaluation.metrics import format_eps, gate_matrix, saved_compute_recovery, wilson_interval
from aigrobust.runs.folder import FinishedRun
from aigrobust.runs.records import combine_runs, combined_full_flops
from attacks import attack_from_spec, attack_label

LARGE, SMALL = 8 / 255, 2 / 255
BOOTSTRAP_DRAWS = 2000
# the attacks run under every gate gradient, by short name: APGD-CE with its defaults is the standard suite's
CLASSIC = {"fgsm": "FGSM", "pgd": "PGD-20", "standard:apgd": "APGD-CE"}
GATE_GRADS = ("exact", "straight-through", "soft")
COMPUTE_DEFAULT = attack_from_spec("compute-inflation").spec


def interval(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, draws: int = BOOTSTRAP_DRAWS,
             seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic`` over the rows of ``values`` (resampled together, so a
    pair of columns keeps its pairing)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"))
    picks = rng.integers(0, n, size=(draws, n))
    stats = np.array([statistic(values[p]) for p in picks])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def points(value: float) -> str:
    """A difference of two shares in percentage points, signed."""
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.1f}"


@dataclass(frozen=True)
class Models:
    """The labels the records use for the five models."""

    plain_at: str = "resnet20.at"
    gated_at: str = "aig20.at"
    compute_at: str = "aig20.at_compute"
    plain: str = "resnet20"
    gated: str = "aig20"


class RobustFindings:
    """Per-sample figures of the robust study and the answers (a)-(c) with the issue's goal table."""

    def __init__(self, records: pd.DataFrame, models: Models, full_flops: Mapping[str, float]) -> None:
        """``full_flops``: per model label, the FLOPs with every block open (:func:`combined_full_flops`)."""
        self.records = short_names(records)
        self.m = models
        self.full = dict(full_flops)

    # --- per-sample views -------------------------------------------------------------------------------------
    def rows(self, model: str, attacks: tuple[str, ...], epsilon: float, gate_grads: tuple[str, ...] = ("exact", "none"),
             defense: str = "none", defense_grads: tuple[str, ...] = ("none",)) -> pd.DataFrame:
        """The records of one model under some attacks (by short name) at one epsilon, gate gradients and defense."""
        r = self.records
        return r[(r["model"] == model) & r["attack_name"].isin(attacks) & np.isclose(r["epsilon"], epsilon)
                 & r["gate_grad"].isin(gate_grads) & (r["defense"] == defense) & r["defense_grad"].isin(defense_grads)]

    def robust_per_sample(self, model: str, attacks: tuple[str, ...], epsilon: float, **where: Any) -> pd.Series:
        """Per sample: right on the clean image and under every one of ``attacks`` (AutoAttack's AND)."""
        return robust_flags(self.rows(model, attacks, epsilon, **where))

    def standard(self, model: str, epsilon: float = LARGE) -> pd.Series:
        """Per sample robust under the whole standard suite (exact gate gradients); empty unless every attack of the
        suite ran for this model."""
        rows = self.rows(model, STANDARD_NAMES, epsilon)
        if set(rows["attack_name"]) != set(STANDARD_NAMES):
            return pd.Series(dtype=bool)
        return self.robust_per_sample(model, STANDARD_NAMES, epsilon)

    def clean_per_sample(self, model: str) -> pd.Series:
        """Per sample: right on the clean image."""
        r = self.records[self.records["model"] == model]
        return r.groupby("sample")["clean_correct"].first().astype(bool)

    def flops(self, model: str, attack: str, epsilon: float) -> pd.DataFrame:
        """Per sample clean and attacked FLOPs under one attack (exact gate gradients); 'compute-inflation' means
        the attack with today's defaults (the variants of the strength check are read by :meth:`compute_check`)."""
        rows = self.rows(model, (attack,), epsilon, gate_grads=("exact",))
        if attack == "compute-inflation":
            rows = rows[rows["attack"] == COMPUTE_DEFAULT]
        return rows.groupby("sample")[["clean_flops", "adv_flops"]].first()

    def plain_flops(self) -> float:
        """FLOPs per image of the plain robust twin (every block runs): what the shares of FLOPs are of."""
        return self.full.get(self.m.plain_at, self.full.get(self.m.plain, float("nan")))

    # --- figures ------------------------------------------------------------------------------------------------
    @staticmethod
    def share(flags: pd.Series) -> str:
        """A share of per-sample flags with its Wilson interval and n, or 'not run'."""
        if flags.empty:
            return "not run"
        lo, hi = wilson_interval(int(flags.sum()), len(flags))
        return f"{pct(flags.mean())} [{pct(lo)}, {pct(hi)}] (n={len(flags)})"

    @staticmethod
    def difference(a: pd.Series, b: pd.Series, on: pd.Index | None = None) -> tuple[float, float, float, int]:
        """Mean of a - b over the samples both hold (and ``on`` names, where given: the images another comparison
        was made on), with its paired bootstrap interval."""
        common = a.index.intersection(b.index)
        if on is not None:
            common = common.intersection(on)
        if not len(common):
            return (float("nan"), float("nan"), float("nan"), 0)
        pair = np.stack([a[common].to_numpy(float), b[common].to_numpy(float)], axis=1)
        lo, hi = interval(pair, lambda p: p[:, 0].mean() - p[:, 1].mean())
        return float(pair[:, 0].mean() - pair[:, 1].mean()), lo, hi, len(common)

    def paired_standard(self, model: str, other: str, epsilon: float) -> str | None:
        """``model`` against ``other`` under the standard suite at ``epsilon``, paired on the images both ran, with
        the clean-accuracy difference on those same images; None where either did not run it."""
        a, b = self.standard(model, epsilon), self.standard(other, epsilon)
        if a.empty or b.empty:
            return None
        d, lo, hi, n = self.difference(a, b)
        c, clo, chi, _ = self.difference(self.clean_per_sample(model), self.clean_per_sample(other),
                                         on=a.index.intersection(b.index))
        return (f"{n} images: {model} {pct(a.mean())}%, {other} {pct(b.mean())}%: **{points(d)} points** "
                f"[{points(lo)}, {points(hi)}]; clean accuracy on the same images {points(c)} [{points(clo)}, "
                f"{points(chi)}]")

    def flops_ratio(self, model: str, attack: str, epsilon: float) -> tuple[float, float, float, int]:
        """Mean attacked FLOPs over mean clean FLOPs, with its bootstrap interval."""
        f = self.flops(model, attack, epsilon)
        if f.empty:
            return (float("nan"), float("nan"), float("nan"), 0)
        values = f.to_numpy(float)
        lo, hi = interval(values, lambda v: v[:, 1].mean() / v[:, 0].mean())
        return float(values[:, 1].mean() / values[:, 0].mean()), lo, hi, len(values)

    def recovery(self, model: str, attack: str, epsilon: float) -> tuple[float, float, float]:
        """Share of the saved FLOPs (full minus clean) an attack took back, with its bootstrap interval."""
        f = self.flops(model, attack, epsilon)
        full = self.full.get(model, float("nan"))  # the gated model's own, gates included
        if f.empty or not np.isfinite(full):
            return (float("nan"),) * 3
        v = f.to_numpy(float)

        def taken_back(x: np.ndarray) -> float:
            return saved_compute_recovery(x[:, 0], x[:, 1], full)

        lo, hi = interval(v, taken_back)
        return taken_back(v), lo, hi

    # --- sections -------------------------------------------------------------------------------------------------
    def goal_table(self) -> list[str]:
        """The issue's goal table: each robust model's figures, its goal and which part of it is met."""
        m, full = self.m, self.plain_flops()
        robust = {name: self.standard(name) for name in (m.plain_at, m.gated_at, m.compute_at)}
        rate = {name: float(s.mean()) if len(s) else float("nan") for name, s in robust.items()}
        ratio = {name: self.flops_ratio(name, "compute-inflation", LARGE) for name in (m.gated_at, m.compute_at)}
        clean_flops = {name: self.flops(name, "compute-inflation", 0.0)["clean_flops"].mean()
                       for name in (m.gated_at, m.compute_at)}
        clean = {name: self.clean_per_sample(name) for name in robust}

        def status(*parts: tuple[str, bool | None]) -> str:
            """'met', or 'missed: ...' naming each part missed; 'not run' where a figure is absent."""
            if any(ok is None for _, ok in parts):
                return "not run"
            missed = [what for what, ok in parts if not ok]
            return "met" if not missed else "missed: " + ", ".join(missed)

        def known(*values: float) -> bool:
            return all(np.isfinite(v) for v in values)

        gap_gated = rate[m.gated_at] - rate[m.plain_at]
        gap_compute = rate[m.compute_at] - rate[m.gated_at]
        def part(ok: bool, *values: float) -> bool | None:
            return bool(ok) if known(*values) else None

        plain_status = status(("robust", part(rate[m.plain_at] >= 0.38, rate[m.plain_at])),
                              ("clean", part(clean[m.plain_at].mean() >= 0.75, clean[m.plain_at].mean())))
        gated_status = status(("robust", part(gap_gated >= -0.02, gap_gated)),
                              ("FLOPs", part(clean_flops[m.gated_at] / full <= 0.80, clean_flops[m.gated_at])))
        compute_status = status(("FLOPs", part(ratio[m.compute_at][0] <= 1.05, ratio[m.compute_at][0])),
                                ("robust", part(gap_compute >= -0.03, gap_compute)))
        rows = [
            [m.plain_at, pct(clean[m.plain_at].mean()), self.share(robust[m.plain_at]), "1.000", "-",
             ">= 38% robust, >= 75% clean", plain_status],
            [m.gated_at, pct(clean[m.gated_at].mean()), self.share(robust[m.gated_at]),
             f"{clean_flops[m.gated_at] / full:.3f}", f"{ratio[m.gated_at][0]:.3f}",
             f"within 2 points of {m.plain_at} ({points(gap_gated)}), <= 0.80 FLOPs", gated_status],
            [m.compute_at, pct(clean[m.compute_at].mean()), self.share(robust[m.compute_at]),
             f"{clean_flops[m.compute_at] / full:.3f}",
             f"{ratio[m.compute_at][0]:.3f} [{ratio[m.compute_at][1]:.3f}, {ratio[m.compute_at][2]:.3f}]",
             f"<= 1.05x under the compute attack; within 3 points of {m.gated_at} ({points(gap_compute)})",
             compute_status],
        ]
        return ["## The goals", "",
                "Robust accuracy under AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square-5000; exact gate "
                f"gradients) at 8/255; FLOPs per image as a share of {m.plain_at}'s; the compute attack "
                "(compute-inflation, today's defaults) at 8/255 on the images its run holds.", "",
                *table(["model", "clean %", "standard suite 8/255 % [95%]", "FLOPs clean / plain",
                        "FLOPs attacked / clean", "goal", "status"], rows), ""]

    def question_a(self) -> list[str]:
        """(a): the gated robust model against its plain twin, paired on the same images, per epsilon."""
        m = self.m
        lines = ["## (a) Does adversarial training work for a gated network as well as for its plain twin?", ""]
        for eps in (LARGE, SMALL):
            compared = self.paired_standard(m.gated_at, m.plain_at, eps)
            if compared is not None:
                lines.append(f"- {format_eps(eps)}, standard suite, {compared}.")
        for name in (m.plain, m.gated):
            for eps in (LARGE, SMALL):
                s = self.standard(name, eps)
                if not s.empty:
                    lines.append(f"- Standard {name} (no adversarial training), standard suite {format_eps(eps)}: "
                                 f"{self.share(s)}.")
        return lines + [""]

    def question_b(self) -> list[str]:
        """(b): FLOPs clean, on accuracy attacks' images, under noise and the compute attack; the routing."""
        m, full = self.m, self.plain_flops()
        lines = ["## (b) Do its gates still save compute once it is robust, on clean and on attacked images?", ""]
        rows = []
        for name in (m.gated_at, m.compute_at, m.gated):
            clean = self.flops(name, "compute-inflation", 0.0)
            if clean.empty:
                continue
            row = [name, f"{clean['clean_flops'].mean() / full:.3f}"]
            for attack, eps in (("standard:apgd", LARGE), ("random-noise", LARGE),
                                ("compute-inflation", SMALL), ("compute-inflation", LARGE)):
                f = self.flops(name, attack, eps)
                row.append(f"{f['adv_flops'].mean() / full:.3f}" if len(f) else "not run")
            r, lo, hi = self.recovery(name, "compute-inflation", LARGE)
            row.append(f"{pct(r)} [{pct(lo)}, {pct(hi)}]")
            rows.append(row)
        lines += table(["model", "clean", "APGD-CE 8/255 images", "noise 8/255", "compute attack 2/255",
                        "compute attack 8/255", "saved FLOPs taken back at 8/255 % [95%]"], rows)
        lines += ["", f"FLOPs per image as a share of the full network ({full / 1e6:.1f} MFLOPs, what "
                  f"{m.plain_at} runs on every image).", "", *self.routing()]
        return lines + [""]

    def routing(self) -> list[str]:
        """How much the gates depend on the image (clean test images): each gate's execution rate, and the share of
        images that take the most common path. A gate open (or shut) for every image is a fixed pruning, not a
        decision; routing collapse under adversarial training shows here."""
        rows = []
        for name in (self.m.gated_at, self.m.compute_at, self.m.gated):
            r = self.records[self.records["model"] == name].drop_duplicates("sample")
            if r.empty or r["clean_gates"].isna().all():
                continue
            gates = gate_matrix(r["clean_gates"])
            paths = r["clean_gates"].astype(str).value_counts()
            decided = int(((gates.mean(0) > 0.02) & (gates.mean(0) < 0.98)).sum())
            rows.append([name, " ".join(f"{v:.2f}" for v in gates.mean(0)), f"{decided} of {gates.shape[1]}",
                         str(len(paths)), pct(paths.iloc[0] / len(r))])
        if not rows:
            return []
        return ["How input-dependent the gates are (clean test images):", "",
                *table(["model", "execution rate per gate", "gates that decide (open for 2-98%)", "distinct paths",
                        "images on the most common path %"], rows)]

    def question_c(self) -> list[str]:
        """(c): the compute attack's FLOPs ratio per gated model and the compute-robust model's accuracy price."""
        m = self.m
        lines = ["## (c) Does compute-robust training hold the FLOPs under the compute attack, and at what cost?", ""]
        for name in (m.compute_at, m.gated_at, m.gated):
            r, lo, hi, n = self.flops_ratio(name, "compute-inflation", LARGE)
            if n:
                lines.append(f"- {name}: FLOPs attacked / clean at 8/255 **{r:.3f}** [{lo:.3f}, {hi:.3f}] ({n} images)")
        for eps in (LARGE, SMALL):
            compared = self.paired_standard(m.compute_at, m.gated_at, eps)
            if compared is not None:
                lines.append(f"- Its price at {format_eps(eps)}, standard suite, {compared}.")
        return lines + [""]

    def compute_check(self) -> list[str]:
        """Is the compute attack strong enough to judge a model trained against it? Every variant of it that ran
        (more steps, another loss and schedule, random restarts) beside the default, on the images they share, and
        per image the most FLOPs any of them found."""
        lines = []
        for name in (self.m.compute_at, self.m.gated_at, self.m.gated):
            rows = self.rows(name, ("compute-inflation",), LARGE, gate_grads=("exact",))
            specs = sorted(set(rows["attack"]), key=lambda a: (a != COMPUTE_DEFAULT, a))
            if len(specs) < 2 or COMPUTE_DEFAULT not in specs:
                continue
            adv = rows.pivot_table(index="sample", columns="attack", values="adv_flops").dropna()
            clean = rows.groupby("sample")["clean_flops"].first()[adv.index]
            adv = adv.assign(**{"worst of all": adv.max(axis=1)})
            for spec in [*specs, "worst of all"]:
                ratio = adv[spec].mean() / clean.mean()
                lines.append([name, attack_label(spec) if spec != "worst of all" else spec, str(len(adv)),
                              f"{ratio:.3f}"])
        if not lines:
            return []
        return ["## Is the compute attack strong enough to judge the compute-robust model?", "",
                "Every variant of the compute attack that ran at 8/255, on the images they share; 'worst of all' "
                "takes per image the most FLOPs any variant found. A model that only masks the default attack's "
                "gradients would fall to a variant.", "",
                *table(["model", "attack", "images", "FLOPs attacked / clean"], lines), ""]

    def gate_gradients(self) -> list[str]:
        """Robust accuracy per gate gradient (exact, straight-through, soft) and their per-image worst case."""
        rows = []
        for name in (self.m.gated_at, self.m.compute_at, self.m.gated):
            for attack, label in CLASSIC.items():
                row = [name, label]
                per_grad = [self.robust_per_sample(name, (attack,), LARGE, gate_grads=(g,)) for g in GATE_GRADS]
                if all(s.empty for s in per_grad):
                    continue
                # on the images every gradient ran (a gradient run on more images elsewhere must not skew its column)
                both = pd.concat([s for s in per_grad if len(s)], axis=1).dropna()
                row += [pct(s[both.index].mean()) if len(s) else "not run" for s in per_grad]
                row += [pct(both.all(axis=1).mean()), str(len(both))]
                rows.append(row)
        if not rows:
            return []
        return ["## Which gate gradient finds more (8/255, robust accuracy %; lower = stronger attack)", "",
                *table(["model", "attack", *GATE_GRADS, "worst of the three", "images"], rows), ""]

    def stability(self) -> list[str]:
        """The share of images whose gates all stay the same, per attack (noise as the control)."""
        rows = []
        for name in (self.m.plain_at, self.m.gated_at, self.m.compute_at, self.m.gated):
            for attack, eps in (("random-noise", LARGE), ("gate-flip", SMALL), ("gate-flip", LARGE),
                                ("standard:apgd", LARGE)):
                r = self.rows(name, (attack,), eps)
                if r.empty or r["clean_gates"].isna().all():  # a plain model has no gates
                    continue
                same = (r["clean_gates"].astype(str) == r["adv_gates"].astype(str))
                rows.append([name, f"{CLASSIC.get(attack, attack)} {format_eps(eps)}", f"{self.share(same)}",
                             f"{r['hamming'].mean():.3f}"])
        if not rows:
            return []
        return ["## Gate stability: the share of images whose every gate decision stays the same", "",
                *table(["model", "attack", "same gates % [95%]", "mean Hamming (share of gates flipped)"], rows), ""]

    def jpeg(self) -> list[str]:
        """JPEG-75 against BPDA and the differentiable JPEG, and the per-image worst of both."""
        rows = []
        for name in (self.m.plain_at, self.m.gated_at, self.m.compute_at, self.m.plain, self.m.gated):
            cells = [name]
            for grads in (("bpda",), ("diff",), ("bpda", "diff")):
                s = self.robust_per_sample(name, ("fgsm", "pgd"), LARGE, defense="jpeg:75", defense_grads=grads)
                cells.append(self.share(s))
            if cells[1] != "not run":
                rows.append(cells)
        if not rows:
            return []
        return ["## JPEG-75 against an adaptive attacker (FGSM and PGD-20 at 8/255, robust accuracy %)", "",
                *table(["model", "BPDA", "differentiable JPEG", "worst of both"], rows), ""]

    def per_flop(self) -> list[str]:
        """Each gated model against the line through the robust plain models at its FLOPs (:mod:`per_flop`)."""
        return per_flop_section(self.records, (LARGE, SMALL), interval)

    def markdown(self) -> str:
        """The whole findings section."""
        parts = ["## Findings in plain words", "",
                 f"Models: {self.m.plain_at}, {self.m.gated_at} and {self.m.compute_at}, each trained with "
                 "`aigrobust train` for 30 epochs of N-FGSM at 8/255 (one-cycle, the same budget; the gated ones "
                 "with target rate 0.6, the last also attacking the compute in training), beside the standard "
                 f"{self.m.plain} and {self.m.gated}. Every figure below is computed from the records of the runs "
                 "this report is made from.", ""]
        for section in (self.goal_table, self.question_a, self.question_b, self.question_c, self.per_flop,
                        self.compute_check, self.gate_gradients, self.stability, self.jpeg):
            parts += section()
        return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    for field, default in vars(Models()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", default=default, help=f"label (default {default})")
    args = parser.parse_args()
    runs = [FinishedRun.open(r) for r in args.runs]
    records, _ = combine_runs(runs)
    models = Models(**{field: getattr(args, field) for field in vars(Models())})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(RobustFindings(records, models, combined_full_flops(runs)).markdown())


if __name__ == "__main__":
    main()
