"""A report folder of where a fitted model fails on labelled images (``skcnn inspect``)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone, is_regressor
from sklearn.pipeline import Pipeline

from ..codes.cache import CodeCache
from ..datasets import shown_path
from ..decoding.images import BadImagesWarning
from ..finetuning.classifier import CNNClassifier
from ..finetuning.estimator import FineTuning
from .activation_maps import class_activation_maps
from .codes import Codes, read_codes, store_codes
from .duplicates import duplicate_codes, duplicate_pairs
from .losses import (
    LABEL_THRESHOLD,
    check_cleanlab,
    losses_and_issues,
    multilabel_losses_and_issues,
    outputs_table,
    scores_table,
    worst_first,
)
from .models import (
    Outputs,
    check_model,
    check_model_of_outputs,
    codes_read,
    head_codes,
    note_failures,
    out_of_fold_outputs,
    out_of_fold_probabilities,
    probabilities,
    shown_labels,
    target_kind,
)
from .plots import plot_top_losses

#: What the report of a regressor says instead of label_issues.csv.
NO_LABEL_ISSUES = (
    "no label_issues.csv: a regressor's targets have no classes (confident learning counts classes given for "
    "others); the largest out-of-fold residuals, first in top_losses.csv, are the targets to check first"
)


def write_report(
    model, images: list, labels, out, *, test_images=None, test_labels=None, cv=5, k=16, target_names=None
) -> tuple[list[str], list]:
    """Write the inspection tables and pictures of ``model`` on ``images`` into ``out``.

    Returns the summary's lines and the images left out (``ImageFailure``).

    ``labels`` are classes, or, for a regressor and for a classifier of an
    indicator matrix (the kinds told apart as
    :func:`~skcnn.inspection.top_losses` tells them), its targets: the
    report of those is :func:`_write_targets_report`'s (``target_names``
    names their columns).

    The top losses (``top_losses.csv``, ``top_losses.png``) and the
    confusion matrix (``confusion.png``) are held-out evidence: the fitted
    model on ``test_images`` when they have ``test_labels``, otherwise
    clones of it fit on ``cv`` folds of ``images`` (out of fold, the
    same fits as ``label_issues.csv``). ``duplicates.csv`` pairs copies
    within the images, and with ``test_images``, ``leakage.csv`` pairs each
    test image with its copies among them. Images that cannot be used are
    left out, listed in ``failed.csv`` and counted in the summary.

    Each set of images is read in one pass for all the tables (see
    :func:`_tables`); only the ``k`` images ``top_losses.png`` shows are
    read again, to be shown.
    """
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    from sklearn.metrics import ConfusionMatrixDisplay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = target_kind(model, np.asarray(labels))
    if kind != "classification":
        return _write_targets_report(
            model, images, np.asarray(labels), kind, out, test_images, test_labels, cv, k, target_names
        )
    check_cleanlab()  # before any image is read
    check_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)
        losses, issues, pairs, leaks = _tables(model, images, np.asarray(labels), test_images, test_labels, cv)
    if test_labels is None:
        scored, scored_on = images, f"{cv}-fold out of fold on the images"
    else:
        scored, scored_on = test_images, "the fitted model on the --test images (held out)"
    losses.to_csv(out / "top_losses.csv", index=False)
    issues.to_csv(out / "label_issues.csv", index=False)
    pairs.to_csv(out / "duplicates.csv", index=False)
    figure = plot_top_losses(losses, scored, k=k, model=model if _has_maps(model) else None, ncols=4)
    figure.savefig(out / "top_losses.png", dpi=110)
    classes = np.unique(np.concatenate([shown_labels(labels), losses["label"], losses["predicted"]]).astype(str))
    display = ConfusionMatrixDisplay.from_predictions(
        losses["label"].astype(str), losses["predicted"].astype(str), labels=classes, xticks_rotation=45
    )
    display.ax_.set_title(scored_on)
    display.figure_.tight_layout()
    display.figure_.savefig(out / "confusion.png", dpi=110)
    accuracy = float((losses["label"] == losses["predicted"]).mean()) if len(losses) else float("nan")
    n_scored = len(scored)
    summary = [
        f"{len(losses)} of {n_scored} images scored ({n_scored - len(losses)} left out), accuracy "
        f"{accuracy:.3f}: {scored_on}",
        f"{len(issues)} likely label errors ({cv}-fold out-of-fold probabilities, confident learning)",
        f"{len(pairs)} pairs of duplicates within the images",
    ]
    return _leaks_and_failures(out, summary, [losses, issues, pairs], leaks)


def _leaks_and_failures(out: Path, summary: list[str], tables: list, leaks) -> tuple[list[str], list]:
    """``leakage.csv`` (where there are test images) and ``failed.csv`` written, their summary lines
    and the report's folder added; the summary and the images left out of any table."""
    import pandas as pd

    if leaks is not None:
        leaks.to_csv(out / "leakage.csv", index=False)
        leaked = leaks["other_index"].nunique()
        summary.append(f"{leaked} test images with a copy among the images ({len(leaks)} pairs)")
    tables = tables + ([] if leaks is None else [leaks])
    failed = list({failure.source: failure for table in tables for failure in table.attrs["failed"]}.values())
    shown = {"path": [shown_path(f.source) for f in failed], "reason": [shown_path(f.reason) for f in failed]}
    pd.DataFrame(shown).to_csv(out / "failed.csv", index=False)
    summary.append(f"report: {shown_path(out)}")
    return summary, failed


