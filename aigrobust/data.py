"""Datasets as [0, 1] image tensors: CIFAR-10 (local .npz or torchvision download), ImageNet folders, foolbox demos.

Images leave this module unnormalised: normalisation belongs to the model, so attacks work in pixel space.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from aigrobust.datasets import DATASETS
from aigrobust.errors import DataError
from aigrobust.files import unusable_file

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_CACHE = Path(os.environ.get("AIGROBUST_CACHE", Path.home() / ".cache" / "aigrobust"))


@dataclass
class ArrayDataset(Dataset):
    """Images held in memory as uint8 NHWC; items come out as float (C, H, W) in [0, 1] with an int label."""

    images: np.ndarray
    labels: np.ndarray
    classes: Sequence[str]
    name: str
    source: str
    note: str = ""
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.source}: images must be uint8 of shape (N, H, W, 3), got "
                            f"{self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.source}: {self.labels.shape[0]} labels for {self.images.shape[0]} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"{self.source}: labels must lie in 0..{len(self.classes) - 1}, found "
                            f"{int(self.labels.min())}..{int(self.labels.max())}")
        if self.indices.size == 0:
            self.indices = np.arange(len(self.labels), dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return to_tensor_images(self.images[i : i + 1])[0], int(self.labels[i])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images as float (N, 3, H, W) in [0, 1] and labels as int64 (N,)."""
        return to_tensor_images(self.images), torch.from_numpy(self.labels.astype(np.int64))

    def subset(self, positions: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A dataset of the given positions; ``indices`` keeps the original sample indices."""
        pos = np.asarray(positions, dtype=np.int64)
        return ArrayDataset(self.images[pos], self.labels[pos], self.classes, self.name, self.source, self.note,
                            self.indices[pos])

    def fingerprint(self) -> str:
        """sha256 of images and labels: names the exact data a model saw."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels.astype(np.int64)).tobytes())
        return digest.hexdigest()


def to_tensor_images(images: np.ndarray) -> Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def load_npz(path: Path, classes: Sequence[str] = CIFAR10_CLASSES, name: str = "cifar10") -> ArrayDataset:
    """A .npz file with ``images`` (uint8 N,H,W,3) and ``labels`` (int N).

    Args:
        path: the file.
        classes: the class names, in label order.
        name: the dataset's name in records and reports.

    Returns:
        An :class:`ArrayDataset` (sample ids 0..N-1); its ``.tensors()`` are float [0, 1] images and int64 labels.

    >>> import numpy as np, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "two.npz"
    >>> np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([3, 5]))
    >>> x, y = load_npz(path).tensors()
    >>> tuple(x.shape), y.tolist()
    ((2, 3, 32, 32), [3, 5])
    """
    path = Path(path)
    why = unusable_file(path)
    if why is not None:
        raise DataError(f"{path} {why}")
    try:
        with np.load(path) as archive:
            if "images" not in archive or "labels" not in archive:
                raise DataError(f"{path}: an .npz needs arrays 'images' and 'labels', found {sorted(archive.files)}")
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file (truncated or corrupt: {err})") from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    if len(images) == 0:
        raise DataError(f"{path}: holds no images")
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{path}: expected images (N, H, W, 3) and labels (N,), got {images.shape} and {labels.shape}")
    return ArrayDataset(images, labels.astype(np.int64), tuple(classes), name, str(path))


def find_npz(folder: Path, split: str) -> Path:
    """The one .npz in ``folder`` whose name mentions ``split`` ('train' or 'test'); several is an error, not a
    silent pick, since each would give other figures."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():  # a file named directly (a pipe too: its reader says what it is)
        return folder
    if not folder.is_dir():
        raise DataError(f"data path {folder} does not exist")
    matches = sorted(p for p in folder.glob("*.npz") if split in p.name.lower())
    if not matches:
        raise DataError(f"no .npz file with '{split}' in its name in {folder} (expected e.g. cifar10_{split}.npz with "
                        "arrays images uint8 NHWC and labels int64)")
    if len(matches) > 1:
        raise DataError(f"{len(matches)} .npz files with '{split}' in their names in {folder} "
                        f"({', '.join(p.name for p in matches)}); pass --data-dir with the one file to use")
    return matches[0]


def load_cifar10(split: str = "test", data_dir: Path | None = None, download: bool = False,
                 cache_dir: Path = DEFAULT_CACHE) -> ArrayDataset:
    """CIFAR-10 from a local folder of .npz files, or torchvision's copy in ``cache_dir`` (downloaded if asked)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is not None:
        dataset = load_npz(find_npz(Path(data_dir), split))
        if dataset.images.shape[1:3] != (32, 32):
            raise DataError(f"{dataset.source}: CIFAR-10 images are 32x32, got {dataset.images.shape[1:3]}")
        return dataset
    import torchvision

    root = Path(cache_dir) / "cifar10"
    try:
        tv = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=download)
    except RuntimeError:
        raise DataError(f"CIFAR-10 is not in {root}; pass --data-dir FOLDER with cifar10_{split}*.npz files "
                        "(images uint8 NHWC, labels int64), or --download where there is a network") from None
    except OSError as err:
        raise DataError(f"CIFAR-10 download failed ({type(err).__name__}: offline?); pass --data-dir FOLDER with "
                        f"cifar10_{split}*.npz files (images uint8 NHWC, labels int64)") from None
    return ArrayDataset(np.asarray(tv.data), np.asarray(tv.targets, dtype=np.int64), CIFAR10_CLASSES, "cifar10",
                        f"torchvision CIFAR10 ({root})")


