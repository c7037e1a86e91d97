"""Which flips and rotations keep the class, as a linear probe of the codes sees it.

Close-ups with no up or down (cells, tiles, textures, micrographs) keep
their class under the flips and 90-degree rotations of
:mod:`skcnn.decoding.symmetry`; digits, text and upright photos do not. A
probe fit on the codes of one half of a labelled sample and scored on the
other half's originals and turned copies tells which symmetries keep it
(:func:`label_preserving`); from them follow the augmentation
``augment="auto"`` trains with (:func:`augment_policy`) and the test-time
views ``tta="auto"`` weighs against one view (:func:`tta_candidate`), for
fine-tuning and for the frozen codes of :class:`~skcnn.LayerSearchCV`
alike.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..decoding import symmetry

#: Images on which ``augment="auto"`` measures which symmetries keep the
#: class (4 frozen forward passes each): its standard error at 256 is about 3%.
SYMMETRY_MAX_IMAGES = 256

#: How many standard errors of the originals' accuracy a view may lose and
#: still count as keeping the label: a paired difference this small is noise.
LABEL_TOLERANCE_SE = 2.0


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


def augment_policy(kept: set[str], crop_size: tuple[int, int]) -> str:
    """The augmentation ``augment="auto"`` takes where ``kept`` symmetries keep the class."""
    policy = policy_for(kept)
    if symmetry.needs_square(policy) and crop_size[0] != crop_size[1]:
        return "flips"  # rotations need a square input
    return policy


def tta_candidate(kept: set[str], crop_size: tuple[int, int]) -> str | None:
    """The views ``tta="auto"`` weighs against one view: those of the symmetries that keep the class.

    ``"dihedral"`` where flips and rotations keep it (rotations need a
    square input: ``"flips"`` on a rectangle), ``"flips"`` where both flips
    do, None otherwise (a horizontal flip alone is no policy of
    :mod:`skcnn.decoding.symmetry`).
    """
    policy = augment_policy(kept, crop_size)
    return policy if policy in symmetry.POLICIES else None


__all__ = [
    "LABEL_TOLERANCE_SE",
    "SYMMETRY_MAX_IMAGES",
    "augment_policy",
    "label_preserving",
    "policy_for",
    "symmetries_kept",
    "tta_candidate",
]