def model_task(model) -> str:
    """What a fitted ``model`` predicts: ``"regression"`` (:func:`~sklearn.base.is_regressor`),
    ``"multilabel"`` (a classifier fit on an indicator matrix: a CNNClassifier's ``target_type_``, or a
    pipeline ending in a multi-label ``OneVsRestClassifier`` or a ``MultiOutputClassifier``), else
    ``"classification"`` (one class per image)."""
    if is_regressor(model):
        return "regression"
    last = model[-1] if isinstance(model, Pipeline) else model
    if (
        getattr(last, "target_type_", None) == "multilabel-indicator"
        or getattr(last, "multilabel_", False)
        or isinstance(getattr(last, "classes_", None), list)
    ):
        return "multilabel"
    return "classification"


def _write_targets_report(
    model, images: list, y: np.ndarray, kind: str, out: Path, test_images, test_labels, cv, k, target_names
) -> tuple[list[str], list]:
    """:func:`write_report` of a regressor (``kind="regression"``) or a multi-label classifier.

    ``top_losses.csv`` and ``top_losses.png`` are out of fold (clones fit on
    ``cv`` folds: plain ``KFold``), as are ``label_issues.csv`` of
    multi-label targets (cleanlab's multi-label confident learning, from
    the same fits) and the picture that stands for the confusion matrix: a
    regressor's ``prediction_vs_target.png`` (scikit-learn's
    ``PredictionErrorDisplay``, one panel per target), a multi-label
    classifier's ``multilabel_confusion.png`` (one 2x2 confusion matrix per
    label, :func:`~sklearn.metrics.multilabel_confusion_matrix`) and
    ``per_label.csv``. A regressor has no ``label_issues.csv`` (the summary
    says why). ``test_images`` are checked for copies among the images
    (``leakage.csv``) but not scored: ``test_labels`` must be None.
    """
    import matplotlib

    matplotlib.use("Agg")  # files, never a window

    if test_labels is not None:
        raise ValueError(
            "test_labels: a regressor's or a multi-label classifier's report scores out of fold on the images; "
            "test_images are checked for copies among them only (give test_labels=None)."
        )
    if kind == "multilabel":
        check_cleanlab()  # before any image is read
    check_model_of_outputs(model)
    y, names = _targets(y, kind, target_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)
        losses, issues, pairs, leaks = _target_tables(model, images, y, kind, names, test_images, cv)
    scored_on = f"{cv}-fold out of fold on the images"
    losses.to_csv(out / "top_losses.csv", index=False)
    if issues is not None:
        issues.to_csv(out / "label_issues.csv", index=False)
    pairs.to_csv(out / "duplicates.csv", index=False)
    figure = plot_top_losses(losses, images, k=k, model=model, ncols=4)  # the crops the network saw
    figure.savefig(out / "top_losses.png", dpi=110)
    given = y[losses["position"].to_numpy()].reshape(len(losses), -1)
    scored = f"{len(losses)} of {len(images)} images scored ({len(images) - len(losses)} left out)"
    if kind == "regression":
        columns = ["prediction"] if y.ndim == 1 else [f"prediction_{name}" for name in names]
        predicted = losses[columns].to_numpy()
        figure = _prediction_vs_target(given, predicted, names if y.ndim == 2 else None, scored_on)
        figure.savefig(out / "prediction_vs_target.png", dpi=110)
        summary = [f"{scored}, {_regression_scores(given, predicted)}: {scored_on}", NO_LABEL_ISSUES]
    else:
        predicted = (losses[[f"probability_{name}" for name in names]].to_numpy() >= LABEL_THRESHOLD).astype(int)
        figure, per_label = _multilabel_confusion(given, predicted, names, scored_on)
        figure.savefig(out / "multilabel_confusion.png", dpi=110)
        per_label.to_csv(out / "per_label.csv", index=False)
        subset = float((given == predicted).all(axis=1).mean()) if len(losses) else float("nan")
        decisions = float((given == predicted).mean()) if len(losses) else float("nan")
        summary = [
            f"{scored}, subset accuracy {subset:.3f}, {decisions:.3f} of the label decisions right "
            f"({len(names)} labels, probability {LABEL_THRESHOLD} or more): {scored_on}",
            f"{len(issues)} likely label errors ({cv}-fold out-of-fold probabilities, multi-label confident learning)",
        ]
    summary.append(f"{len(pairs)} pairs of duplicates within the images")
    return _leaks_and_failures(out, summary, [losses, pairs], leaks)


