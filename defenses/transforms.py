"""The defenses: JPEG (real codec, batched), bit-depth reduction, median smoothing, random resize-and-pad."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from aigrobust.randomness import input_row_keys, keyed_uniform
from defenses.base import Defense
from defenses.codec import jpeg_round_trip


def pillow_jpeg_round_trip(images: np.ndarray, quality: int) -> np.ndarray:
    """The reference :class:`JPEG` must equal: each uint8 (N, H, W, 3) image saved by Pillow at ``quality``
    (its defaults: 4:2:0, standard tables) and decoded again, one image at a time."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    return np.stack(out)


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] float -> uint8 with rounding (not truncation), as an image file would store it."""
    return (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8)



def _integer_in(value: object, low: int, high: int, what: str) -> int:
    """``value`` if it is an int (not a bool) in ``low..high``, else ValueError in one line naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


class JPEG(Defense):
    """JPEG compression and decompression at ``quality`` with the real codec (libjpeg via torchvision).

    Settings follow Pillow's defaults (4:2:0 chroma subsampling, standard IJG tables, islow DCT), so the output equals
    a Pillow round trip of the same uint8 image. Any image size; the batch is coded in parallel shares
    (:func:`defenses.codec.jpeg_round_trip`). ``approximation`` is kornia's differentiable JPEG (Reich et al., WACV
    2024) at the same quality, used by the ``diff`` defense gradient; ``bpda`` passes the gradient straight through.

    Args:
        quality: 1 to 100 (the paper's defense: 75).

    >>> import torch
    >>> JPEG(75)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = _integer_in(quality, 1, 100, "JPEG quality")
        self.name = f"jpeg:{quality}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"JPEG takes (N, 3, H, W) images, got {tuple(x.shape)}")
        decoded = jpeg_round_trip(to_uint8(x).cpu(), self.quality)
        return decoded.to(device=x.device, dtype=x.dtype).div_(255.0)

    def approximation(self, x: Tensor) -> Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([float(self.quality)], device=x.device, dtype=x.dtype)
        return jpeg_codec_differentiable(x.clamp(0, 1), quality).clamp(0, 1)


class BitDepth(Defense):
    """Reduce each channel to ``bits`` bits (feature squeezing, Xu et al., NDSS 2018); approximation: the identity.

    Args:
        bits: 1 to 8 bits per channel.

    >>> import torch
    >>> BitDepth(1)(torch.tensor([[[[0.2, 0.7]]]])).flatten().tolist()
    [0.0, 1.0]
    """

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        self.bits = _integer_in(bits, 1, 8, "bit depth")
        self.name = f"bits:{bits}"

    def forward(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        return (x.clamp(0, 1) * levels).round() / levels


class MedianSmoothing(Defense):
    """Median filter over a ``size`` x ``size`` window per channel (feature squeezing, Xu et al., NDSS 2018).

    Even sizes take the window to the lower right, as Xu et al.'s 2x2 filter does (reflect padding). The median is
    piecewise differentiable, so it is its own approximation.

    Args:
        size: the window's side (2 or more).

    >>> import torch
    >>> MedianSmoothing(3)(torch.rand(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = _integer_in(size, 2, 7, "median window")
        self.name = f"median:{size}"

    def forward(self, x: Tensor) -> Tensor:
        k = self.size
        before, after = (k - 1) // 2, k // 2
        padded = F.pad(x, (before, after, before, after), mode="reflect")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # N, C, H, W, k, k
        return patches.reshape(*patches.shape[:4], k * k).median(dim=-1).values

    def approximation(self, x: Tensor) -> Tensor:
        return self.forward(x)


class RandomResizePad(Defense):
    """Randomised: resize to a random side in [min_size, H] and zero-pad at a random place back to H x W (Xie et al.,
    ICLR 2018, scaled so the model keeps its input size).

    Each image draws its own side and place, keyed by (seed, the image's bytes, draw name) as stochastic gates draw
    theirs (aigrobust.randomness): the same image meets the same transform in the same named draw, whatever batch it
    shares. Attack it with the ``eot`` defense gradient.

    Args:
        min_fraction: the smallest side as a fraction of the image's (0.875: 28 of 32 pixels).
        seed: the key of the draws.

    >>> import torch
    >>> pad = RandomResizePad(0.75)
    >>> image = torch.rand(1, 3, 32, 32)
    >>> torch.equal(pad(image), pad(image))  # the same image, the same draw
    True
    """

    randomized = True

    def __init__(self, min_fraction: float = 0.875, seed: int = 0) -> None:
        super().__init__()
        if not 0.5 <= min_fraction < 1.0:
            raise ValueError(f"random resize fraction must lie in [0.5, 1), got {min_fraction!r}")
        self.min_fraction = min_fraction
        self.seed = seed
        self.draw_key = ""  # named by aigrobust.randomness.keyed_draw (EOT draws)
        self.name = f"randpad:{min_fraction:g}"

    def reseed(self, seed: int) -> None:
        """Key later draws by another seed (for repeatable evaluations)."""
        self.seed = seed

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        u = keyed_uniform(input_row_keys(x), self.seed, f"{self.draw_key}/resize-pad", (n, 3)).cpu()
        low = int(h * self.min_fraction)
        sides = (low + (u[:, 0] * (h - low + 1)).long()).clamp_max(h).tolist()
        padded: dict[int, Tensor] = {}
        for side in sorted(set(sides)):
            members = [i for i in range(n) if sides[i] == side]
            resized = F.interpolate(x[members], size=(side, side * w // h), mode="bilinear", align_corners=False)
            width = resized.shape[3]
            for j, i in enumerate(members):
                top = min(int(u[i, 1] * (h - side + 1)), h - side)
                left = min(int(u[i, 2] * (w - width + 1)), w - width)
                padded[i] = F.pad(resized[j], (left, w - width - left, top, h - side - top))
        return torch.stack([padded[i] for i in range(n)])

    def approximation(self, x: Tensor) -> Tensor:
        return self.forward(x)  # interpolation and padding are differentiable
