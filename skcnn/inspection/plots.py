"""The inspection tables as image grids (matplotlib)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ..decoding import images as image_io
from ..decoding.preprocessing import Preprocessing
from .activation_maps import class_activation_maps

#: Side of the images of a grid whose model is not given (the network's own crop is shown otherwise).
THUMBNAIL_SIDE = 224


def plot_top_losses(table: pd.DataFrame, X, *, k=9, model=None, ncols=3, figsize=None):
    """The first ``k`` rows of a :func:`top_losses` (or :func:`label_issues`) table as an image grid.

    Each image is titled with its given label, the predicted one and the
    probability of the given label. A regressor's rows are titled with the
    target and the prediction (with several outputs, those of up to three,
    else of the output with the largest error) and the loss; multi-label
    rows with the given labels, the predicted ones and the loss (and, for
    :func:`label_issues`, the labels cleanlab doubts).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`top_losses` or :func:`label_issues` on ``X``.
    X : sequence of images
        The images the table was made from (``position`` indexes them).
    k : int, default=9
        Rows shown.
    model : CNNClassifier or Pipeline or None, default=None
        A fitted model that :func:`class_activation_maps` supports: each
        image is then the centre crop the network saw, overlaid with the
        map of the predicted class (where the model found the evidence for
        what it predicted). ``None`` shows the whole images. For a
        regressor or multi-label targets, the crop the network saw,
        without a map.
    ncols : int, default=3
    figsize : (float, float) or None, default=None
        ``None``: 3 inches per image.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import plot_top_losses, top_losses
    >>> X, y = load_texture_patches(n_per_class=6, patch_size=64)
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), LogisticRegression()).fit(X, y)
    >>> figure = plot_top_losses(top_losses(model, X, y), X, k=4, model=model, ncols=2)
    >>> len([ax for ax in figure.axes if ax.images])
    4
    """
    images = image_io.as_image_list(X)
    rows = table.head(k)
    shown = [images[i] for i in rows["position"]]
    kind = _table_kind(rows)
    if model is None:
        pictures, overlays = [_thumbnail(image) for image in shown], [None] * len(shown)
    elif kind != "classification":  # no class maps of a regressor's outputs or of one label against the rest
        recipe, decode = _recipe(model)
        pictures, overlays = [_crop(image, recipe, decode) for image in shown], [None] * len(shown)
    else:
        recipe, decode = _recipe(model)
        pictures = [_crop(image, recipe, decode) for image in shown]
        maps = class_activation_maps(model, shown)
        classes = list(model.classes_)
        overlays = [maps[i, classes.index(predicted)] for i, predicted in enumerate(rows["predicted"])]
    titles = [_title(row, kind) + (f"\n{_name(row['path'])}" if "path" in rows else "") for _, row in rows.iterrows()]
    return _grid(pictures, titles, ncols, figsize, overlays)


def _table_kind(table: pd.DataFrame) -> str:
    """Which :func:`top_losses` table ``table`` is: ``"regression"``, ``"multilabel"`` or ``"classification"``."""
    if "prediction" in table or any(str(column).startswith("prediction_") for column in table.columns):
        return "regression"
    if "labels" in table and any(str(column).startswith("probability_") for column in table.columns):
        return "multilabel"
    return "classification"


def _title(row: pd.Series, kind: str) -> str:
    """A grid image's title: given and predicted, and the probability of the given label or the loss."""
    if kind == "classification":
        return f"{row['label']} / {row['predicted']}\n{row['probability']:.2f}"
    if kind == "multilabel":
        title = f"{row['labels'] or 'none'} / {row['predicted'] or 'none'}\nloss {row['loss']:.2f}"
        return title + (f", doubted: {row['doubted']}" if row.get("doubted") else "")
    if "prediction" in row:
        return f"target {row['target']:.3g} / predicted {row['prediction']:.3g}\nloss {row['loss']:.3g}"
    names = [str(column)[len("prediction_") :] for column in row.index if str(column).startswith("prediction_")]
    if len(names) > 3:  # the output with the largest error
        names = [max(names, key=lambda name: row[f"loss_{name}"])]
        shown = f"{names[0]}: {row[f'target_{names[0]}']:.3g} / {row[f'prediction_{names[0]}']:.3g}"
    else:
        targets = ", ".join(f"{row[f'target_{name}']:.2f}" for name in names)
        predictions = ", ".join(f"{row[f'prediction_{name}']:.2f}" for name in names)
        shown = f"target {targets} / predicted {predictions}"
    return f"{shown}\nloss {row['loss']:.3g}"


