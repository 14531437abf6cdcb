"""Stored facts about each registered model (parameters, full FLOPs per image, gated blocks, weights available),
so listing models does not build and count the 224-pixel networks every time.

The figures live in ``models/facts.json``; ``python -m aigrobust.models.facts`` measures every model and rewrites
the file (a test checks that the stored figures match a fresh count).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from aigrobust.files import atomic_write_bytes
from aigrobust.models.registry import get_model_info, list_models, pretrained_tags, split_tag, untrained_model

FACTS_FILE = Path(__file__).resolve().parent / "facts.json"


@dataclass(frozen=True)
class ModelFacts:
    """Parameters, FLOPs with every branch running (per image, at the model's input size) and gated blocks."""

    params: int
    gflops: float
    gated_blocks: int


def measure_facts(name: str) -> ModelFacts:
    """Build ``name`` with fresh weights and count its facts."""

    model = untrained_model(name).eval()
    flops = model.flop_profile(get_model_info(name).input_shape).full
    return ModelFacts(params=sum(p.numel() for p in model.parameters()), gflops=round(flops / 1e9, 6),
                      gated_blocks=model.decided_blocks)


def stored_facts() -> dict[str, ModelFacts]:
    """The facts recorded in ``models/facts.json`` (empty where the file is absent)."""
    if not FACTS_FILE.is_file():
        return {}
    return {name: ModelFacts(**values) for name, values in json.loads(FACTS_FILE.read_text()).items()}


def weights_available(name: str) -> str:
    """'shipped' (a file in aigrobust/pretrained), 'torchvision' (downloadable ImageNet weights), 'torchvision*'
    (a gated model: its residual branches from torchvision, its gates untrained) or 'none'."""

    arch, tag = split_tag(name)
    info = get_model_info(name)  # an unknown name or tag raises here
    if tag is not None or pretrained_tags(arch):  # a tag get_model_info accepts is a shipped one
        return "shipped"
    if not info.torchvision_weights:
        return "none"
    return "torchvision*" if info.name.startswith("aig") else "torchvision"


def model_rows(pattern: str = "*", measure: bool = False) -> list[dict[str, object]]:
    """One row per registered model matching ``pattern``: family, facts (stored, or counted now with ``measure``),
    the weights it has, its input size and description."""

    stored = {} if measure else stored_facts()
    rows: list[dict[str, object]] = []
    for name in list_models(pattern):
        info = get_model_info(name)
        facts = stored.get(name) or measure_facts(name)
        rows.append({"model": name, "family": info.family, "params": facts.params, "gflops": facts.gflops,
                     "gated_blocks": facts.gated_blocks, "weights": weights_available(name),
                     "tags": [f"{name}.{tag}" for tag in pretrained_tags(name)],
                     "input": "x".join(map(str, info.input_shape)), "description": info.description})
    return rows


def models_table(rows: list[dict[str, object]]) -> str:
    """``model_rows`` as the terminal shows them, with a footnote on half-pretrained gated models."""
    lines = [f"{'model':<12} {'family':<9} {'params':>11} {'GFLOPs':>8} {'gates':>5}  {'weights':<12} input      "
             "description"]
    lines += [f"{r['model']:<12} {r['family']:<9} {r['params']:>11,} {r['gflops']:>8.3f} {r['gated_blocks']:>5}  "
              f"{r['weights']:<12} {r['input']:<10} {r['description']}" for r in rows]
    tagged = [f"  {r['model']}: {', '.join(r['tags'])}" for r in rows if r.get("tags")]  # type: ignore[arg-type]
    if tagged:
        lines += ["pretrained tags (--model NAME.TAG; a bare name means NAME.std):", *tagged]
    if any(r["weights"] == "torchvision*" for r in rows):
        lines.append("* residual branches from torchvision's ResNet, gates untrained: fine-tune (aigrobust train) "
                     "first")
    return "\n".join(lines)


def write_facts() -> dict[str, ModelFacts]:
    """Measure every registered model and rewrite ``models/facts.json``."""

    facts = {name: measure_facts(name) for name in list_models()}
    text = json.dumps({name: asdict(f) for name, f in facts.items()}, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(FACTS_FILE, text.encode())
    return facts


@click.command()
def main() -> None:
    """Measure every registered model and rewrite aigrobust/models/facts.json (after adding a model)."""
    for model_name, model_facts in write_facts().items():
        click.echo(f"{model_name} {model_facts}")


if __name__ == "__main__":
    main()