_FOOLBOX_NAME = re.compile(r"^(?P<set>cifar10|imagenet)_(?P<idx>\d+)_(?P<label>\d+)\.(png|jpg)$")


def load_foolbox_samples(dataset: str = "cifar10") -> ArrayDataset:
    """The 20 real sample images shipped inside foolbox: an always-offline **20-image demo**, not a benchmark."""
    import foolbox
    if dataset not in ("cifar10", "imagenet"):
        raise DataError(f"foolbox ships demo images for cifar10 and imagenet, not {dataset!r}")
    folder = Path(foolbox.__file__).resolve().parent / "data"
    files = []
    for p in folder.iterdir():
        m = _FOOLBOX_NAME.match(p.name)
        if m and m.group("set") == dataset:
            files.append((int(m.group("idx")), int(m.group("label")), p))
    if not files:
        raise DataError(f"no {dataset} sample images found in {folder}")
    files.sort()
    images = []
    for _, _, p in files:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            if dataset == "imagenet" and rgb.size != (224, 224):
                rgb = rgb.resize((224, 224), Image.BILINEAR)
            images.append(np.asarray(rgb, dtype=np.uint8))
    labels = np.array([label for _, label, _ in files], dtype=np.int64)
    classes = CIFAR10_CLASSES if dataset == "cifar10" else tuple(str(i) for i in range(1000))
    return ArrayDataset(np.stack(images), labels, classes, f"foolbox-{dataset}", f"foolbox {folder}",
                        note="20-image demo set shipped with foolbox; too small for robustness claims")


IMAGENET_CLASSES = 1000
_WNID = re.compile(r"n\d{8}")