def _targets(y: np.ndarray, kind: str, target_names) -> tuple[np.ndarray, list[str]]:
    """``y`` as numbers (a regressor's floats, a 0/1 indicator matrix) and its columns' names
    (``0, 1, ...`` where none are given)."""
    n_columns = 1 if y.ndim == 1 else y.shape[1]
    names = [str(name) for name in (range(n_columns) if target_names is None else target_names)]
    if len(names) != n_columns:
        raise ValueError(f"target_names names {len(names)} columns; the targets have {n_columns}.")
    return y.astype(np.float64 if kind == "regression" else int), names


def _regression_scores(given: np.ndarray, predicted: np.ndarray) -> str:
    """R^2 and mean absolute error, averaged over the targets where there are several."""
    from sklearn.metrics import mean_absolute_error, r2_score

    if len(given) < 2:
        return "R^2 nan, MAE nan"
    scores = f"R^2 {r2_score(given, predicted):.3f}, MAE {mean_absolute_error(given, predicted):.3g}"
    return scores + (f" (means over {given.shape[1]} targets)" if given.shape[1] > 1 else "")


def _prediction_vs_target(given: np.ndarray, predicted: np.ndarray, names: list[str] | None, title: str):
    """scikit-learn's ``PredictionErrorDisplay`` (predicted against actual) of each target, side by side."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import PredictionErrorDisplay

    n = given.shape[1]
    figure, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.5), squeeze=False)
    for j, ax in enumerate(axes.flat):
        PredictionErrorDisplay.from_predictions(
            given[:, j], predicted[:, j], kind="actual_vs_predicted", subsample=None, ax=ax
        )
        ax.set_xlabel("predicted" if names is None else f"predicted {names[j]}")
        ax.set_ylabel("target" if names is None else f"target {names[j]}")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _multilabel_confusion(given: np.ndarray, predicted: np.ndarray, names: list[str], title: str):
    """A 2x2 confusion matrix per label (:func:`~sklearn.metrics.multilabel_confusion_matrix`) as a
    figure, and per label: images given it, predicted it, right about it, missed and extra ones."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from sklearn.metrics import ConfusionMatrixDisplay, multilabel_confusion_matrix

    matrices = multilabel_confusion_matrix(given, predicted, labels=range(len(names)))
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name, matrix in zip(axes.flat, names, matrices, strict=False):
        ConfusionMatrixDisplay(matrix, display_labels=["no", "yes"]).plot(ax=ax, colorbar=False)
        ax.set_title(shown_path(name))
    figure.suptitle(title)
    figure.tight_layout()
    per_label = pd.DataFrame(
        {
            "label": names,
            "given": matrices[:, 1, :].sum(axis=1),
            "predicted": matrices[:, :, 1].sum(axis=1),
            "right": matrices[:, 0, 0] + matrices[:, 1, 1],
            "missed": matrices[:, 1, 0],
            "extra": matrices[:, 0, 1],
        }
    )
    return figure, per_label


