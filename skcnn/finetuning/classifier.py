"""``CNNClassifier``: a pretrained CNN fine-tuned as a scikit-learn classifier."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from .. import arithmetic, backbones, loading
from .. import images as image_io
from ..compat import _check_sample_weight, _fit_context
from ..extraction import Crops, checked_input_size
from ..files import atomic_path
from ..layers import probe_backbone
from ..options import DEFAULTS, FINETUNING, PENULTIMATE, constraints_of, show_progress
from ..preprocessing import check_crop
from ..transformer import CNNFeatureTransformer
from . import probe, strategy, training
from .augment import resolve_augment
from .model import HEAD, TappedClassifier, linear_head, network_weights
from .prediction import Predictor
from .store import decoded_images, resolve_memory_limit
from .strategy import Strategy

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

    _parameter_constraints: dict = constraints_of(
        "backbone", "weights", "input_size", "crop", "batch_size", "device", "precision", "runtime", "progress",
        "on_error", "max_pixels", "decode", "layer", "unfreeze", "max_epochs", "learning_rate", "backbone_lr_ratio",
        "weight_decay", "batchnorm", "augment", "early_stopping", "validation_fraction", "n_iter_no_change",
        "scoring", "class_weight", "random_state", "cache", "checkpoint", "memory_limit", "store_dir",
        training=True,
    )  # fmt: skip

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
        augment=FINETUNING.augment,
        early_stopping=FINETUNING.early_stopping,
        validation_fraction=FINETUNING.validation_fraction,
        n_iter_no_change=FINETUNING.n_iter_no_change,
        scoring=FINETUNING.scoring,
        class_weight=FINETUNING.class_weight,
        random_state=FINETUNING.random_state,
        cache=DEFAULTS.cache,
        checkpoint=FINETUNING.checkpoint,
        memory_limit=FINETUNING.memory_limit,
        store_dir=FINETUNING.store_dir,
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
        unfreeze, why = strategy.resolved_unfreeze(self.unfreeze, labels)
        if unfreeze == HEAD:
            # The probe is already the best linear head on frozen codes (convex, C tuned by CV): epochs
            # on augmented images only moved it away, and so it takes every image (benchmarks/RESULTS.md).
            model, started, chosen = self._head_only(
                backbone, recipe, network_head, images, labels, weights, layer_names, why
            )
            state = training.State()
        else:
            seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            examples, images = self._decoded(images, labels, weights, recipe, memory_limit)
            chosen = strategy.chosen(self.layer, unfreeze, self.batchnorm, why, layer_names)
            model, state, started, chosen = self._fine_tuned(
                backbone, recipe, network_head, images, examples, seed, chosen
            )
        self.strategy_ = chosen.as_dict()
        # Epoch 0, the started network: the probe's loss on its codes, its validation score, no learning rates.
        epoch_0 = {
            "epoch": 0,
            "train_loss": started["train_loss"],
            "validation_score": state.start_score,
            "learning_rates": [],
            "seconds": started["seconds"],
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
        image; its training loss and the seconds it took (search included), epoch 0 of ``history_``; the strategy."""
        started = time.perf_counter()
        with _shared_codes(self.cache) as cache:
            transformer = probe.frozen_codes(self.get_params(), recipe.crop_size, PENULTIMATE, cache)
            layer, why = strategy.head_only_layer(self.layer, why, transformer, images, labels)
            chosen = strategy.chosen(layer, HEAD, self.batchnorm, why, layer_names)
            # The search stored every candidate's codes in the cache: the probe reads them, it computes nothing.
            codes = self._usable_codes(transformer.set_params(layer=layer), images)
        kept = np.flatnonzero(~np.isnan(codes).any(axis=1))
        model = self._tapped(backbone, network_head, layer)
        model.head, loss = probe.probe_head(
            codes[kept], self._targets(labels[kept]), _rows(weights, kept), len(self.classes_)
        )
        return model.to(backbone.device), {"train_loss": loss, "seconds": time.perf_counter() - started}, chosen

    def _fine_tuned(
        self, backbone, recipe, network_head, images: list, examples: training.Examples, seed: int, chosen: Strategy
    ):
        """The started model trained as ``chosen`` says; the training state at the end, the probe's
        training loss and seconds (epoch 0 of ``history_``), and the strategy with ``augment`` measured."""
        train, val = self._split(examples.targets, seed)
        data = examples.subset(train)
        validation = None if val is None else examples.subset(val)
        model = self._tapped(backbone, network_head, chosen.layer)
        # The probe sees the training split only: the validation split judges the epochs. Its codes
        # are dropped once it is fit (not held through training).
        clock = time.perf_counter()
        probed = probe.probe_rows(data.targets.numpy(), seed)
        sample = data.subset(torch.as_tensor(probed))
        model.head, loss = probe.probe_head(
            self._probe_codes(model, recipe, [images[i] for i in train[probed].tolist()], sample.images),
            sample.targets,
            None if sample.weights is None else sample.weights.numpy(),
            len(self.classes_),
        )
        started = {"train_loss": loss, "seconds": time.perf_counter() - clock}
        model = model.to(backbone.device)
        augment, chosen = self._augment(model, recipe, sample, seed, chosen)
        plan = self._plan(backbone.device, seed, examples, chosen.batchnorm)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            first = model.module_name(chosen.unfreeze)
            example = recipe.normalize(data.images.read([0])).to(backbone.device)
            parameters = training.trainable(model, HEAD, first, example)
            if plan.batchnorm == "adapt":
                training.adapt_batchnorm(model, data.images, recipe, plan)
                plan.batchnorm = "frozen"
            state = training.train(model, parameters, data, validation, recipe, augment, plan)
        return model, state, started, chosen

    def _augment(self, model: TappedClassifier, recipe, sample: training.Examples, seed: int, chosen: Strategy):
        """The augmentation of training batches, and the strategy: ``"auto"`` measures which symmetries keep the
        class (:func:`skcnn.finetuning.strategy.measured_augment`), and the strategy says which."""
        measured = None
        if isinstance(self.augment, str) and self.augment == "auto":
            measured, kept = strategy.measured_augment(model, recipe, sample, seed, self.batch_size)
            chosen = chosen.with_augment(measured, kept)
        return resolve_augment(self.augment, recipe.crop_size, measured), chosen

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

    def _usable_codes(self, transformer: CNNFeatureTransformer, images: list) -> np.ndarray:
        """The transformer's codes of ``images`` (NaN rows for bad ones, ``failed_`` naming them)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_io.BadImagesWarning)
            codes = transformer.fit_transform(images)
        self._left_out(transformer.failed_, len(images))
        return codes

    def _tapped(self, backbone, network_head: str, layer: str) -> TappedClassifier:
        """A copy of the pretrained network tapped at ``layer``, in fp32; its head is the probe, set next."""
        network = copy.deepcopy(backbone.network).float().to(backbone.device)
        return TappedClassifier(network, layer, network_head, head=None)

    def _probe_codes(self, model: TappedClassifier, recipe, images: list, crops) -> np.ndarray:
        """The frozen codes of the training images at the head's layer.

        With a ``cache`` they come from the transformer's engine (stored for
        the next fit, as the transformer stores them); without, from the
        crops decoded for training. Either way no image is decoded twice:
        the engine reads the training crops of the images the cache lacks,
        where they are exactly those it would make (same recipe and
        decoding, uint8 sources: :func:`~skcnn.finetuning.probe.exact_crops`).
        """
        if self.cache is not None:
            transformer = probe.frozen_codes(self.get_params(), recipe.crop_size, model.layer, self.cache)
            extractor = transformer.fit(images).extractor_
            exact = probe.exact_crops(images) if extractor.preprocessing() == recipe else ()
            return extractor.codes(images, crops=Crops(exact, crops.read)).codes
        return probe.crop_codes(model, recipe, crops, self.batch_size)["original"]

    def _plan(self, device: torch.device, seed: int, examples: training.Examples, batchnorm: str) -> training.Plan:
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
            batchnorm=batchnorm,
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


__all__ = ["CNNClassifier"]