def streaming_loader(dataset: Dataset, batch_size: int | None = None,
                     batch_sampler: Sequence[Sequence[int]] | None = None, seed: int | None = None) -> DataLoader:
    """A DataLoader reading ``dataset`` (an image folder) in order, batch by batch, in worker processes (one per
    core, at most 8), into pinned memory when CUDA is there; ``batch_sampler`` gives the batches' indices instead
    of ``batch_size``, ``seed`` seeds the workers' random transforms. The one loader every folder reader uses."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size if batch_sampler is None else 1,
                      batch_sampler=batch_sampler, shuffle=False, num_workers=min(8, os.cpu_count() or 1),
                      pin_memory=torch.cuda.is_available(), generator=generator)


MAX_FOLDER_ENTRIES = 3_000_000  # ImageNet's train split holds 1.28 million images: a walk past this is no dataset


def list_image_folder(root: str, class_to_idx: dict[str, int], extensions: tuple[str, ...] | None = None,
                      is_valid_file: Any = None, allow_empty: bool = False) -> list[tuple[str, int]]:
    """(path, class) of every image under ``root``/<class>/, walked without following links (a link loop cannot
    multiply the images, and no link leads out of the root) and refused past :data:`MAX_FOLDER_ENTRIES` entries
    (a data folder of '/' is no dataset): torchvision's listing with those two bounds."""
    suffixes = tuple(e.lower() for e in (extensions or ()))
    samples, visited = [], 0
    for name in sorted(class_to_idx):
        top = os.path.join(root, name)
        if os.path.islink(top):
            continue
        walked = []
        for folder, dirs, files in os.walk(top, followlinks=False):
            visited += len(dirs) + len(files)
            if visited > MAX_FOLDER_ENTRIES:
                raise DataError(f"{root} holds more than {MAX_FOLDER_ENTRIES:,} entries: not an image folder (give "
                                "the folder that holds the class folders)")
            walked.append((folder, files))
        for folder, files in sorted(walked):  # torchvision's order: folders by path, files by name
            for file in sorted(files):
                path = os.path.join(folder, file)
                if os.path.islink(path) and not os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):
                    continue  # a link out of the data root
                ok = is_valid_file(path) if is_valid_file is not None else file.lower().endswith(suffixes)
                if ok:
                    samples.append((path, class_to_idx[name]))
    if not samples and not allow_empty:
        raise FileNotFoundError(f"no images under {root}")
    return samples


def _bounded_image_folder(torchvision: Any) -> Any:
    """torchvision's ImageFolder listing its files with :func:`list_image_folder`."""

    class BoundedImageFolder(torchvision.datasets.ImageFolder):
        make_dataset = staticmethod(list_image_folder)

    return BoundedImageFolder


