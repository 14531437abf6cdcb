"""Checkpoints: our format round trip, verification, clear errors, safe loading, converters (real weights too)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from aigrobust import create_model
from aigrobust.evaluation.clean_accuracy import evaluate_clean
from aigrobust.models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from aigrobust.models.converters import convert_torchvision
from aigrobust.models.factory import load_checkpoint
from tests.conftest import PRETRAINED, half_closed, require, varied_images


def test_round_trip_keeps_weights_metadata_and_outputs(tmp_path: Path) -> None:
    model = half_closed(create_model("tiny_aig", target_rate=0.5)).eval()
    path = tmp_path / "m.safetensors"
    meta = save_checkpoint(model, path, dataset="cifar10", accuracy=0.5, recipe={"epochs": 1})
    loaded, loaded_meta = load_checkpoint(path)
    x = varied_images(4)
    assert torch.equal(loaded(x), model(x))
    assert loaded_meta == meta
    assert loaded_meta["model"] == "tiny_aig" and loaded_meta["model_kwargs"] == {"target_rate": 0.5}
    assert loaded_meta["target_rates"] == [0.5] * 6
    assert loaded_meta["normalization"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert len(loaded_meta["weights_sha256"]) == 64


def test_tampered_weights_fail_the_sha256_check(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(create_model("tiny_resnet"), path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_truncated_and_missing_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(create_model("tiny_resnet"), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_checkpoint_of_another_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(create_model("tiny_resnet"), path)
    with pytest.raises(CheckpointError, match="holds weights of tiny_resnet, not of resnet20"):
        load_checkpoint(path, expect_model="resnet20")
    state, _ = read_checkpoint(path)
    from aigrobust.models.checkpoints import load_state_checked

    with pytest.raises(CheckpointError, match=r"does not fit resnet20: .*shape mismatch"):
        load_state_checked(create_model("resnet20"), state, "x")
    with pytest.raises(CheckpointError, match=r"missing .*gate"):
        load_state_checked(create_model("tiny_aig"), state, "x")


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {_Payload.marker}",))

    marker = ""


def test_a_code_running_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    path = tmp_path / "evil.th"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Payload()}, handle)
    torch.save({"state_dict": {"x": _Payload()}}, tmp_path / "evil2.th")
    for candidate in (path, tmp_path / "evil2.th"):
        with pytest.raises(CheckpointError, match="could not be loaded safely"):
            load_checkpoint(candidate)
    assert not marker.exists()


def test_a_text_file_is_named_as_no_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.th"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(CheckpointError, match="could not be loaded safely .*not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_aig_reference_layout_converts(tmp_path: Path) -> None:
    ours = half_closed(create_model("aig20", shortcut="B")).eval()
    reference = {}
    for k, v in ours.state_dict().items():
        k2 = k.replace(".gate.", ".")
        if re.search(r"\.fc[12]\.weight$", k2):
            v = v[:, :, None, None]  # the reference code's gates are 1x1 convolutions
        if k2.endswith("num_batches_tracked"):
            continue  # PyTorch 0.3 files have none
        reference["module." + k2] = v
    path = tmp_path / "aig_ref.pth.tar"
    torch.save({"state_dict": reference, "epoch": 3}, path)
    converted, meta = load_checkpoint(path)
    assert meta["source_layout"] == "aig-reference"
    assert converted.registry_name == "aig20" and converted.shortcut_style == "B"  # type: ignore[attr-defined]
    x = varied_images(6)
    assert torch.allclose(converted(x), ours(x), atol=1e-6)


def test_torchvision_weights_fill_resnet50_and_the_residual_weights_of_aig50() -> None:
    import torchvision

    state = torchvision.models.resnet50(weights=None).state_dict()
    aig = convert_torchvision(state, "aig50")
    for k, v in state.items():
        assert torch.equal(aig.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="do not fit"):
        convert_torchvision(state, "resnet101")


def test_offline_torchvision_download_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models as tvm

    def no_network(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(CheckpointError, match="could not download torchvision weights"):
        create_model("resnet50", pretrained=True)


def test_no_shipped_weights_is_a_clear_error() -> None:
    with pytest.raises(CheckpointError, match="no pretrained weights are shipped for aig110"):
        create_model("aig110", pretrained=True)


@pytest.mark.parametrize("filename,minimum", [("resnet20-12fca82f.th", 0.910), ("resnet56-4bfd9763.th", 0.920)])
def test_external_pretrained_resnets_score_on_real_test_images(filename: str, minimum: float, cifar_test) -> None:
    """The outside reference: akamaster's models, converted by our code, scored on the 1000 real test images."""
    model, meta = load_checkpoint(require(PRETRAINED / filename))
    assert meta["source_layout"] == "akamaster"
    assert meta["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    result = evaluate_clean(model, cifar_test, batch_size=500)
    assert result.n_samples == 1000
    assert result.accuracy >= minimum
