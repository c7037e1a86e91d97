"""What :class:`~skcnn.CNNClassifier` and :class:`~skcnn.CNNRegressor` share: ``FineTuning``.

Their parameters (but ``scoring`` and ``class_weight``, the classifier's),
the fit (images decoded once, the strategy, the probe that starts the new
head, the epochs), prediction in batches on the transformer's runtime,
pickling, :meth:`FineTuning.to_transformer` and :meth:`FineTuning.plot_history`.
What differs, the kind of target (:mod:`skcnn.finetuning.targets`: the loss,
the probe, the validation score), each estimator gives from ``y``
(``_checked_targets``), and each turns the head's outputs into its predictions.
"""

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
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from ..codes import invariance
from ..codes.extraction import Crops, check_tta, checked_input_size
from ..compat import _check_sample_weight
from ..decoding import images as image_io
from ..decoding import loading
from ..decoding.preprocessing import check_crop, native_input_size
from ..files import atomic_path
from ..frozen.transformer import CNNFeatureTransformer
from ..network import arithmetic, backbones
from ..network.layers import probe_backbone
from ..options import DEFAULTS, FINETUNING, PENULTIMATE, show_progress
from . import probe, strategy, training
from .augment import resolve_augment
from .model import HEAD, TappedClassifier, linear_head, network_weights
from .prediction import Predictor
from .store import decoded_images, resolve_memory_limit
from .strategy import Strategy
from .targets import Classes, Labels, Values

#: Parameters that change how a fit runs, not what it computes: a checkpoint resumes across them.
SAME_RESULT = ("progress", "checkpoint", "cache", "memory_limit", "store_dir", "runtime")
#: Images the validation split holds at least where it is not stratified (an R^2 needs two).
MIN_VALIDATION = 2

Kind = Classes | Labels | Values


