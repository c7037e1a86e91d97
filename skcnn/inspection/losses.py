"""The images a model is most wrong about, and those whose given label it doubts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..decoding import images as image_io
from .models import (
    Outputs,
    Probabilities,
    check_model,
    check_model_of_outputs,
    image_path,
    note_failures,
    out_of_fold_outputs,
    out_of_fold_probabilities,
    outputs,
    probabilities,
    shown_labels,
    target_kind,
)

#: Smallest probability a loss is computed from (as :func:`sklearn.metrics.log_loss` clips).
EPS = np.finfo(np.float64).eps
#: A multi-label model predicts a label where its probability is at least this.
LABEL_THRESHOLD = 0.5


def top_losses(model, X, y, *, cv=None, target_names=None) -> pd.DataFrame:
    """Every image with the model's loss on its given label (or target), worst first.

    Three kinds of target, told apart as scikit-learn tells them: a
    regressor (:func:`~sklearn.base.is_regressor`: a pipeline ending in
    ``Ridge``, a ``CNNRegressor``) is scored by its squared errors; a
    classifier given a binary indicator matrix
    (:func:`~sklearn.utils.multiclass.type_of_target` is
    ``"multilabel-indicator"``) by its binary log loss on each label;
    any other classifier by the log loss on the given class.

    Parameters
    ----------
    model : CNNClassifier or Pipeline
        A fitted :class:`~skcnn.CNNClassifier`, or a fitted scikit-learn
        pipeline whose first step is a :class:`~skcnn.CNNFeatureTransformer`
        (``make_pipeline(CNNFeatureTransformer(), Ridge())`` for a
        regression, ``make_pipeline(CNNFeatureTransformer(),
        OneVsRestClassifier(LogisticRegression()))`` or a
        ``MultiOutputClassifier`` for multi-label targets); for those two
        kinds, also another of skcnn's estimators of images (a
        ``CNNRegressor``). With ``cv``, an estimator of these kinds, fitted
        or not: a clone of it is fit on each training fold.
    X : sequence of images
        Paths, PIL images or arrays, as the model takes them.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        The given labels; a regressor's targets (one or several columns);
        or a multi-label classifier's binary indicator matrix (1 where the
        image has the label).
    cv : int, cross-validation generator, iterable or None, default=None
        ``None`` scores ``X`` with the fitted model (a held-out set, or the
        training set as the model fit it). Otherwise the losses are out of
        fold (:func:`~sklearn.model_selection.cross_val_predict`), so that
        the training set itself can be inspected. A pipeline's frozen codes
        are computed once, not once per fold. An int is stratified folds
        for a single-label classifier, plain ``KFold`` for a regressor and
        for multi-label targets (as :func:`~sklearn.model_selection.check_cv`
        chooses).
    target_names : sequence of str or None, default=None
        Names of the columns of a 2-D ``y`` (outputs or labels), used in
        the per-output columns; ``None``: ``y``'s column names where it is
        a DataFrame, else ``0, 1, ...``.

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

        For a regressor: ``position``, ``path``, then ``target``,
        ``prediction``, ``residual`` (target minus prediction) and ``loss``
        (the squared error); with several outputs, ``target_<name>``,
        ``prediction_<name>``, ``residual_<name>`` and ``loss_<name>`` of
        each, and ``loss`` their sum over the outputs.

        For multi-label targets: ``position``, ``path``, ``labels`` (the
        names of the given labels, joined by ``", "``), ``predicted``
        (those whose probability is at least 0.5), ``probability_<name>``
        (each label's predicted probability; the logistic function of a
        decision function where there is no ``predict_proba``),
        ``loss_<name>`` (each label's binary log loss) and ``loss`` (their
        sum over the labels).

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

    A regressor's largest out-of-fold residuals:

    >>> from sklearn.linear_model import Ridge
    >>> from skcnn.datasets import make_texture_mixtures
    >>> X, y = make_texture_mixtures(24, patch_size=32, return_X_y=True)
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), Ridge())
    >>> table = top_losses(model, X, y, cv=3)
    >>> list(table.columns)
    ['position', 'target', 'prediction', 'residual', 'loss']
    >>> bool((table["loss"] == table["residual"] ** 2).all())
    True
    """
    kind = target_kind(model, np.asarray(y))
    if kind != "classification":
        check_model_of_outputs(model)
        images, targets, names = _checked_outputs(X, y, kind, target_names)
        if cv is None:
            result = outputs(model, images, kind, len(names))
        else:
            result = out_of_fold_outputs(clone(model), images, targets, kind, cv)
        return worst_first(outputs_table(images, targets, kind, result, names, stacklevel=2))
    images, labels = _checked(X, y)
    if cv is None:
        result = probabilities(model, images)
    else:
        result = out_of_fold_probabilities(clone(model), images, labels, cv)
    return worst_first(scores_table(images, labels, result, stacklevel=2))


def label_issues(estimator, X, y, *, cv=5, filter_by="prune_by_noise_rate", target_names=None) -> pd.DataFrame:
    """The images whose given label the out-of-fold predictions most doubt, most doubtful first.

    Confident learning (Northcutt et al., 2021) through ``cleanlab``'s
    :func:`cleanlab.filter.find_label_issues`: out-of-fold probabilities
    estimate how often each class is labelled as each other one, and the
    images flagged are the least confident ones of those counts. For
    multi-label targets (a binary indicator matrix), its multi-label
    version (``cleanlab.multilabel_classification``): each label is one class against the
    rest, and an image is flagged where any of its labels (given or
    missing) is doubted.

    Parameters
    ----------
    estimator : CNNClassifier or Pipeline
        As for :func:`top_losses` with ``cv``: a clone is fit on each fold.
    X : sequence of images
    y : array-like of shape (n_samples,) or (n_samples, n_labels)
        The given labels, or a binary indicator matrix of them.
    cv : int, cross-validation generator or iterable, default=5
        The folds of the out-of-fold probabilities (``KFold`` for an int
        with multi-label targets).
    filter_by : str, default="prune_by_noise_rate"
        ``cleanlab``'s rule for flagging (its ``filter_by``).
    target_names : sequence of str or None, default=None
        The labels' names, for multi-label targets (see :func:`top_losses`).

    Returns
    -------
    table : pandas.DataFrame
        The flagged images, lowest ``label_quality`` first, with the
        columns of :func:`top_losses` and ``label_quality`` (the
        out-of-fold probability of the given label; for multi-label
        targets, cleanlab's multi-label self-confidence score, which
        weighs the least confident labels most) and, for multi-label
        targets, ``doubted`` (the labels cleanlab flags in that image,
        one label against the rest; empty where only the aggregate is
        flagged).

    Raises
    ------
    ImportError
        When ``cleanlab`` is not installed (``pip install skcnn[inspection]``).
    ValueError
        For a regressor: a label error is a classification notion (a class
        given for another). Its targets to check first are its largest
        out-of-fold residuals, ``top_losses(estimator, X, y, cv=5)``.
        (cleanlab's ``cleanlab.regression.learn.CleanLearning`` estimates
        which of them are errors by refitting a model many times; on frozen
        codes it can be run as ``CleanLearning(Ridge()).find_label_issues(codes, y)``.)

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
    return out_of_fold_losses(estimator, X, y, cv=cv, filter_by=filter_by, target_names=target_names)[1]


