"""Augmentation of training batches: random resized crops and horizontal flips.

Applied to training batches only, never to the validation split or to
prediction. Images are kept as uint8 network inputs (resized and centre
cropped once, when decoded); each batch is augmented image by image (each
its own crop) and then normalised with the weights' own mean and std
(:meth:`skcnn.preprocessing.Preprocessing.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

#: The part of the image a random crop keeps, at least: mild, as small data
#: sets and pretrained features call for (BiT-HyperRule and fastai use
#: crops of this order; a crop of 8% of the image, ImageNet's own, is for
#: training from scratch).
MIN_CROP_SCALE = 0.6


def default_augment(size: tuple[int, int]) -> v2.Transform:
    """``augment="auto"``: a random resized crop to ``size`` and a horizontal flip."""
    return v2.Compose(
        [v2.RandomResizedCrop(size, scale=(MIN_CROP_SCALE, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )


def resolve_augment(augment, size: tuple[int, int]) -> Callable | None:
    """The ``augment`` parameter as a callable on one uint8 ``(3, h, w)`` image, or None."""
    if augment is None:
        return None
    if isinstance(augment, str) and augment == "auto":
        return default_augment(size)
    if callable(augment):
        return augment
    raise ValueError(
        f"augment must be 'auto', None or a callable (e.g. a torchvision.transforms.v2 transform); got {augment!r}."
    )


def augmented(batch: torch.Tensor, augment: Callable | None) -> torch.Tensor:
    """Each uint8 image of ``batch`` through ``augment`` (its own random draw)."""
    if augment is None:
        return batch
    return torch.stack([augment(image) for image in batch])
