"""Fine-tuning: a pretrained network trained further, with a new head, as a classifier.

The second flow of transfer learning, one module per step:
``store`` (every training image decoded once, its uint8 crop kept in memory
or in files, keyed by content) -> ``augment`` (random crops and flips of training batches only) ->
``strategy`` (what ``"auto"`` trains and why: head or network, the head's
layer, batch norm, the augmentation measured) ->
``probe`` (the linear probe on frozen codes that starts the new head) ->
``training`` (which layers train, batch norm, discriminative learning rates,
warmup and cosine decay, early stopping, a checkpoint per epoch) ->
``targets`` (the kinds of target: classes, several labels, continuous
values; each its loss, probe and validation score) ->
``estimator`` (``FineTuning``, what the estimators share: images decoded
once, the head started from the probe, prediction, pickling) ->
``classifier`` and ``regressor`` (:class:`~skcnn.CNNClassifier` and
:class:`~skcnn.CNNRegressor`, the scikit-learn faces).

The estimators are imported on first use, as from :mod:`skcnn`.
"""

from importlib import import_module

_PUBLIC = {"CNNClassifier": ".classifier", "CNNRegressor": ".regressor"}

__all__ = [*_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
