"""Augmentation of training batches: random resized crops and flips, or the
flips and rotations of orientation-free images.

Applied to training batches only, never to the validation split or to
prediction. Images are kept as uint8 network inputs (resized and centre
cropped once, when decoded); each batch is augmented image by image (each
its own crop) and then normalised with the weights' own mean and std
(:meth:`skcnn.decoding.preprocessing.Preprocessing.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from ..decoding.symmetry import RandomSymmetry, check_fits
from ..options import AUGMENT_POLICIES

#: The part of the image a random crop keeps, at least: mild, as small data
#: sets and pretrained features call for (BiT-HyperRule and fastai use
#: crops of this order; a crop of 8% of the image, ImageNet's own, is for
#: training from scratch).
MIN_CROP_SCALE = 0.6


def policy_augment(policy: str, size: tuple[int, int]) -> Callable:
    """A named augmentation of uint8 ``(3, h, w)`` images of ``size``.

    ``"photo"``: a random resized crop (at least :data:`MIN_CROP_SCALE` of
    the image) and a horizontal flip, the ImageNet recipe; ``"crop"``: the
    crop alone (images a flip changes); ``"flips"`` and ``"dihedral"``: a
    random flip, or flip and 90-degree rotation, and no crop, for images
    without up or down whose evidence may be small (a crop can cut a crack
    away). :func:`~skcnn.codes.invariance.label_preserving` measures which apply.
    """
    crop = v2.RandomResizedCrop(size, scale=(MIN_CROP_SCALE, 1.0), antialias=True)
    if policy == "photo":
        return v2.Compose([crop, v2.RandomHorizontalFlip()])
    if policy == "crop":
        return crop
    check_fits(policy, size, "augment")
    return RandomSymmetry(policy)


def default_augment(size: tuple[int, int]) -> Callable:
    """The photo recipe (``"photo"``): where no measurement says otherwise."""
    return policy_augment("photo", size)


def resolve_augment(augment, size: tuple[int, int], measured: str | None = None) -> Callable | None:
    """The ``augment`` parameter as a callable on one uint8 ``(3, h, w)`` image, or None.

    ``"auto"`` takes the policy ``measured`` (by :func:`~skcnn.codes.invariance.label_preserving` on
    the training images), the photo recipe when nothing was measured.
    """
    if augment is None:
        return None
    if isinstance(augment, str) and augment == "auto":
        return policy_augment(measured or "photo", size)
    if isinstance(augment, str) and augment in AUGMENT_POLICIES:
        return policy_augment(augment, size)
    if callable(augment):
        return augment
    raise ValueError(
        f"augment must be 'auto', one of {list(AUGMENT_POLICIES)}, None or a callable (e.g. a "
        f"torchvision.transforms.v2 transform); got {augment!r}."
    )


def augmented(batch: torch.Tensor, augment: Callable | None) -> torch.Tensor:
    """Each uint8 image of ``batch`` through ``augment`` (its own random draw)."""
    if augment is None:
        return batch
    return torch.stack([augment(image) for image in batch])
