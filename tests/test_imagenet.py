"""The ImageNet half, offline: an ImageNet-format folder built from foolbox's 20 real ImageNet images, streamed
through a DataLoader (class-balanced subsets, file names in run.json), and a resnet50 file in torchvision's layout
(a stand-in with random weights that the test writes, so the loading code is the real one) attacked end to end
beside aig50 built from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aigrobust.cli import cli


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory) -> Path:
    """ROOT/val/<label>/<file>: foolbox's ImageNet demo images, each under the folder of its label."""
    import foolbox

    from aigrobust.data import _FOOLBOX_NAME

    root = tmp_path_factory.mktemp("imagenet")
    source = Path(foolbox.__file__).resolve().parent / "data"
    for path in sorted(source.iterdir()):
        match = _FOOLBOX_NAME.match(path.name)
        if match and match.group("set") == "imagenet":
            target = root / "val" / str(int(match.group("label")))
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
    return root


@pytest.fixture(scope="module")
def stand_in_resnet50(tmp_path_factory) -> Path:
    """A resnet50 file as torchvision writes it (random weights, torchvision's key names)."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet50-standin.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_folder_streams_with_numbered_classes_and_balanced_subsets(imagenet_folder: Path) -> None:
    from aigrobust.data import load_dataset

    data = load_dataset("imagenet", "test", imagenet_folder)
    assert len(data) == 20 and len(data.classes) == 1000
    assert not hasattr(data, "images")  # nothing decoded up front
    image, label = data[0]
    assert image.shape == (3, 224, 224) and label == int(Path(data.files()[0]).parts[0])
    subset = data.balanced_subset(6, seed=0)
    assert len(subset) == 6 and subset.balanced_subset(6).files() == subset.files()
    assert len(set(subset.labels.tolist())) == 6  # one image per class before any class repeats
    assert load_dataset("imagenet", "test", imagenet_folder).balanced_subset(6, seed=0).files() == subset.files()
    x, y = subset.tensors()
    assert x.shape == (6, 3, 224, 224) and torch.equal(y, torch.from_numpy(subset.labels))


def test_class_folders_that_would_be_numbered_wrongly_are_refused(stand_in_resnet50: Path, tmp_path: Path) -> None:
    """torchvision's weights number the classes in sorted wnid order: 1000 folders under other names would sort
    into another order, and a folder of some wnids would be numbered 0 .. k-1; both were silent wrong labels."""
    from PIL import Image

    from aigrobust.data import DataError, load_dataset

    pixel = Image.new("RGB", (8, 8))
    for name in ("named", "wnids"):
        for i in range(1000):
            folder = tmp_path / name / "val" / (f"class{i:04d}" if name == "named" else f"n{i:08d}")
            folder.mkdir(parents=True)
            pixel.save(folder / "a.png")
    with pytest.raises(DataError, match="'class0000' is not a wnid"):
        load_dataset("imagenet", "test", tmp_path / "named")
    wnids = load_dataset("imagenet", "test", tmp_path / "wnids")
    assert len(wnids.classes) == 1000 and wnids.labels[:3].tolist() == [0, 1, 2]
    (tmp_path / "some" / "val" / "n01440764").mkdir(parents=True)
    pixel.save(tmp_path / "some" / "val" / "n01440764" / "a.png")
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", f"resnet50={stand_in_resnet50}", "--data-dir",
                                      str(tmp_path / "some"), "--eps", "0.03", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "name its class folders by class number" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_resnet50_file_and_aig50_attacked_end_to_end_on_the_folder(imagenet_folder: Path, stand_in_resnet50: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "attack", "--model", "resnet50", "--model", "aig50", "--checkpoint", str(stand_in_resnet50),
        "--checkpoint", str(stand_in_resnet50), "--data-dir", str(imagenet_folder), "--n-samples", "6",
        "--batch-size", "4", "--eps", "2/255", "--attack", "fgsm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "run.json").read_text())
    assert len(document["dataset"]["files"]) == 6 and len(document["dataset"]["indices"]) == 6
    import pandas as pd

    records = pd.read_csv(out / "records.csv.gz")
    assert set(records["model"]) == {"resnet50", "aig50"}
    assert sorted(set(records["sample"])) == sorted(document["dataset"]["indices"])
    assert records[records["model"] == "aig50"]["clean_gates"].astype(str).str.len().eq(16).all()


def test_foolbox_imagenet_with_a_torchvision_resnet50_file(stand_in_resnet50: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["attack", "--checkpoint", f"resnet50={stand_in_resnet50}", "--dataset",
                                      "foolbox-imagenet", "--n-samples", "4", "--eps", "0.03", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "resnet50" in result.output


@pytest.mark.slow
def test_memory_stays_flat_in_the_number_of_folder_images(imagenet_folder: Path, tmp_path: Path) -> None:
    """Peak RSS attacking the folder at 20 and at 400 images (the 20 repeated) differs by under 20%."""
    import subprocess
    import sys

    from aigrobust import create_model
    from aigrobust.models.checkpoints import save_checkpoint

    big = tmp_path / "big"
    for copy in range(20):
        for path in (p for p in (imagenet_folder / "val").rglob("*") if p.is_file()):
            target = big / "val" / path.parent.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / f"{copy}_{path.name}")
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("tiny_aig", num_classes=1000), checkpoint)  # small and fast at 224 px
    peaks = {}
    for name, folder in (("small", imagenet_folder), ("big", big)):
        runs = []
        for attempt in range(2):  # the allocator makes one process's peak noisy: the larger of two runs
            out = tmp_path / f"out-{name}-{attempt}"
            code = ("import resource, sys; from aigrobust.cli import main; sys.argv = ['aigrobust', 'attack', "
                    f"'--checkpoint', '{checkpoint}', '--dataset', 'imagenet', '--data-dir', '{folder}', '--eps', "
                    f"'2/255', '--batch-size', '20', '--out', '{out}']\n"
                    "try:\n    main()\nexcept SystemExit:\n    pass\n"
                    "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
            assert "PEAK" in done.stdout and (out / "records.csv.gz").is_file(), done.stdout[-2000:] + done.stderr[-2000:]
            runs.append(int(done.stdout.split("PEAK")[-1].split()[0]))
        peaks[name] = max(runs)
    print(f"peak RSS: 20 images {peaks['small'] / 1024:.0f} MiB, 400 images {peaks['big'] / 1024:.0f} MiB")
    assert np.isclose(peaks["big"], peaks["small"], rtol=0.2), peaks


def test_train_aig50_from_a_resnet50_file_then_eval_and_attack_it(imagenet_folder: Path, stand_in_resnet50: Path,
                                                                    tmp_path: Path) -> None:
    """Eight of the tiny folder's images serve as train/ and val/: one epoch through the streaming loader (two
    steps), then the trained checkpoint is evaluated and attacked like any other."""
    root = tmp_path / "imagenet"
    for path in sorted((imagenet_folder / "val").glob("*/*"))[:8]:
        for split in ("train", "val"):
            (root / split / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / path.parent.name / path.name)
    out = tmp_path / "aig50"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--model", "aig50", "--init", str(stand_in_resnet50), "--data-dir",
                                 str(root), "--epochs", "1", "--batch-size", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    log = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert log["epoch"] == 1 and len(log["heldout_execution_rates"]) == 16
    from aigrobust.models.factory import load_checkpoint

    model, meta = load_checkpoint(out / "model.safetensors")
    assert model.registry_name == "aig50" and meta["recipe"]["lr"] == pytest.approx(0.1 * 4 / 256)
    assert meta["recipe"]["epochs"] == 1 and meta["recipe"]["milestones"] == [0.3, 0.6, 0.9]
    assert meta["recipe"]["init"] == str(stand_in_resnet50) and meta["recipe"]["weight_decay"] == 1e-4
    result = runner.invoke(cli, ["eval", "--checkpoint", str(out / "model.safetensors"), "--data-dir", str(root),
                                 "--n-samples", "4"])
    assert result.exit_code == 0 and "accuracy" in result.output, result.output
    result = runner.invoke(cli, ["attack", "--checkpoint", str(out / "model.safetensors"), "--data-dir", str(root),
                                 "--n-samples", "4", "--eps", "2/255", "--out", str(tmp_path / "attack")])
    assert result.exit_code == 0, result.output
    np.testing.assert_equal(len(json.loads((tmp_path / "attack" / "run.json").read_text())["dataset"]["files"]), 4)


@pytest.mark.slow  # torchrun training runs by default on CIFAR-10 (test_reliability); this is the ImageNet path
def test_torchrun_trains_aig50_on_the_folder_with_two_processes(imagenet_folder: Path, stand_in_resnet50: Path,
                                                                 tmp_path: Path) -> None:
    """ImageNet-folder training under torchrun: two CPU processes (gloo) each take their share of every global
    batch through their own streaming loader, and rank 0 writes a checkpoint that evaluates."""
    import os
    import subprocess

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    root = tmp_path / "imagenet"
    shutil.copytree(imagenet_folder / "val", root / "val")
    shutil.copytree(imagenet_folder / "val", root / "train")
    out = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29523", "-m", "aigrobust", "train",
                           "--model", "aig50", "--init", str(stand_in_resnet50), "--data-dir", str(root),
                           "--epochs", "1", "--batch-size", "8", "--out", str(out),
                           "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes" in done.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["epoch"] == 1 and len(log[0]["heldout_execution_rates"]) == 16
    assert 0 <= log[0]["heldout_accuracy"] <= 1 and log[0]["heldout_top5"] >= log[0]["heldout_accuracy"]
    from aigrobust.models.factory import load_checkpoint

    model, meta = load_checkpoint(out / "model.safetensors")
    assert model.registry_name == "aig50" and meta["recipe"]["lr"] == pytest.approx(0.1 * 8 / 256)


def test_a_cifar_network_given_imagenet_images_is_refused(imagenet_folder: Path, tmp_path: Path) -> None:
    # it ran at chance on 224-pixel images without a word
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model", "resnet20", "--dataset", "imagenet", "--data-dir",
                                      str(imagenet_folder), "--n-samples", "4", "--eps", "2/255", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "resnet20 takes images of 3x32x32, but the data's are 3x224x224" in result.output
    assert not out.exists()


def test_an_image_that_cannot_be_decoded_is_named_in_one_line(imagenet_folder: Path, tmp_path: Path) -> None:
    """Hostile files: a corrupt JPEG in the folder ended in PIL's traceback from a loader worker."""
    folder = tmp_path / "imagenet"
    shutil.copytree(imagenet_folder, folder)
    broken = next((folder / "val").iterdir()) / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not the rest of a jpeg")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["attack", "--model-code", "tests.user_nets:build_imagenet_tiny", "--dataset",
                                      "imagenet", "--data-dir", str(folder), "--eps", "2/255", "--attack", "fgsm",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and f"{broken}: cannot be decoded as an image" in lines[0], result.output
    assert "Traceback" not in result.output
