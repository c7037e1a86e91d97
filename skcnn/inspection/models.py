"""The models inspection reads, and their class probabilities per image.

Two kinds of model: a :class:`~skcnn.CNNClassifier`, and a scikit-learn
:class:`~sklearn.pipeline.Pipeline` whose first step is a
:class:`~skcnn.CNNFeatureTransformer`. A pipeline's network is frozen, so
out-of-fold probabilities compute each image's codes once and
cross-validate the steps after it on them: the same predictions as
cross-validating the whole pipeline, without running the network once per
fold.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import NamedTuple

import numpy as np
from scipy.special import softmax
from sklearn.base import clone
from sklearn.model_selection import check_cv, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .. import images as image_io
from ..datasets import shown_path
from ..finetuning.classifier import CNNClassifier
from ..transformer import CNNFeatureTransformer

SUPPORTED = (
    "a CNNClassifier, or a scikit-learn Pipeline whose first step is a CNNFeatureTransformer "
    "(make_pipeline(CNNFeatureTransformer(...), ...))"
)


class Probabilities(NamedTuple):
    """Class probabilities of the images that could be used; the others named."""

    proba: np.ndarray  # (n_images, n_classes), NaN rows for the failures
    classes: np.ndarray
    failures: list[image_io.ImageFailure]


def check_model(model, name: str = "model") -> None:
    """``model`` is one of the kinds inspection reads, or a clear error."""
    if isinstance(model, CNNClassifier):
        return
    if isinstance(model, Pipeline) and isinstance(model.steps[0][1], CNNFeatureTransformer):
        if len(model.steps) < 2:
            raise ValueError(f"{name} is a Pipeline of a CNNFeatureTransformer alone; it needs a classifier after it.")
        return
    raise TypeError(f"{name} must be {SUPPORTED}; got {type(model).__name__}.")


def probabilities(model, images: list) -> Probabilities:
    """A fitted model's class probabilities of ``images`` (softmax of the decision
    function where the classifier has no ``predict_proba``)."""
    check_model(model)
    check_is_fitted(model)
    if isinstance(model, CNNClassifier):
        try:
            return Probabilities(model.predict_proba(images), model.classes_, [])
        except image_io.BadImagesError as error:  # the logits of the others are in the error
            return Probabilities(softmax(error.codes.astype(np.float64), axis=1), model.classes_, error.failures)
    codes, failures = _codes(model[0], images, fit=False)
    steps = model[1:]
    proba = _rows_of_usable(codes, len(steps.classes_), lambda X: _probabilities(steps, X))
    return Probabilities(proba, steps.classes_, failures)


def out_of_fold_probabilities(estimator, images: list, labels: np.ndarray, cv) -> Probabilities:
    """Each image's class probabilities from a clone of ``estimator`` fit on the folds without it."""
    check_model(estimator, "estimator")
    classes = np.unique(labels)
    if isinstance(estimator, CNNClassifier):
        return _classifier_out_of_fold(estimator, images, labels, cv)
    codes, failures = _codes(clone(estimator[0]), images, fit=True)
    steps = clone(estimator[1:])
    method = "predict_proba" if hasattr(steps, "predict_proba") else "decision_function"
    usable = ~np.isnan(codes).any(axis=1)
    _check_classes_kept(labels, np.flatnonzero(usable), failures)

    def predict(X):
        scores = cross_val_predict(steps, X, labels[usable], cv=cv, method=method)
        return scores if method == "predict_proba" else _normalised(scores)

    return Probabilities(_rows_of_usable(codes, len(classes), predict), classes, failures)


