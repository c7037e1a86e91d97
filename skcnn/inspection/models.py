"""The models inspection reads, and their class probabilities per image.

Two kinds of model: a :class:`~skcnn.CNNClassifier`, and a scikit-learn
:class:`~sklearn.pipeline.Pipeline` whose first step is a
:class:`~skcnn.CNNFeatureTransformer`. A pipeline's network is frozen, so
out-of-fold probabilities compute each image's codes once and
cross-validate the steps after it on them: the same predictions as
cross-validating the whole pipeline, without running the network once per
fold. A CNNClassifier's folds read the frozen codes their heads are fit on
from one store, filled by one pass over the images before them.

For a regressor and for multi-label targets inspection reads the model's
outputs instead (:func:`outputs`, :func:`out_of_fold_outputs`): its
predictions, or each label's probability. Then the model may also be any
other of skcnn's estimators of images (a ``CNNRegressor``), cross-validated
on the images.
"""

from __future__ import annotations

import os
import tempfile
from typing import NamedTuple

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import clone, is_regressor
from sklearn.model_selection import check_cv, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from ..codes.cache import CodeCache
from ..datasets import shown_path
from ..decoding import images as image_io
from ..finetuning.classifier import CNNClassifier
from ..finetuning.estimator import given_input, predicted_views
from ..finetuning.probe import frozen_codes
from ..frozen.transformer import CNNFeatureTransformer
from ..network.layers import candidate_layers
from .codes import Codes, read_codes, store_codes, transformed

SUPPORTED = (
    "a CNNClassifier, or a scikit-learn Pipeline whose first step is a CNNFeatureTransformer "
    "(make_pipeline(CNNFeatureTransformer(...), ...))"
)


class Probabilities(NamedTuple):
    """Class probabilities of the images that could be used; the others named."""

    proba: np.ndarray  # (n_images, n_classes), NaN rows for the failures
    classes: np.ndarray
    failures: list[image_io.ImageFailure]


class Outputs(NamedTuple):
    """Per-image outputs of a regressor (its predictions) or of a multi-label classifier (each label's
    probability), NaN rows for the images that could not be used; those named."""

    values: np.ndarray  # (n_images, n_outputs)
    failures: list[image_io.ImageFailure]


def target_kind(model, y: np.ndarray) -> str:
    """``"regression"`` for a regressor (:func:`~sklearn.base.is_regressor`), ``"multilabel"`` for a
    binary indicator matrix (:func:`~sklearn.utils.multiclass.type_of_target`), else ``"classification"``."""
    if is_regressor(model):
        return "regression"
    if np.ndim(y) == 2 and type_of_target(y) == "multilabel-indicator":
        return "multilabel"
    return "classification"


def check_model_of_outputs(model, name: str = "model") -> None:
    """``model`` is one that inspection reads the outputs of (regression, multi-label), or a clear error.

    A pipeline whose first step is a CNNFeatureTransformer (its codes read
    once), or one of skcnn's own estimators of images (a CNNClassifier, a
    CNNRegressor: any estimator defined in skcnn that predicts from images).
    """
    if isinstance(model, Pipeline) and isinstance(model.steps[0][1], CNNFeatureTransformer):
        if len(model.steps) < 2:
            raise ValueError(f"{name} is a Pipeline of a CNNFeatureTransformer alone; it needs an estimator after it.")
        return
    if type(model).__module__.startswith("skcnn.") and hasattr(model, "predict"):
        return
    raise TypeError(
        f"{name} must be a CNNClassifier, or a scikit-learn Pipeline whose first step is a CNNFeatureTransformer "
        "(make_pipeline(CNNFeatureTransformer(...), Ridge()), or another of skcnn's estimators of images "
        f"(CNNRegressor); got {type(model).__name__}."
    )


def outputs(model, images: list, kind: str, n_outputs: int) -> Outputs:
    """A fitted model's predictions (``kind="regression"``) or per-label probabilities (``"multilabel"``)
    of ``images``, as ``(n_images, n_outputs)``."""
    check_model_of_outputs(model)
    check_is_fitted(model)
    if not isinstance(model, Pipeline):
        method = _method(model, kind)
        return Outputs(_as_outputs(getattr(model, method)(images), method, n_outputs, _classes(model)), [])
    codes = transformed(model[0], images, fit=False)
    steps = model[1:]
    method = _method(steps, kind)
    read = _rows_of_usable(
        codes.codes, n_outputs, lambda X: _as_outputs(getattr(steps, method)(X), method, n_outputs, _classes(steps))
    )
    return Outputs(read, codes.failures)


