"""``CNNClassifier``: a pretrained CNN fine-tuned as a scikit-learn classifier."""

from __future__ import annotations

import copy
import os
import warnings
from numbers import Integral, Real
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import backbones, loading
from .. import images as image_io
from ..advice import advise_layer
from ..cache import CodeCache
from ..compat import Interval, StrOptions, _fit_context
from ..extraction import checked_input_size, show_progress
from ..identity import image_key
from ..layers import probe_backbone
from ..options import CHOICES, DEFAULTS
from ..transformer import CNNFeatureTransformer
from . import training
from .augment import resolve_augment, to_uint8

#: Inverse regularisation of the linear probe that starts the head: the
#: scikit-learn default, a mild L2 on codes of a few hundred dimensions.
PROBE_C = 1.0


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained CNN with a new head, fine-tuned on labelled images.

    ``fit`` decodes every training image once, starts the new head from a
    linear probe (a logistic regression on the frozen penultimate codes,
    as LP-FT prescribes), then trains the unfrozen layers: discriminative
    learning rates (pretrained layers ``backbone_lr_ratio`` times slower
    than the head), warmup and cosine decay, augmentation of training
    batches only, early stopping on a stratified validation split, the best
    epoch's weights restored at the end.

    Parameters
    ----------
    backbone, weights, input_size, device, progress, max_pixels, cache
        As for :class:`~skcnn.CNNFeatureTransformer` (``cache`` stores the
        penultimate codes the head is started from).
    batch_size : int, default=32
        Images per training step (and per prediction batch).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Training arithmetic: ``"auto"`` is fp16 with a gradient scaler on
        CUDA, fp32 elsewhere.
    on_error : {"raise", "skip"}, default="raise"
        Bad training images: ``"raise"`` names them all and refuses to fit,
        ``"skip"`` leaves them out with a warning (``failed_``).
    unfreeze : "auto", "head", "all" or a layer name, default="auto"
        What trains: the head only (a linear probe), that layer and every
        later one, or the whole network. ``"auto"`` follows
        :func:`skcnn.advise_layer`: small data like ImageNet, the head;
        small data unlike it, from the advised earlier layer up; large
        data, everything.
    max_epochs : int, default=10
    learning_rate : float, default=1e-3
        The head's peak learning rate (AdamW, one-cycle schedule).
    backbone_lr_ratio : float, default=0.1
        Pretrained layers' learning rate over the head's. 0.1 measured
        better than 0.01 on animal-mnist (``benchmarks/RESULTS.md``).
    weight_decay : float, default=1e-4
    batchnorm : {"auto", "frozen", "adapt", "train"}, default="auto"
        ``"frozen"``: running statistics fixed, BatchNorm in eval mode in
        every epoch; ``"adapt"``: re-estimated on the training images first
        (AdaBN), then fixed; ``"train"``: updated. ``"auto"``: frozen (the
        head starts from a probe of the network's features as they are;
        adapting or training the statistics measured worse on data unlike
        ImageNet, ``benchmarks/RESULTS.md``).
    augment : "auto", None or callable, default="auto"
        Applied to each uint8 ``(3, h, w)`` training image (a
        ``torchvision.transforms.v2`` transform); never to the validation
        split or to prediction. ``"auto"``: a random resized crop (at least
        60% of the image) and a horizontal flip.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the images (stratified), stop
        after ``n_iter_no_change`` epochs without a better validation
        accuracy and keep the best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=3
    random_state : int, RandomState or None, default=None
        Seeds the split, the order of batches, augmentation and the head;
        on the CPU a given seed gives the same model.
    checkpoint : str, path or None, default=None
        A file written after every epoch (atomically). ``fit`` called
        again with the same data, parameters and checkpoint goes on from
        the last finished epoch.

    Attributes
    ----------
    classes_ : ndarray
        The class labels.
    strategy_ : dict
        ``unfreeze``, ``batchnorm`` and ``reason``: what ``"auto"`` chose and why.
    history_ : list of dict
        Per epoch: ``train_loss``, ``validation_score``, ``learning_rates``, ``seconds``.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        The epoch whose weights the model holds.
    preprocessing_ : dict
        The evaluation preprocessing (sizes, mean, std, interpolation) of the weights at ``input_size``.
    state_dict_ : dict of str to Tensor
        The fine-tuned network's weights, on the CPU (what a pickle holds).
    failed_ : list of ImageFailure
        Training images left out (``on_error="skip"``).

    Examples
    --------
    >>> from skcnn import CNNClassifier
    >>> from skcnn.datasets import load_texture_patches
    >>> X, y = load_texture_patches(n_per_class=8, patch_size=32)
    >>> model = CNNClassifier(input_size=32, max_epochs=1, unfreeze="blocks.5", random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape, model.predict_proba(X[:3]).sum(axis=1).round(3).tolist()
    ((3,), [1.0, 1.0, 1.0])
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(CHOICES["precision"]))],
        "progress": ["boolean", StrOptions({"auto"})],
        "on_error": [StrOptions(set(CHOICES["on_error"]))],
        "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
        "unfreeze": [str],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_ratio": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batchnorm": [StrOptions(set(training.BATCHNORMS))],
        "augment": [StrOptions({"auto"}), None, callable],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "cache": [str, os.PathLike, CodeCache, None],
        "checkpoint": [str, os.PathLike, None],
    }

    def __init__(
        self,
        *,
        backbone=DEFAULTS.backbone,
        weights=DEFAULTS.weights,
        input_size=DEFAULTS.input_size,
        batch_size=32,
        device=DEFAULTS.device,
        precision=DEFAULTS.precision,
        progress=DEFAULTS.progress,
        on_error=DEFAULTS.on_error,
        max_pixels=DEFAULTS.max_pixels,
        unfreeze="auto",
        max_epochs=10,
        learning_rate=1e-3,
        backbone_lr_ratio=0.1,
        weight_decay=1e-4,
        batchnorm="auto",
        augment="auto",
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=3,
        random_state=None,
        cache=None,
        checkpoint=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.progress = progress
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.unfreeze = unfreeze
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.backbone_lr_ratio = backbone_lr_ratio
        self.weight_decay = weight_decay
        self.batchnorm = batchnorm
        self.augment = augment
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.cache = cache
        self.checkpoint = checkpoint

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune on ``X`` (images) and ``y`` (labels of any kind).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :class:`~skcnn.CNNFeatureTransformer`.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : CNNClassifier
        """
        images = image_io.as_image_list(X)
        labels = self._checked_labels(y, len(images))
        backbone = backbones.load_backbone(self.backbone, self.weights, self.device)
        recipe = self._recipe(backbone)
        pixels, kept = self._decoded(images, recipe)
        images, labels = [images[i] for i in kept], labels[kept]
        targets = torch.as_tensor(LabelEncoder().fit(self.classes_).transform(labels))
        self.strategy_ = self._strategy(images, labels)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        train, val = self._split(targets, seed)
        # The probe sees the training split only: the validation split judges the epochs.
        network, head = self._started_network(backbone, recipe, [images[i] for i in train], targets[train])
        plan = self._plan(backbone.device, seed, images, labels)
        data = (pixels[train], targets[train])
        validation = None if val is None else (pixels[val], targets[val])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            parameters = training.trainable(network, head, self.strategy_["unfreeze"], pixels[:1].float())
            if plan.batchnorm == "adapt":
                training.adapt_batchnorm(network, data[0], recipe, plan)
                plan.batchnorm = "frozen"
            state = training.train(
                network, parameters, data, validation, recipe, resolve_augment(self.augment, recipe.crop_size), plan
            )
        self.history_, self.n_epochs_, self.best_epoch_ = state.history, state.epoch, state.best_epoch
        self.state_dict_ = {name: value.detach().cpu().clone() for name, value in network.state_dict().items()}
        self.head_ = head
        self.preprocessing_ = recipe.as_dict()
        self._recipe_of_weights = recipe  # prediction needs no network load for it, even after unpickling
        self._network = network.eval()
        return self

    def _checked_labels(self, y, n_images: int) -> np.ndarray:
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != n_images:
            raise ValueError(f"y must hold one label per image: X has {n_images} images, y has shape {labels.shape}.")
        check_classification_targets(labels)
        self.classes_, counts = np.unique(labels, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_.tolist()}); a classifier needs at least two.")
        if counts.min() < 2:
            lonely = self.classes_[counts < 2].tolist()
            raise ValueError(f"classes {lonely} have one image each; every class needs at least two.")
        return labels

    def _recipe(self, backbone):
        size = checked_input_size(self.input_size)
        return backbone.preprocessing if size is None else backbone.preprocessing.with_input_size(size)

    def _decoded(self, images: list, recipe) -> tuple[torch.Tensor, list[int]]:
        """Every image decoded once, to uint8 network inputs; the indices kept."""
        failures: list = []
        positions, batches = [], []
        for done, batch in loading.iter_batches(
            images, range(len(images)), recipe, self.batch_size, failures,
            max_pixels=self.max_pixels, num_workers=loading.resolve_workers("auto"),
        ):  # fmt: skip
            positions += done
            batches.append(to_uint8(batch, recipe))
        self.failed_ = sorted(failures, key=lambda failure: failure.index)
        if self.failed_ and self.on_error == "raise":
            raise image_io.BadImagesError(self.failed_)
        if self.failed_:
            warnings.warn(
                f"{len(self.failed_)} of {len(images)} training images could not be used and are left out "
                f"(see failed_). First: {self.failed_[0]}",
                UserWarning,
                stacklevel=3,
            )
        return torch.cat(batches), positions

    def _strategy(self, images: list, labels: np.ndarray) -> dict:
        if self.unfreeze != "auto" and self.batchnorm != "auto":
            return {"unfreeze": self.unfreeze, "batchnorm": self.batchnorm, "reason": "as given"}
        advice = advise_layer(images, labels, backbone=self.backbone, input_size=self.input_size, device=self.device)
        if not advice.small:
            unfreeze, why = "all", "large data: every layer fine-tuned from the pretrained weights"
        elif advice.similar:
            unfreeze, why = "head", "small data like ImageNet: a linear probe on the penultimate codes"
        else:
            unfreeze, why = advice.layer, f"small data unlike ImageNet: {advice.layer} and the layers after it"
        batchnorm = "frozen"  # "adapt" and "train" moved the features the probe head was fit on
        return {
            "unfreeze": unfreeze if self.unfreeze == "auto" else self.unfreeze,
            "batchnorm": batchnorm if self.batchnorm == "auto" else self.batchnorm,
            "reason": f"{why}; similarity {advice.similarity:.2f}, {advice.n_samples} images",
        }

    def _started_network(self, backbone, recipe, images: list, targets: torch.Tensor) -> tuple[nn.Module, str]:
        """A copy of the pretrained network whose new head is a linear probe on its penultimate codes."""
        _, head = probe_backbone(backbone, recipe.crop_size)
        codes = CNNFeatureTransformer(
            backbone=self.backbone, weights=self.weights, input_size=recipe.crop_size, relu=False,
            batch_size=self.batch_size, device=self.device, precision="fp32", progress=False,
            max_pixels=self.max_pixels, cache=self.cache,
        ).fit_transform(images)  # fmt: skip
        probe = LogisticRegression(C=PROBE_C, max_iter=2000).fit(codes, targets.numpy())
        weight, bias = probe.coef_, probe.intercept_
        if len(self.classes_) == 2:  # one logit for class 1 against class 0
            weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
        network = copy.deepcopy(backbone.network).float()
        _replace_head(
            network, head, torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)
        )
        return network.to(backbone.device), head

    def _plan(self, device: torch.device, seed: int, images: list, labels: np.ndarray) -> training.Plan:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self.precision == "auto" and device.type == "cuda":
            dtype = torch.float16
        checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        return training.Plan(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            backbone_lr_ratio=self.backbone_lr_ratio,
            weight_decay=self.weight_decay,
            batchnorm=self.strategy_["batchnorm"],
            n_iter_no_change=self.n_iter_no_change if self.early_stopping else None,
            device=device,
            dtype=dtype,
            seed=seed,
            progress=show_progress(self.progress, len(images), self.batch_size),
            checkpoint=checkpoint,
            fingerprint=self._fingerprint(seed, images, labels) if checkpoint else "",
        )

    def _fingerprint(self, seed: int, images: list, labels: np.ndarray) -> str:
        """What a checkpoint must match to be resumed: data, labels, parameters, seed."""
        params = {k: v for k, v in self.get_params().items() if k not in ("progress", "checkpoint", "cache")}
        return joblib.hash((repr(sorted(params.items())), [image_key(i) for i in images], labels.tolist(), seed))

    def _split(self, targets: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Indices of the training and the (stratified) validation split."""
        if not self.early_stopping:
            return torch.arange(len(targets)), None
        n_val = int(np.ceil(self.validation_fraction * len(targets)))
        if n_val < len(self.classes_):
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out {n_val} of {len(targets)} images, fewer "
                f"than the {len(self.classes_)} classes; raise it, give more images, or set early_stopping=False."
            )
        train, val = train_test_split(
            np.arange(len(targets)), test_size=n_val, stratify=targets.numpy(), random_state=seed
        )
        return torch.as_tensor(train), torch.as_tensor(val)

    def _model(self) -> nn.Module:
        """The fine-tuned network, rebuilt from ``state_dict_`` after unpickling."""
        if getattr(self, "_network", None) is None:
            network, _ = backbones.build_network(backbones.parse_backbone(self.backbone), None)
            n_classes = len(self.classes_)
            features = self.state_dict_[f"{self.head_}.weight"].shape[1]
            _replace_head(network, self.head_, torch.zeros(n_classes, features), torch.zeros(n_classes))
            network.load_state_dict(self.state_dict_)
            device = backbones.resolve_device(self.device)
            self._network = network.to(device).eval()
        return self._network

    def to_transformer(self, path, **params) -> CNNFeatureTransformer:
        """A :class:`~skcnn.CNNFeatureTransformer` whose network is the fine-tuned one.

        The fine-tuned weights are written to ``path`` as a state dict of the
        backbone's own architecture (its original ImageNet head kept, which
        penultimate and earlier codes never use), the file the transformer's
        ``weights=`` reads; its cache fingerprint is the file's content hash.

        Parameters
        ----------
        path : str or path
            Where to write the weights (``.pt``).
        **params
            Further :class:`~skcnn.CNNFeatureTransformer` parameters (``layer``, ``cache`` ...).

        Returns
        -------
        transformer : CNNFeatureTransformer
            Unfitted, with ``backbone``, ``weights=path`` and ``input_size`` set.
        """
        check_is_fitted(self)
        original = backbones.load_backbone(self.backbone, self.weights, "cpu").network.state_dict()
        body = {k: v for k, v in self.state_dict_.items() if not k.startswith(self.head_ + ".")}
        torch.save({**original, **body}, path)
        return CNNFeatureTransformer(backbone=self.backbone, weights=path, input_size=self.input_size, **params)

    def decision_function(self, X):
        """Logits (for two classes: the positive class's logit over the other's).

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return torch.softmax(torch.as_tensor(self._logits(X)), dim=1).numpy()

    def predict(self, X):
        """The most probable class of each image.

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[self._logits(X).argmax(axis=1)]

    def _logits(self, X) -> np.ndarray:
        """Batched, in inference mode, with the weights' own evaluation preprocessing."""
        images = image_io.as_image_list(X)
        network = self._model()
        recipe = self._recipe_of_weights
        device = next(network.parameters()).device
        failures: list = []
        logits = np.full((len(images), len(self.classes_)), np.nan, dtype=np.float32)
        with torch.inference_mode():
            for done, batch in loading.iter_batches(images, range(len(images)), recipe, self.batch_size, failures):
                logits[done] = network(batch.to(device)).float().cpu().numpy()
        if failures:
            raise image_io.BadImagesError(sorted(failures, key=lambda failure: failure.index), logits)
        return logits

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_network", None)  # rebuilt from state_dict_ (CPU tensors) on first use
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


def _replace_head(network: nn.Module, head: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Put a new ``Linear`` head with these weights where ``head`` was."""
    parent_name, _, child = head.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    old = getattr(parent, child)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"the head {head!r} is a {type(old).__name__}; CNNClassifier replaces Linear heads only.")
    new = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    setattr(parent, child, new)


__all__ = ["CNNClassifier"]
