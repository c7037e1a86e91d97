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

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchvision.transforms import v2

from ..decoding.symmetry import RandomSymmetry, check_fits
from ..options import AUGMENT_POLICIES

#: The part of the image a random crop keeps, at least: mild, as small data
#: sets and pretrained features call for (BiT-HyperRule and fastai use
#: crops of this order; a crop of 8% of the image, ImageNet's own, is for
#: training from scratch).
MIN_CROP_SCALE = 0.6


#: How many standard errors of the originals' accuracy a view may lose and
#: still count as keeping the label: a paired difference this small is noise.
LABEL_TOLERANCE_SE = 2.0


def policy_augment(policy: str, size: tuple[int, int]) -> Callable:
    """A named augmentation of uint8 ``(3, h, w)`` images of ``size``.

    ``"photo"``: a random resized crop (at least :data:`MIN_CROP_SCALE` of
    the image) and a horizontal flip, the ImageNet recipe; ``"crop"``: the
    crop alone (images a flip changes); ``"flips"`` and ``"dihedral"``: a
    random flip, or flip and 90-degree rotation, and no crop, for images
    without up or down whose evidence may be small (a crop can cut a crack
    away). :func:`label_preserving` measures which apply.
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

    ``"auto"`` takes the policy ``measured`` (by :func:`label_preserving` on
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


def label_preserving(
    codes: np.ndarray, targets: np.ndarray, view_codes: dict[str, np.ndarray], seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Whether each symmetry keeps the class, as a linear probe of the codes sees it.

    A probe (standardised codes, logistic regression) is fit on one half of
    the images and scored on the other half's originals and on their views,
    and the other way round. A symmetry that keeps the class keeps the
    accuracy (a flipped crack is still a crack); one that changes it loses
    accuracy (a flipped 6 is no 6, a rotated cell's busbars run the other way).

    Parameters
    ----------
    codes : ndarray of shape (n, d)
        Codes of the images as they are.
    targets : ndarray of shape (n,)
        Their classes.
    view_codes : dict of str to ndarray of shape (n, d)
        Codes of the same images under each symmetry (``GENERATORS``' names).
    seed : int
        Seeds the halves.

    Returns
    -------
    accuracies : dict of str to (float, float)
        For each symmetry: the probe's accuracy on the views and on the originals.
    """
    folds = StratifiedKFold(2, shuffle=True, random_state=seed).split(codes, targets)
    hits = {name: [] for name in ("original", *view_codes)}
    for train, test in folds:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(codes[train], targets[train])
        hits["original"].append(probe.predict(codes[test]) == targets[test])
        for name, moved in view_codes.items():
            hits[name].append(probe.predict(moved[test]) == targets[test])
    original = float(np.concatenate(hits["original"]).mean())
    return {name: (float(np.concatenate(hits[name]).mean()), original) for name in view_codes}


def symmetries_kept(accuracies: dict[str, tuple[float, float]], n_images: int) -> set[str]:
    """The symmetries whose views lose no more than :data:`LABEL_TOLERANCE_SE`
    standard errors of the originals' accuracy (measured by :func:`label_preserving`)."""
    kept = set()
    for name, (view, original) in accuracies.items():
        error = np.sqrt(max(original * (1 - original), 1e-4) / n_images)
        if original - view <= LABEL_TOLERANCE_SE * error:
            kept.add(name)
    return kept


def policy_for(kept: set[str]) -> str:
    """The augmentation the symmetries a set keeps allow.

    ``"dihedral"`` when flips and rotations keep the class (textures,
    cells, tiles), ``"flips"`` when both flips do, ``"photo"`` (random
    resized crops and a horizontal flip, the ImageNet recipe) when the
    horizontal flip does, ``"crop"`` (random resized crops alone) otherwise.
    """
    if {"hflip", "vflip", "rot90"} <= kept:
        return "dihedral"
    if {"hflip", "vflip"} <= kept:
        return "flips"
    return "photo" if "hflip" in kept else "crop"


def augmented(batch: torch.Tensor, augment: Callable | None) -> torch.Tensor:
    """Each uint8 image of ``batch`` through ``augment`` (its own random draw)."""
    if augment is None:
        return batch
    return torch.stack([augment(image) for image in batch])
