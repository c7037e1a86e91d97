"""A report folder of where a fitted model fails on labelled images (``skcnn inspect``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone

from ..datasets import shown_path
from ..finetuning.classifier import CNNClassifier
from ..images import BadImagesWarning
from .activation_maps import class_activation_maps
from .codes import Codes, read_codes
from .duplicates import duplicate_codes, duplicate_pairs
from .losses import check_cleanlab, losses_and_issues, scores_table, worst_first
from .models import check_model, codes_read, note_failures, out_of_fold_probabilities, probabilities, shown_labels
from .plots import plot_top_losses


def write_report(
    model, images: list, labels, out, *, test_images=None, test_labels=None, cv=5, k=16
) -> tuple[list[str], list]:
    """Write the inspection tables and pictures of ``model`` on ``images`` into ``out``.

    Returns the summary's lines and the images left out (``ImageFailure``).

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
    import pandas as pd
    from sklearn.metrics import ConfusionMatrixDisplay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    if leaks is not None:
        leaks.to_csv(out / "leakage.csv", index=False)
        leaked = leaks["other_index"].nunique()
        summary.append(f"{leaked} test images with a copy among the images ({len(leaks)} pairs)")
    tables = [losses, issues, pairs] + ([] if leaks is None else [leaks])
    failed = list({failure.source: failure for table in tables for failure in table.attrs["failed"]}.values())
    shown = {"path": [shown_path(f.source) for f in failed], "reason": [shown_path(f.reason) for f in failed]}
    pd.DataFrame(shown).to_csv(out / "failed.csv", index=False)
    summary.append(f"report: {shown_path(out)}")
    return summary, failed


def _tables(model, images: list, labels: np.ndarray, test_images, test_labels, cv) -> tuple:
    """The top losses, label issues, duplicates and leaks (or None) of the report.

    The codes of the out-of-fold fits (or of the held-out predictions) and
    the duplicates' are read in one pass over each set of images where one
    network gives both (:func:`~skcnn.inspection.codes.read_codes`; the
    duplicates' codes are EfficientNet-Lite0's at its own input size, as a
    default ``CNNFeatureTransformer()``'s or ``CNNClassifier()``'s; any
    other model costs one pass more). Then each image is decoded once for
    every table of a pipeline; a CNNClassifier decodes it once more to predict.
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
