"""A report folder of where a fitted model fails on labelled images (``skcnn inspect``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..datasets import shown_path
from ..images import BadImagesWarning
from .activation_maps import class_activation_maps
from .duplicates import find_duplicates
from .losses import label_issues, out_of_fold_losses, top_losses
from .models import shown_labels
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
    """
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    import pandas as pd
    from sklearn.metrics import ConfusionMatrixDisplay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)
        if test_labels is None:
            losses, issues = out_of_fold_losses(model, images, labels, cv=cv)
            scored, scored_on = images, f"{cv}-fold out of fold on the images"
        else:
            losses = top_losses(model, test_images, test_labels)
            issues = label_issues(model, images, labels, cv=cv)
            scored, scored_on = test_images, "the fitted model on the --test images (held out)"
        pairs = find_duplicates(images)
        leaks = None if test_images is None else find_duplicates(images, test_images)
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


def _has_maps(model) -> bool:
    """Whether ``model`` has exact class activation maps (to overlay on the grid)."""
    try:
        class_activation_maps(model, [])
    except ValueError:
        return False
    return True
