"""Shipped pretrained weights reproduce their recorded clean accuracy on the images they recorded it on: the 1000
real test images (standard training), or the validation split cut from the training set (adversarial training,
which never picks anything on test images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrobust import create_model
from aigrobust.evaluation.clean_accuracy import evaluate_clean
from aigrobust.models.checkpoints import read_checkpoint
from aigrobust.models.registry import PRETRAINED_DIR

SHIPPED = sorted(Path(PRETRAINED_DIR).glob("*.safetensors"))


# About two seconds per model on 2 cores, so it runs in the default suite and in CI (no slow marker).
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_reproduce_their_recorded_accuracy(path: Path, cifar_test, request) -> None:  # type: ignore[no-untyped-def]
    _, meta = read_checkpoint(path)
    heldout = cifar_test
    if meta["heldout_data"]["sha256"] != cifar_test.fingerprint():  # a validation split of the training images
        import numpy as np

        train = request.getfixturevalue("cifar_train")
        order = np.random.default_rng([meta["recipe"]["seed"], 17]).permutation(len(train))  # as `train` cuts it
        heldout = train.subset(np.sort(order[: meta["heldout_data"]["n"]]))
    assert meta["heldout_data"]["sha256"] == heldout.fingerprint()  # recorded on these very images
    model = create_model(path.stem, pretrained=True)
    result = evaluate_clean(model, heldout, batch_size=500)
    assert abs(result.accuracy - meta["accuracy"]) <= 0.005


def test_shipped_weights_are_listed_or_the_study_has_not_run_yet() -> None:
    if not SHIPPED:
        pytest.skip("no weights shipped yet: scripts/study_cifar10.sh trains and ships them")
    for path in SHIPPED:
        _, meta = read_checkpoint(path)
        assert meta["model"] == path.stem.split(".")[0] and meta["dataset"] == "cifar10"  # NAME or NAME.TAG
        assert {"recipe", "train_data", "accuracy"} <= set(meta)