class ImageFolderDataset(Dataset):
    """An ImageNet-style folder (class sub-folders), read image by image: resized to 256 and centre-cropped to 224,
    in [0, 1]. Nothing is decoded until an item is asked for, so a DataLoader streams it in flat memory.

    Labels: a folder of all 1000 ImageNet class folders (wnids) is labelled in sorted order, as torchvision's
    weights expect; class folders named by number ('0' .. '999') carry that label (a partial folder). A subset
    (``subset``, ``balanced_subset``) shares the file listing and keeps each image's position in the whole folder
    as its sample id.
    """

    def __init__(self, root: Path, split: str = "val", augment: bool = False) -> None:
        import torchvision
        from torchvision import transforms

        folder = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
        if not folder.is_dir():
            raise DataError(f"ImageNet folder {folder} does not exist (expected ROOT/{split}/<class>/<image>)")
        # training: RandomResizedCrop(224) and a flip (drawn in the loader's workers); evaluation: 256, centre 224
        pipeline = ([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()] if augment
                    else [transforms.Resize(256), transforms.CenterCrop(224)])
        try:
            self.inner = _bounded_image_folder(torchvision)(
                str(folder), transform=transforms.Compose([*pipeline, transforms.ToTensor()]))
        except (FileNotFoundError, RuntimeError) as err:
            raise DataError(f"{folder}: not an image folder tree ({err})") from None
        names = list(self.inner.classes)
        if all(n.isdigit() and int(n) < IMAGENET_CLASSES for n in names):  # numbered class folders: the number
            self._all_labels = np.array([int(names[t]) for t in self.inner.targets], dtype=np.int64)
            self.classes: tuple[str, ...] = tuple(str(i) for i in range(IMAGENET_CLASSES))
        else:
            if len(names) == IMAGENET_CLASSES and not all(_WNID.fullmatch(n) for n in names):
                # torchvision's weights number the classes in sorted wnid order; other names sort otherwise
                odd = next(n for n in names if not _WNID.fullmatch(n))
                raise DataError(f"{folder}: 1000 class folders, but {odd!r} is not a wnid (n01440764 ...): name them "
                                "by wnid or by class number (0 .. 999), else the labels would be in another order")
            self._all_labels = np.asarray(self.inner.targets, dtype=np.int64)
            self.classes = tuple(names)
        for sample, _ in self.inner.samples:  # a pipe named like an image would block its decoder for ever
            why = unusable_file(Path(sample))
            if why is not None:
                raise DataError(f"{sample} {why}; replace or remove it")
        self.name = "imagenet"
        self.source = str(folder)
        self.note = ""
        self.indices = np.arange(len(self.inner), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        position = int(self.indices[i])
        try:
            image, _ = self.inner[position]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's decoding failures
            raise DataError(f"{self.inner.samples[position][0]}: cannot be decoded as an image ({err}); replace or "
                            "remove it") from None
        return image, int(self._all_labels[position])

    @property
    def labels(self) -> np.ndarray:
        """Every label, read from the file listing (no image is decoded)."""
        return self._all_labels[self.indices]

    def files(self) -> list[str]:
        """Each image's path relative to the folder, in order."""
        root = Path(self.source)
        return [str(Path(self.inner.samples[int(i)][0]).relative_to(root)) for i in self.indices]

    def subset(self, positions: Sequence[int] | np.ndarray) -> ImageFolderDataset:
        """The images at ``positions`` of this dataset (sharing the file listing)."""
        view = object.__new__(ImageFolderDataset)
        view.__dict__.update(self.__dict__)
        view.indices = self.indices[np.asarray(positions, dtype=np.int64)]
        return view

    def balanced_subset(self, n: int, seed: int = 0) -> ImageFolderDataset:
        """``n`` images spread evenly over the classes (each class's images in a seeded order, taken one class at
        a time), then in folder order: the same ``n`` and seed give the same images on every machine holding the
        same folder, like RobustBench's fixed ImageNet list."""
        if n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        labels = self.labels
        queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
        chosen: list[int] = []
        while len(chosen) < n:
            for queue in queues:
                if queue and len(chosen) < n:
                    chosen.append(int(queue.pop(0)))
        return self.subset(np.sort(chosen))

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Every image decoded, (N, 3, 224, 224) in [0, 1], and the labels (for small subsets: probes, figures)."""
        images = torch.stack([self[i][0] for i in range(len(self))]) if len(self) else torch.zeros(0, 3, 224, 224)
        return images, torch.from_numpy(self.labels.astype(np.int64))

    def fingerprint(self) -> str:
        """sha256 over each image's relative path, size in bytes and label: names the exact images a run used
        without reading them all."""
        digest = hashlib.sha256()
        for rel, index in zip(self.files(), self.indices):
            digest.update(f"{rel}\t{os.path.getsize(self.inner.samples[int(index)][0])}\t"
                          f"{self._all_labels[index]}\n".encode())
        return digest.hexdigest()


def load_dataset(name: str, split: str = "test", data_dir: Path | None = None, download: bool = False,
                 cache_dir: Path = DEFAULT_CACHE) -> Dataset:
    """Any supported dataset by name: cifar10, imagenet, foolbox-cifar10, foolbox-imagenet.

    Args:
        name: the dataset.
        split: ``"test"`` or ``"train"`` (ImageNet: its validation folder for ``"test"``).
        data_dir: where its files are (CIFAR-10: ``cifar10_test.npz`` / ``cifar10_train.npz``, the shared format, or
            torchvision's folder; ImageNet: an ImageFolder tree); default: the cache.
        download: fetch CIFAR-10 with torchvision if it is not there (refused with one line offline).
        cache_dir: where a download goes.

    Returns:
        The images with their labels and sample ids; ``.subset(range(n))`` takes the first n, ``.tensors()`` gives
        float [0, 1] images and labels.

    >>> data = load_dataset("cifar10", "test", data_dir=Path("../shared/data"))  # doctest: +SKIP
    >>> x, y = data.subset(range(8)).tensors()  # doctest: +SKIP
    """
    if name == "cifar10":
        return load_cifar10(split, data_dir, download, cache_dir)
    if name == "imagenet":
        if data_dir is None:
            raise DataError("imagenet needs its images: --data-dir IMAGENET (a folder holding val/<wnid>/*.JPEG), or "
                            "--dataset foolbox-imagenet for the 20 ImageNet images shipped inside foolbox")
        return ImageFolderDataset(Path(data_dir), "val" if split == "test" else split)
    if name in ("foolbox-cifar10", "foolbox-imagenet"):
        return load_foolbox_samples(name.removeprefix("foolbox-"))
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
