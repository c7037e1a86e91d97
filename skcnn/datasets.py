"""Small real image sets that ship inside pip packages, for demos and tests.

scikit-image bundles CC0 photos of textures (brick, grass, gravel). Patches
cut from the left half of each photo train a classifier, patches from the
right half test it: train and test never share a pixel.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("brick", "grass", "gravel")


def load_texture_patches(
    split: str = "train",
    *,
    n_per_class: int = 40,
    patch_size: int = 64,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random patches of scikit-image's texture photos, labelled by texture.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"`` cuts patches from the left half of each photo, ``"test"``
        from the right half.
    n_per_class : int, default=40
        Patches per texture.
    patch_size : int, default=64
        Side of the square patches, in pixels (at most 256).
    random_state : int, default=0
        Seed of the patch positions.

    Returns
    -------
    images : ndarray of shape (3 * n_per_class, patch_size, patch_size), uint8
        Gray patches.
    labels : ndarray of shape (3 * n_per_class,), str
        The texture of each patch.

    Examples
    --------
    >>> from skcnn.datasets import load_texture_patches
    >>> images, labels = load_texture_patches("test", n_per_class=2, patch_size=32)
    >>> images.shape, sorted(set(labels.tolist()))
    ((6, 32, 32), ['brick', 'grass', 'gravel'])
    """
    from skimage import data

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    rng = np.random.default_rng([random_state, split == "test"])
    images, labels = [], []
    for texture in TEXTURES:
        photo = getattr(data, texture)()
        half = photo.shape[1] // 2
        if not 0 < patch_size <= half:
            raise ValueError(f"patch_size must be in [1, {half}]; got {patch_size}.")
        columns = (0, half - patch_size) if split == "train" else (half, photo.shape[1] - patch_size)
        for _ in range(n_per_class):
            top = rng.integers(0, photo.shape[0] - patch_size + 1)
            left = rng.integers(columns[0], columns[1] + 1)
            images.append(photo[top : top + patch_size, left : left + patch_size])
            labels.append(texture)
    return np.stack(images), np.asarray(labels)