def out_of_fold_outputs(estimator, images: list, y: np.ndarray, kind: str, cv) -> Outputs:
    """Each image's predictions or per-label probabilities (see :func:`outputs`) from a clone of
    ``estimator`` fit on the folds without it: ``cv`` as for regressors (an int is ``KFold``, not
    stratified). A pipeline's frozen codes are read once, before the folds; another estimator
    (a CNNRegressor) is cross-validated on the images."""
    check_model_of_outputs(estimator, "estimator")
    n_outputs = 1 if y.ndim == 1 else y.shape[1]
    method = _method(estimator, kind)
    if not isinstance(estimator, Pipeline):
        folds = check_cv(cv, y, classifier=False)
        values = cross_val_predict(clone(estimator), images, y, cv=folds, method=method)
        return Outputs(_as_outputs(values, method, n_outputs, _column_classes(y)), [])
    codes, failures = transformed(clone(estimator[0]), images)
    usable = ~np.isnan(codes).any(axis=1)
    folds = check_cv(cv, y[usable], classifier=False)
    steps = clone(estimator[1:])

    def predict(X):
        values = cross_val_predict(steps, X, y[usable], cv=folds, method=method)
        return _as_outputs(values, method, n_outputs, _column_classes(y[usable]))

    return Outputs(_rows_of_usable(codes, n_outputs, predict), failures)


def _method(model, kind: str) -> str:
    if kind == "regression":
        return "predict"
    if hasattr(model, "predict_proba"):
        return "predict_proba"
    if hasattr(model, "decision_function"):
        return "decision_function"
    raise TypeError(f"{type(model).__name__} has neither predict_proba nor decision_function: no label probabilities.")


def _classes(model):
    """A fitted multi-label model's classes: per label (a list, MultiOutputClassifier) or the labels."""
    return getattr(model, "classes_", None)


def _column_classes(y: np.ndarray) -> list[np.ndarray] | None:
    """The classes of each column of ``y`` as :func:`~sklearn.model_selection.cross_val_predict` orders
    a list of per-label probabilities (sorted values of the whole column)."""
    return [np.unique(column) for column in y.T] if y.ndim == 2 else None


def _as_outputs(values, method: str, n_outputs: int, classes) -> np.ndarray:
    """Predictions as ``(n, n_outputs)`` floats; per-label probabilities from a list of per-label class
    probabilities (``MultiOutputClassifier``: each label's probability of 1), an ``(n, n_labels)``
    array (``OneVsRestClassifier``, a multi-label CNNClassifier), or a decision function (its
    logistic function: a ranking, not calibrated)."""
    if isinstance(values, list):  # one (n, n_classes) array per label
        positive = []
        for i, proba in enumerate(values):
            known = np.asarray(classes[i]).tolist()
            positive.append(proba[:, known.index(1)] if 1 in known else np.zeros(len(proba)))
        values = np.column_stack(positive)
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(len(values), -1)
    if values.shape[1] != n_outputs:
        what = "outputs" if method == "predict" else "label probabilities"
        raise ValueError(f"the model gives {values.shape[1]} {what} per image; y has {n_outputs} columns.")
    return expit(values) if method == "decision_function" else values


def check_model(model, name: str = "model") -> None:
    """``model`` is one of the kinds inspection reads, or a clear error."""
    if isinstance(model, CNNClassifier):
        return
    if isinstance(model, Pipeline) and isinstance(model.steps[0][1], CNNFeatureTransformer):
        if len(model.steps) < 2:
            raise ValueError(f"{name} is a Pipeline of a CNNFeatureTransformer alone; it needs a classifier after it.")
        return
    raise TypeError(f"{name} must be {SUPPORTED}; got {type(model).__name__}.")


def codes_read(model) -> CNNFeatureTransformer:
    """The transformer whose codes inspecting ``model`` reads: a pipeline's first step, or the
    frozen codes a CNNClassifier's head is fit on (:func:`head_codes`)."""
    return head_codes(model) if isinstance(model, CNNClassifier) else model[0]


def head_codes(classifier: CNNClassifier) -> CNNFeatureTransformer:
    """The transformer of the frozen codes ``classifier.fit`` reads from its cache, as it builds it:
    those of its ``layer``, or with ``layer="auto"`` of every candidate its layer search compares.

    Its ``cache`` is the classifier's (a first pass reads what it holds).
    With ``tta`` they are averaged over the views, as a head-only fit reads them;
    the views and input are :func:`inspected_params`.
    """
    params = {**classifier.get_params(), **inspected_params(classifier)}
    layer = classifier.layer
    if layer == "auto":
        layer = candidate_layers(classifier.backbone, params["input_size"])
    return frozen_codes(
        params, params["input_size"], layer, classifier.cache, progress=classifier.progress, tta=params["tta"]
    )


