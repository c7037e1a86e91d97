"""Class activation maps: where in each image a linear head finds the evidence for each class.

A linear head on the average-pooled codes of a conv map scores class ``c``
as ``sum_k w[c, k] * mean_xy(A[k, x, y]) + b[c]``, which is the mean over
positions of ``M[c, x, y] = sum_k w[c, k] * A[k, x, y]`` plus ``b[c]``. ``M``
is the class activation map (Zhou et al., "Learning Deep Features for
Discriminative Localization", 2016): exact, with no gradients, for that
kind of head, and for no other.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from ..codes.extraction import layer_names
from ..decoding import images as image_io
from ..decoding import loading
from ..decoding.preprocessing import Preprocessing
from ..finetuning.classifier import CNNClassifier
from ..network.taps import probe, run_taps
from ..options import PENULTIMATE
from .models import check_model

#: What the maps support, for the errors that refuse other models.
SUPPORTED_MAPS = (
    "a CNNClassifier, or a Pipeline of a CNNFeatureTransformer (one backbone, one layer, pooling='avg'), "
    "optionally a StandardScaler, and a linear classifier (LogisticRegression, LinearSVC, RidgeClassifier, "
    "SGDClassifier, ...), on a conv layer or on penultimate codes that average-pool a conv map (ResNet, "
    "EfficientNet)"
)
#: Tolerance of the checks that penultimate codes are the average of the conv map before them, and
#: that the steps after the transformer score codes as ``codes @ weight.T + intercept``.
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


@dataclass
class LinearReadout:
    """A network's conv map, and the per-class weights that turn its channels into class scores."""

    network: nn.Module
    head: str  # the network's own classifier head (where "penultimate" is tapped)
    map_layer: str  # the layer whose conv map the maps weigh
    relu: bool  # whether the codes threshold the map before pooling
    weight: torch.Tensor  # (n_classes, channels)
    recipe: Preprocessing
    device: torch.device
    lock: threading.RLock

    def maps(self, batch: torch.Tensor) -> torch.Tensor:
        """Class activation maps of a normalised batch, at the map's resolution."""
        with self.lock, torch.inference_mode():
            activation = run_taps(self.network, batch.to(self.device), [self.map_layer], self.head, _float)
            activation = activation[self.map_layer]
            activation = activation.clamp_min(0) if self.relu else activation
            return torch.einsum("kc,bchw->bkhw", self.weight.to(activation.device), activation).cpu()


