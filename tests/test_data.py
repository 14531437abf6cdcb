"""Data: the shared .npz format, validation with clear errors, offline behaviour, the foolbox demo images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aigrobust.data import DataError, load_cifar10, load_dataset, load_foolbox_samples, load_npz


def test_real_test_sample_loads_as_documented(cifar_test) -> None:
    assert len(cifar_test) == 1000
    assert cifar_test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert np.bincount(cifar_test.labels).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    x, y = cifar_test.tensors()
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    image, label = cifar_test[0]
    assert torch.equal(image, x[0]) and label == 3


def test_folder_lookup_picks_the_split(synthetic_npz_dir: Path) -> None:
    assert len(load_cifar10("train", synthetic_npz_dir)) == 96
    assert len(load_cifar10("test", synthetic_npz_dir)) == 40
    sub = load_cifar10("test", synthetic_npz_dir).subset([5, 7])
    assert sub.indices.tolist() == [5, 7]



def test_two_files_for_one_split_are_refused_not_picked(synthetic_npz_dir: Path) -> None:
    """A folder holding the full test split and a sample of it: which one a run used must not depend on file names."""
    import shutil

    shutil.copy(synthetic_npz_dir / "cifar10_test.npz", synthetic_npz_dir / "cifar10_test_sample.npz")
    with pytest.raises(DataError, match=r"2 .npz files with 'test'.*cifar10_test.npz, cifar10_test_sample.npz"):
        load_cifar10("test", synthetic_npz_dir)
    assert len(load_cifar10("test", synthetic_npz_dir / "cifar10_test_sample.npz")) == 40  # the file itself works
    assert len(load_cifar10("train", synthetic_npz_dir)) == 96  # the other split is still unambiguous


def test_malformed_data_gives_clear_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad_test.npz", images=np.zeros((4, 28, 28, 3), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="32x32"):
        load_cifar10("test", tmp_path / "bad_test.npz")
    np.savez(tmp_path / "labels.npz", images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 1, 2, 10]))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        load_npz(tmp_path / "labels.npz")
    np.savez(tmp_path / "keys.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="needs arrays 'images' and 'labels'"):
        load_npz(tmp_path / "keys.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10("test", tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .npz file with 'test'"):
        load_cifar10("test", empty)


def test_no_local_data_and_no_download_says_how_to_point_at_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_cifar10("test", None, download=False, cache_dir=tmp_path)


def test_imagenet_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir IMAGENET"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist")


def test_imagenet_folder_is_resized_and_cropped(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "val" / cls / "x.png")
    data = load_dataset("imagenet", "test", tmp_path)
    image, label = data[1]
    assert image.shape == (3, 224, 224) and label == 1
    assert float(image.max()) <= 1.0


def test_foolbox_demo_images_are_the_first_real_test_images(cifar_test) -> None:
    demo = load_foolbox_samples("cifar10")
    assert len(demo) == 20 and "20-image demo" in demo.note
    assert np.array_equal(demo.images, cifar_test.images[:20])
    assert np.array_equal(demo.labels, cifar_test.labels[:20])
    imagenet = load_foolbox_samples("imagenet")
    assert imagenet.images.shape == (20, 224, 224, 3)


def test_fingerprint_names_the_data(synthetic_npz_dir: Path) -> None:
    a = load_cifar10("test", synthetic_npz_dir)
    assert a.fingerprint() == load_cifar10("test", synthetic_npz_dir).fingerprint()
    assert a.fingerprint() != a.subset(range(39)).fingerprint()