class FineTuning(BaseEstimator):
    """A pretrained CNN with a new linear head, fine-tuned on images and their targets: the shared base.

    Not used on its own: :class:`~skcnn.CNNClassifier` (classes, or several
    labels per image) and :class:`~skcnn.CNNRegressor` (continuous targets)
    are its scikit-learn faces, and document the parameters. A subclass
    gives ``_checked_targets(y, n_images) -> (y, kind)`` (the targets
    checked, as an array of one row per image, and their kind, from
    :mod:`skcnn.finetuning.targets`), ``_validation_name()``, and its
    predictions from :meth:`_outputs` (the head's outputs).
    """

    def __init__(
        self,
        *,
        backbone=DEFAULTS.backbone,
        weights=DEFAULTS.weights,
        input_size=FINETUNING.input_size,
        crop=DEFAULTS.crop,
        batch_size=FINETUNING.batch_size,
        device=DEFAULTS.device,
        precision=DEFAULTS.precision,
        runtime=DEFAULTS.runtime,
        tta=FINETUNING.tta,
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
        self.tta = tta
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
        self.random_state = random_state
        self.cache = cache
        self.checkpoint = checkpoint
        self.memory_limit = memory_limit
        self.store_dir = store_dir

    def _checked_targets(self, y, n_images: int) -> tuple[np.ndarray, Kind]:
        """``y`` checked, one row per image, and the kind of its targets; fitted attributes of ``y`` set."""
        raise NotImplementedError

    def _validation_name(self) -> str:
        """What ``validation_score`` in ``history_`` is, for :meth:`plot_history`."""
        raise NotImplementedError

    def _fit(self, X, y, sample_weight=None, class_weight=None):
        """Fine-tune on ``X`` (images) and ``y``; ``class_weight`` multiplies ``sample_weight`` (classes alone)."""
        images = image_io.as_image_list(X)
        y, kind = self._checked_targets(y, len(images))
        weights = self._sample_weights(y, sample_weight, class_weight)
        memory_limit = resolve_memory_limit(self.memory_limit)
        backbone = backbones.load_backbone(self.backbone, self.weights, self.device)
        # A runtime that cannot run (runtime="onnxruntime" with bf16, on CUDA) is refused before training.
        arithmetic.resolve_runtime(self.runtime, self.precision, backbone.device, None, backbone.network)
        inputs = given_input(self)
        recipe = self._recipe(backbone, inputs)
        if self.tta != "auto":
            check_tta(self.tta, recipe.crop_size)  # before training: a tta the input cannot take is refused now
        layers, network_head = probe_backbone(backbone, recipe.crop_size)
        unfreeze, why = strategy.resolved_unfreeze(self.unfreeze, y, kind.size(y))
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        side, kept, input_why = self._native_side(backbone, recipe, network_head, images, y, seed, kind)
        if side is not None:
            inputs = {"input_size": side, "crop": False}
            recipe = self._recipe(backbone, inputs)
            layers, network_head = probe_backbone(backbone, recipe.crop_size)
        why = why if input_why is None else f"{why}; {input_why}"
        layer_names = [layer.name for layer in layers]
        if unfreeze == HEAD:
            # The probe is already the best linear head on frozen codes (convex, C tuned by CV): epochs
            # on augmented images only moved it away, and so it takes every image (benchmarks/RESULTS.md).
            model, started, chosen = self._head_only(
                backbone, recipe, inputs, network_head, images, y, weights, layer_names, why, kind, seed, kept
            )
            state = training.State()
        else:
            examples, images = self._decoded(images, y, weights, recipe, memory_limit, kind)
            chosen = strategy.chosen(self.layer, unfreeze, self.batchnorm, why, layer_names)
            model, state, started, chosen = self._fine_tuned(
                backbone, recipe, inputs, network_head, images, examples, seed, chosen, kind, kept
            )
        kind.fold(model.head)  # continuous targets: the head predicts them, not their standardised values
        self.strategy_ = chosen.as_dict()
        self.tta_ = chosen.tta if self.tta == "auto" else self.tta
        self.input_size_, self.crop_ = inputs["input_size"], inputs["crop"]
        # Epoch 0, the started network: the probe's loss on its codes, its validation score, no learning rates.
        epoch_0 = {
            "epoch": 0,
            "train_loss": started["train_loss"],
            "validation_score": state.start_score,
            "validation_score_views": state.start_score_views,
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

    def _head_only(
        self, backbone, recipe, inputs: dict, network_head, images, y, weights, layer_names, why, kind: Kind, seed: int,
        kept: set[str] | None,
    ):  # fmt: skip
        """The linear probe on the frozen codes of ``layer`` (the searched one for ``"auto"``) and ``tta``'s
        views (cross-validated against one view for ``"auto"``), every usable image; its training loss and
        the seconds it took (searches included), epoch 0 of ``history_``; the strategy. ``kept``: the
        symmetries already measured (None: measured here where ``tta="auto"`` needs them)."""
        started = time.perf_counter()
        if self.layer != "auto":
            strategy.check_layers(self.layer, HEAD, layer_names)  # before any search of the views
        ttas, kept = self._head_only_views(backbone, recipe, network_head, images, y, seed, kind, kept)
        with _shared_codes(self.cache) as cache:
            # With tta the probe is fit on the views' averaged codes: what the model predicts from.
            transformer = probe.frozen_codes(self._frozen_params(inputs), recipe.crop_size, PENULTIMATE, cache, ttas[0])
            layer, tta, why, tta_why = strategy.head_only_choice(
                self.layer, ttas, kept, why, transformer, images, y, search=kind.stratify
            )
            chosen = strategy.chosen(layer, HEAD, self.batchnorm, why, layer_names)
            if self.tta == "auto":
                chosen = chosen.with_tta(tta, tta_why)
            # The search stored every candidate's codes in the cache: the probe reads them, it computes nothing.
            codes = self._usable_codes(transformer.set_params(layer=layer, tta=tta), images)
        kept = np.flatnonzero(~np.isnan(codes).any(axis=1))
        model = self._tapped(backbone, network_head, layer)
        model.head, loss = kind.probe(codes[kept], kind.encode(y[kept]), _rows(weights, kept))
        return model.to(backbone.device), {"train_loss": loss, "seconds": time.perf_counter() - started}, chosen

    def _head_only_views(
        self, backbone, recipe, network_head: str, images: list, y: np.ndarray, seed: int, kind: Kind,
        kept: set[str] | None,
    ) -> tuple[list, set[str] | None]:  # fmt: skip
        """The views the head-only fit weighs, and the symmetries measured (None: not measured): ``[tta]``
        as given; for ``"auto"`` one view, and the candidate the symmetries allow where the classes have
        the images to cross-validate it (``kept``: measured already, or None to measure them here)."""
        if self.tta != "auto":
            return [self.tta], None
        if not kind.stratify or np.unique(y, return_counts=True)[1].min() < strategy.LAYER_SEARCH_CV:
            return [None], None
        if kept is None:
            rows = probe.stratified_rows(y, invariance.SYMMETRY_MAX_IMAGES, seed)
            kept = self._sampled_symmetries(backbone, recipe, network_head, images, y, rows, seed, kind)
        candidate = invariance.tta_candidate(kept, recipe.crop_size)
        return [None, *([candidate] if candidate else [])], kept

    def _native_side(
        self, backbone, recipe, network_head: str, images: list, y: np.ndarray, seed: int, kind: Kind
    ) -> tuple[int | None, set[str] | None, str | None]:
        """``input_size="auto"``: the images' own side where they are seen whole (None: the weights' input),
        the symmetries measured to decide (None: not measured), and why (None: ``input_size`` was given).

        The images' size is read from the headers of the sample the symmetries are measured on
        (:func:`skcnn.finetuning.strategy.resolved_input`); nothing is measured for images no larger
        than the weights' input."""
        if not _auto(self.input_size):
            return None, None, None
        rows = probe.stratified_rows(y, invariance.SYMMETRY_MAX_IMAGES, seed) if kind.stratify else np.arange(len(y))
        rows = rows[: invariance.SYMMETRY_MAX_IMAGES]
        side = native_input_size([image_io.image_size(images[i]) for i in rows], recipe)
        kept = None
        if side is not None and kind.stratify:
            kept = self._sampled_symmetries(backbone, recipe, network_head, images, y, rows, seed, kind)
        side, why = strategy.resolved_input(recipe, side, kept)
        return side, kept, why

    def _sampled_symmetries(
        self, backbone, recipe, network_head: str, images: list, y: np.ndarray, rows: np.ndarray, seed: int,
        kind: Kind,
    ) -> set[str]:  # fmt: skip
        """The symmetries that keep the class, measured as ``augment="auto"`` measures them, on the
        images of ``rows`` (at most :data:`~skcnn.finetuning.invariance.SYMMETRY_MAX_IMAGES`, a stratified
        draw) decoded for it (those that fail are left out here; the probe's pass names them)."""
        decoded, kept = decoded_images(
            [images[i] for i in rows], recipe, [], decode=self.decode, max_pixels=self.max_pixels,
            batch_size=self.batch_size, memory_limit=resolve_memory_limit(self.memory_limit), store_dir=self.store_dir,
        )  # fmt: skip
        sample = training.Examples(decoded, kind.encode(y[rows][kept]))
        model = self._tapped(backbone, network_head, PENULTIMATE).eval()
        return strategy.kept_symmetries(model, recipe, sample, seed, self.batch_size)

    def _fine_tuned(
        self, backbone, recipe, inputs: dict, network_head, images: list, examples: training.Examples, seed: int,
        chosen: Strategy, kind: Kind, kept: set[str] | None,
    ):  # fmt: skip
        """The started model trained as ``chosen`` says; the training state at the end, the probe's
        training loss and seconds (epoch 0 of ``history_``), and the strategy with ``augment`` measured
        (``kept``: the symmetries ``input_size="auto"`` measured, None where it did not)."""
        train, val = self._split(examples.targets, seed, kind)
        data = examples.subset(train)
        validation = None if val is None else examples.subset(val)
        model = self._tapped(backbone, network_head, chosen.layer)
        # The probe sees the training split only: the validation split judges the epochs. Its codes
        # are dropped once it is fit (not held through training).
        clock = time.perf_counter()
        probed = probe.probe_rows(data.targets.numpy(), seed, kind.stratify)
        sample = data.subset(torch.as_tensor(probed))
        model.head, loss = kind.probe(
            self._probe_codes(model, recipe, inputs, [images[i] for i in train[probed].tolist()], sample.images),
            sample.targets,
            None if sample.weights is None else sample.weights.numpy(),
        )
        started = {"train_loss": loss, "seconds": time.perf_counter() - clock}
        model = model.to(backbone.device)
        augment, chosen, kept = self._augment(model, recipe, sample, seed, chosen, kind, kept)
        plan = self._plan(backbone.device, seed, examples, chosen.batchnorm, kind)
        measured = self.tta == "auto" and kept is not None
        candidate = invariance.tta_candidate(kept, recipe.crop_size) if measured else None
        # Every epoch is scored from one view and with the candidate's views: the kept epoch and views are the
        # best of both (judged on the split that picks the epoch, neither is favoured by that choice).
        plan.views = candidate if validation is not None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            first = model.module_name(chosen.unfreeze)
            example = recipe.normalize(data.images.read([0])).to(backbone.device)
            parameters = training.trainable(model, HEAD, first, example)
            if plan.batchnorm == "adapt":
                training.adapt_batchnorm(model, data.images, recipe, plan)
                plan.batchnorm = "frozen"
            state = training.train(model, parameters, data, validation, recipe, augment, plan)
        if self.tta == "auto":
            chosen = chosen.with_tta(*strategy.chosen_tta(kept, candidate, _kept_scores(state, plan), "validation"))
        return model, state, started, chosen

    def _augment(
        self, model: TappedClassifier, recipe, sample: training.Examples, seed: int, chosen: Strategy, kind: Kind,
        kept: set[str] | None,
    ):  # fmt: skip
        """The augmentation of training batches, the strategy, and the symmetries that keep the class
        (None where not measured): ``"auto"`` (``augment`` or ``tta``) measures them
        (:func:`skcnn.finetuning.strategy.measured_augment`) unless ``input_size="auto"`` has
        (``kept``), and the strategy says which. Labels and continuous targets are not measured:
        ``augment="auto"`` is the photo recipe."""
        auto = isinstance(self.augment, str) and self.augment == "auto"
        measured = "photo"
        if kept is not None:
            measured = invariance.augment_policy(kept, recipe.crop_size)
        elif kind.stratify and (auto or self.tta == "auto"):
            measured, kept = strategy.measured_augment(model, recipe, sample, seed, self.batch_size)
        if auto:
            chosen = chosen.with_augment(measured, kept)
        return resolve_augment(self.augment, recipe.crop_size, measured if auto else None), chosen, kept

    def _sample_weights(self, y: np.ndarray, sample_weight, class_weight=None) -> np.ndarray | None:
        """Per image: ``sample_weight`` times its class's weight; None when neither is given."""
        if sample_weight is None and class_weight is None:
            return None
        weights = _check_sample_weight(sample_weight, y, dtype=np.float64, ensure_non_negative=True)
        if class_weight is not None:
            weights = weights * compute_sample_weight(class_weight, y)
        if not weights.sum() > 0:
            given = "sample_weight gives" if class_weight is None else "sample_weight and class_weight give"
            raise ValueError(f"{given} every image a weight of 0; some must weigh more.")
        return weights

    def _recipe(self, backbone, inputs: dict):
        """The weights' preprocessing at ``inputs`` (an ``input_size`` and a ``crop``)."""
        size, crop = checked_input_size(inputs["input_size"]), check_crop(inputs["crop"])
        return backbone.preprocessing.with_input_size(size, crop)

    def _frozen_params(self, inputs: dict) -> dict:
        """The parameters the frozen codes of the probe are computed with: ``crop`` as the fit resolved it."""
        return {**self.get_params(), "crop": inputs["crop"]}

    def _decoded(
        self, images: list, y: np.ndarray, weights, recipe, memory_limit: int, kind: Kind
    ) -> tuple[training.Examples, list]:
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
        return training.Examples(decoded, kind.encode(y[kept]), weights), [images[i] for i in kept]

    def _left_out(self, failures: list, n_images: int) -> None:
        """``failed_`` set; with ``on_error="raise"`` the bad images named in an error, else in a warning."""
        self.failed_ = sorted(failures, key=lambda failure: failure.index)
        if self.failed_ and self.on_error == "raise":
            raise image_io.BadImagesError(self.failed_)
        image_io.warn_bad_images(self.failed_, n_images, stacklevel=5, what="training images")

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
        fast = backbone.device.type in arithmetic.FAST_LAYOUT_DEVICES
        return TappedClassifier(network, layer, network_head, head=None, channels_last=fast)

    def _probe_codes(self, model: TappedClassifier, recipe, inputs: dict, images: list, crops) -> np.ndarray:
        """The frozen codes of the training images at the head's layer.

        With a ``cache`` they come from the transformer's engine (stored for
        the next fit, as the transformer stores them); without, from the
        crops decoded for training. Either way no image is decoded twice:
        the engine reads the training crops of the images the cache lacks,
        where they are exactly those it would make (same recipe and
        decoding, uint8 sources: :func:`~skcnn.finetuning.probe.exact_crops`).
        """
        if self.cache is not None:
            transformer = probe.frozen_codes(self._frozen_params(inputs), recipe.crop_size, model.layer, self.cache)
            extractor = transformer.fit(images).extractor_
            exact = probe.exact_crops(images) if extractor.preprocessing() == recipe else ()
            return extractor.codes(images, crops=Crops(exact, crops.read)).codes
        return probe.crop_codes(model, recipe, crops, self.batch_size)["original"]

    def _plan(
        self, device: torch.device, seed: int, examples: training.Examples, batchnorm: str, kind: Kind
    ) -> training.Plan:
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
            target=kind,
        )

    def _fingerprint(self, seed: int, examples: training.Examples) -> str:
        """What a checkpoint must match to be resumed: data, labels, weights, parameters, seed."""
        params = {k: v for k, v in self.get_params().items() if k not in SAME_RESULT}
        data = (repr(sorted(params.items())), examples.images.keys, examples.targets.tolist(), seed)
        if examples.weights is not None:
            data += (examples.weights.tolist(),)
        return joblib.hash(data)

    def _split(self, targets: torch.Tensor, seed: int, kind: Kind) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Indices of the training and the validation split: stratified for classes, plain for the others."""
        if not self.early_stopping:
            return torch.arange(len(targets)), None
        n_images = len(targets)
        if kind.stratify:
            # At least one image of each class, so that every class is judged.
            n_classes = kind.n_outputs
            n_val = max(int(np.ceil(self.validation_fraction * n_images)), n_classes)
            if n_images - n_val < n_classes:
                raise ValueError(
                    f"early stopping holds out {n_val} of {n_images} images (validation_fraction="
                    f"{self.validation_fraction}, at least one per class), leaving too few to train on every one "
                    f"of the {n_classes} classes; give more images or set early_stopping=False."
                )
            stratify = targets.numpy()
        else:
            n_val = max(int(np.ceil(self.validation_fraction * n_images)), MIN_VALIDATION)
            if n_images - n_val < MIN_VALIDATION:
                raise ValueError(
                    f"early stopping holds out {n_val} of {n_images} images (validation_fraction="
                    f"{self.validation_fraction}, at least {MIN_VALIDATION}), leaving too few to train on; give "
                    "more images or set early_stopping=False."
                )
            stratify = None
        train, val = train_test_split(np.arange(n_images), test_size=n_val, stratify=stratify, random_state=seed)
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
        ``strategy_["layer"]``; the outputs are ``head(codes)``: the logits of
        classes or labels, or a regressor's predictions (its targets'
        standardisation folded into the head).
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
            Unfitted, with ``backbone``, ``weights=path``, and ``input_size``,
            ``crop`` (those the fit took) and ``layer`` (the head's) unless given.
        """
        check_is_fitted(self)
        with atomic_path(path) as temporary:  # a transformer never reads half a weights file
            torch.save(network_weights(self.state_dict_), temporary)  # CPU tensors, wherever it was fitted
        params = {"layer": self.strategy_["layer"], **params}
        params = {"input_size": self.input_size_, "crop": self.crop_, **params}
        return CNNFeatureTransformer(backbone=self.backbone, weights=path, **params)

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
            twin.set_ylabel(f"validation {self._validation_name().replace('_', ' ')}", color="C1")
            twin.legend(loc="lower right")
        ran = (
            f"unfreeze {self.strategy_['unfreeze']!r}, {self.n_epochs_} epochs"
            if self.n_epochs_
            else "the linear probe alone (unfreeze 'head'): no epochs ran"
        )
        ax.set_title(f"{type(self).__name__}({self.backbone!r}), layer {self.strategy_['layer']!r}: {ran}")
        return ax

    def _outputs(self, X) -> np.ndarray:
        """The head's outputs, float32 ``(n_images, n_outputs)``: logits, or continuous predictions.

        Batched, with the weights' own evaluation preprocessing, on the transformer's runtime.
        """
        images = image_io.as_image_list(X)
        predictor = self._prediction()
        # On a CPU, the transformer's batches: decoding and the network share the cores, and batches of
        # 4-8 ran faster per image than 32 (benchmarks/RESULTS.md, "Throughput" and "Prediction").
        on_cpu = predictor.backbone.device.type == "cpu"
        batch_size = min(self.batch_size, DEFAULTS.batch_size) if on_cpu else self.batch_size
        failures: list = []
        logits = np.full((len(images), len(self.state_dict_["head.bias"])), np.nan, dtype=np.float32)
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
        """The prediction pass of the fitted network, for the current ``runtime``, ``precision`` and
        ``tta``: built on first use (after unpickling, after ``set_params``), then kept."""
        key = (self.runtime, self.precision, predicted_views(self))
        kept = getattr(self, "_predictor", None)
        if kept is None or kept[0] != key:
            check_tta(key[2], self._recipe_of_weights.crop_size)  # set_params(tta=...) after the fit
            spec = backbones.parse_backbone(self.backbone)
            kept = self._predictor = (key, Predictor.build(self._model(), spec, self._recipe_of_weights, *key))
        return kept[1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_network", None)  # rebuilt from state_dict_ (CPU tensors) on first use
        state.pop("_predictor", None)  # so is the prediction pass (ONNX exports are kept on disk)
        return state

    def __setstate__(self, state):
        # Models pickled before skcnn 0.9 have no ``tta``: they predicted from one view; before 0.11 none chose.
        state.setdefault("tta", None)
        if "state_dict_" in state:  # fitted
            state.setdefault("tta_", state["tta"])
            state.setdefault("input_size_", state["input_size"])
            state.setdefault("crop_", state["crop"])
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


def predicted_views(model: FineTuning) -> str | None:
    """The views a fitted model's predictions average: its ``tta``, or for ``"auto"`` the fit's choice
    (``tta_``); a ``tta`` set after the fit takes effect at once."""
    check_is_fitted(model)
    return model.tta_ if model.tta == "auto" else model.tta


def given_input(model: FineTuning) -> dict:
    """A model's ``input_size`` and ``crop`` as given; ``input_size="auto"`` is the weights' size until a
    fit resolves it (``input_size_``, ``crop_``)."""
    return {"input_size": None if _auto(model.input_size) else model.input_size, "crop": model.crop}


def _auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def _kept_scores(state: training.State, plan: training.Plan) -> tuple[float, float] | None:
    """The kept epoch's validation scores from one view and with ``plan.views`` (None: not scored with views)."""
    if plan.views is None:
        return None
    if state.best_epoch == 0:
        return state.start_score, state.start_score_views
    kept = state.history[state.best_epoch - 1]
    return kept["validation_score"], kept["validation_score_views"]


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


__all__ = ["SAME_RESULT", "FineTuning", "predicted_views"]