def class_activation_maps(model, X, *, upsample=True) -> np.ndarray:
    """Where in each image the evidence for each class lies (class activation maps).

    For a linear head on average-pooled codes of a conv layer, a class's
    score is the mean over positions of the class's map plus its intercept,
    so the map is exact: computed from the conv map and the head's weights,
    with no gradients. Maps are computed in float32 with the network in
    evaluation mode.

    Parameters
    ----------
    model : CNNClassifier or Pipeline
        A fitted :class:`~skcnn.CNNClassifier` (its head reads average-pooled
        codes), or a fitted pipeline of a :class:`~skcnn.CNNFeatureTransformer`
        with one backbone, one layer and ``pooling="avg"``, optionally a
        ``StandardScaler``, and a linear classifier (``coef_``:
        ``LogisticRegression``, ``LinearSVC``, ``RidgeClassifier``, ...).
        The layer is a conv layer, or ``"penultimate"`` where those codes
        are a global average pool of a conv map (ResNet, EfficientNet).
        Other models (a non-linear classifier, max or pyramid pooling,
        penultimate codes after fully connected layers as in AlexNet and
        VGG) raise a ``ValueError`` rather than an approximation.
    X : sequence of images
        Paths, PIL images or arrays.
    upsample : bool, default=True
        Resize the maps (bilinearly) to the network's input, the centre
        crop it saw. ``False`` keeps the conv map's resolution, where a
        map's mean plus the class's intercept is exactly the class's
        decision function.

    Returns
    -------
    maps : ndarray of shape (n_images, n_classes, h, w), float32
        One map per class, in the order of ``classes_``, positive where the
        evidence for that class lies. With two classes the second map is
        the decision function's (the positive class's) and the first its
        negative. Images that could not be used raise
        :class:`~skcnn.BadImagesError` (its ``codes`` hold the maps of the
        others), or have NaN maps where the model's ``on_error="skip"``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.inspection import class_activation_maps
    >>> X, y = load_texture_patches(n_per_class=6, patch_size=64)
    >>> codes = CNNFeatureTransformer(input_size=64, precision="fp32", progress=False)
    >>> model = make_pipeline(codes, LogisticRegression()).fit(X, y)
    >>> class_activation_maps(model, X[:2]).shape
    (2, 3, 64, 64)
    >>> small = class_activation_maps(model, X[:2], upsample=False)  # 2 x 2 positions at 64 px
    >>> scores = small.mean(axis=(2, 3)) + model[-1].intercept_
    >>> bool(abs(scores - model.decision_function(X[:2])).max() < 1e-3)
    True
    """
    readout = _readout(model)
    images = image_io.as_image_list(X)
    n_classes = readout.weight.shape[0]
    failures: list = []
    maps = None
    decoding = model if isinstance(model, CNNClassifier) else model[0]  # whose decoding parameters apply
    for done, batch in loading.iter_batches(
        images, range(len(images)), readout.recipe, decoding.batch_size, failures, max_pixels=decoding.max_pixels,
        num_workers=loading.resolve_workers("auto"), decode=decoding.decode,
    ):  # fmt: skip
        found = readout.maps(batch)
        if upsample:
            found = F.interpolate(found, size=readout.recipe.crop_size, mode="bilinear", align_corners=False)
        if maps is None:
            maps = np.full((len(images), n_classes, *found.shape[2:]), np.nan, dtype=np.float32)
        maps[done] = found.numpy()
    if maps is None:
        maps = np.full((len(images), n_classes, 0, 0), np.nan, dtype=np.float32)
    return _with_failures(maps, failures, decoding.on_error)


def _with_failures(maps: np.ndarray, failures: list, on_error: str) -> np.ndarray:
    if not failures:
        return maps
    failures = sorted(failures, key=lambda failure: failure.index)
    if on_error == "raise":
        raise image_io.BadImagesError(failures, maps)
    warnings.warn(
        f"{len(failures)} of {len(maps)} images could not be used; their maps are NaN. First: {failures[0]}",
        UserWarning,
        stacklevel=3,
    )
    return maps


def _float(activation: torch.Tensor, name: str) -> torch.Tensor:
    return activation.float().clone()


def _readout(model) -> LinearReadout:
    """The network, its conv map and the class weights of ``model``, or an error naming what is not linear."""
    check_model(model)
    check_is_fitted(model)
    if isinstance(model, CNNClassifier):
        module = model.module_
        weight = module.head.weight.detach().float().cpu()
        if len(model.classes_) == 2:  # decision_function: the second logit over the first
            weight = weight[1:] - weight[:1]
        device = next(module.parameters()).device
        network, head, layer, relu = module.network, module.network_head, module.layer, True
        recipe, lock = Preprocessing.from_dict(model.preprocessing_), threading.RLock()
    else:
        transformer, weight = _pipeline_weight(model)
        backbone = transformer.extractor_.load()
        network, head, layer, relu = (
            backbone.network,
            transformer.head_,
            layer_names(transformer.layer)[0],
            transformer.relu,
        )
        recipe, device, lock = transformer.extractor_.preprocessing(backbone), backbone.device, backbone.lock
    if weight.shape[0] == 1:  # binary: the negative class's map is the negative of the positive's
        weight = torch.cat([-weight, weight])
    map_layer = _map_layer(network, head, layer, relu, recipe, device, lock)
    return LinearReadout(network, head, map_layer, relu, weight, recipe, device, lock)


