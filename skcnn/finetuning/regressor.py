"""``CNNRegressor``: a pretrained CNN fine-tuned as a scikit-learn regressor of continuous targets."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ..compat import _fit_context
from ..options import constraints_of
from .estimator import FineTuning
from .targets import Values


class CNNRegressor(RegressorMixin, FineTuning):
    """A pretrained CNN with a new linear head, fine-tuned to predict continuous targets of images.

    As :class:`~skcnn.CNNClassifier`, for numbers: ``fit`` decodes every
    training image once, starts the new head from a linear probe on the
    frozen codes of ``layer`` (a ridge regression, ``RidgeCV``, on
    standardised codes and standardised targets), then trains the unfrozen
    layers on the mean squared error of the standardised targets, with early
    stopping on the R^2 of a (plain) validation split; the best epoch is kept,
    the probe (epoch 0) included. At the end the targets' standardisation is
    folded into the head, so that the head of ``module_`` outputs the
    predictions themselves.

    Parameters
    ----------
    backbone, weights, input_size, crop, batch_size, device, precision, runtime, tta, progress, on_error, \
max_pixels, decode, layer, max_epochs, learning_rate, backbone_lr_ratio, weight_decay, batchnorm, validation_fraction, \
n_iter_no_change, random_state, cache, checkpoint, memory_limit, store_dir
        As for :class:`~skcnn.CNNClassifier`.
    unfreeze : "auto", "head", "all" or a layer name, default="auto"
        What trains, as for :class:`~skcnn.CNNClassifier`. ``"auto"``: the
        head alone below 400 images (twice
        ``skcnn.frozen.advice.FINE_TUNING_PAYS_FROM``, the images per class
        from which fine-tuning overtook frozen codes for classes: a guess for
        continuous targets, not measured), the whole network from there.
        With the head alone, ``layer="auto"`` is ``"penultimate"`` (the
        layer search compares classifiers).
    augment : "auto", "photo", "crop", "flips", "dihedral", None or callable, default="auto"
        As for :class:`~skcnn.CNNClassifier`; ``"auto"`` is ``"photo"``
        (which symmetries keep a continuous target is not measured; give
        ``None`` or ``"flips"`` where a crop changes the target, as for a
        size or a share of the image).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the images (at least 2), stop
        after ``n_iter_no_change`` epochs without a better validation R^2
        (weighted by the sample weights, where given) and keep the best epoch;
        as for :class:`~skcnn.CNNClassifier`, only epochs that end with the
        learning rates at half their peak or below count.

    Attributes
    ----------
    n_outputs_ : int
        The number of targets: 1 for ``y`` of shape (n_samples,), ``k`` for (n_samples, k).
    strategy_ : dict
        ``layer``, ``unfreeze``, ``batchnorm``, ``augment``, ``tta`` and ``reason``: what ``"auto"`` chose and
        why (``tta="auto"`` is one view: flips and rotations are measured on classes alone).
    tta_ : str or None
        The views the fit took: ``tta`` as given, or for ``"auto"`` its choice (None: one view).
    input_size_, crop_
        The input the fit took: for ``input_size="auto"`` the weights' (whether
        images have an up or down is measured on classes alone).
    history_ : list of dict
        Per epoch, from epoch 0 (the ridge probe), as
        :class:`~skcnn.CNNClassifier`'s: ``train_loss`` is the mean squared
        error of the standardised targets (the mean over targets),
        ``validation_score`` the R^2.
    n_epochs_ : int
    best_epoch_ : int
    probe_score_ : float
        Validation R^2 of the ridge probe the head started from (NaN without
        early stopping, and with ``unfreeze="head"``).
    preprocessing_ : dict
    state_dict_ : dict of str to Tensor
        The fine-tuned network's weights, on the CPU; ``head.weight`` and
        ``head.bias`` give the targets themselves (the standardisation folded in).
    failed_ : list of ImageFailure

    See Also
    --------
    CNNClassifier : the same, for classes or labels.

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn import CNNRegressor
    >>> from skcnn.datasets import load_texture_patches
    >>> X, _ = load_texture_patches(n_per_class=8, patch_size=32)
    >>> y = X.mean(axis=(1, 2)) / 255  # the brightness of each patch
    >>> model = CNNRegressor(input_size=32, unfreeze="head", layer="penultimate").fit(X, y)
    >>> model.predict(X[:3]).shape, model.n_outputs_
    ((3,), 1)
    """

    _parameter_constraints: dict = constraints_of(
        "backbone", "weights", "input_size", "crop", "batch_size", "device", "precision", "runtime", "tta", "progress",
        "on_error", "max_pixels", "decode", "layer", "unfreeze", "max_epochs", "learning_rate", "backbone_lr_ratio",
        "weight_decay", "batchnorm", "augment", "early_stopping", "validation_fraction", "n_iter_no_change",
        "random_state", "cache", "checkpoint", "memory_limit", "store_dir",
        training=True,
    )  # fmt: skip

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune on ``X`` (images) and ``y`` (numbers).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :class:`~skcnn.CNNFeatureTransformer`.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Finite numbers; each target must vary.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Per image: they weight the standardisation of the codes, the ridge
            probe, every epoch's loss and the validation R^2. 0 leaves an
            image out of all of them.

        Returns
        -------
        self : CNNRegressor
        """
        return self._fit(X, y, sample_weight)

    def _checked_targets(self, y, n_images: int) -> tuple[np.ndarray, Values]:
        values = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        if values.ndim not in (1, 2) or len(values) != n_images:
            raise ValueError(
                f"y must hold one number, or one row of numbers, per image: X has {n_images} images, y has shape "
                f"{values.shape}."
            )
        values = values.reshape(n_images, -1)
        self.n_outputs_ = values.shape[1]
        return values, Values.of(values)

    def _validation_name(self) -> str:
        return "R^2"

    def predict(self, X):
        """The predicted targets of each image.

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see :class:`~skcnn.CNNClassifier`),
        with a progress bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            float32; one dimension where there is one target (``n_outputs_ == 1``),
            as scikit-learn's ``MLPRegressor``.
        """
        check_is_fitted(self)
        outputs = self._outputs(X)
        return outputs[:, 0] if self.n_outputs_ == 1 else outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


__all__ = ["CNNRegressor"]
