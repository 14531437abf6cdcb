"""Evaluation memory stays flat in the number of samples.

Runs FGSM on resnet20 over the 1000 real test images and over 10,000 (the sample repeated ten times), each in a fresh
process, and prints the peak resident memory of both.
Usage: python benchmarks/memory_flat.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import click

CHILD = r"""
import json, resource, sys
import numpy as np, torch
from aigrobust.evaluation import EvalSpec, ModelEntry, run_evaluation
from benchmarks.common import SHARED, benchmark_model
from aigrobust.data import load_npz
repeat = int(sys.argv[1])
data = load_npz(SHARED / "cifar10_test_sample.npz")
images = np.concatenate([data.images] * repeat)
labels = torch.from_numpy(np.concatenate([data.labels] * repeat))
model, _ = benchmark_model()
run = run_evaluation([ModelEntry("resnet20", model)], EvalSpec(attacks=("fgsm",), epsilons=(8 / 255,)), images,
                     labels, np.arange(len(labels)), batch_size=256)
print(json.dumps({"n": len(labels), "rows": len(run.records),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@click.command()
def main() -> None:
    """Print peak RSS for 1,000 and 10,000 samples."""
    results = []
    for repeat in (1, 10):
        out = subprocess.run([sys.executable, "-c", CHILD, str(repeat)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        click.echo(f"{r['n']:>6} samples: {r['rows']:>6} records, peak RSS {r['peak_rss_mb']:.0f} MB")
    click.echo(f"ratio 10k/1k peak RSS: {results[1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