def _classifier_out_of_fold(estimator: CNNClassifier, images: list, labels: np.ndarray, cv) -> Probabilities:
    """A clone fit per fold of the usable images, each predicting its held-out ones; one code store for all.

    The bad images are found first (:func:`skcnn.check_images`), so that
    the folds split the usable images as a user's clean set would split.
    The folds' fits share a code cache (the estimator's, or a temporary
    file) and the decoded-crop store: an image is decoded once for all the
    fits, not once per fold, and once for its prediction.
    """
    ok, failures = image_io.check_images(images, max_pixels=estimator.max_pixels)
    usable = np.flatnonzero(ok)
    _check_classes_kept(labels, usable, failures)
    classes = np.unique(labels[usable])
    proba = np.full((len(images), len(classes)), np.nan)
    with tempfile.TemporaryDirectory(prefix="skcnn-inspection-") as folder:
        cache = estimator.cache if estimator.cache is not None else os.path.join(folder, "codes.h5")
        shared = clone(estimator).set_params(cache=cache)
        for train, test in check_cv(cv, labels[usable], classifier=True).split(usable[:, None], labels[usable]):
            train, test = usable[train], usable[test]
            fitted = clone(shared).fit([images[i] for i in train], labels[train])
            rows = np.zeros((len(test), len(classes)))  # a class this fold never saw: probability 0
            rows[:, np.searchsorted(classes, fitted.classes_)] = fitted.predict_proba([images[i] for i in test])
            proba[test] = rows
    return Probabilities(proba, classes, failures)


def _check_classes_kept(labels: np.ndarray, usable: np.ndarray, failures: list) -> None:
    """A clear error where every image of a class failed: out-of-fold probabilities need each class."""
    lost = sorted(set(labels.tolist()) - set(labels[usable].tolist()), key=str)
    if lost:
        raise ValueError(
            f"every image of class(es) {lost} could not be used, so no fold can learn them: "
            f"{'; '.join(str(failure) for failure in failures[:3])}. Fix or remove those files, or those labels."
        )


def _rows_of_usable(codes: np.ndarray, n_classes: int, predict) -> np.ndarray:
    """``predict`` of the rows of ``codes`` without NaN; NaN rows for the others."""
    usable = np.flatnonzero(~np.isnan(codes).any(axis=1))
    proba = np.full((len(codes), n_classes), np.nan)
    if len(usable):
        proba[usable] = predict(codes[usable])
    return proba


def _probabilities(steps, X: np.ndarray) -> np.ndarray:
    if hasattr(steps, "predict_proba"):
        return steps.predict_proba(X)
    return _normalised(steps.decision_function(X))


def _normalised(scores: np.ndarray) -> np.ndarray:
    """Decision scores as probabilities: the softmax (for two classes, the logistic function of the
    score), a ranking as the classifier sees it, not a calibrated probability."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = np.column_stack([np.zeros_like(scores), scores])
    return softmax(scores, axis=1)


def _codes(transformer: CNNFeatureTransformer, images: list, fit: bool) -> tuple[np.ndarray, list]:
    """The codes of ``images``, NaN rows for bad ones, and their failures (under either
    ``on_error``: the work on the other images is kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", image_io.BadImagesWarning)
        try:
            codes = transformer.fit_transform(images) if fit else transformer.transform(images)
        except image_io.BadImagesError as error:
            return np.asarray(error.codes), error.failures
    return np.asarray(codes), transformer.failed_


def image_path(image) -> str | None:
    """The file an image of ``X`` is, as the tables show it (:func:`skcnn.datasets.shown_path`), where it is one."""
    return shown_path(image) if isinstance(image, (str, os.PathLike)) else None


def shown_labels(labels) -> np.ndarray:
    """Class labels as the tables show them: string ones (class folder names) as
    :func:`skcnn.datasets.shown_path` shows names, so that a name that is not UTF-8
    can be held by a pandas string column and written."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "UO":
        return labels
    shown = [shown_path(label) if isinstance(label, str) else label for label in labels.tolist()]
    return np.asarray(shown, dtype=None if labels.dtype.kind == "U" else object)


def note_failures(table, failures: list, n_images: int, stacklevel: int) -> None:
    """``table.attrs["failed"]`` set, and the images left out named in a warning."""
    table.attrs["failed"] = sorted(failures, key=lambda failure: failure.index)
    image_io.warn_bad_images(table.attrs["failed"], n_images, stacklevel + 1, where="see the table's attrs['failed']")
