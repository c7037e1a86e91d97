"""The linear probe that starts the new head (LP-FT): codes in, head weights out.

The probe is the frozen-codes baseline of :class:`~skcnn.LayerSearchCV`
(standardised codes, a logistic regression with ``C`` tuned by inner
cross-validation), its standardisation folded into one ``Linear`` layer, so
that fine-tuning starts where that baseline ends. The codes it reads are
those of :class:`~skcnn.finetuning.model.TappedClassifier`, computed here
from the decoded crops of a fit (or, with a ``cache``, by the transformer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..decoding import images as image_io
from ..decoding.preprocessing import Preprocessing
from ..frozen.search import default_classifier
from ..frozen.transformer import CNNFeatureTransformer
from .model import TappedClassifier, linear_head, set_mode
from .store import DecodedImages

#: Inverse regularisation of the linear probe that starts the head where a
#: class has too few images to tune it: scikit-learn's default.
PROBE_C = 1.0
#: Folds of the inner cross-validation that tunes the probe's ``C`` (as many
#: as the smallest class allows, at most this).
PROBE_INNER_CV = 3
#: Training images the probe that starts a fine-tuned head is fit on at most
#: (a stratified draw beyond): it only starts the head, and its codes and the
#: logistic regression's copies of them (about 25 kB per image at 1,280
#: codes) would otherwise grow with the training set, past the training
#: state itself from about 25,000 images (benchmarks/RESULTS.md, "Fine-tuning
#: at scale"). The head-only model, which is the probe, takes every image.
PROBE_MAX_IMAGES = 10_000


def frozen_codes(params: Mapping, input_size, layer, cache, progress=False, tta=None) -> CNNFeatureTransformer:
    """The transformer whose codes a :class:`~skcnn.CNNClassifier` with ``params``
    (its ``get_params()``) fits its probe head on, at ``input_size`` and ``layer``.

    fp32: the arithmetic training starts in. The one place that says how the
    classifier's frozen codes are computed, so that what is cached for a fit
    (``cache``) is what inspection reads back (:mod:`skcnn.inspection`).
    ``tta``: the views whose codes are averaged, for a head-only model (its
    probe is the model, and predicts from the views' average); a probe that
    starts fine-tuning is fit on the images as they are, as training sees them.
    """
    return CNNFeatureTransformer(
        backbone=params["backbone"], weights=params["weights"], input_size=input_size, crop=params["crop"],
        layer=layer, batch_size=params["batch_size"], device=params["device"], precision="fp32",
        progress=progress, on_error=params["on_error"], max_pixels=params["max_pixels"], decode=params["decode"],
        cache=cache, tta=tta,
    )  # fmt: skip


def exact_crops(images: Sequence) -> frozenset[int]:
    """The positions of the images decoded to uint8 pixels: their stored crops are, bit for bit,
    the crops the transformer normalises. 16-bit and float images are resized in float, and their
    stored crops rounded to uint8, so they are decoded again. A file's header only is read."""
    return frozenset(i for i, image in enumerate(images) if image_io.gives_uint8(image))


#: A view of a uint8 ``(B, 3, h, w)`` batch: the batch itself, a flip, a turn.
View = Callable[[torch.Tensor], torch.Tensor]


def linear_probe(codes: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the linear probe on ``codes``, standardisation folded in.

    Parameters
    ----------
    codes : ndarray of shape (n_images, n_codes)
    targets : ndarray of shape (n_images,)
        Encoded classes, 0 to ``n_classes - 1``.
    weights : ndarray of shape (n_images,) or None
        Sample weights of the standardisation and the regression.

    Returns
    -------
    weight : ndarray of shape (n_classes or 1, n_codes)
    bias : ndarray of shape (n_classes or 1,)
        ``codes @ weight.T + bias`` are the probe's decision values (one
        column for two classes, as scikit-learn's).

    Notes
    -----
    ``C`` is tuned by inner cross-validation (:data:`PROBE_INNER_CV` folds at
    most); with a class too small to tune it, ``C`` is :data:`PROBE_C`.
    """
    fit_params = {} if weights is None else {"sample_weight": weights}
    smallest = int(np.unique(targets, return_counts=True)[1].min())
    if smallest >= 2:
        probe = default_classifier(inner_cv=min(PROBE_INNER_CV, smallest))
        scaler, linear = probe[0], probe[-1]
    else:
        scaler, linear = StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000)
    linear.fit(scaler.fit(codes, **fit_params).transform(codes), targets, **fit_params)
    weight = linear.coef_ / scaler.scale_  # w . (x - mean) / scale == (w / scale) . x - (w / scale) . mean
    return weight, linear.intercept_ - weight @ scaler.mean_


def probe_head(
    codes: np.ndarray, targets: torch.Tensor, weights: np.ndarray | None, n_classes: int
) -> tuple[nn.Linear, float]:
    """The new head, the linear probe on ``codes``, and its training loss.

    Parameters
    ----------
    codes : ndarray of shape (n_images, n_codes)
    targets : Tensor of shape (n_images,)
        Encoded classes.
    weights : ndarray of shape (n_images,) or None
        Sample weights of the probe and of its loss.
    n_classes : int

    Returns
    -------
    head : nn.Linear
        One logit per class (for two classes, class 0's logit is 0).
    loss : float
        The head's mean cross-entropy on ``codes`` (weighted by
        ``weights``): the training loss of epoch 0.
    """
    weight, bias = linear_probe(codes, targets.numpy(), weights)
    if n_classes == 2:  # one logit for class 1 against class 0
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    return fitted_head(weight, bias, codes, targets, weights, _cross_entropy)


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def fitted_head(
    weight: np.ndarray,
    bias: np.ndarray,
    codes: np.ndarray,
    targets: torch.Tensor,
    weights: np.ndarray | None,
    losses: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[nn.Linear, float]:
    """A probe's ``weight`` and ``bias`` as the new head, and its mean loss on ``codes``.

    Parameters
    ----------
    weight : ndarray of shape (n_outputs, n_codes)
    bias : ndarray of shape (n_outputs,)
    codes : ndarray of shape (n_images, n_codes)
    targets : Tensor
        Encoded, as the loss reads them.
    weights : ndarray of shape (n_images,) or None
        Sample weights of the mean.
    losses : callable
        ``(outputs, targets) -> per-image losses`` (the target kind's,
        :mod:`skcnn.finetuning.targets`).

    Returns
    -------
    head : nn.Linear
    loss : float
        Weighted by ``weights``: the training loss of epoch 0.
    """
    head = linear_head(torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))
    with torch.inference_mode():
        per_image = losses(head(torch.as_tensor(codes)), targets).double()
    mean = per_image.mean() if weights is None else (per_image * torch.as_tensor(weights)).sum() / float(weights.sum())
    return head, float(mean)


#: The ridge penalties :func:`ridge_probe` chooses from (by efficient leave-one-out), on standardised
#: codes and targets: from almost none to a prediction near the mean.
RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 15))


def ridge_probe(codes: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a ridge regression on standardised ``codes``, the standardisation folded in.

    Parameters
    ----------
    codes : ndarray of shape (n_images, n_codes)
    targets : ndarray of shape (n_images, n_targets)
        Standardised targets.
    weights : ndarray of shape (n_images,) or None
        Sample weights of the standardisation and the regression.

    Returns
    -------
    weight : ndarray of shape (n_targets, n_codes)
    bias : ndarray of shape (n_targets,)

    Notes
    -----
    ``alpha`` is one of :data:`RIDGE_ALPHAS`, chosen by ``RidgeCV``'s
    efficient leave-one-out cross-validation.
    """
    fit_params = {} if weights is None else {"sample_weight": weights}
    scaler = StandardScaler().fit(codes, **fit_params)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(codes), targets, **fit_params)
    weight = np.atleast_2d(ridge.coef_) / scaler.scale_
    return weight, np.atleast_1d(ridge.intercept_) - weight @ scaler.mean_


def stratified_rows(targets: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """All rows within ``limit``; beyond, a seeded draw of each class in proportion (one at least).

    Parameters
    ----------
    targets : ndarray of shape (n_images,)
    limit : int
    seed : int

    Returns
    -------
    rows : ndarray of int
        Sorted positions in ``targets``.
    """
    if len(targets) <= limit:
        return np.arange(len(targets))
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        rows.append(rng.permutation(members)[: max(1, round(limit * len(members) / len(targets)))])
    return np.sort(np.concatenate(rows))


def probe_rows(targets: np.ndarray, seed: int, stratify: bool = True) -> np.ndarray:
    """The training rows the probe that starts a fine-tuned head is fit on (:data:`PROBE_MAX_IMAGES` at most):
    a stratified draw beyond (classes), or a plain one (``stratify=False``: labels, continuous targets)."""
    if stratify:
        return stratified_rows(targets, PROBE_MAX_IMAGES, seed)
    if len(targets) <= PROBE_MAX_IMAGES:
        return np.arange(len(targets))
    return np.sort(np.random.default_rng(seed).permutation(len(targets))[:PROBE_MAX_IMAGES])


def crop_codes(
    model: TappedClassifier,
    recipe: Preprocessing,
    crops: DecodedImages,
    batch_size: int,
    views: Mapping[str, View] | None = None,
) -> dict[str, np.ndarray]:
    """The frozen codes of decoded crops at the model's layer, so that no image is decoded again.

    Parameters
    ----------
    model : TappedClassifier
        Run in evaluation mode, batch norm frozen, on its own device.
    recipe : Preprocessing
        Normalises the uint8 crops.
    crops : DecodedImages
    batch_size : int
    views : mapping of str to callable, or None, default=None
        Each crop's codes are computed under each view (a flip, a turn) of
        the batch, read once; ``None``: the crops as they are, under ``"original"``.

    Returns
    -------
    codes : dict of str to ndarray of shape (len(crops), n_codes)
        float32, by view.
    """
    views = {"original": lambda pixels: pixels} if views is None else views
    device = next(model.parameters()).device
    set_mode(model, False, "frozen")
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in views}
    with torch.inference_mode():
        for pixels in crops.batches(range(len(crops)), batch_size):
            for name, view in views.items():
                blocks[name].append(model.codes(recipe.normalize(view(pixels)).to(device)).float().cpu().numpy())
    return {name: np.concatenate(found) for name, found in blocks.items()}


__all__ = [
    "PROBE_C",
    "PROBE_INNER_CV",
    "PROBE_MAX_IMAGES",
    "RIDGE_ALPHAS",
    "crop_codes",
    "exact_crops",
    "fitted_head",
    "linear_probe",
    "probe_head",
    "probe_rows",
    "ridge_probe",
    "stratified_rows",
]