def _pipeline_weight(model: Pipeline):
    """The transformer, and the class weights of the steps after it on its codes.

    The steps must score codes as ``codes @ weight.T + intercept`` (a
    ``StandardScaler`` folds into the weights): checked on random codes, so
    that a classifier whose scores are not linear per class (an RBF or
    one-vs-one SVC) is refused, whatever its attributes.
    """
    transformer, steps, classifier = model[0], model[1:], model.steps[-1][1]
    if not isinstance(transformer.backbone, str) or len(layer_names(transformer.layer)) != 1:
        raise ValueError(f"class_activation_maps needs one backbone and one layer; the model must be {SUPPORTED_MAPS}.")
    if transformer.pooling != "avg":
        raise ValueError(
            f"class_activation_maps needs average-pooled codes; the transformer has pooling={transformer.pooling!r}: "
            f"the model must be {SUPPORTED_MAPS}."
        )
    scale, shift = np.ones(transformer.n_features_out_), np.zeros(transformer.n_features_out_)
    for name, step in model.steps[1:-1]:
        if step in (None, "passthrough"):
            continue
        if not isinstance(step, StandardScaler):
            raise ValueError(f"class_activation_maps: step {name!r} ({type(step).__name__}) is not a StandardScaler; "
                             f"the model must be {SUPPORTED_MAPS}.")  # fmt: skip
        shift = (shift - (0 if step.mean_ is None else step.mean_)) / (1 if step.scale_ is None else step.scale_)
        scale = scale * (1 if step.scale_ is None else step.scale_)
    if not hasattr(classifier, "coef_") or not hasattr(steps, "decision_function"):
        raise ValueError(
            f"class_activation_maps: the classifier {type(classifier).__name__} has no linear decision function "
            f"(coef_); the model must be {SUPPORTED_MAPS}."
        )
    weight = np.atleast_2d(np.asarray(classifier.coef_, dtype=np.float64)) / scale
    intercept = np.asarray(classifier.intercept_, dtype=np.float64) + np.atleast_2d(classifier.coef_) @ shift
    codes = np.random.default_rng(0).random((4, transformer.n_features_out_))
    expected = (codes @ weight.T + intercept).reshape(len(codes), -1)
    scores = np.asarray(steps.decision_function(codes), dtype=np.float64).reshape(len(codes), -1)
    if scores.shape != expected.shape or not np.allclose(scores, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        raise ValueError(
            f"class_activation_maps: the classifier {type(classifier).__name__} does not score each class as a "
            f"weighted sum of the codes; the model must be {SUPPORTED_MAPS}."
        )
    return transformer, torch.as_tensor(weight, dtype=torch.float32)


def _map_layer(network, head: str, layer: str, relu: bool, recipe, device, lock) -> str:
    """The conv layer whose map the codes of ``layer`` average-pool, or an error."""
    example = torch.randn(1, 3, *recipe.crop_size, device=device)
    with lock:
        layers, _ = probe(network, example)
    shapes = {entry.name: entry.shape for entry in layers}
    if layer != PENULTIMATE:
        if len(shapes[layer]) != 3:
            raise ValueError(
                f"class_activation_maps: layer {layer!r} gives vectors {shapes[layer]}, not a conv map; "
                f"the model must be {SUPPORTED_MAPS}."
            )
        return layer
    maps = [entry.name for entry in layers if len(entry.shape) == 3 and entry.shape[1] * entry.shape[2] > 1]
    if maps:
        with lock, torch.inference_mode():
            taken = run_taps(network, example, [maps[-1], PENULTIMATE], head, _float)
        conv, codes = taken[maps[-1]], taken[PENULTIMATE].reshape(1, -1)
        pooled = conv.mean(dim=(2, 3))
        if (
            pooled.shape == codes.shape
            and torch.allclose(pooled, codes, rtol=CHECK_RTOL, atol=CHECK_ATOL)
            and (not relu or conv.min() >= 0)
        ):
            return maps[-1]
    raise ValueError(
        "class_activation_maps: the penultimate codes of this network are not a global average pool of a conv map "
        f"(fully connected layers come first, as in AlexNet and VGG); tap a conv layer instead. The model must be "
        f"{SUPPORTED_MAPS}."
    )


__all__ = ["SUPPORTED_MAPS", "class_activation_maps"]