def plot_duplicates(pairs: pd.DataFrame, X, X_other=None, *, k=8, figsize=None):
    """The first ``k`` pairs of a :func:`find_duplicates` table side by side, with their similarity.

    Parameters
    ----------
    pairs : pandas.DataFrame
        From :func:`find_duplicates` on ``X`` (and ``X_other``).
    X : sequence of images
    X_other : sequence of images or None, default=None
        As given to :func:`find_duplicates` (``other_index`` indexes it).
    k : int, default=8
        Pairs shown, one per row.
    figsize : (float, float) or None, default=None

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import plot_duplicates
    >>> import pandas as pd
    >>> X, _ = load_texture_patches(n_per_class=2, patch_size=32)
    >>> pairs = pd.DataFrame({"index": [0], "other_index": [1], "similarity": [0.95], "exact": [False]})
    >>> len(plot_duplicates(pairs, X).axes)
    2
    """
    images = image_io.as_image_list(X)
    others = images if X_other is None else image_io.as_image_list(X_other)
    pictures, titles = [], []
    for row in pairs.head(k).itertuples():
        pictures += [_thumbnail(images[row.index]), _thumbnail(others[row.other_index])]
        kind = "same content" if row.exact else f"similarity {row.similarity:.3f}"
        where = "X_other" if X_other is not None else "X"
        titles += [f"X[{row.index}]", f"{where}[{row.other_index}]: {kind}"]
    return _grid(pictures, titles, 2, figsize, [None] * len(pictures))


def _grid(pictures: list, titles: list, ncols: int, figsize, overlays: list):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, len(pictures)))
    nrows = max(1, math.ceil(len(pictures) / ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=figsize or (3 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, title, overlay in zip(axes.flat, pictures, titles, overlays, strict=False):
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        if overlay is not None:
            h, w = picture.shape[:2]
            ax.imshow(overlay, cmap="jet", alpha=0.45, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def _recipe(model) -> tuple[Preprocessing, str]:
    """The model's preprocessing, and how far it lets a JPEG be scaled while decoded (``decode``)."""
    if isinstance(model, Pipeline):
        return model[0].extractor_.preprocessing(), model[0].decode
    return Preprocessing.from_dict(model.preprocessing_), model.decode  # a CNNClassifier (or CNNRegressor)


def _crop(image, recipe: Preprocessing, decode: str) -> np.ndarray:
    """The centre crop the network sees, as ``(h, w, 3)`` pixels to show: decoded as it decodes it
    (a 12 MP photo scaled in the DCT, several times faster than in full)."""
    pixels = image_io.load_image(image, min_side=recipe.min_decoded_side(decode))
    return _shown(recipe.crop(pixels).permute(1, 2, 0).numpy())


def _thumbnail(image) -> np.ndarray:
    from PIL import Image

    pixels = _shown(image_io.load_image(image, min_side=THUMBNAIL_SIDE))  # no more pixels than shown
    picture = Image.fromarray(pixels.squeeze())
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return np.asarray(picture)


def _shown(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (float ones in [0, 1] scaled) with one channel squeezed."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def _name(path) -> str:
    return "" if path is None else str(path).replace("\\", "/").rsplit("/", 1)[-1]
