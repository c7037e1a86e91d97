"""Small real image sets that ship inside pip packages, for demos and tests.

- **Like ImageNet**: scikit-image bundles CC0 photos of textures (brick,
  grass, gravel). Patches cut from the left half of each photo train a
  classifier, patches from the right half test it: train and test never
  share a pixel.
- **Unlike ImageNet**: scikit-learn's 8 x 8 handwritten digits (1,797
  scans), split by class into disjoint training and test images.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("brick", "grass", "gravel")
#: Training images per digit at most, leaving every digit a few test images
#: (the rarest digit has 174 scans).
DIGITS_MAX_PER_CLASS = 170


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


def load_digit_images(
    split: str = "train",
    *,
    n_per_class: int = 50,
    test_per_class: int | None = None,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as 8 x 8 uint8 gray images: data unlike ImageNet.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"``: ``n_per_class`` images of each digit, drawn with
        ``random_state``; ``"test"``: the other images.
    n_per_class : int, default=50
        Training images per digit (at most 170: the rarest digit has 174).
    test_per_class : int or None, default=None
        Test images per digit at most (``None``: all the others).
    random_state : int, default=0
        Seed of the draw; the same seed gives disjoint splits.

    Returns
    -------
    images : ndarray of shape (n_images, 8, 8), uint8
        Gray images, ink bright on a dark ground (the scans' 0-16 levels scaled to 0-255).
    labels : ndarray of shape (n_images,), int
        The digit.

    Examples
    --------
    >>> from skcnn.datasets import load_digit_images
    >>> images, labels = load_digit_images(n_per_class=3)
    >>> images.shape, images.dtype.name, sorted(set(labels.tolist()))
    ((30, 8, 8), 'uint8', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    digits = load_digits()
    if not 0 < n_per_class <= DIGITS_MAX_PER_CLASS:
        raise ValueError(f"n_per_class must be in [1, {DIGITS_MAX_PER_CLASS}]; got {n_per_class}.")
    rng = np.random.default_rng(random_state)
    train = np.concatenate(
        [rng.permutation(np.flatnonzero(digits.target == digit))[:n_per_class] for digit in range(10)]
    )
    if split == "train":
        rows = rng.permutation(train)
    else:
        rest = np.setdiff1d(np.arange(len(digits.target)), train)
        rows = np.concatenate([rest[digits.target[rest] == digit][:test_per_class] for digit in range(10)])
    images = np.round(digits.images[rows] * (255 / 16)).astype(np.uint8)
    return images, digits.target[rows]
