"""A report folder of where a fitted model fails on labelled images (``skcnn inspect``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .activation_maps import class_activation_maps
from .duplicates import find_duplicates
from .losses import label_issues, top_losses
from .plots import plot_top_losses


def write_report(model, images: list, labels, out, *, test_images=None, cv=5, k=16) -> tuple[list[str], list]:
    """Write the inspection tables and pictures of ``model`` on ``images`` into ``out``.

    Returns the summary's lines and the images left out (``ImageFailure``).

    ``top_losses.csv`` scores the images with the fitted model;
    ``label_issues.csv`` fits clones of it on ``cv`` folds; ``duplicates.csv``
    pairs copies within the images, and with ``test_images``,
    ``leakage.csv`` pairs each test image with its copies among them.
    Images that cannot be used are left out and named in the summary.
    """
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    from sklearn.metrics import ConfusionMatrixDisplay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "[0-9]+ of [0-9]+ (training )?images could not be used", UserWarning)
        losses = top_losses(model, images, labels)
        issues = label_issues(model, images, labels, cv=cv)
        pairs = find_duplicates(images)
        leaks = None if test_images is None else find_duplicates(images, test_images)
    losses.to_csv(out / "top_losses.csv", index=False)
    issues.to_csv(out / "label_issues.csv", index=False)
    pairs.to_csv(out / "duplicates.csv", index=False)
    figure = plot_top_losses(losses, images, k=k, model=model if _has_maps(model) else None, ncols=4)
    figure.savefig(out / "top_losses.png", dpi=110)
    display = ConfusionMatrixDisplay.from_predictions(losses["label"], losses["predicted"], xticks_rotation=45)
    display.figure_.tight_layout()
    display.figure_.savefig(out / "confusion.png", dpi=110)
    accuracy = float((losses["label"] == losses["predicted"]).mean()) if len(losses) else float("nan")
    summary = [
        f"{len(losses)} images scored, accuracy {accuracy:.3f} (the fitted model on these images)",
        f"{len(issues)} likely label errors ({cv}-fold out-of-fold probabilities, confident learning)",
        f"{len(pairs)} pairs of duplicates within the images",
    ]
    if leaks is not None:
        leaks.to_csv(out / "leakage.csv", index=False)
        leaked = leaks["other_index"].nunique()
        summary.append(f"{leaked} test images with a copy among the images ({len(leaks)} pairs)")
    tables = [losses, issues, pairs] + ([] if leaks is None else [leaks])
    failed = {failure.source: failure for table in tables for failure in table.attrs["failed"]}
    summary.append(f"report: {os.fspath(out)}")
    return summary, list(failed.values())


def _has_maps(model) -> bool:
    """Whether ``model`` has exact class activation maps (to overlay on the grid)."""
    try:
        class_activation_maps(model, [])
    except ValueError:
        return False
    return True
