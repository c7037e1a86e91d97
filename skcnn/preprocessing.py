"""The network's input recipe: resize, centre crop, normalise.

The numbers (sizes, mean, std, interpolation) always come from the weights'
own metadata (torchvision's ``weights.transforms()``, timm's
``pretrained_cfg``); this module only applies them, identically to every
image whatever form it arrived in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


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

    def with_input_size(self, input_size: int | tuple[int, int]) -> Preprocessing:
        """The same recipe at another input size, keeping the crop fraction."""
        crop = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        # Integer arithmetic: no float round-off can move the resize by a pixel.
        resize = max(crop) * self.resize_size // max(self.crop_size)
        return replace(self, crop_size=(int(crop[0]), int(crop[1])), resize_size=int(resize))

    def as_dict(self) -> dict:
        """Plain-data description (for fitted attributes, logs and cache keys)."""
        return {
            "crop_size": list(self.crop_size),
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation.value,
        }

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn a float (H, W, C) image in [0, 1] into a normalised (3, h, w) tensor."""
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        chw = F.resize(chw, [self.resize_size], interpolation=self.interpolation, antialias=True)
        chw = F.center_crop(chw, list(self.crop_size))
        if chw.shape[0] == 1:
            chw = chw.expand(3, -1, -1)
        return F.normalize(chw, mean=list(self.mean), std=list(self.std))


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
