"""The images a model is most wrong about, and those whose given label it doubts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone

from .. import images as image_io
from .models import (
    Probabilities,
    check_model,
    image_path,
    note_failures,
    out_of_fold_probabilities,
    probabilities,
    shown_labels,
)

#: Smallest probability a loss is computed from (as :func:`sklearn.metrics.log_loss` clips).
EPS = np.finfo(np.float64).eps


def top_losses(model, X, y, *, cv=None) -> pd.DataFrame:
    """Every image with the model's loss on its given label, worst first.

    Parameters
    ----------
    model : CNNClassifier or Pipeline
        A fitted :class:`~skcnn.CNNClassifier`, or a fitted scikit-learn
        pipeline whose first step is a :class:`~skcnn.CNNFeatureTransformer`.
        With ``cv``, an estimator of either kind, fitted or not: a clone of
        it is fit on each training fold.
    X : sequence of images
        Paths, PIL images or arrays, as the model takes them.
    y : array-like of shape (n_samples,)
        The given labels.
    cv : int, cross-validation generator, iterable or None, default=None
        ``None`` scores ``X`` with the fitted model (a held-out set, or the
        training set as the model fit it). Otherwise the losses are out of
        fold (:func:`~sklearn.model_selection.cross_val_predict`), so that
        the training set itself can be inspected. A pipeline's frozen codes
        are computed once, not once per fold.

    Returns
    -------
    table : pandas.DataFrame
        One row per usable image, the largest ``loss`` first: ``position``
        (row in ``X``), ``path`` (where ``X`` holds paths), ``label``,
        ``predicted``, ``probability`` (of the given label) and ``loss``
        (its negative log). Paths and string labels are as
        :func:`skcnn.datasets.shown_path` shows them: bytes of a file or
        folder name that are not UTF-8 escaped. For a classifier without
        ``predict_proba`` (``LinearSVC``) the probabilities are the softmax
        of its decision function: a ranking, not calibrated. Images that
        could not be used are left out, named in a warning and in
        ``table.attrs["failed"]``.

    See Also
    --------
    label_issues : The images whose label out-of-fold predictions doubt.
    plot_top_losses : The first rows as an image grid.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import top_losses
    >>> X, y = load_texture_patches(n_per_class=8, patch_size=32)
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), LogisticRegression())
    >>> table = top_losses(model, X, y, cv=2)
    >>> list(table.columns)
    ['position', 'label', 'predicted', 'probability', 'loss']
    >>> len(table), bool(table["loss"].is_monotonic_decreasing)
    (24, True)
    """
    images, labels = _checked(X, y)
    if cv is None:
        result = probabilities(model, images)
    else:
        result = out_of_fold_probabilities(clone(model), images, labels, cv)
    return worst_first(scores_table(images, labels, result, stacklevel=2))


def label_issues(estimator, X, y, *, cv=5, filter_by="prune_by_noise_rate") -> pd.DataFrame:
    """The images whose given label the out-of-fold predictions most doubt, most doubtful first.

    Confident learning (Northcutt et al., 2021) through ``cleanlab``'s
    :func:`cleanlab.filter.find_label_issues`: out-of-fold probabilities
    estimate how often each class is labelled as each other one, and the
    images flagged are the least confident ones of those counts.

    Parameters
    ----------
    estimator : CNNClassifier or Pipeline
        As for :func:`top_losses` with ``cv``: a clone is fit on each fold.
    X : sequence of images
    y : array-like of shape (n_samples,)
        The given labels.
    cv : int, cross-validation generator or iterable, default=5
        The folds of the out-of-fold probabilities.
    filter_by : str, default="prune_by_noise_rate"
        ``cleanlab``'s rule for flagging (its ``filter_by``).

    Returns
    -------
    table : pandas.DataFrame
        The flagged images, lowest ``label_quality`` (the out-of-fold
        probability of the given label) first, with the columns of
        :func:`top_losses` and ``label_quality``.

    Raises
    ------
    ImportError
        When ``cleanlab`` is not installed (``pip install skcnn[inspection]``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import label_issues
    >>> X, y = load_texture_patches(n_per_class=10, patch_size=48)
    >>> y[[0, 10]] = y[[20, 20]]  # two brick patches labelled as gravel
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), LogisticRegression())
    >>> issues = label_issues(model, X, y, cv=3)
    >>> sorted(set(issues["position"].head(2).tolist()))
    [0, 10]
    """
    return out_of_fold_losses(estimator, X, y, cv=cv, filter_by=filter_by)[1]


def out_of_fold_losses(estimator, X, y, *, cv=5, filter_by="prune_by_noise_rate") -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`top_losses` out of fold and :func:`label_issues`, from one fit per fold.

    Both tables read the same out-of-fold probabilities, so a report that
    wants both fits ``cv`` clones, not twice as many.

    Parameters
    ----------
    estimator : CNNClassifier or Pipeline
        As for :func:`label_issues`: a clone is fit on each fold.
    X : sequence of images
    y : array-like of shape (n_samples,)
        The given labels.
    cv : int, cross-validation generator or iterable, default=5
        The folds.
    filter_by : str, default="prune_by_noise_rate"
        ``cleanlab``'s rule for flagging (its ``filter_by``).

    Returns
    -------
    losses : pandas.DataFrame
        As :func:`top_losses` with ``cv``.
    issues : pandas.DataFrame
        As :func:`label_issues`.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import out_of_fold_losses
    >>> X, y = load_texture_patches(n_per_class=8, patch_size=32)
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), LogisticRegression())
    >>> losses, issues = out_of_fold_losses(model, X, y, cv=2)
    >>> len(losses), list(issues.columns)[-1]
    (24, 'label_quality')
    """
    check_cleanlab()  # before any image is read
    check_model(estimator, "estimator")
    images, labels = _checked(X, y)
    result = out_of_fold_probabilities(clone(estimator), images, labels, cv)
    return losses_and_issues(scores_table(images, labels, result, stacklevel=2), labels, result, filter_by)


