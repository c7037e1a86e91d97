"""Small real image sets that ship inside pip packages, for demos and tests.

- **Like ImageNet**: scikit-image bundles CC0 photos of textures (brick,
  grass, gravel). Patches cut from the left half of each photo train a
  classifier, patches from the right half test it: train and test never
  share a pixel.
- **Unlike ImageNet**: scikit-learn's 8 x 8 handwritten digits (1,797
  scans), split by class into disjoint training and test images.
- **Small local evidence**: close-ups of real surfaces (the texture
  photos) with a crack, a spot or a scratch drawn at a random place, most
  images flawless (:func:`make_surface_defects`).
- **Regression and multi-label targets**: crops made of several textures
  in random regions, with the share each covers as a continuous target
  (:func:`make_texture_mixtures`) or which ones appear as an indicator
  matrix (:func:`make_texture_collages`).
- **Your own images**: :func:`load_image_folder` reads a folder with one
  subfolder of image files per class, as :func:`sklearn.datasets.load_files`
  reads text; :func:`find_image_files` lists the image files below folders,
  and :func:`shown_path` is how their names are shown and written.
- **Planted faults**, for checking :mod:`skcnn.inspection`: crops of
  scikit-image's photos and near copies of them (re-encoded, resized,
  cropped), flipped labels, and texture patches beside flat grey (the
  evidence in one half).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .decoding.images import shown_path

TEXTURES = ("brick", "grass", "gravel")
#: scikit-image's photos (colour and gray) that :func:`load_photo_crops` cuts.
PHOTOS = ("astronaut", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "chelsea", "page",
          "retina", "hubble_deep_field", "moon", "brick", "grass", "gravel")  # fmt: skip
#: Crops whose pixel standard deviation is below this are flat (empty sky, a black border) and
#: left out by :func:`load_photo_crops`: such crops are copies of each other in truth.
FLAT_STD = 20.0
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


def load_photo_crops(side: int = 160, *, offset: int = 0, photos=PHOTOS) -> tuple[list[np.ndarray], np.ndarray]:
    """Non-overlapping square crops of scikit-image's photos: different pictures, some of one scene.

    Parameters
    ----------
    side : int, default=160
        Side of the crops, in pixels.
    offset : int, default=0
        Where the grid of crops starts, from the top left corner of each photo.
    photos : sequence of str, default=PHOTOS
        Names of ``skimage.data`` photos.

    Returns
    -------
    crops : list of ndarray of shape (side, side, 3), uint8
        RGB crops (gray photos repeated over three channels), flat ones
        (pixel standard deviation under ``FLAT_STD``) left out.
    photo : ndarray of shape (n_crops,), str
        The photo each crop comes from.

    Examples
    --------
    >>> from skcnn.datasets import load_photo_crops
    >>> crops, photo = load_photo_crops(128, photos=["astronaut"])
    >>> len(crops), crops[0].shape, str(photo[0])
    (16, (128, 128, 3), 'astronaut')
    """
    from skimage import data

    crops, names = [], []
    for name in photos:
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=2) if image.ndim == 2 else image[..., :3]
        for top in range(offset, image.shape[0] - side + 1, side):
            for left in range(offset, image.shape[1] - side + 1, side):
                crop = image[top : top + side, left : left + side]
                if crop.std() >= FLAT_STD:
                    crops.append(np.ascontiguousarray(crop))
                    names.append(name)
    return crops, np.asarray(names)


def near_copies(image: np.ndarray, random_state: int | np.random.Generator = 0) -> list[np.ndarray]:
    """Three near copies of an RGB image: re-encoded as JPEG at quality 70, resized 0.8x, and cropped
    by up to 10% of each side (at random, where ``random_state`` says).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), dtype uint8
        The original.
    random_state : int or numpy.random.Generator, default=0
        Where the crop falls.

    Returns
    -------
    copies : list of ndarray
        The re-encoded, the resized and the cropped copy.

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn.datasets import near_copies
    >>> [copy.shape for copy in near_copies(np.zeros((100, 100, 3), np.uint8))]
    [(100, 100, 3), (80, 80, 3), (91, 93, 3)]
    """
    import io

    from PIL import Image

    rng = np.random.default_rng(random_state)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=70)
    h, w = image.shape[:2]
    resized = Image.fromarray(image).resize((int(w * 0.8), int(h * 0.8)), Image.BICUBIC)
    ch, cw = h - int(rng.integers(0, h // 10 + 1)), w - int(rng.integers(0, w // 10 + 1))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return [
        np.asarray(Image.open(buffer).convert("RGB")),
        np.asarray(resized),
        np.ascontiguousarray(image[top : top + ch, left : left + cw]),
    ]


def flip_labels(labels, fraction: float = 0.1, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Planted label errors: ``fraction`` of the labels, drawn at random, each changed to another class.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        The true labels (at least two classes).
    fraction : float, default=0.1
        The share of labels changed.
    random_state : int, default=0
        Seed of the draw of positions and new classes.

    Returns
    -------
    noisy : ndarray of shape (n_samples,)
        The labels with the planted errors.
    flipped : ndarray of int
        The positions changed.

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn.datasets import flip_labels
    >>> labels = np.repeat(["a", "b"], 10)
    >>> noisy, flipped = flip_labels(labels, 0.2)
    >>> len(flipped), bool((noisy[flipped] != labels[flipped]).all()), int((noisy != labels).sum())
    (4, True, 4)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(random_state)
    flipped = rng.choice(len(labels), size=int(len(labels) * fraction), replace=False)
    noisy = labels.copy()
    classes = np.unique(labels)
    for i in flipped:
        noisy[i] = rng.choice(classes[classes != labels[i]])
    return noisy, flipped


def load_half_textures(
    n_per_class: int = 20, *, size: int = 128, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray images with a texture patch in one half (left or right at random) and flat grey in the other.

    Parameters
    ----------
    n_per_class : int, default=20
        Images per texture (brick, grass, gravel).
    size : int, default=128
        Side of the square images (even, at most 256).
    random_state : int, default=0
        Seed of the patches and of the sides.

    Returns
    -------
    images : ndarray of shape (3 * n_per_class, size, size), uint8
    labels : ndarray of shape (3 * n_per_class,), str
        The texture.
    sides : ndarray of shape (3 * n_per_class,), int
        0 where the texture is in the left half, 1 in the right.

    Examples
    --------
    >>> from skcnn.datasets import load_half_textures
    >>> images, labels, sides = load_half_textures(2, size=64)
    >>> images.shape, int(images[0, :, 32 * (1 - sides[0]):][:, :32].std())
    ((6, 64, 64), 0)
    """
    if size % 2 or not 0 < size <= 256:
        raise ValueError(f"size must be even and in [2, 256]; got {size}.")
    patches, labels = load_texture_patches(n_per_class=n_per_class, patch_size=size, random_state=random_state)
    sides = np.random.default_rng(random_state).integers(0, 2, len(patches))
    half = size // 2
    images = np.full_like(patches, 128)
    for image, patch, side in zip(images, patches, sides, strict=True):
        image[:, half * side : half * side + half] = patch[:, half // 2 : half // 2 + half]
    return images, labels, sides


#: The classes of :func:`make_surface_defects` and their shares: mostly
#: flawless, as inspection sets are (the largest class near 57%, the
#: rarest near 5%, like published solar-cell and steel-surface sets).
DEFECT_SHARES = {"ok": 0.57, "crack": 0.2, "spot": 0.15, "scratch": 0.08}


def make_surface_defects(
    n_images: int = 400,
    *,
    image_size: int = 300,
    shares: dict[str, float] | None = None,
    contrast: float = 0.35,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Close-ups of real surfaces with small defects drawn at random places.

    Each image is a random square crop of one of scikit-image's CC0
    texture photos (brick, grass, gravel), turned and flipped at random (a
    close-up has no up or down), with at most one defect that covers 0.5-3%
    of it: a dark thin ``"crack"`` (a jagged line a few pixels wide), a dark
    round ``"spot"``, or a bright straight ``"scratch"``; ``"ok"`` images
    have none. The evidence is small and local, as in industrial inspection:
    average-pooled codes of the whole image at 224 px dilute it.

    Parameters
    ----------
    n_images : int, default=400
        How many images.
    image_size : int, default=300
        Side of the square images, in pixels (at most 512).
    shares : dict of str to float or None, default=None
        Share of each class (normalised); None: ``DEFECT_SHARES`` (57% ok,
        20% crack, 15% spot, 8% scratch).
    contrast : float, default=0.35
        How far a defect darkens (or, a scratch, brightens) the surface, as a
        fraction of the full range: small values make faint defects.
    random_state : int, default=0
        Seeds the crops, the classes and the defects: two seeds give two
        disjoint draws (a training and a test set).

    Returns
    -------
    images : ndarray of shape (n_images, image_size, image_size), uint8
        Gray images.
    labels : ndarray of shape (n_images,), str
        The defect of each image (``"ok"`` for none).

    Examples
    --------
    >>> from skcnn.datasets import make_surface_defects
    >>> X, y = make_surface_defects(8, image_size=64, random_state=1)
    >>> X.shape, X.dtype, set(y) <= {"crack", "ok", "scratch", "spot"}
    ((8, 64, 64), dtype('uint8'), True)
    """
    from skimage import data

    if not 16 <= image_size <= 512:
        raise ValueError(f"image_size must be between 16 and 512 pixels; got {image_size}.")
    shares = DEFECT_SHARES if shares is None else shares
    rng = np.random.default_rng(random_state)
    photos = [getattr(data, name)() for name in TEXTURES]
    names = np.asarray(list(shares))
    probabilities = np.asarray([shares[name] for name in names], dtype=float)
    labels = names[rng.choice(len(names), size=n_images, p=probabilities / probabilities.sum())]
    images = np.empty((n_images, image_size, image_size), dtype=np.uint8)
    for i, label in enumerate(labels):
        surface = _surface_crop(photos[rng.integers(len(photos))], image_size, rng)
        images[i] = _with_defect(surface, label, contrast, rng)
    return images, labels


def _surface_crop(photo: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    top, left = (rng.integers(0, dim - side + 1) for dim in photo.shape[:2])
    crop = photo[top : top + side, left : left + side]
    crop = np.rot90(crop, rng.integers(4))
    return (crop[:, ::-1] if rng.random() < 0.5 else crop).astype(np.float32)


def _with_defect(surface: np.ndarray, label: str, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """``surface`` with a ``label`` defect blended in (``"ok"``: as it is)."""
    side = surface.shape[0]
    mask = np.zeros_like(surface)
    if label == "crack":  # a jagged dark line: a random walk, 2-4 px wide
        _draw_path(mask, _random_walk(side, rng), width=int(rng.integers(2, 5)))
    elif label == "spot":  # a dark disc of 1-3% of the area, soft-edged
        radius = side * np.sqrt(rng.uniform(0.01, 0.03) / np.pi)
        yy, xx = np.mgrid[:side, :side]
        centre = rng.uniform(radius, side - radius, size=2)
        distance = np.hypot(yy - centre[0], xx - centre[1])
        mask = np.clip(radius - distance + 1, 0, 1).astype(np.float32)
    elif label == "scratch":  # a bright straight line, 1-2 px wide
        start, end = rng.uniform(0.1 * side, 0.9 * side, size=(2, 2))
        _draw_path(mask, np.linspace(start, end, side), width=int(rng.integers(1, 3)))
        return np.clip(surface + mask * contrast * 255, 0, 255).astype(np.uint8)
    elif label != "ok":
        raise ValueError(f"Unknown defect {label!r}; use 'ok', 'crack', 'spot' or 'scratch'.")
    return np.clip(surface * (1 - mask * contrast * 1.5) - mask * contrast * 40, 0, 255).astype(np.uint8)


def _random_walk(side: int, rng: np.random.Generator) -> np.ndarray:
    """Points of a jagged line 40-70% of ``side`` long, inside the image."""
    length = int(rng.uniform(0.4, 0.7) * side)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, size=length))
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=1)
    points = np.cumsum(steps, axis=0)
    points -= points.min(axis=0)
    room = np.maximum(side - 1 - points.max(axis=0), 0)
    return points + rng.uniform(0, 1, size=2) * room


def _draw_path(mask: np.ndarray, points: np.ndarray, width: int) -> None:
    """Set ``mask`` to 1 within ``width`` pixels of ``points`` (row, column)."""
    side = mask.shape[0]
    half = width / 2
    for offset_y in np.arange(-half, half + 0.01, 0.5):
        for offset_x in np.arange(-half, half + 0.01, 0.5):
            rows = np.clip(np.round(points[:, 0] + offset_y).astype(int), 0, side - 1)
            cols = np.clip(np.round(points[:, 1] + offset_x).astype(int), 0, side - 1)
            mask[rows, cols] = 1.0


#: The textures of :func:`make_texture_mixtures` and :func:`make_texture_collages`: scikit-image's
#: CC0 photos of brick, grass and gravel, and ``"tissue"``, its immunohistochemistry slide (gray).
MIXED_TEXTURES = ("brick", "grass", "gravel", "tissue")
#: Range of the zoom of a texture crop (a crop of ``zoom * patch_size`` pixels resized to ``patch_size``).
TEXTURE_ZOOM = (0.75, 1.5)


def make_texture_mixtures(
    n_samples: int = 200,
    *,
    patch_size: int = 64,
    n_outputs: int = 1,
    split: str | None = None,
    random_state: int = 0,
    return_X_y: bool = False,
):
    """Gray crops made of several textures, with the share of the crop each covers as a continuous target.

    A regression set from photos that ship with pip. Each image is cut
    into regions by random boundaries, either parallel straight lines at a
    random angle or the outlines of random blobs, and each region is filled
    with a random crop of one of scikit-image's texture photos
    (``MIXED_TEXTURES``), turned by a random angle, zoomed by 0.75-1.5x,
    flipped at random, and brought to the image's brightness and contrast
    (so that a region is told from another by its texture, not its grey
    level). The target is the share of the image's pixels that the first
    ``n_outputs`` textures cover: with ``n_outputs=1``, how much of the
    crop is brick, the rest one other texture; with ``n_outputs=k``, the
    shares of the first ``k`` textures, one other texture filling the rest
    (for ``k < 4``). The shares are drawn uniformly from the simplex
    (a flat Dirichlet), and the target is the share of pixels each texture
    covers in the image.

    Parameters
    ----------
    n_samples : int, default=200
        How many images.
    patch_size : int, default=64
        Side of the square images, in pixels (16 to 256).
    n_outputs : int, default=1
        How many textures' shares are targets (1 to 4): ``y`` has shape
        ``(n_samples,)`` for 1, ``(n_samples, n_outputs)`` otherwise.
    split : {"train", "test"} or None, default=None
        ``"train"`` cuts the texture crops from the left half of each
        photo, ``"test"`` from the right half, so that a training and a
        test set never share a pixel; ``None`` from the whole photos.
    random_state : int, default=0
        Seeds the layouts, shares, crops and turns: two seeds give two
        different draws.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``images`` (ndarray of shape (n_samples, patch_size, patch_size),
        uint8, gray), ``target`` (float, in [0, 1]: the shares) and
        ``target_names`` (the textures whose shares they are).
    (images, target) : tuple
        With ``return_X_y=True``.

    See Also
    --------
    make_texture_collages : Which textures a crop holds (multi-label).

    Examples
    --------
    >>> from skcnn.datasets import make_texture_mixtures
    >>> data = make_texture_mixtures(4, patch_size=32, random_state=1)
    >>> data.images.shape, data.target.shape, data.target_names.tolist()
    ((4, 32, 32), (4,), ['brick'])
    >>> X, y = make_texture_mixtures(4, patch_size=32, n_outputs=3, return_X_y=True)
    >>> y.shape, bool(((0 <= y) & (y <= 1)).all() and (y.sum(axis=1) <= 1 + 1e-9).all())
    ((4, 3), True)
    """
    if not 1 <= n_outputs <= len(MIXED_TEXTURES):
        raise ValueError(f"n_outputs must be in [1, {len(MIXED_TEXTURES)}]; got {n_outputs}.")
    photos, rng = _mixture_start(patch_size, split, random_state)
    images = np.empty((n_samples, patch_size, patch_size), dtype=np.uint8)
    shares = np.zeros((n_samples, len(MIXED_TEXTURES)))
    for i in range(n_samples):
        parts = list(range(n_outputs))
        if n_outputs < len(MIXED_TEXTURES):  # one other texture fills the rest
            parts.append(int(rng.integers(n_outputs, len(MIXED_TEXTURES))))
        images[i], shares[i] = _texture_layout(
            photos, np.asarray(parts), rng.dirichlet(np.ones(len(parts))), patch_size, rng
        )
    target = shares[:, :n_outputs]
    target = target[:, 0] if n_outputs == 1 else target
    return _mixture_result(images, target, np.asarray(MIXED_TEXTURES[:n_outputs]), return_X_y)


def make_texture_collages(
    n_samples: int = 200,
    *,
    patch_size: int = 64,
    max_labels: int = 3,
    min_share: float = 0.1,
    split: str | None = None,
    random_state: int = 0,
    return_X_y: bool = False,
):
    """Gray crops holding one to ``max_labels`` textures in random regions, labelled by which they hold.

    A multi-label set from photos that ship with pip. Each image holds 1
    to ``max_labels`` of the four ``MIXED_TEXTURES`` (how many: uniform),
    each covering at least ``min_share`` of it, in regions cut as in
    :func:`make_texture_mixtures` (parallel straight lines at a random
    angle, or random blobs) and filled the same way (random crops, turned,
    zoomed, flipped, at the image's brightness and contrast). The target
    says which textures appear: a binary indicator matrix, as
    :func:`sklearn.datasets.make_multilabel_classification` returns.

    Parameters
    ----------
    n_samples : int, default=200
        How many images.
    patch_size : int, default=64
        Side of the square images, in pixels (16 to 256).
    max_labels : int, default=3
        Most textures in an image (1 to 4).
    min_share : float, default=0.1
        Smallest share of the image a texture that appears covers (a
        texture below it would be a sliver few annotators would label).
    split : {"train", "test"} or None, default=None
        As for :func:`make_texture_mixtures`: ``"train"`` and ``"test"``
        crop the left and the right halves of the photos.
    random_state : int, default=0
        Seeds the draw.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``images`` (ndarray of shape (n_samples, patch_size, patch_size),
        uint8, gray), ``target`` (ndarray of shape (n_samples, 4), int: 1
        where the texture appears), ``target_names`` (``MIXED_TEXTURES``)
        and ``shares`` (float: the share of the image each texture covers).
    (images, target) : tuple
        With ``return_X_y=True``.

    See Also
    --------
    make_texture_mixtures : The shares as a regression target.

    Examples
    --------
    >>> from skcnn.datasets import make_texture_collages
    >>> data = make_texture_collages(6, patch_size=32, random_state=1)
    >>> data.images.shape, data.target.shape, data.target_names.tolist()
    ((6, 32, 32), (6, 4), ['brick', 'grass', 'gravel', 'tissue'])
    >>> counts = data.target.sum(axis=1)
    >>> bool(((1 <= counts) & (counts <= 3)).all()), bool((data.shares[data.target == 1] >= 0.09).all())
    (True, True)
    """
    if not 1 <= max_labels <= len(MIXED_TEXTURES):
        raise ValueError(f"max_labels must be in [1, {len(MIXED_TEXTURES)}]; got {max_labels}.")
    if not 0 <= min_share <= 1 / max_labels:
        raise ValueError(f"min_share must be in [0, 1 / max_labels = {1 / max_labels:.3g}]; got {min_share}.")
    photos, rng = _mixture_start(patch_size, split, random_state)
    images = np.empty((n_samples, patch_size, patch_size), dtype=np.uint8)
    shares = np.zeros((n_samples, len(MIXED_TEXTURES)))
    for i in range(n_samples):
        n_parts = int(rng.integers(1, max_labels + 1))
        parts = rng.choice(len(MIXED_TEXTURES), size=n_parts, replace=False)
        drawn = min_share + (1 - n_parts * min_share) * rng.dirichlet(np.ones(n_parts))
        images[i], shares[i] = _texture_layout(photos, parts, drawn, patch_size, rng)
    result = _mixture_result(images, (shares > 0).astype(int), np.asarray(MIXED_TEXTURES), return_X_y)
    if not return_X_y:
        result["shares"] = shares
    return result


def _mixture_start(patch_size: int, split: str | None, random_state: int):
    """The texture photos (or their halves) and the generator of one draw."""
    from skimage import data

    if not 16 <= patch_size <= 256:
        raise ValueError(f"patch_size must be between 16 and 256 pixels; got {patch_size}.")
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None; got {split!r}.")
    photos = [getattr(data, name)() for name in TEXTURES]
    tissue = data.immunohistochemistry()[..., :3].astype(np.float64) @ [0.2125, 0.7154, 0.0721]
    photos.append(np.round(tissue).astype(np.uint8))
    if split is not None:
        photos = [photo[:, : photo.shape[1] // 2] if split == "train" else photo[:, photo.shape[1] // 2 :]
                  for photo in photos]  # fmt: skip
    seed = [random_state, {None: 0, "train": 1, "test": 2}[split]]
    return photos, np.random.default_rng(seed)


def _mixture_result(images: np.ndarray, target: np.ndarray, names: np.ndarray, return_X_y: bool):
    if return_X_y:
        return images, target
    from sklearn.utils import Bunch

    return Bunch(images=images, target=target, target_names=names)


def _texture_layout(photos: list, parts: np.ndarray, shares: np.ndarray, side: int, rng: np.random.Generator):
    """An image of the textures ``parts`` (indices into ``photos``) covering about ``shares`` of it,
    and the share of its pixels that each texture of ``photos`` covers."""
    regions = _regions(side, shares, rng)
    mean, std = rng.uniform(96, 160), rng.uniform(28, 48)  # the image's brightness and contrast
    image = np.empty((side, side))
    for j, part in enumerate(parts):
        where = regions == j
        crop = _turned_crop(photos[part], side, rng)
        crop = (crop - crop.mean()) / max(crop.std(), 1.0)
        image[where] = mean + rng.normal(0, 6) + crop[where] * std * rng.uniform(0.9, 1.1)
    covered = np.zeros(len(photos))
    np.add.at(covered, parts, np.bincount(regions.ravel(), minlength=len(parts)) / side**2)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), covered


def _regions(side: int, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which of ``len(shares)`` regions each pixel is in, region ``j`` about ``shares[j]`` of them: bands
    between parallel straight lines at a random angle, or level sets of a smooth random field (blobs)."""
    if len(shares) == 1:
        return np.zeros((side, side), dtype=int)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[:side, :side]
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * xx + np.sin(angle) * yy
    else:
        from scipy.ndimage import gaussian_filter

        field = gaussian_filter(rng.normal(size=(side, side)), sigma=side * rng.uniform(0.08, 0.2))
    order = rng.permutation(len(shares))  # which region lies where along the field
    thresholds = np.quantile(field, np.cumsum(shares[order])[:-1])
    return order[np.searchsorted(thresholds, field, side="right")]


def _turned_crop(photo: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` crop of ``photo`` at a random place, turned by a random angle, zoomed
    (``TEXTURE_ZOOM``, less where the photo is too small) and flipped at random, as float."""
    from PIL import Image

    fits = (min(photo.shape) - 2) / (side * np.sqrt(2))  # the largest zoom whose turned crop fits
    zoom = rng.uniform(min(TEXTURE_ZOOM[0], fits), min(TEXTURE_ZOOM[1], fits))
    window = min(int(np.ceil(side * zoom * np.sqrt(2))) + 2, min(photo.shape))
    top, left = (int(rng.integers(0, dim - window + 1)) for dim in photo.shape)
    turned = Image.fromarray(photo[top : top + window, left : left + window])
    turned = turned.rotate(rng.uniform(0, 360), resample=Image.BILINEAR)
    start, inner = (window - side * zoom) / 2, side * zoom
    box = (start, start, start + inner, start + inner)
    crop = np.asarray(turned.resize((side, side), Image.BILINEAR, box=box), dtype=np.float64)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def find_image_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The image files among ``paths``, and those below its folders, searched recursively.

    A file is an image file by its extension: those Pillow can open
    (``.jpg``, ``.png``, ``.tif``, ``.webp`` ...), in any case. Hidden files
    and folders (names starting with ``.``) are skipped. Files named
    explicitly are kept whatever their extension; whether they decode is
    checked where they are used, which names those that do not.

    Parameters
    ----------
    paths : str, path, or iterable of them
        Image files and folders.

    Returns
    -------
    files : list of str
        The files named, then each folder's image files in sorted order.

    Raises
    ------
    FileNotFoundError
        When a path is neither a file nor a folder.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skcnn.datasets import find_image_files
    >>> root = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(root / "a.png")
    >>> _ = (root / "notes.txt").write_text("not an image")
    >>> [Path(f).name for f in find_image_files(root)]
    ['a.png']
    """
    from PIL import Image

    extensions = {extension.lower() for extension in Image.registered_extensions()}
    found = []
    for item in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        if item.is_dir():
            found += sorted(
                os.fspath(path)
                for path in item.rglob("*")
                if path.suffix.lower() in extensions
                and not any(part.startswith(".") for part in path.relative_to(item).parts)
                and not path.is_dir()  # a FIFO or a device named .jpg is kept: the reader names it
            )
        elif item.exists():  # a file, or a FIFO or device the reader names as bad
            found.append(os.fspath(item))
        else:
            raise FileNotFoundError(f"{os.fspath(item)!r} is neither an image file nor a folder.")
    return found


def load_image_folder(path: str | os.PathLike, *, return_X_y: bool = False):
    """The image files below ``path/<class>/``, labelled by their class folder.

    The layout of :func:`sklearn.datasets.load_files` (and of torchvision's
    ``ImageFolder``): one subfolder per class, its image files (searched
    recursively, as :func:`find_image_files`) that class's images. Nothing
    is decoded here: the estimators name the files that cannot be used.

    Parameters
    ----------
    path : str or path
        The folder of class folders.
    return_X_y : bool, default=False
        Return ``(filenames, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``filenames`` (list of str, the images, class by class),
        ``target`` (ndarray of str: each image's class folder name, so that
        a fitted model's ``classes_`` are the folder names) and
        ``target_names`` (the class names, sorted).
    (filenames, target) : tuple
        With ``return_X_y=True``.

    Raises
    ------
    ValueError
        When ``path`` is not a folder, or fewer than two class folders hold images.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skcnn.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (root / label).mkdir()
    ...     Image.new("RGB", (8, 8)).save(root / label / "1.png")
    >>> data = load_image_folder(root)
    >>> data.target_names.tolist(), data.target.tolist()
    (['cat', 'dog'], ['cat', 'dog'])
    >>> X, y = load_image_folder(root, return_X_y=True)
    >>> len(X)
    2
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{os.fspath(path)!r} is not a folder (expected one subfolder of image files per class).")
    filenames, target = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = find_image_files(folder)
        filenames += found
        target += [folder.name] * len(found)
    if len(set(target)) < 2:
        raise ValueError(
            f"{os.fspath(path)!r}: {len(set(target))} class folder(s) with image files; at least two "
            "are needed (FOLDER/<class>/<image files>)."
        )
    target = np.asarray(target)
    if return_X_y:
        return filenames, target
    from sklearn.utils import Bunch

    return Bunch(filenames=filenames, target=target, target_names=np.unique(target))


__all__ = [
    "find_image_files",
    "flip_labels",
    "load_digit_images",
    "load_half_textures",
    "load_image_folder",
    "load_photo_crops",
    "load_texture_patches",
    "make_surface_defects",
    "make_texture_collages",
    "make_texture_mixtures",
    "near_copies",
    "shown_path",
]