def inspected_params(classifier: CNNClassifier) -> dict:
    """The views and input the folds of an inspected classifier fit and predict with (``tta``,
    ``input_size``, ``crop``): as given, and for ``"auto"`` what its fit chose (one view and the
    weights' input where it is not fitted), so that no fold measures them again and the first pass
    computes every fold's codes."""
    if hasattr(classifier, "tta_"):
        return {"tta": predicted_views(classifier), "input_size": classifier.input_size_, "crop": classifier.crop_}
    return {"tta": None if classifier.tta == "auto" else classifier.tta, **given_input(classifier)}


def probabilities(model, images: list, codes: Codes | None = None) -> Probabilities:
    """A fitted model's class probabilities of ``images`` (softmax of the decision
    function where the classifier has no ``predict_proba``).

    ``codes``: those of :func:`codes_read` already read, for a pipeline (a
    CNNClassifier predicts from the images).
    """
    check_model(model)
    check_is_fitted(model)
    if isinstance(model, CNNClassifier):
        try:
            return Probabilities(model.predict_proba(images), model.classes_, [])
        except image_io.BadImagesError as error:  # the logits of the others are in the error
            return Probabilities(softmax(error.codes.astype(np.float64), axis=1), model.classes_, error.failures)
    if codes is None:
        codes = transformed(model[0], images, fit=False)
    steps = model[1:]
    proba = _rows_of_usable(codes.codes, len(steps.classes_), lambda X: _probabilities(steps, X))
    return Probabilities(proba, steps.classes_, codes.failures)


def out_of_fold_probabilities(
    estimator, images: list, labels: np.ndarray, cv, codes: Codes | None = None
) -> Probabilities:
    """Each image's class probabilities from a clone of ``estimator`` fit on the folds without it.

    ``codes``: those of :func:`codes_read` already read (else read here).
    """
    check_model(estimator, "estimator")
    classes = np.unique(labels)
    if isinstance(estimator, CNNClassifier):
        return _classifier_out_of_fold(estimator, images, labels, cv, codes)
    codes, failures = transformed(clone(estimator[0]), images) if codes is None else codes
    steps = clone(estimator[1:])
    method = "predict_proba" if hasattr(steps, "predict_proba") else "decision_function"
    usable = ~np.isnan(codes).any(axis=1)
    _check_classes_kept(labels, np.flatnonzero(usable), failures)

    def predict(X):
        scores = cross_val_predict(steps, X, labels[usable], cv=cv, method=method)
        return scores if method == "predict_proba" else _normalised(scores)

    return Probabilities(_rows_of_usable(codes, len(classes), predict), classes, failures)


def _classifier_out_of_fold(
    estimator: CNNClassifier, images: list, labels: np.ndarray, cv, codes: Codes | None
) -> Probabilities:
    """A clone fit per fold of the usable images, each predicting its held-out ones; one code store for all.

    One pass first reads the frozen codes the folds' heads are fit on
    (:func:`head_codes`, unless given) and names the bad images, so that
    the folds split the usable images as a user's clean set would split.
    Its codes go into a temporary store that every fold's fit reads (and
    the decoded-crop store is shared): an image is decoded once for all the
    fits, and once for its prediction.
    """
    frozen = head_codes(estimator)
    if codes is None:
        codes = read_codes({"frozen": frozen}, images)["frozen"]
    usable = np.flatnonzero(~np.isnan(codes.codes).any(axis=1))
    _check_classes_kept(labels, usable, codes.failures)
    classes = np.unique(labels[usable])
    proba = np.full((len(images), len(classes)), np.nan)
    with tempfile.TemporaryDirectory(prefix="skcnn-inspection-") as folder:
        store = CodeCache(os.path.join(folder, "codes.h5"))
        store_codes(store, frozen, images, codes.codes)
        shared = clone(estimator).set_params(cache=store, **inspected_params(estimator))
        for train, test in check_cv(cv, labels[usable], classifier=True).split(usable[:, None], labels[usable]):
            train, test = usable[train], usable[test]
            fitted = clone(shared).fit([images[i] for i in train], labels[train])
            rows = np.zeros((len(test), len(classes)))  # a class this fold never saw: probability 0
            rows[:, np.searchsorted(classes, fitted.classes_)] = fitted.predict_proba([images[i] for i in test])
            proba[test] = rows
    return Probabilities(proba, classes, codes.failures)


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