def _tables(model, images: list, labels: np.ndarray, test_images, test_labels, cv) -> tuple:
    """The top losses, label issues, duplicates and leaks (or None) of the report.

    The codes of the out-of-fold fits (or of the held-out predictions) and
    the duplicates' are read in one pass over each set of images where one
    network gives both (:func:`~skcnn.inspection.codes.read_codes`; the
    duplicates' codes are EfficientNet-Lite0's at its own input size, as a
    default ``CNNFeatureTransformer()``'s or ``CNNClassifier()``'s; any
    other model costs one pass more). Then each image is decoded once for
    every table of a pipeline; a CNNClassifier decodes it once more to predict.
    (Regressors and multi-label targets: :func:`_target_tables`.)
    """
    train = read_codes({"model": codes_read(model), "duplicates": duplicate_codes()}, images)
    result = out_of_fold_probabilities(clone(model), images, labels, cv, train["model"])
    losses, issues = losses_and_issues(scores_table(images, labels, result), labels, result)
    test = None
    if test_images is not None:
        readers = {"duplicates": duplicate_codes()}
        if test_labels is not None and not isinstance(model, CNNClassifier):  # a classifier predicts from images
            readers = {"model": codes_read(model), **readers}
        test = read_codes(readers, test_images)
    if test_labels is not None:
        held_out = probabilities(model, test_images, test.get("model"))
        losses = worst_first(scores_table(test_images, np.asarray(test_labels), held_out))
    pairs = _pairs(images, train["duplicates"])
    leaks = None if test is None else _pairs(images, train["duplicates"], test_images, test["duplicates"])
    return losses, issues, pairs, leaks


def _target_tables(model, images: list, y: np.ndarray, kind: str, names: list[str], test_images, cv) -> tuple:
    """The top losses, label issues (None for a regressor), duplicates and leaks (or None) of a
    regressor's or a multi-label classifier's report.

    As in :func:`_tables`, one pass over the images reads the codes of the
    model's frozen network (a pipeline's first step, or the frozen codes a
    CNNClassifier's or CNNRegressor's head is fit on) together with the
    duplicates' where one network gives both, and names the bad images.
    Those are left out, and the fits of the folds read the codes of the
    others from a temporary store of that pass: for a pipeline each image
    is then decoded once for every table; a CNNClassifier or CNNRegressor
    decodes it once more, to predict its fold. Where the head alone is not
    what trains (``unfreeze`` other than ``"head"``), each fold's fit
    decodes its training images again, as fine-tuning does: up to ``cv``
    decodes more per image, a cost this report does not avoid.
    """
    if isinstance(model, Pipeline):
        frozen = model[0]
    elif isinstance(model, FineTuning):
        frozen = head_codes(model)
    else:
        raise TypeError(
            "the report of a regressor or of multi-label targets reads a Pipeline whose first step is a "
            f"CNNFeatureTransformer, a CNNRegressor or a CNNClassifier; got {type(model).__name__}."
        )
    train = read_codes({"model": frozen, "duplicates": duplicate_codes()}, images)
    read = train["model"]
    usable = np.flatnonzero(~np.isnan(read.codes).any(axis=1))
    if not len(usable):
        failures = "; ".join(str(failure) for failure in read.failures[:3])
        raise ValueError(f"none of the {len(images)} images could be used: {failures}.")
    with tempfile.TemporaryDirectory(prefix="skcnn-inspection-") as folder:
        store = CodeCache(os.path.join(folder, "codes.h5"))
        store_codes(store, frozen, images, read.codes)
        estimator = clone(model)
        (estimator[0] if isinstance(estimator, Pipeline) else estimator).set_params(cache=store)
        fold = out_of_fold_outputs(estimator, [images[i] for i in usable], y[usable], kind, cv)
    values = np.full((len(images), fold.values.shape[1]), np.nan)
    values[usable] = fold.values
    result = Outputs(values, read.failures)
    table = outputs_table(images, y, kind, result, names)
    if kind == "multilabel":
        losses, issues = multilabel_losses_and_issues(table, y, result, names)
    else:
        losses, issues = worst_first(table), None
    pairs = _pairs(images, train["duplicates"])
    leaks = None
    if test_images is not None:
        test = read_codes({"duplicates": duplicate_codes()}, test_images)
        leaks = _pairs(images, train["duplicates"], test_images, test["duplicates"])
    return losses, issues, pairs, leaks


def _pairs(images: list, codes: Codes, others: list | None = None, other_codes: Codes | None = None):
    """:func:`~skcnn.inspection.find_duplicates` of codes read, the images left out in ``attrs["failed"]``."""
    pairs = duplicate_pairs(images, codes.codes, others, None if other_codes is None else other_codes.codes)
    failures = codes.failures + ([] if other_codes is None else other_codes.failures)
    note_failures(pairs, failures, len(images) + len(others or []), stacklevel=1)
    return pairs


def _has_maps(model) -> bool:
    """Whether ``model`` has exact class activation maps (to overlay on the grid)."""
    try:
        class_activation_maps(model, [])
    except ValueError:
        return False
    return True
