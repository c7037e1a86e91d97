"""Which test-time views the layer search weighs: the flips and rotations that keep the class.

``LayerSearchCV(ttas="auto")`` measures them as fine-tuning's
``augment="auto"`` does (:func:`skcnn.codes.invariance.label_preserving`):
the frozen penultimate codes of a labelled sample, as they are and turned,
read by a probe fit on one half and scored on the other. Close-ups with
no up or down keep all of them and earn the 8 views of ``"dihedral"``;
cells whose busbars run one way, both flips (``"flips"``); digits and
upright photos too few for a policy, so that the search extracts nothing
more for them.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import resample
from torchvision.transforms.v2 import functional as F

from ..codes.invariance import SYMMETRY_MAX_IMAGES, label_preserving, symmetries_kept, tta_candidate
from ..decoding import symmetry
from ..decoding.images import ImageError, load_image
from ..options import PENULTIMATE
from .transformer import CNNFeatureTransformer

#: Images decoded, turned and coded at a time: what the measurement holds
#: in memory is bounded whatever the number and size of the images.
CHUNK = 64


def measured_views(
    transformer: CNNFeatureTransformer, images: list, labels: np.ndarray, seed: int = 0
) -> tuple[str | None, set[str] | None]:
    """The test-time views of the flips and rotations that keep the class, and those symmetries.

    Measured on the penultimate codes of at most
    :data:`~skcnn.codes.invariance.SYMMETRY_MAX_IMAGES` images (a
    stratified draw), at the transformer's input size and crop, one view each.

    Parameters
    ----------
    transformer : CNNFeatureTransformer
        The network; its ``layer``, ``tta`` and ``cache`` are not used (the
        turned copies are no images of the user's to cache).
    images : list
    labels : ndarray of shape (n_images,)
    seed : int, default=0
        Seeds the draw and the probe's halves.

    Returns
    -------
    tta : str or None
        :func:`~skcnn.codes.invariance.tta_candidate` of ``kept`` at the
        transformer's input: ``"dihedral"``, ``"flips"`` or None.
    kept : set of str or None
        The symmetries (``skcnn.decoding.symmetry.GENERATORS``' names) that
        keep the class; None where the sample has fewer than two images of
        a class (images that cannot be decoded are left out): nothing is
        measured, and ``tta`` is None.
    """
    rows = np.arange(len(labels))
    if len(rows) > SYMMETRY_MAX_IMAGES:
        rows = np.sort(resample(rows, replace=False, n_samples=SYMMETRY_MAX_IMAGES, stratify=labels, random_state=seed))
    network = clone(transformer).set_params(layer=PENULTIMATE, pooling="avg", tta=None, cache=None, progress=False)
    network.fit(images[:1])
    side = 2 * max(network.input_size_)  # enough detail for the network's resize, and bounded memory
    generators = dict(symmetry.GENERATORS)
    if network.input_size_[0] != network.input_size_[1]:
        del generators["rot90"]  # a rectangle turned is another input size
    codes, targets = {name: [] for name in ("original", *generators)}, []
    for start in range(0, len(rows), CHUNK):
        pixels, kept_rows = _decoded([images[row] for row in rows[start : start + CHUNK]], side)
        targets.append(labels[rows[start : start + CHUNK]][kept_rows])
        for name, view in {"original": lambda x: x, **generators}.items():
            turned = [view(image).permute(1, 2, 0).contiguous().numpy() for image in pixels]
            if turned:
                codes[name].append(network.transform(turned))
    targets = np.concatenate(targets)
    counts = np.unique(targets, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 2:
        return None, None
    views = {name: np.concatenate(found) for name, found in codes.items()}
    original = views.pop("original")
    kept = symmetries_kept(label_preserving(original, targets, views, seed), len(targets))
    return tta_candidate(kept, network.input_size_), kept


def _decoded(images: list, side: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """The images that decode, as ``(C, H, W)`` tensors whose shorter side is at most ``side``, and
    which of ``images`` they are (one that does not decode is named by the search's own warning)."""
    pixels, kept = [], []
    for position, image in enumerate(images):
        try:
            decoded = np.require(load_image(image, min_side=side), requirements=["C", "W"])  # as torch wants
            array = torch.from_numpy(decoded).permute(2, 0, 1)
        except ImageError:
            continue
        if min(array.shape[1:]) > side:
            array = F.resize(array, side, antialias=True)
        pixels.append(array)
        kept.append(position)
    return pixels, np.asarray(kept, dtype=int)


__all__ = ["CHUNK", "measured_views"]
