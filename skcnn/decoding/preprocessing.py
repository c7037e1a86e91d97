"""The network's input recipe: resize, centre crop, normalise.

The numbers (sizes, mean, std, interpolation) always come from the weights'
own metadata (torchvision's ``weights.transforms()``, timm's
``pretrained_cfg``); this module only applies them, identically to every
image whatever form it arrived in.

uint8 pixels stay uint8 until the crop: torch's antialiased uint8 resize
(vectorised, on channel-last memory, which is how decoded pixels lie) is
8x faster than Pillow's on a 12 MP photo and 10x faster than resizing
floats (``benchmarks/RESULTS.md``), and it needs no full-resolution float
copy. Only the small crop becomes float, normalised in one pass into the
batch. Float pixels (16-bit sources, float arrays) are resized in float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from . import jpeg


@dataclass(frozen=True)
class Preprocessing:
    """How one image becomes a normalised network input.

    Parameters
    ----------
    crop_size : (int, int)
        Height and width of the network input.
    resize_size : int
        The shorter image side is resized to this before the centre crop.
    mean, std : tuple of 3 floats
        Per-channel normalisation of pixel values in [0, 1].
    interpolation : InterpolationMode
        Resampling filter of the resize (antialiased).
    """

    crop_size: tuple[int, int]
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: InterpolationMode

    @property
    def crop_fraction(self) -> float:
        """Crop side over resized side (e.g. 224 / 256 = 0.875)."""
        return max(self.crop_size) / self.resize_size

    def with_input_size(self, input_size: int | tuple[int, int] | None, crop: bool | float = True) -> Preprocessing:
        """The same recipe at another input size (None: its own), with another centre crop.

        ``crop=True`` keeps the weights' crop fraction (e.g. 224 of 256);
        ``False`` crops nothing: the shorter side is resized to the input
        size, so a square image is seen whole (close-ups already framed on
        the object, where the border holds evidence); a float in (0, 1] is
        the fraction of the resized shorter side the crop keeps.
        """
        size = self.crop_size if input_size is None else input_size
        crop_size = (size, size) if isinstance(size, int) else tuple(size)
        side = max(crop_size)
        if crop is True:
            # Integer arithmetic: no float round-off can move the resize by a pixel.
            resize = side * self.resize_size // max(self.crop_size)
        else:
            resize = side if crop is False else math.floor(side / float(crop))
        return replace(self, crop_size=(int(crop_size[0]), int(crop_size[1])), resize_size=int(resize))

    @classmethod
    def from_dict(cls, recipe: dict) -> Preprocessing:
        """The recipe :meth:`as_dict` describes (a fitted model's ``preprocessing_``)."""
        return cls(
            crop_size=(int(recipe["crop_size"][0]), int(recipe["crop_size"][1])),
            resize_size=int(recipe["resize_size"]),
            mean=tuple(float(x) for x in recipe["mean"]),
            std=tuple(float(x) for x in recipe["std"]),
            interpolation=InterpolationMode(recipe["interpolation"]),
        )

    def as_dict(self) -> dict:
        """Plain-data description (for fitted attributes, logs and cache keys)."""
        return {
            "crop_size": list(self.crop_size),
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation.value,
        }

    def min_decoded_side(self, decode: str) -> int | None:
        """The smallest shorter side a JPEG may be DCT-scaled to under ``decode``.

        ``"exact"``: never scaled (None). ``"draft"``: down to the resize
        target itself. ``"auto"``: down to :data:`AUTO_DECODE_MARGIN` times it,
        where the codes move by about as much as rounding to uint8 moves them
        (``benchmarks/RESULTS.md``, "Phone photos").
        """
        return jpeg.min_decoded_side(self.resize_size, DECODE_MARGINS[decode])

    def crop(self, pixels: np.ndarray) -> torch.Tensor:
        """Resize and centre-crop ``(H, W, C)`` pixels to a ``(C, h, w)`` tensor of their dtype."""
        chw = torch.from_numpy(_writable(pixels)).permute(2, 0, 1)
        if chw.dtype != torch.uint8:
            chw = chw.contiguous()  # float kernels are fastest channel-major (a no-op for 16-bit sources)
        chw = F.resize(chw, [self.resize_size], interpolation=self.interpolation, antialias=True)
        return F.center_crop(chw, list(self.crop_size))

    def batch(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Crops (uint8 or float, 1 or 3 channels) -> the normalised ``(B, 3, h, w)`` network input.

        One pass per crop: ``crop * (1 / (full_scale * std)) - mean / std``
        written straight into its row of the batch.
        """
        batch = torch.empty((len(crops), 3, *self.crop_size), dtype=torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32).reshape(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).reshape(3, 1, 1)
        shift, scale = -mean / std, {torch.uint8: 1.0 / (255.0 * std)}
        for row, crop in zip(batch, crops, strict=True):
            torch.addcmul(shift, crop, scale.get(crop.dtype, 1.0 / std), out=row)
        return batch

    def pixels(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Crops -> a uint8 ``(B, 3, h, w)`` batch (float crops rounded): 4x less memory to keep."""
        return torch.stack([_as_uint8(crop).expand(3, -1, -1) for crop in crops])

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 ``(B, 3, h, w)`` batch (as :meth:`pixels` gives) -> the normalised network input."""
        return self.batch(list(pixels))

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """``(H, W, C)`` pixels (uint8, or float in [0, 1]) -> the normalised ``(3, h, w)`` network input."""
        return self.batch([self.crop(pixels)])[0]


#: ``decode="auto"`` DCT-scales a JPEG only while its shorter side stays at
#: least this many times the resize target (a 12 MP photo at 224 px: 1/2).
#: Measured on 12 MP photos with grain (``benchmarks/RESULTS.md``, "Phone
#: photos"): penultimate codes 1.9% (median) from the exact decode's at 1/2,
#: 2.1-2.4% at 1/4 (a margin of 2) and 5-6% at 1/8; of the 1.9%, the DCT
#: scaling itself is 0.4% (the same pixels resized in float), the rest is
#: the rounding of the two resized crops to uint8, which moves these codes
#: by 1.4-1.9% on its own. 1/4 was 1.2x faster end to end.
AUTO_DECODE_MARGIN = 3.0

#: Each ``decode`` mode's margin over the resize target (None: never scaled).
DECODE_MARGINS = {"auto": AUTO_DECODE_MARGIN, "exact": None, "draft": 1.0}


#: ``"native"`` input size is considered only when the images' shorter side is
#: at least this many times the input they would otherwise be resized to:
#: below it, that resize keeps nearly every pixel already.
NATIVE_MIN_GAIN = 1.25

#: The largest ``"native"`` input, in multiples of the input side it replaces:
#: the network's cost grows with the square (2x the side: 4x the time), and a
#: 12 MP photo's own size is far past what a network trained at 224 px sees
#: as one object.
NATIVE_MAX_SCALE = 2.0


def native_input_size(sizes: Sequence[tuple[int, int] | None], recipe: Preprocessing) -> int | None:
    """The images' own input side: the median shorter side of ``sizes``
    (``(height, width)``, None for unreadable images), at most
    :data:`NATIVE_MAX_SCALE` times ``recipe``'s input; None when that is not
    at least :data:`NATIVE_MIN_GAIN` times it (nothing more to keep)."""
    sides = [min(size) for size in sizes if size is not None]
    if not sides:
        return None
    own = max(recipe.crop_size)
    side = min(int(np.median(sides)), int(NATIVE_MAX_SCALE * own))
    return side if side >= NATIVE_MIN_GAIN * own else None


def check_crop(crop) -> bool | float:
    """The ``crop`` parameter, checked: True, False or a fraction in (0, 1]."""
    if isinstance(crop, bool) or (isinstance(crop, float | int) and 0 < crop <= 1):
        return crop
    raise ValueError(
        f"crop must be True (the weights' centre crop), False (no crop) or a fraction in (0, 1]; got {crop!r}."
    )


def _writable(pixels: np.ndarray) -> np.ndarray:
    # torch refuses to wrap read-only memory without a warning (np.asarray of
    # a small PIL image is read-only; skcnn.images copies large ones out of
    # PIL into writable arrays, so this copy stays small); resizing never
    # writes, but torch cannot know.
    return pixels if pixels.flags.writeable else pixels.copy()


def _as_uint8(crop: torch.Tensor) -> torch.Tensor:
    if crop.dtype == torch.uint8:
        return crop
    return crop.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def from_torchvision_transforms(transforms) -> Preprocessing:
    """Read the recipe of torchvision's ``ImageClassification`` preset."""
    return Preprocessing(
        crop_size=(transforms.crop_size[0], transforms.crop_size[0]),
        resize_size=transforms.resize_size[0],
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation,
    )


def from_timm_config(config: dict) -> Preprocessing:
    """Read the recipe of a timm data config (``resolve_data_config``)."""
    _, height, width = config["input_size"]
    crop_fraction = config.get("crop_pct") or 1.0
    return Preprocessing(
        crop_size=(height, width),
        resize_size=math.floor(max(height, width) / crop_fraction),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=InterpolationMode(config.get("interpolation", "bilinear")),
    )