def out_of_fold_losses(
    estimator, X, y, *, cv=5, filter_by="prune_by_noise_rate", target_names=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`top_losses` out of fold and :func:`label_issues`, from one fit per fold.

    Both tables read the same out-of-fold probabilities, so a report that
    wants both fits ``cv`` clones, not twice as many.

    Parameters
    ----------
    estimator : CNNClassifier or Pipeline
        As for :func:`label_issues`: a clone is fit on each fold.
    X : sequence of images
    y : array-like of shape (n_samples,) or (n_samples, n_labels)
        The given labels, or a binary indicator matrix of them.
    cv : int, cross-validation generator or iterable, default=5
        The folds.
    filter_by : str, default="prune_by_noise_rate"
        ``cleanlab``'s rule for flagging (its ``filter_by``).
    target_names : sequence of str or None, default=None
        The labels' names, for multi-label targets.

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
    kind = target_kind(estimator, np.asarray(y))
    if kind == "regression":
        raise ValueError(REGRESSION_ISSUES)
    check_cleanlab()  # before any image is read
    if kind == "multilabel":
        check_model_of_outputs(estimator, "estimator")
        images, targets, names = _checked_outputs(X, y, kind, target_names)
        result = out_of_fold_outputs(clone(estimator), images, targets, kind, cv)
        table = outputs_table(images, targets, kind, result, names, stacklevel=2)
        return multilabel_losses_and_issues(table, targets, result, names, filter_by)
    check_model(estimator, "estimator")
    images, labels = _checked(X, y)
    result = out_of_fold_probabilities(clone(estimator), images, labels, cv)
    return losses_and_issues(scores_table(images, labels, result, stacklevel=2), labels, result, filter_by)


#: Why a regressor has no label issues, and what to look at instead.
REGRESSION_ISSUES = (
    "label_issues finds label errors of classifiers (confident learning counts how often one class is given "
    "for another); a regressor's targets have no classes. Its targets to check first are those of its largest "
    "out-of-fold residuals: top_losses(estimator, X, y, cv=5)."
)


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


def multilabel_losses_and_issues(
    table: pd.DataFrame, y: np.ndarray, result: Outputs, names: list[str], filter_by: str = "prune_by_noise_rate"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`out_of_fold_losses` of an :func:`outputs_table` of out-of-fold per-label probabilities:
    cleanlab's multi-label confident learning on the labels as lists of label indices
    (``cleanlab.multilabel_classification.filter.find_label_issues``: in cleanlab 2.9,
    ``cleanlab.filter.find_label_issues(..., multi_label=True)`` is deprecated in its favour)."""
    _cleanlab()
    from cleanlab.multilabel_classification.filter import find_label_issues, find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    rows = table["position"].to_numpy()
    labels = [np.flatnonzero(row).tolist() for row in y[rows]]
    proba = result.values[rows]
    flagged = find_label_issues(labels, proba, filter_by=filter_by)
    per_label = np.asarray(find_multilabel_issues_per_class(labels, proba, filter_by=filter_by), dtype=bool)
    if per_label.shape != proba.shape:  # documented as one mask per label; (n_images, n_labels) in cleanlab 2.9
        per_label = per_label.T
    doubted = _joined(per_label, names)
    issues = table.assign(label_quality=get_label_quality_scores(labels, proba), doubted=doubted)
    issues = issues[flagged].sort_values("label_quality", kind="stable")
    return worst_first(table), issues.reset_index(drop=True)


def _checked_outputs(X, y, kind: str, target_names) -> tuple[list, np.ndarray, list[str]]:
    """The images, ``y`` as an array (float targets, or a 0/1 indicator matrix) and its columns' names."""
    images = image_io.as_image_list(X)
    targets = np.asarray(y)
    if targets.ndim not in (1, 2) or len(targets) != len(images):
        what = "target" if kind == "regression" else "row of labels"
        raise ValueError(f"y must hold one {what} per image: X has {len(images)} images, y has shape {targets.shape}.")
    n_columns = 1 if targets.ndim == 1 else targets.shape[1]
    if target_names is None:
        target_names = list(y.columns) if hasattr(y, "columns") else range(n_columns)
    names = [str(name) for name in target_names]
    if len(names) != n_columns:
        raise ValueError(f"target_names names {len(names)} columns; y has {n_columns}.")
    if kind == "regression":
        return images, targets.astype(np.float64), names
    return images, targets.astype(int), names


def outputs_table(
    images: list, y: np.ndarray, kind: str, result: Outputs, names: list[str], stacklevel: int = 1
) -> pd.DataFrame:
    """One row per usable image: a regressor's targets, predictions, residuals and squared errors
    (``kind="regression"``), or a multi-label classifier's given and predicted labels, each label's
    probability and binary log loss (``"multilabel"``); ``loss`` their sum over the outputs.

    The images left out are named in a warning for the caller ``stacklevel`` frames up.
    """
    usable = np.flatnonzero(~np.isnan(result.values).any(axis=1))
    values, given = result.values[usable], y[usable].reshape(len(usable), -1)
    table = pd.DataFrame({"position": usable})
    if any(image_path(image) for image in images):
        table["path"] = [image_path(images[i]) for i in usable]
    if kind == "regression":
        residual = given - values
        if y.ndim == 1:
            table["target"], table["prediction"], table["residual"] = given[:, 0], values[:, 0], residual[:, 0]
        else:
            blocks = {"target": given, "prediction": values, "residual": residual, "loss": residual**2}
            for column, block in blocks.items():
                for j, name in enumerate(names):
                    table[f"{column}_{name}"] = block[:, j]
        table["loss"] = (residual**2).sum(axis=1)
    else:
        clipped = np.clip(values, EPS, 1 - EPS)
        losses = -np.where(given == 1, np.log(clipped), np.log1p(-clipped))
        table["labels"] = _joined(given == 1, names)
        table["predicted"] = _joined(values >= LABEL_THRESHOLD, names)
        for j, name in enumerate(names):
            table[f"probability_{name}"] = values[:, j]
        for j, name in enumerate(names):
            table[f"loss_{name}"] = losses[:, j]
        table["loss"] = losses.sum(axis=1)
    note_failures(table, result.failures, len(images), stacklevel=stacklevel + 1)
    return table


def _joined(present: np.ndarray, names: list[str]) -> list[str]:
    """The names of each row's present labels, joined by ``", "``."""
    return [", ".join(name for name, there in zip(names, row, strict=True) if there) for row in present]