def check_cleanlab() -> None:
    """A clear error where ``cleanlab`` is not installed."""
    _cleanlab()


def losses_and_issues(
    table: pd.DataFrame, labels: np.ndarray, result: Probabilities, filter_by: str = "prune_by_noise_rate"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`out_of_fold_losses` of a :func:`scores_table` of out-of-fold probabilities."""
    find_label_issues, get_label_quality_scores = _cleanlab()
    rows = table["position"].to_numpy()
    given = np.searchsorted(result.classes, labels[rows])  # the labels themselves: the table's are as shown
    proba = result.proba[rows]
    flagged = find_label_issues(given, proba, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    issues = table.assign(label_quality=get_label_quality_scores(given, proba, method="self_confidence"))
    return worst_first(table), issues.iloc[flagged].reset_index(drop=True)


def worst_first(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`scores_table`, the largest loss first."""
    return table.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def _cleanlab():
    """cleanlab's ``find_label_issues`` and ``get_label_quality_scores``."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError as error:
        raise ImportError(
            "label_issues finds label errors with cleanlab's confident learning: pip install cleanlab "
            "(or skcnn[inspection])."
        ) from error
    return find_label_issues, get_label_quality_scores


def _checked(X, y) -> tuple[list, np.ndarray]:
    images = image_io.as_image_list(X)
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"y must hold one label per image: X has {len(images)} images, y has shape {labels.shape}.")
    return images, labels


def scores_table(images: list, labels: np.ndarray, result: Probabilities, stacklevel: int = 1) -> pd.DataFrame:
    """One row per usable image: its given and predicted label and the loss on the given one.

    The images left out are named in a warning for the caller ``stacklevel`` frames up.
    """
    usable = np.flatnonzero(~np.isnan(result.proba).any(axis=1))
    proba, given = result.proba[usable], labels[usable]
    column = np.searchsorted(result.classes, given).clip(max=len(result.classes) - 1)
    known = result.classes[column] == given  # a label the model never saw has probability 0
    probability = np.where(known, proba[np.arange(len(usable)), column], 0.0)
    table = pd.DataFrame({"position": usable})
    if any(image_path(image) for image in images):
        table["path"] = [image_path(images[i]) for i in usable]
    table["label"] = shown_labels(given)
    table["predicted"] = shown_labels(result.classes[proba.argmax(axis=1)] if len(usable) else given)
    table["probability"] = probability
    table["loss"] = -np.log(np.clip(probability, EPS, 1.0))
    note_failures(table, result.failures, len(images), stacklevel=stacklevel + 1)
    return table
