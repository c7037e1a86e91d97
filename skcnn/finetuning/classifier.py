"""``CNNClassifier``: a pretrained CNN fine-tuned as a scikit-learn classifier."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from .. import arithmetic, backbones, loading, symmetry
from .. import images as image_io
from ..advice import FINE_TUNING_PAYS_FROM
from ..cache import CodeCache
from ..compat import Interval, StrOptions, _check_sample_weight, _fit_context
from ..extraction import checked_input_size
from ..files import atomic_path
from ..layers import probe_backbone
from ..options import CHOICES, DEFAULTS, FINETUNING, PENULTIMATE, show_progress
from ..preprocessing import check_crop
from ..search import LayerSearchCV, default_classifier
from ..transformer import CNNFeatureTransformer
from . import training
from .augment import AUGMENT_POLICIES, label_preserving, policy_for, resolve_augment, symmetries_kept
from .model import HEAD, WHOLE, TappedClassifier, linear_head, network_weights
from .prediction import Predictor
from .store import decoded_images, resolve_memory_limit

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
#: Images on which ``augment="auto"`` measures which symmetries keep the
#: class (4 frozen forward passes each): its standard error at 256 is about 3%.
SYMMETRY_MAX_IMAGES = 256
#: Folds of the layer search behind ``layer="auto"`` with the head alone.
LAYER_SEARCH_CV = 3
#: Parameters that change how a fit runs, not what it computes: a checkpoint resumes across them.
_SAME_RESULT = ("progress", "checkpoint", "cache", "memory_limit", "store_dir", "runtime")


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained CNN with a new head, fine-tuned on labelled images.

    ``fit`` decodes every training image once (kept in memory, or in files
    beyond ``memory_limit``), starts the new head from a
    linear probe on the frozen codes of ``layer`` (standardised codes, a
    logistic regression with ``C`` tuned by cross-validation: the frozen-codes
    baseline, as LP-FT prescribes), then trains the unfrozen layers:
    discriminative learning rates (pretrained layers ``backbone_lr_ratio``
    times slower than the head), warmup and cosine decay, augmentation of
    training batches only, early stopping on a stratified validation split.
    The best epoch's weights are kept at the end, the started network
    (epoch 0) included: fine-tuning that does not beat the probe on the
    validation split leaves the probe.

    Which quadrant of the size x similarity table calls for what, measured:
    ``benchmarks/RESULTS.md`` ("Learning curves") and the user guide (fine-tuning).

    Parameters
    ----------
    backbone, weights, input_size, crop, device, max_pixels, decode, cache
        As for :class:`~skcnn.CNNFeatureTransformer` (``cache`` stores the
        codes the head is started from; ``decode`` applies to training and
        prediction alike).
    batch_size : int, default=32
        Images per training step, and per prediction batch on CUDA and
        MPS; on a CPU prediction batches are at most 8 images (the
        transformer's default ``batch_size``: there batches of 4-8 ran
        faster per image than 32, ``benchmarks/RESULTS.md``).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Training arithmetic: ``"auto"`` is fp16 with a gradient scaler on
        CUDA, fp32 elsewhere. Prediction's, as for
        :class:`~skcnn.CNNFeatureTransformer`: ``"auto"`` is fp16 on CUDA,
        bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) where
        ``runtime`` does not choose ONNX Runtime in fp32, fp32 elsewhere.
    runtime : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the fitted network in ``predict``, ``predict_proba`` and
        ``decision_function``, as for :class:`~skcnn.CNNFeatureTransformer`
        (training always runs on torch). ``"auto"``: ONNX Runtime where
        the network computes in fp32 on a CPU (networks with depthwise
        convolutions such as EfficientNet even where bf16 is native, CPUs
        without native bf16, ``precision="fp32"``); torch elsewhere. The
        fine-tuned network up to the head's layer is exported to ONNX once
        per machine, in the transformer's cache folder, keyed by the content
        hash of its weights: a head-only model's unchanged network is
        exported once for all of them, each fine-tuned one once (a few
        seconds; about the size of its weights on disk). The first batch is
        checked against torch (relative L2 within 1e-4): a network that
        does not export or differs runs on torch, with one warning. With
        torch, the pass runs on a copy of the network with batch norm folded,
        in channels_last layout, as the transformer's.
    progress : bool or "auto", default="auto"
        A tqdm progress bar per training epoch, and in images while
        predicting; ``"auto"`` shows it only on an interactive terminal or in
        a Jupyter notebook, for more than one batch.
    on_error : {"raise", "skip"}, default="raise"
        Bad training images: ``"raise"`` names them all and refuses to fit,
        ``"skip"`` leaves them out with a warning (``failed_``).
    layer : "auto", "penultimate" or a layer name, default="auto"
        Where the new head reads its codes (the codes
        :class:`~skcnn.CNNFeatureTransformer` gives for that layer: ReLU'd,
        average-pooled); layers after it are dropped. ``"auto"``: when only
        the head trains, the candidate layer whose frozen codes
        cross-validate best (a 3-fold :class:`~skcnn.LayerSearchCV` of the
        layers, average-pooled at this model's input size, as the head reads
        them: an earlier layer for data unlike ImageNet); when the network
        trains, ``"penultimate"``.
    unfreeze : "auto", "head", "all" or a layer name, default="auto"
        What trains: the head only, that layer and every later one up to
        ``layer``, or the whole network. ``"head"`` is the linear probe on
        frozen codes, fit on every image, with no epochs (``max_epochs``,
        ``augment`` and early stopping do not apply): trained further on
        augmented images it only measured worse.
        ``"auto"``: the head for small data, everything for large data
        (from 200 images per class, ``skcnn.advice.FINE_TUNING_PAYS_FROM``,
        where fine-tuning overtook frozen codes in skcnn's learning curves,
        ``benchmarks/RESULTS.md``).
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
    augment : "auto", "photo", "crop", "flips", "dihedral", None or callable, default="auto"
        Applied to each uint8 ``(3, h, w)`` training image (a
        ``torchvision.transforms.v2`` transform); never to the validation
        split or to prediction. ``"photo"``: a random resized crop (at least
        60% of the image) and a horizontal flip; ``"crop"``: the crop alone;
        ``"flips"``: a random horizontal and/or vertical flip, no crop;
        ``"dihedral"``: a random flip and 90-degree rotation, no crop (for
        images with no up or down, cells, textures, tiles: a crop can cut a
        small defect away). ``"auto"``: measured on the training images
        before the first epoch, the richest of these whose flips and
        rotations keep a frozen-codes probe's accuracy (``skcnn.symmetry``;
        ``strategy_["augment"]`` says which).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the images (stratified), stop
        after ``n_iter_no_change`` epochs without a better validation
        accuracy (weighted by the sample weights, where given) and keep the
        best epoch.
    validation_fraction : float, default=0.1
        Share of the images held out (at least one per class).
    n_iter_no_change : int, default=3
    scoring : {"accuracy", "balanced_accuracy"}, default="accuracy"
        What early stopping compares on the validation split (weighted by
        the images' sample weights), epoch 0, the probe, included.
        ``"balanced_accuracy"``, the mean of the per-class recalls, for
        imbalanced classes: accuracy favours the largest class.
    class_weight : "balanced", dict or None, default=None
        Weights of the classes, as in scikit-learn: ``"balanced"`` weighs
        each class by ``n_samples / (n_classes * its count)``, a dict maps
        labels to weights (1 for those left out), ``None`` weighs all alike.
        Applied as :meth:`fit`'s ``sample_weight`` is (multiplied with it).
    random_state : int, RandomState or None, default=None
        Seeds the split, the order of batches, augmentation and the head;
        on the CPU a given seed gives the same model.
    checkpoint : str, path or None, default=None
        A file written after every epoch (atomically). ``fit`` called
        again with the same data, parameters and checkpoint goes on from
        the last finished epoch.
    memory_limit : int, str or "auto", default="auto"
        How much memory the decoded training images may take (uint8 crops,
        ``3 * h * w`` bytes each: 150 kB at 224 px): bytes, or a size such
        as ``"2GB"``. Within it they are kept in memory (and kept for later
        fits on the same images, see
        :func:`skcnn.clear_decoded_images`); beyond it they
        are written to files in ``store_dir`` as they are decoded, and every
        epoch reads them back a few batches ahead, so that memory does not
        grow with the number of images. ``"auto"``: a quarter of the memory
        available when ``fit`` starts.
    store_dir : str, path or None, default=None
        The folder for decoded images beyond ``memory_limit``: one subfolder
        per input size and decoding, files keyed by image content, so that
        clones in a grid search, a fit resumed after a kill and later fits
        decode each image once. ``None``: ``skcnn-decoded-<user id>`` in the
        system's temporary folder, created for this user alone. Folders and
        files that other users could write are neither read nor written
        (the user guide's "Dirty folders and faults"). Delete it to free the space.

    Attributes
    ----------
    classes_ : ndarray
        The class labels.
    strategy_ : dict
        ``layer``, ``unfreeze``, ``batchnorm`` and ``reason``: what ``"auto"`` chose and why.
    history_ : list of dict
        Per epoch, from epoch 0: ``epoch``, ``train_loss``,
        ``validation_score``, ``learning_rates``, ``seconds``. Epoch 0 is
        the started network, the linear probe: its ``train_loss`` is the
        probe's mean cross-entropy on the codes it was fit on (weighted by
        the sample weights), its ``validation_score`` is ``probe_score_``,
        ``learning_rates`` is empty and ``seconds`` is the time computing
        its codes and fitting it took (the layer search of ``layer="auto"``
        included). A head-only model has this row alone.
    n_epochs_ : int
        Epochs run (``len(history_) - 1``).
    best_epoch_ : int
        The epoch whose weights the model holds; 0 when no epoch beat the
        started network (the linear probe) on the validation split, or with
        ``unfreeze="head"``.
    probe_score_ : float
        Validation score (``scoring``) of the started network, before any
        epoch: ``history_[0]["validation_score"]`` (NaN without early
        stopping, and with ``unfreeze="head"``).
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
    >>> model.strategy_["layer"], model.strategy_["unfreeze"]
    ('penultimate', 'blocks.5')
    >>> model.predict(X[:3]).shape, model.predict_proba(X[:3]).sum(axis=1).round(3).tolist()
    ((3,), [1.0, 1.0, 1.0])
    >>> [epoch["epoch"] for epoch in model.history_]  # epoch 0: the linear probe it started from
    [0, 1]
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "crop": ["boolean", Interval(Real, 0, 1, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(CHOICES["precision"]))],
        "runtime": [StrOptions(set(CHOICES["runtime"]))],
        "progress": ["boolean", StrOptions({"auto"})],
        "on_error": [StrOptions(set(CHOICES["on_error"]))],
        "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
        "decode": [StrOptions(set(CHOICES["decode"]))],
        "layer": [str],
        "unfreeze": [str],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr_ratio": [Interval(Real, 0, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batchnorm": [StrOptions(set(training.BATCHNORMS))],
        "augment": [StrOptions({"auto", *AUGMENT_POLICIES}), None, callable],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "scoring": [StrOptions(set(training.SCORERS))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "random_state": ["random_state"],
        "cache": [str, os.PathLike, CodeCache, None],
        "checkpoint": [str, os.PathLike, None],
        "memory_limit": [Interval(Integral, 0, None, closed="left"), str],
        "store_dir": [str, os.PathLike, None],
    }

    def __init__(
        self,
        *,
        backbone=DEFAULTS.backbone,
        weights=DEFAULTS.weights,
        input_size=DEFAULTS.input_size,
        crop=DEFAULTS.crop,
        batch_size=FINETUNING.batch_size,
        device=DEFAULTS.device,
        precision=DEFAULTS.precision,
        runtime=DEFAULTS.runtime,
        progress=DEFAULTS.progress,
        on_error=DEFAULTS.on_error,
        max_pixels=DEFAULTS.max_pixels,
        decode=DEFAULTS.decode,
        layer=FINETUNING.layer,
        unfreeze=FINETUNING.unfreeze,
        max_epochs=FINETUNING.max_epochs,
        learning_rate=FINETUNING.learning_rate,
        backbone_lr_ratio=FINETUNING.backbone_lr_ratio,
        weight_decay=FINETUNING.weight_decay,
        batchnorm=FINETUNING.batchnorm,
        augment="auto",
        early_stopping=True,
        validation_fraction=FINETUNING.validation_fraction,
        n_iter_no_change=FINETUNING.n_iter_no_change,
        scoring="accuracy",
        class_weight=None,
        random_state=None,
        cache=None,
        checkpoint=None,
        memory_limit=FINETUNING.memory_limit,
        store_dir=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.crop = crop
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self.progress = progress
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.decode = decode
        self.layer = layer
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
        self.scoring = scoring
        self.class_weight = class_weight
        self.random_state = random_state
        self.cache = cache
        self.checkpoint = checkpoint
        self.memory_limit = memory_limit
        self.store_dir = store_dir

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune on ``X`` (images) and ``y`` (labels of any kind).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :class:`~skcnn.CNNFeatureTransformer`.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Per image, multiplied by the weight ``class_weight`` gives its
            class: they weight the linear probe, every epoch's loss and the
            validation accuracy early stopping compares. 0 leaves an image
            out of all three.

        Returns
        -------
        self : CNNClassifier
        """
        images = image_io.as_image_list(X)
        labels = self._checked_labels(y, len(images))
        weights = self._sample_weights(labels, sample_weight)
        memory_limit = resolve_memory_limit(self.memory_limit)
        backbone = backbones.load_backbone(self.backbone, self.weights, self.device)
        # A runtime that cannot run (runtime="onnxruntime" with bf16, on CUDA) is refused before training.
        arithmetic.resolve_runtime(self.runtime, self.precision, backbone.device, None, backbone.network)
        recipe = self._recipe(backbone)
        layers, network_head = probe_backbone(backbone, recipe.crop_size)
        layer_names = [layer.name for layer in layers]
        unfreeze, why = self._unfreeze(labels)
        if unfreeze == HEAD:
            # The probe is already the best linear head on frozen codes (convex, C tuned by CV): epochs
            # on augmented images only moved it away, and so it takes every image (benchmarks/RESULTS.md).
            model, probe = self._head_only(backbone, recipe, network_head, images, labels, weights, layer_names, why)
            state = training.State()
        else:
            seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            examples, images = self._decoded(images, labels, weights, recipe, memory_limit)
            self.strategy_ = self._fine_tuning_strategy(unfreeze, why, layer_names)
            model, state, probe = self._fine_tuned(backbone, recipe, network_head, images, examples, seed)
        # Epoch 0, the started network: the probe's loss on its codes, its validation score, no learning rates.
        epoch_0 = {
            "epoch": 0,
            "train_loss": probe["train_loss"],
            "validation_score": state.start_score,
            "learning_rates": [],
            "seconds": probe["seconds"],
        }
        self.history_ = [epoch_0, *state.history]
        self.n_epochs_, self.best_epoch_ = state.epoch, state.best_epoch
        self.probe_score_ = state.start_score
        self.state_dict_ = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        self.head_ = network_head
        self.preprocessing_ = recipe.as_dict()
        self._recipe_of_weights = recipe  # prediction needs no network load for it, even after unpickling
        self._network = model.eval()
        self._predictor = None  # built for these weights on the first prediction
        return self

    def _head_only(self, backbone, recipe, network_head, images, labels, weights, layer_names, why):
        """The linear probe on the frozen codes of ``layer`` (the searched one for ``"auto"``), every usable
        image; with its training loss and the seconds it took (search included), epoch 0 of ``history_``."""
        started = time.perf_counter()
        with _shared_codes(self.cache) as cache:
            transformer = self._frozen_codes(recipe.crop_size, PENULTIMATE, cache)
            layer = self.layer
            if layer == "auto":  # the frozen-codes baseline: the layer that cross-validates best
                layer, score = self._searched_layer(transformer, images, labels)
                why += f"; layer {layer!r} cross-validated best ({score:.3f})"
            _check_layers(layer, HEAD, layer_names)
            # The search stored every candidate's codes in the cache: the probe reads them, it computes nothing.
            codes = self._usable_codes(transformer.set_params(layer=layer), images)
        kept = np.flatnonzero(~np.isnan(codes).any(axis=1))
        self.strategy_ = {"layer": layer, "unfreeze": HEAD, "batchnorm": self._batchnorm(), "reason": why}
        model = self._tapped(backbone, network_head)
        model.head, loss = self._probe_head(codes[kept], self._targets(labels[kept]), _rows(weights, kept))
        return model.to(backbone.device), {"train_loss": loss, "seconds": time.perf_counter() - started}

    def _fine_tuned(self, backbone, recipe, network_head, images: list, examples: training.Examples, seed: int):
        """The started model trained as ``strategy_`` says; the training state at the end, and the
        probe's training loss and seconds (epoch 0 of ``history_``)."""
        train, val = self._split(examples.targets, seed)
        data = examples.subset(train)
        validation = None if val is None else examples.subset(val)
        model = self._tapped(backbone, network_head)
        # The probe sees the training split only: the validation split judges the epochs. Its codes
        # are dropped once it is fit (not held through training).
        started = time.perf_counter()
        probed = _probe_rows(data.targets.numpy(), PROBE_MAX_IMAGES, seed)
        sample = data.subset(torch.as_tensor(probed))
        model.head, loss = self._probe_head(
            self._probe_codes(model, recipe, [images[i] for i in train[probed].tolist()], sample.images),
            sample.targets,
            None if sample.weights is None else sample.weights.numpy(),
        )
        probe = {"train_loss": loss, "seconds": time.perf_counter() - started}
        model = model.to(backbone.device)
        augment = self._augment(model, recipe, sample, seed)
        plan = self._plan(backbone.device, seed, examples)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            start = model.module_name(self.strategy_["unfreeze"])
            example = recipe.normalize(data.images.read([0])).to(backbone.device)
            parameters = training.trainable(model, HEAD, start, example)
            if plan.batchnorm == "adapt":
                training.adapt_batchnorm(model, data.images, recipe, plan)
                plan.batchnorm = "frozen"
            state = training.train(model, parameters, data, validation, recipe, augment, plan)
        return model, state, probe

    def _augment(self, model: TappedClassifier, recipe, sample: training.Examples, seed: int):
        """The augmentation of training batches; ``"auto"`` measures which symmetries keep the class."""
        measured = None
        if isinstance(self.augment, str) and self.augment == "auto":
            rows = _probe_rows(sample.targets.numpy(), SYMMETRY_MAX_IMAGES, seed)
            kept = self._kept_symmetries(model, recipe, sample.subset(torch.as_tensor(rows)), seed)
            measured = policy_for(kept)
            if symmetry.needs_square(measured) and recipe.crop_size[0] != recipe.crop_size[1]:
                measured = "flips"  # rotations need a square input
            self.strategy_["augment"] = measured
            self.strategy_["reason"] += f"; augment {measured!r} (class kept under {sorted(kept) or 'no symmetry'})"
        return resolve_augment(self.augment, recipe.crop_size, measured)

    def _kept_symmetries(self, model: TappedClassifier, recipe, sample: training.Examples, seed: int) -> set[str]:
        """The flips and rotations under which a probe of the frozen codes keeps its accuracy."""
        device = next(model.parameters()).device
        training.set_mode(model, False, "frozen")
        views = {"original": lambda x: x, **symmetry.GENERATORS}
        if recipe.crop_size[0] != recipe.crop_size[1]:
            del views["rot90"]  # a rectangle turned is another input size
        codes = {name: [] for name in views}
        with torch.inference_mode():
            for pixels in sample.images.batches(range(len(sample.images)), self.batch_size):
                for name, view in views.items():
                    codes[name].append(model.codes(recipe.normalize(view(pixels)).to(device)).float().cpu().numpy())
        codes = {name: np.concatenate(blocks) for name, blocks in codes.items()}
        targets = sample.targets.numpy()
        original = codes.pop("original")
        if np.bincount(targets).min() < 2:  # too few of a class to halve: measure nothing
            return set()
        accuracies = label_preserving(original, targets, codes, seed)
        return symmetries_kept(accuracies, len(targets))

    def _sample_weights(self, labels: np.ndarray, sample_weight) -> np.ndarray | None:
        """Per image: ``sample_weight`` times its class's weight; None when neither is given."""
        if sample_weight is None and self.class_weight is None:
            return None
        weights = _check_sample_weight(sample_weight, labels, dtype=np.float64, ensure_non_negative=True)
        if self.class_weight is not None:
            weights = weights * compute_sample_weight(self.class_weight, labels)
        if not weights.sum() > 0:
            raise ValueError("sample_weight and class_weight give every image a weight of 0; some must weigh more.")
        return weights

    def _targets(self, labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(LabelEncoder().fit(self.classes_).transform(labels))

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
        return backbone.preprocessing.with_input_size(checked_input_size(self.input_size), check_crop(self.crop))

    def _decoded(self, images: list, labels, weights, recipe, memory_limit: int) -> tuple[training.Examples, list]:
        """Every image decoded once, to the uint8 crop the network sees (kept in memory within
        ``memory_limit``, in files beyond it); the usable ones as examples, and their images."""
        failures: list = []
        decoded, kept = decoded_images(
            images, recipe, failures, decode=self.decode, max_pixels=self.max_pixels,
            batch_size=self.batch_size, memory_limit=memory_limit, store_dir=self.store_dir,
        )  # fmt: skip
        self._left_out(failures, len(images))
        weights = _rows(weights, kept)
        weights = None if weights is None else torch.as_tensor(weights)
        return training.Examples(decoded, self._targets(labels[kept]), weights), [images[i] for i in kept]

    def _left_out(self, failures: list, n_images: int) -> None:
        """``failed_`` set; with ``on_error="raise"`` the bad images named in an error, else in a warning."""
        self.failed_ = sorted(failures, key=lambda failure: failure.index)
        if self.failed_ and self.on_error == "raise":
            raise image_io.BadImagesError(self.failed_)
        image_io.warn_bad_images(self.failed_, n_images, stacklevel=4, what="training images")

    def _unfreeze(self, labels: np.ndarray) -> tuple[str, str]:
        """``unfreeze`` resolved from the images per class, with the reason.

        Only the data's size decides (the size x similarity table's choice
        between frozen codes and fine-tuning does not depend on similarity),
        so no image is decoded for it: ``advise_layer`` measures similarity
        for those who ask, and ``layer="auto"`` searches the layer.
        """
        if self.unfreeze != "auto":
            return self.unfreeze, "as given"
        per_class = len(labels) / len(np.unique(labels))
        small = per_class < FINE_TUNING_PAYS_FROM
        why = (
            f"{'small' if small else 'large'} data ({len(labels)} images, {per_class:.0f} per class; "
            f"fine-tuning pays from about {FINE_TUNING_PAYS_FROM} per class)"
        )
        return (HEAD if small else WHOLE), why

    def _fine_tuning_strategy(self, unfreeze: str, why: str, layer_names: list[str]) -> dict:
        # Fine-tuning adapts the later layers to the data: the head reads the top.
        layer = PENULTIMATE if self.layer == "auto" else self.layer
        _check_layers(layer, unfreeze, layer_names)
        return {"layer": layer, "unfreeze": unfreeze, "batchnorm": self._batchnorm(), "reason": why}

    def _batchnorm(self) -> str:
        # "auto" is "frozen": "adapt" and "train" moved the features the probe head was fit on
        return "frozen" if self.batchnorm == "auto" else self.batchnorm

    def _frozen_codes(self, crop_size, layer: str, cache) -> CNNFeatureTransformer:
        """The transformer whose codes the probe head is fit on (fp32: the arithmetic training starts in)."""
        return CNNFeatureTransformer(
            backbone=self.backbone, weights=self.weights, input_size=crop_size, crop=self.crop, layer=layer,
            batch_size=self.batch_size, device=self.device, precision="fp32", progress=False,
            on_error=self.on_error, max_pixels=self.max_pixels, decode=self.decode, cache=cache,
        )  # fmt: skip

    def _usable_codes(self, transformer: CNNFeatureTransformer, images: list) -> np.ndarray:
        """The transformer's codes of ``images`` (NaN rows for bad ones, ``failed_`` naming them)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_io.BadImagesWarning)
            codes = transformer.fit_transform(images)
        self._left_out(transformer.failed_, len(images))
        return codes

    def _searched_layer(self, transformer, images: list, labels: np.ndarray) -> tuple[str, float]:
        """The candidate layer whose frozen codes cross-validate best, and its score."""
        smallest = int(np.unique(labels, return_counts=True)[1].min())
        if smallest < LAYER_SEARCH_CV:
            raise ValueError(
                f"layer='auto' with the head alone searches the layers by {LAYER_SEARCH_CV}-fold cross-validation, "
                f"and a class has {smallest} image(s); give a layer (e.g. layer='penultimate') or more images."
            )
        with warnings.catch_warnings():  # bad images: the probe's own warning names them
            warnings.simplefilter("ignore", image_io.BadImagesWarning)
            # The head reads average-pooled codes at the classifier's own input: the layers alone are searched.
            search = LayerSearchCV(
                transformer, poolings=[DEFAULTS.pooling], input_sizes=[transformer.input_size], cv=LAYER_SEARCH_CV,
                refit=False,
            ).fit(images, labels)  # fmt: skip
        return search.best_layer_, search.best_score_

    def _tapped(self, backbone, network_head: str) -> TappedClassifier:
        """A copy of the pretrained network tapped at the layer, in fp32; its head is the probe, set next."""
        network = copy.deepcopy(backbone.network).float().to(backbone.device)
        return TappedClassifier(network, self.strategy_["layer"], network_head, head=None)

    def _probe_codes(self, model: TappedClassifier, recipe, images: list, crops) -> np.ndarray:
        """The frozen codes of the training images at the head's layer.

        With a ``cache`` they come from the transformer (stored for the next
        fit); without, from the crops decoded for training, so that no image
        is decoded twice.
        """
        if self.cache is not None:
            return self._frozen_codes(recipe.crop_size, self.strategy_["layer"], self.cache).fit_transform(images)
        device = next(model.parameters()).device
        training.set_mode(model, False, "frozen")
        with torch.inference_mode():
            return np.concatenate(
                [
                    model.codes(recipe.normalize(pixels).to(device)).float().cpu().numpy()
                    for pixels in crops.batches(range(len(crops)), self.batch_size)
                ]
            )

    def _probe_head(
        self, codes: np.ndarray, targets: torch.Tensor, weights: np.ndarray | None
    ) -> tuple[nn.Linear, float]:
        """The new head: the linear probe on ``codes`` (one logit per class), and its mean
        cross-entropy on them (weighted by ``weights``), the training loss of epoch 0."""
        weight, bias = _probe(codes, targets.numpy(), weights)
        if len(self.classes_) == 2:  # one logit for class 1 against class 0
            weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
        head = linear_head(torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))
        with torch.inference_mode():
            losses = nn.functional.cross_entropy(head(torch.as_tensor(codes)), targets, reduction="none").double()
        mean = losses.mean() if weights is None else (losses * torch.as_tensor(weights)).sum() / float(weights.sum())
        return head, float(mean)

    def _plan(self, device: torch.device, seed: int, examples: training.Examples) -> training.Plan:
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
            progress=show_progress(self.progress, len(examples.targets), self.batch_size),
            checkpoint=checkpoint,
            fingerprint=self._fingerprint(seed, examples) if checkpoint else "",
            scoring=self.scoring,
        )

    def _fingerprint(self, seed: int, examples: training.Examples) -> str:
        """What a checkpoint must match to be resumed: data, labels, weights, parameters, seed."""
        params = {k: v for k, v in self.get_params().items() if k not in _SAME_RESULT}
        data = (repr(sorted(params.items())), examples.images.keys, examples.targets.tolist(), seed)
        if examples.weights is not None:
            data += (examples.weights.tolist(),)
        return joblib.hash(data)

    def _split(self, targets: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Indices of the training and the (stratified) validation split."""
        if not self.early_stopping:
            return torch.arange(len(targets)), None
        # At least one image of each class, so that every class is judged.
        n_val = max(int(np.ceil(self.validation_fraction * len(targets))), len(self.classes_))
        if len(targets) - n_val < len(self.classes_):
            raise ValueError(
                f"early stopping holds out {n_val} of {len(targets)} images (validation_fraction="
                f"{self.validation_fraction}, at least one per class), leaving too few to train on every one "
                f"of the {len(self.classes_)} classes; give more images or set early_stopping=False."
            )
        train, val = train_test_split(
            np.arange(len(targets)), test_size=n_val, stratify=targets.numpy(), random_state=seed
        )
        return torch.as_tensor(train), torch.as_tensor(val)

    def _model(self) -> nn.Module:
        """The fine-tuned network, rebuilt from ``state_dict_`` after unpickling."""
        if getattr(self, "_network", None) is None:
            network, _ = backbones.build_network(backbones.parse_backbone(self.backbone), None)
            weight = self.state_dict_["head.weight"]
            head = linear_head(torch.zeros_like(weight), torch.zeros(len(weight)))
            model = TappedClassifier(network, self.strategy_["layer"], self.head_, head)
            model.load_state_dict(self.state_dict_)
            self._network = model.to(backbones.resolve_device(self.device)).eval()
        return self._network

    @property
    def module_(self) -> TappedClassifier:
        """The fitted network in evaluation mode: the tapped backbone and its linear ``head``.

        Rebuilt from ``state_dict_`` on first use after unpickling. Its
        ``codes`` are the ReLU'd, average-pooled activations of
        ``strategy_["layer"]``; the logits are ``head(codes)``.
        """
        check_is_fitted(self)
        return self._model()

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
            Unfitted, with ``backbone``, ``weights=path``, ``input_size`` and
            ``layer`` (the head's, unless given) set.
        """
        check_is_fitted(self)
        with atomic_path(path) as temporary:  # a transformer never reads half a weights file
            torch.save(network_weights(self.state_dict_), temporary)  # CPU tensors, wherever it was fitted
        params = {"layer": self.strategy_["layer"], **params}
        return CNNFeatureTransformer(backbone=self.backbone, weights=path, input_size=self.input_size, **params)

    def plot_history(self, ax=None):
        """Training loss and validation score per epoch, from ``history_`` (epoch 0: the started network).

        Epoch 0's loss is the linear probe's on the codes it was fit on. A
        model with no epochs (``unfreeze="head"``) shows that point alone,
        and its title says so.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw the loss; the validation score goes on a twin axis
            (none without early stopping). ``None`` makes a new figure.

        Returns
        -------
        ax : matplotlib Axes
            Call ``ax.figure.savefig("history.png")`` to keep it.
        """
        check_is_fitted(self)
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plot_history() needs matplotlib: pip install 'skcnn[plot]'.") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        epochs = [epoch["epoch"] for epoch in self.history_]
        losses = [epoch["train_loss"] for epoch in self.history_]
        ax.plot(epochs, losses, "-", color="C0")
        ax.plot(epochs[1:], losses[1:], "o", color="C0", label="training loss")
        ax.plot(epochs[:1], losses[:1], "D", color="C0", label="epoch 0: the linear probe, on its training codes")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss", color="C0")
        ax.set_xticks(epochs)
        ax.legend(loc="upper right")
        scores = [epoch["validation_score"] for epoch in self.history_]
        if not np.isnan(scores).all():
            twin = ax.twinx()
            twin.plot(epochs, scores, "s-", color="C1")
            twin.axvline(self.best_epoch_, color="C1", linestyle=":", label=f"kept: epoch {self.best_epoch_}")
            twin.set_ylabel(f"validation {getattr(self, 'scoring', 'accuracy').replace('_', ' ')}", color="C1")
            twin.legend(loc="lower right")
        ran = (
            f"unfreeze {self.strategy_['unfreeze']!r}, {self.n_epochs_} epochs"
            if self.n_epochs_
            else "the linear probe alone (unfreeze 'head'): no epochs ran"
        )
        ax.set_title(f"CNNClassifier({self.backbone!r}), layer {self.strategy_['layer']!r}: {ran}")
        return ax

    def decision_function(self, X):
        """Logits (for two classes: the positive class's logit over the other's).

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return torch.softmax(torch.as_tensor(self._logits(X)), dim=1).numpy()

    def predict(self, X):
        """The most probable class of each image.

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[self._logits(X).argmax(axis=1)]

    def _logits(self, X) -> np.ndarray:
        """Batched, with the weights' own evaluation preprocessing, on the transformer's runtime."""
        images = image_io.as_image_list(X)
        predictor = self._prediction()
        # On a CPU, the transformer's batches: decoding and the network share the cores, and batches of
        # 4-8 ran faster per image than 32 (benchmarks/RESULTS.md, "Throughput" and "Prediction").
        on_cpu = predictor.backbone.device.type == "cpu"
        batch_size = min(self.batch_size, DEFAULTS.batch_size) if on_cpu else self.batch_size
        failures: list = []
        logits = np.full((len(images), len(self.classes_)), np.nan, dtype=np.float32)
        batches = loading.iter_batches(
            images, range(len(images)), self._recipe_of_weights, batch_size, failures,
            max_pixels=self.max_pixels, num_workers=loading.resolve_workers("auto"), decode=self.decode,
        )  # fmt: skip
        progress = show_progress(self.progress, len(images), batch_size)
        with (
            tqdm(total=len(images), unit="img", disable=not progress, desc="skcnn") as bar,
            contextlib.closing(batches),  # stops the decoding workers at once on an error
        ):
            for done, batch in batches:
                logits[done] = predictor.logits(batch)
                bar.update(len(done))
        if failures:
            raise image_io.BadImagesError(sorted(failures, key=lambda failure: failure.index), logits)
        return logits

    def _prediction(self) -> Predictor:
        """The prediction pass of the fitted network, for the current ``runtime`` and ``precision``:
        built on first use (after unpickling, after ``set_params``), then kept."""
        key = (self.runtime, self.precision)
        kept = getattr(self, "_predictor", None)
        if kept is None or kept[0] != key:
            spec = backbones.parse_backbone(self.backbone)
            kept = self._predictor = (key, Predictor.build(self._model(), spec, self._recipe_of_weights, *key))
        return kept[1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_network", None)  # rebuilt from state_dict_ (CPU tensors) on first use
        state.pop("_predictor", None)  # so is the prediction pass (ONNX exports are kept on disk)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


def _probe(codes: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the linear probe on ``codes``, standardisation folded in.

    The probe is the frozen-codes baseline of :class:`~skcnn.LayerSearchCV`
    (standardised codes, a logistic regression with ``C`` tuned by inner
    cross-validation), so that fine-tuning starts where that baseline ends;
    with a class too small to tune ``C``, ``C`` is ``PROBE_C``. Sample
    ``weights`` weight the standardisation and the regression.
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


def _probe_rows(targets: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """All rows within ``limit``; beyond, a seeded draw of each class in proportion (one at least)."""
    if len(targets) <= limit:
        return np.arange(len(targets))
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        rows.append(rng.permutation(members)[: max(1, round(limit * len(members) / len(targets)))])
    return np.sort(np.concatenate(rows))


def _rows(weights: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if weights is None else weights[rows]


@contextlib.contextmanager
def _shared_codes(cache):
    """The code cache the layer search and the probe share: the user's, or a temporary file, so that
    the probe reads the codes the search computed instead of running the network again."""
    if cache is not None:
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="skcnn-codes-") as folder:
        yield os.path.join(folder, "codes.h5")


def _check_layers(layer: str, unfreeze: str, layers: list[str]) -> None:
    """``layer`` a layer of the network, ``unfreeze`` one the pass enters before it (or all, head)."""
    if layer not in layers:
        raise ValueError(f"layer={layer!r} is not a layer of the network; use 'auto' or a name from list_layers().")
    if unfreeze in (WHOLE, HEAD):
        return
    allowed = layers[: layers.index(layer) + 1]
    if unfreeze not in allowed:
        raise ValueError(
            f"unfreeze={unfreeze!r} must be 'auto', 'all', 'head' or a layer the forward pass reaches up to "
            f"layer={layer!r} (where the head is): one of {allowed[-4:]} or earlier, from list_layers()."
        )


__all__ = ["CNNClassifier"]
