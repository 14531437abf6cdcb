"""Defenses: JPEG equals Pillow, kornia's approximation is close, BPDA/EOT views, the obfuscated-gradients result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aigrobust.cli import cli
from aigrobust.models.factory import load_checkpoint
from defenses import (
    JPEG,
    AttackerDefenseView,
    BitDepth,
    Compose,
    DefendedModel,
    DefenseSpecError,
    MedianSmoothing,
    RandomResizePad,
    bpda,
    codec,
    parse_defense,
    pillow_jpeg_round_trip,
)
from tests.conftest import PRETRAINED, require


def to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("quality", [1, 10, 50, 75, 95, 100])
def test_jpeg_equals_a_pillow_round_trip_on_real_images(quality: int, cifar_test) -> None:
    images = cifar_test.images[:200]
    ours = JPEG(quality)(to_float(images))
    ours_u8 = (ours * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours_u8, pillow_jpeg_round_trip(images, quality))


def test_jpeg_handles_any_size_and_rounds() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 37, 29, 3), dtype=np.uint8)
    ours = JPEG(60)(to_float(images))
    assert ours.shape == (3, 3, 37, 29)
    ours_u8 = (ours * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours_u8, pillow_jpeg_round_trip(images, 60))
    # 0.499/255 rounds down, 0.5/255 up: rounding, not truncation
    x = torch.full((1, 3, 16, 16), 100.6 / 255)
    assert JPEG(100)(x).mul(255).round().unique().tolist() == [101.0]


def test_jpeg_parallel_shares_equal_the_python_loop() -> None:
    # the fast path must be compiled here, or this would compare the fallback with itself
    assert codec._scripted() is not None
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (100, 3, 24, 40), dtype=np.uint8))
    parallel = codec.jpeg_round_trip(images, 75)  # 3 uneven shares
    assert torch.equal(parallel, codec.jpeg_round_trip(images, 75, scripted=False))
    assert codec.jpeg_round_trip(images[:0], 75).shape == (0, 3, 24, 40)


def test_kornia_differentiable_jpeg_is_close_to_the_real_codec(cifar_test) -> None:
    x = to_float(cifar_test.images)
    jpeg = JPEG(75)
    real = jpeg(x)
    approx = jpeg.approximation(x)
    mse = ((approx - real) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    psnr = float((10 * torch.log10(1 / mse)).mean())
    assert psnr >= 38.0  # measured 40.6 dB on this machine
    xg = x[:4].clone().requires_grad_(True)
    jpeg.approximation(xg).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


def test_bad_defense_specs_get_one_clear_message() -> None:
    for spec, needle in (("jpeg:0", "1..100"), ("jpeg:101", "1..100"), ("jpeg:high", "takes an integer"),
                         ("jpeg:75.5", "jpeg takes an integer, got '75.5'"), ("randpad:x", "takes a number"),
                         ("none+jpeg:75", "'none' cannot be joined"),
                         ("blur:3", "unknown defense 'blur'"), ("bits:9", "1..8"), ("median:1", "2..7")):
        with pytest.raises(DefenseSpecError, match=needle):
            parse_defense(spec)
    composed = parse_defense("jpeg:50+median:2")
    assert isinstance(composed, Compose) and composed.name == "jpeg:50+median:2"
    assert parse_defense("none").name == "none"


def test_cli_rejects_bad_defenses_in_one_line(tmp_path) -> None:
    for spec in ("jpeg:0", "jpeg:101", "jpeg:high", "foo"):
        result = CliRunner().invoke(cli, ["attack", "--model", "resnet20", "--eps", "0.03", "--defense", spec,
                                          "--out", str(tmp_path / "x")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_bpda_is_identity_backward_and_real_forward() -> None:
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    jpeg = JPEG(30)
    out = bpda(jpeg, x)
    assert torch.equal(out.detach(), jpeg(x.detach()))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_squeezers() -> None:
    x = torch.tensor([[[[0.1, 0.9], [0.4, 0.6]]]]).expand(1, 3, 2, 2)
    assert BitDepth(1)(x)[0, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0  # a lone bright pixel is removed by a 3x3 median
    assert float(MedianSmoothing(3)(image).max()) == 0.0
    smooth = torch.linspace(0, 1, 25).view(1, 1, 5, 5)
    assert MedianSmoothing(2)(smooth).shape == smooth.shape


def test_random_resize_pad_draws_per_image_by_seed_and_draw_name_and_eot_averages() -> None:
    from aigrobust.randomness import keyed_draw

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    defense = RandomResizePad(seed=3)
    a = defense(x)
    assert a.shape == x.shape
    assert torch.equal(defense(x), a)  # the same images, the same draw
    assert torch.equal(defense(x[[5, 2]]), a[[5, 2]])  # an image's transform does not depend on its batch
    with keyed_draw(defense, "eot/1"):
        b = defense(x)
    assert not torch.equal(a, b)  # another named draw
    defense.reseed(4)
    assert not torch.equal(defense(x), a)  # another seed
    # each image draws its own side: the zero border differs between images of one batch
    border = [(row.abs().sum(0) == 0).sum().item() for row in a]
    assert len(set(border)) > 1
    defense.reseed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    view = AttackerDefenseView(model, defense, "eot", eot_samples=4)
    xg = x.clone().requires_grad_(True)
    out = view(xg)
    assert torch.allclose(out.exp().sum(1), torch.ones(8), atol=1e-5)
    out.sum().backward()
    assert xg.grad is not None
    one_draw = AttackerDefenseView(model, defense, "eot", eot_samples=1)(x)
    assert not torch.allclose(out, one_draw)  # four named draws, not one draw four times


def _obfuscation_check(cifar_test, n: int) -> dict[str, float]:
    from attacks import get_attack

    model, _ = load_checkpoint(require(PRETRAINED / "resnet20-12fca82f.th"))
    x, y = cifar_test.subset(range(n)).tensors()
    figures: dict[str, float] = {}
    with torch.no_grad():
        figures["clean"] = float((model(x).argmax(1) == y).float().mean())
    for quality in (75, 50):
        jpeg = JPEG(quality)
        deployed = DefendedModel(model, jpeg)
        with torch.no_grad():
            clean_ok = deployed(x).argmax(1) == y
        figures[f"jpeg{quality}_clean"] = float(clean_ok.float().mean())
        fgsm = get_attack("fgsm")
        bare = fgsm(model, x, y, [2 / 255])
        with torch.no_grad():
            figures["fgsm2_none"] = float((model(bare.clipped[0]).argmax(1) == y).float().mean())
        oblivious = fgsm(deployed, x, y, [2 / 255], gradient_model=AttackerDefenseView(model, jpeg, "oblivious"))
        figures[f"fgsm2_jpeg{quality}_oblivious"] = float((~oblivious.success[0]).float().mean())
        for grad in ("bpda", "diff"):
            pgd = get_attack("pgd", steps=10)(deployed, x, y, [8 / 255], gradient_model=AttackerDefenseView(model, jpeg, grad))
            figures[f"pgd8_jpeg{quality}_{grad}"] = float((~pgd.success[0]).float().mean())
    return figures


def _assert_obfuscation(figures: dict[str, float]) -> None:
    assert figures["jpeg75_clean"] < figures["clean"]  # JPEG costs clean accuracy
    assert figures["jpeg50_clean"] <= figures["jpeg75_clean"] + 0.01
    # oblivious FGSM at 2/255: JPEG recovers a clear part of what the attack took
    lost = figures["clean"] - figures["fgsm2_none"]
    assert figures["fgsm2_jpeg75_oblivious"] - figures["fgsm2_none"] > 0.3 * lost
    # adaptive attacks see through it
    for quality in (75, 50):
        for grad in ("bpda", "diff"):
            assert figures[f"pgd8_jpeg{quality}_{grad}"] <= 0.10


def test_jpeg_defense_oblivious_versus_adaptive_on_real_data_200(cifar_test) -> None:
    _assert_obfuscation(_obfuscation_check(cifar_test, 200))


@pytest.mark.slow
def test_jpeg_defense_oblivious_versus_adaptive_on_real_data_1000(cifar_test) -> None:
    _assert_obfuscation(_obfuscation_check(cifar_test, 1000))
