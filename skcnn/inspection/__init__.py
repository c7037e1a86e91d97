"""Where a fitted model fails: its worst images, doubtful labels, duplicates and where it looks.

- :func:`top_losses`: every image with the loss on its given label, worst first
  (of a fitted model, or out of fold with ``cv``);
- :func:`label_issues`: likely label errors, by confident learning (``cleanlab``);
- :func:`out_of_fold_losses`: both of them from one fit per fold;
- :func:`find_duplicates`: exact and near-duplicate images within a set, or
  shared between a training and a test set (leakage);
- :func:`find_duplicate_codes`: the same from codes already computed, a
  million of them or more (an approximate index: ``skcnn[scale]``);
- :func:`class_activation_maps`: where in each image the evidence for each
  class lies, for linear heads on average-pooled conv maps;
- :func:`plot_top_losses`, :func:`plot_duplicates`: the tables as image grids.

The tables are pandas DataFrames (``pip install skcnn[inspection]``).
"""

try:
    import pandas  # noqa: F401  (the tables)
except ImportError as error:  # pragma: no cover - the extra not installed
    raise ImportError("skcnn.inspection returns pandas tables: pip install 'skcnn[inspection]'.") from error

from .activation_maps import class_activation_maps
from .duplicates import find_duplicate_codes, find_duplicates
from .losses import label_issues, out_of_fold_losses, top_losses
from .plots import plot_duplicates, plot_top_losses

__all__ = [
    "class_activation_maps",
    "find_duplicate_codes",
    "find_duplicates",
    "label_issues",
    "out_of_fold_losses",
    "plot_duplicates",
    "plot_top_losses",
    "top_losses",
]
