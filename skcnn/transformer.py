"""``CNNFeatureTransformer``: a frozen pretrained CNN as a scikit-learn transformer."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import arithmetic, backbones, compiled, loading
from . import images as image_io
from .cache import FORMAT_VERSION, CodeCache
from .extraction import TapPlan, extract_codes, extract_codes_cached, show_progress
from .layers import check_layer_names, probe_backbone
from .pooling import POOLINGS, check_poolable, n_codes
from .taps import PENULTIMATE


class CNNFeatureTransformer(TransformerMixin, BaseEstimator):
    """Codes of a frozen pretrained CNN: images in, fixed-length vectors out.

    Every image is run through a network pretrained on ImageNet; the
    activations of the chosen layer(s) are ReLU'd and pooled into a vector,
    the *CNN code* a linear classifier is then trained on. The network is
    frozen: ``fit`` only checks the parameters and records the output
    shapes, it never runs the network over the data.

    Parameters
    ----------
    backbone : str or list of str, default="efficientnet_lite0"
        The network: a torchvision classification model name (``"alexnet"``,
        ``"vgg16"``, ``"resnet50"``, ... anything
        ``torchvision.models.list_models(module=torchvision.models)``
        lists), ``"timm/<name>"`` for any timm model, or an offline-packaged
        backbone whose ImageNet weights ship with pip:
        ``"efficientnet_lite0"``, ``"efficientnet_lite1"``,
        ``"efficientnet_lite2"``. A list of names concatenates the codes of
        several networks (AlexNet + VGG), each with its own preprocessing;
        ``weights``, ``layer``, ``input_size`` and ``cache_layers`` then
        apply to every backbone, or take a dict ``{backbone: value}`` (or,
        except ``input_size``, a list with one value per backbone).

    weights : str, path or None, default="DEFAULT"
        ``"DEFAULT"``: the backbone's recommended pretrained weights
        (torchvision downloads them once into ``$TORCH_HOME``); a weights
        enum name such as ``"IMAGENET1K_V1"`` (timm: a pretrained tag); a
        path to a checkpoint file holding a state dict (read with
        ``torch.load(weights_only=True)``, never full unpickling); or
        ``None`` for a seeded random initialisation (a from-scratch
        baseline).

    layer : str or list of str, default="penultimate"
        Where to tap: ``"penultimate"`` (the input of the classifier head)
        or a layer name from :func:`skcnn.list_layers`. A list taps several
        layers in one forward pass and concatenates their codes in the
        given order. Earlier layers suit data unlike ImageNet (digits,
        microscopy); the penultimate layer suits data like it
        (:func:`skcnn.advise_layer` and :class:`skcnn.LayerSearchCV` help
        choose).

    pooling : {"avg", "max", "flatten", "spp"}, default="avg"
        How a conv map (C, H, W) becomes a vector: global average, global
        max, flattening (C*H*W values) or a spatial pyramid (1x1, 2x2 and
        4x4 average pools concatenated, 21*C values). Vectors (fully
        connected outputs, penultimate codes of globally pooled networks)
        pass through unchanged.

    relu : bool, default=True
        Threshold activations at zero before pooling, as the codes were
        during the network's training.

    input_size : int, (int, int) or None, default=None
        Network input height and width. ``None`` uses the weights' own
        preprocessing (resize, centre crop, normalisation from
        torchvision's ``weights.transforms()`` or timm's
        ``pretrained_cfg``); an int or pair changes the size and keeps the
        crop fraction. Conv layers accept any size; fully connected layers
        of AlexNet and VGG expect the original one.

    batch_size : int, default=8
        Images per forward pass. On a 2-core CPU 4-8 measured faster per
        image than 32 (see ``benchmarks/RESULTS.md``); on a GPU use more.
        Codes do not depend on it beyond float rounding (within 1e-4).

    num_workers : int or "auto", default="auto"
        Threads decoding and resizing images while the network runs on the
        previous batch (at most two batches ahead, in order, so memory
        stays bounded). ``0`` decodes in the calling thread. ``"auto"``:
        one per two usable cores, at least 1, at most 4. Codes are
        identical whatever the number.

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Arithmetic of the forward pass: ``"fp32"``, or autocast to bf16 or
        fp16 (pooling stays fp32, codes are float32 either way).
        ``"auto"``: fp16 on CUDA, bf16 on a CPU with native bf16
        (AVX512-BF16 or AMX), fp32 otherwise. Measured on EfficientNet-Lite0
        codes: bf16 moves them by about 8% (relative L2, median), fp16 by
        under 1%, with no loss of a linear classifier's accuracy. The
        resolved precision is part of the cache key, so codes of different
        precisions are never mixed. Without native support (most CPUs)
        bf16 and fp16 are emulated and much slower than fp32.

    decode : {"exact", "draft"}, default="exact"
        ``"draft"`` decodes JPEG files at a reduced scale (PIL's DCT
        scaling, never below the resize target): several times faster on
        camera-sized photos, codes slightly different. With ``"exact"`` a
        path and the same picture as an array give the same codes.

    compile : bool or dict, default=False
        Run the network through ``torch.compile``, cut after the last tap:
        ``True`` uses inductor with weight freezing, a dict gives
        ``torch.compile``'s own arguments (e.g. ``{"mode":
        "max-autotune"}``). Compiling takes seconds to minutes once per
        process, network, layer list and batch size, and pays only on long
        runs; on the benchmark CPU it made the network at most ~1.1x faster
        (``benchmarks/RESULTS.md``). The first batch is checked against the
        uncompiled pass: a network or machine where compiling fails (FX
        cannot trace it; inductor needs a C++ compiler on the CPU) runs
        uncompiled with a warning. Codes equal the uncompiled ones within
        float rounding (1e-4 relative), so the cache shares them.

    device : str or torch.device, default="auto"
        ``"auto"``: CUDA if available, else Apple MPS, else the CPU.

    progress : bool or "auto", default="auto"
        A tqdm progress bar while transforming; ``"auto"`` shows it only
        on an interactive terminal and for more than one batch.

    on_error : {"raise", "skip"}, default="raise"
        What a bad image (missing, truncated, not an image, too large) does.
        Either way every other image of the call is computed (and cached)
        first. ``"raise"``: then a :class:`~skcnn.images.BadImagesError`
        lists every bad image with its reason and carries the codes
        computed (``.codes``). ``"skip"``: its row is NaN, a warning says
        how many, and ``failed_`` lists them. A classifier cannot take NaN
        rows: clean a training set first with :func:`skcnn.check_images`.

    max_pixels : int or None, default=100_000_000
        Image files with more pixels (width x height) are refused before
        decoding (decompression bombs); ``None``: no limit.

    cache : str, path, CodeCache or None, default=None
        An HDF5 file of codes (see :mod:`skcnn.cache`). ``transform`` looks
        every image up by content and runs the network only on the misses,
        storing each computed batch at once: re-runs, other folds, other
        layer lists sharing a layer, and interrupted runs reuse what is
        there. Several configurations share one file. A
        :class:`~skcnn.cache.CodeCache` gives its options (a Dask worker's
        ``shard``, a ``lock_timeout``).

    cache_layers : list of str or None, default=None
        More layers to compute and store in the cache, in the same forward
        pass, whenever an image is missing there: a later request for any
        of them is a hit. Give it the candidates of a grid search over
        ``layer`` and the whole search costs one network pass per image.
        Needs ``cache``.

    Attributes
    ----------
    layers_ : tuple of str
        The tapped layers, in the order their codes are concatenated.
        With several backbones, this and the other per-network attributes
        (``layer_shapes_``, ``head_``, ``input_size_``, ``preprocessing_``)
        are dicts keyed by backbone name.
    layer_shapes_ : dict
        Output shape of one image at each tapped layer.
    head_ : str
        Name of the classifier head whose input ``"penultimate"`` taps.
    n_features_out_ : int
        Length of the code of one image.
    input_size_ : (int, int)
        Network input height and width.
    preprocessing_ : dict
        The resolved preprocessing: sizes, mean, std and interpolation.
    device_ : str
        The device the network runs on.
    failed_ : list of ImageFailure
        Set by ``transform``: the images of the last call that could not be
        used (index, name, reason); empty when all were.
    cache_info_ : CacheStats
        Set by ``transform`` when ``cache`` is given: ``hits``, ``misses``
        and ``computed`` (distinct images run through the network) of the
        last call (a dict by backbone with several backbones).
    parts_ : list of CNNFeatureTransformer
        With several backbones: one fitted single-backbone transformer per
        backbone, in order.

    See Also
    --------
    skcnn.list_layers : The tappable layers of a backbone, with their shapes.

    Notes
    -----
    Accepted inputs: a list, array or pandas Series of image paths; a list
    of PIL images; a uint8 array (N, H, W, 3) or gray (N, H, W); a float
    array in [0, 1]; a list of arrays of different sizes. Gray images are
    replicated over three channels, alpha is dropped. The same picture as a
    path, a PIL image or an array gives the same codes.

    On CPU and CUDA the forward pass runs on a private copy of the network
    in channels_last layout with batch norm folded into the convolutions
    (same function; codes equal within 1e-4); images are decoded by
    ``num_workers`` threads while it runs.

    The network is built on first use and kept once per process: clones
    (in ``GridSearchCV``) share it, and a pickled transformer holds no
    weights (it reloads them from their source after unpickling).

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn import CNNFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    >>> cnn = CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=64)
    >>> codes = cnn.fit_transform(images)
    >>> codes.shape, codes.dtype
    ((4, 1280), dtype('float32'))
    >>> cnn.get_feature_names_out()[:2].tolist()
    ['efficientnet_lite0__penultimate__0', 'efficientnet_lite0__penultimate__1']

    In a pipeline, with a linear classifier on the codes:

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import LinearSVC
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64), LinearSVC())
    >>> model.fit(images, [0, 1, 0, 1]).predict(images).shape
    (4,)

    Two networks' codes concatenated, each with its own preprocessing:

    >>> both = CNNFeatureTransformer(
    ...     backbone=["efficientnet_lite0", "efficientnet_lite1"],
    ...     layer={"efficientnet_lite0": "blocks.2", "efficientnet_lite1": "penultimate"},
    ...     input_size=64,
    ... ).fit(images)
    >>> both.transform(images).shape
    (4, 1320)
    >>> both.get_feature_names_out()[[0, -1]].tolist()
    ['efficientnet_lite0__blocks.2__0', 'efficientnet_lite1__penultimate__1279']
    """

    _parameter_constraints: dict = {
        "backbone": [str, list, tuple],
        "weights": [str, os.PathLike, None, list, tuple, dict],
        "layer": [str, list, tuple, dict],
        "pooling": [StrOptions(set(POOLINGS))],
        "relu": ["boolean"],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "precision": [StrOptions(set(arithmetic.PRECISIONS))],
        "decode": [StrOptions(set(loading.DECODES))],
        "compile": ["boolean", dict],
        "device": [str, torch.device],
        "progress": ["boolean", StrOptions({"auto"})],
        "on_error": [StrOptions({"raise", "skip"})],
        "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [str, os.PathLike, CodeCache, None],
        "cache_layers": [list, tuple, dict, None],
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        weights="DEFAULT",
        layer="penultimate",
        pooling="avg",
        relu=True,
        input_size=None,
        batch_size=8,
        num_workers="auto",
        precision="auto",
        decode="exact",
        compile=False,
        device="auto",
        progress="auto",
        on_error="raise",
        max_pixels=image_io.MAX_PIXELS,
        cache=None,
        cache_layers=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.relu = relu
        self.input_size = input_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.precision = precision
        self.decode = decode
        self.compile = compile
        self.device = device
        self.progress = progress
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.cache = cache
        self.cache_layers = cache_layers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the parameters, load the network(s) and record output shapes.

        The networks are frozen: no image of ``X`` is decoded or run.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays (see Notes of the class); only the
            container is checked.
        y : None
            Ignored.

        Returns
        -------
        self : CNNFeatureTransformer
            The fitted transformer.
        """
        image_io.as_image_list(X)
        if isinstance(self.backbone, str):
            self._fit_backbone()
        else:
            self._fit_parts(X)
        self._fitted_params = self.get_params()
        return self

    def _fit_backbone(self) -> None:
        """Fit for one backbone: layers, shapes, preprocessing."""
        for param in _PER_BACKBONE:
            if isinstance(getattr(self, param), dict) or (
                param == "weights" and isinstance(self.weights, (list, tuple))
            ):
                raise ValueError(
                    f"{param}={getattr(self, param)!r} is per backbone, for several backbones "
                    f"(backbone=[...]); backbone is {self.backbone!r}: give one value."
                )
        names = self._layer_names()
        stored_names = self._cache_layer_names(names)
        input_size = self._checked_input_size()
        compiled.check_compile_options(self.compile)
        backbone = backbones.load_backbone(self.backbone, self.weights, self.device)
        recipe = backbone.preprocessing
        if input_size is not None:
            recipe = recipe.with_input_size(input_size)
        layers, head = probe_backbone(backbone, recipe.crop_size)
        check_layer_names(stored_names, layers, self.backbone)
        shapes = {layer.name: layer.shape for layer in layers}
        for name in stored_names:
            try:
                check_poolable(shapes[name], self.pooling)
            except ValueError as exc:
                param = "layer" if name in names else "cache_layers"
                raise ValueError(f"{param}={name!r}: {exc}") from None
        self.layers_ = tuple(names)
        self.layer_shapes_ = {name: shapes[name] for name in stored_names}
        self.head_ = head
        self.n_features_out_ = sum(n_codes(shapes[name], self.pooling) for name in names)
        self.input_size_ = recipe.crop_size
        self.preprocessing_ = recipe.as_dict()
        self.device_ = str(backbone.device)

    def _fit_parts(self, X) -> None:
        """Fit one single-backbone transformer per backbone of the list."""
        names = list(self.backbone)
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"backbone must be a name or a non-empty list of names; got {self.backbone!r}.")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"backbone lists {repeated} more than once; each backbone's codes are taken once.")
        shared = {k: v for k, v in self.get_params().items() if k not in _PER_BACKBONE and k != "backbone"}
        per_backbone = {param: _per_backbone(getattr(self, param), names, param) for param in _PER_BACKBONE}
        self.parts_ = [
            type(self)(backbone=name, **shared, **{param: values[name] for param, values in per_backbone.items()}).fit(
                X
            )
            for name in names
        ]
        for attribute in ("layers_", "layer_shapes_", "head_", "input_size_", "preprocessing_"):
            setattr(self, attribute, {part.backbone: getattr(part, attribute) for part in self.parts_})
        self.n_features_out_ = sum(part.n_features_out_ for part in self.parts_)
        self.device_ = self.parts_[0].device_

    def transform(self, X):
        """Compute the codes of ``X``.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays (see Notes of the class).

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features_out_), dtype float32
            The codes of each image, tapped layers (and backbones)
            concatenated (NaN rows for images that could not be used, with
            ``on_error="skip"``).

        Raises
        ------
        skcnn.images.BadImagesError
            With ``on_error="raise"``, after all other images were computed,
            when some could not be used; it lists each with its reason.
        """
        check_is_fitted(self)
        images = image_io.as_image_list(X)
        if self.get_params() != self._fitted_params:
            # Parameters changed by set_params since fit. fit only derives
            # shapes from the parameters, never from data, so re-deriving
            # them here is what the user means.
            self.fit(images)
        codes, self.failed_, cache_info = self._codes(images)
        if self.cache is not None:
            self.cache_info_ = cache_info
        if self.failed_ and self.on_error == "raise":
            raise image_io.BadImagesError(self.failed_, codes)
        if self.failed_:
            warnings.warn(
                f"{len(self.failed_)} of {len(images)} images could not be used; their rows are "
                f"NaN (see failed_). First: {self.failed_[0]}",
                UserWarning,
                stacklevel=2,
            )
        return codes

    def _codes(self, images: list) -> tuple[np.ndarray, list[image_io.ImageFailure], object]:
        """Codes, failures and cache statistics of ``images`` (fitted)."""
        if not images:
            return np.empty((0, self.n_features_out_), dtype=np.float32), [], None
        if hasattr(self, "parts_"):
            return self._codes_of_parts(images)
        backbone = backbones.load_backbone(self.backbone, self.weights, self.device)
        recipe = backbone.preprocessing.with_input_size(self.input_size_)
        plan = self._plan(self.layers_)
        progress = show_progress(self.progress, len(images), self.batch_size)
        inference = arithmetic.inference_for(
            backbone,
            self.precision,
            keep=frozenset(self.layer_shapes_),
            input_size=self.input_size_,
            compile_options=compiled.check_compile_options(self.compile),
            batch_size=self.batch_size,
        )
        options = dict(
            batch_size=self.batch_size,
            progress=progress,
            max_pixels=self.max_pixels,
            num_workers=loading.resolve_workers(self.num_workers),
            decode=self.decode,
            inference=inference,
        )
        if self.cache is None:
            codes, failed = extract_codes(backbone, images, recipe, plan, **options)
            return codes, failed, None
        stored_plan = self._plan(tuple(self.layer_shapes_))
        return extract_codes_cached(
            backbone,
            images,
            recipe,
            plan,
            cache=self.cache if isinstance(self.cache, CodeCache) else CodeCache(self.cache),
            configs={layer: self._cache_config(layer, backbone, recipe, stored_plan) for layer in stored_plan.layers},
            stored_plan=stored_plan,
            **options,
        )

    def _plan(self, layers: tuple[str, ...]) -> TapPlan:
        shapes = tuple(self.layer_shapes_[layer] for layer in layers)
        return TapPlan(layers, self.head_, self.pooling, self.relu, shapes)

    def _codes_of_parts(self, images: list):
        """Each backbone's codes side by side; a row fails if any backbone failed it."""
        blocks, failed, cache_info = [], {}, {}
        for part in self.parts_:
            codes, part_failed, cache_info[part.backbone] = part._codes(images)
            blocks.append(codes)
            for failure in part_failed:
                failed.setdefault(failure.index, failure)
        codes = np.concatenate(blocks, axis=1)
        codes[sorted(failed)] = np.nan
        return codes, [failed[i] for i in sorted(failed)], cache_info

    def _cache_config(self, layer, backbone, recipe, plan) -> dict:
        """Everything that changes a layer's stored codes: the cache key.

        ReLU is part of it only where it must come before pooling (average
        and pyramid pooling of maps); elsewhere codes are stored before ReLU
        and thresholded when read, so ``relu=True`` and ``False`` share them.
        Precision and approximate decoding change codes beyond rounding:
        fp32 and bf16 codes, exact and draft decodes are never mixed. They
        enter the key only when they are not fp32 and exact, so caches
        written before these options existed stay valid.
        """
        shape = self.layer_shapes_[layer]
        precision = arithmetic.resolve_precision(self.precision, backbone.device)
        approximations = {
            **({"precision": precision} if precision != "fp32" else {}),
            **({"decode": self.decode} if self.decode != "exact" else {}),
        }
        return {
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "weights": backbone.weights_id,
            "layer": layer,
            "layer_shape": list(shape),
            "pooling": self.pooling,
            "relu_before_pooling": plan.relu_on_tap(layer),
            "preprocessing": recipe.as_dict(),
            **approximations,
            "width": n_codes(shape, self.pooling),
        }

    def get_feature_names_out(self, input_features=None):
        """One name per code: ``"<backbone>__<layer>__<index>"``.

        Parameters
        ----------
        input_features : None
            Ignored (the inputs are images, not named columns).

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``n_features_out_`` names, in column order.
        """
        check_is_fitted(self)
        if hasattr(self, "parts_"):
            return np.concatenate([part.get_feature_names_out() for part in self.parts_])
        names = [
            f"{self.backbone}__{layer}__{i}"
            for layer in self.layers_
            for i in range(n_codes(self.layer_shapes_[layer], self.pooling))
        ]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images (paths, PIL images, image arrays), not 2-D numeric tables.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # float32 codes whatever the input
        tags.requires_fit = True
        return tags

    def _layer_names(self) -> list[str]:
        names = [self.layer] if isinstance(self.layer, str) else list(self.layer)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"layer must be a layer name or a non-empty list of names; got {self.layer!r}. "
                "Use 'penultimate' or names from skcnn.list_layers(backbone)."
            )
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"layer lists {duplicated} more than once.")
        return names

    def _cache_layer_names(self, names: list[str]) -> list[str]:
        """The tapped layers, then the further ``cache_layers`` (in order, once)."""
        if self.cache_layers is None:
            return names
        extra = [self.cache_layers] if isinstance(self.cache_layers, str) else list(self.cache_layers)
        if not all(isinstance(name, str) for name in extra):
            raise ValueError(f"cache_layers must be a list of layer names or None; got {self.cache_layers!r}.")
        if self.cache is None:
            raise ValueError(
                "cache_layers needs a cache: set cache='codes.h5' (the extra layers are stored there), "
                "or leave cache_layers=None."
            )
        return list(dict.fromkeys([*names, *extra]))

    def _checked_input_size(self) -> tuple[int, int] | None:
        size = self.input_size
        if size is None:
            return None
        if isinstance(size, Integral):
            return (int(size), int(size))
        if len(size) == 2 and all(isinstance(s, Integral) and s >= 1 for s in size):
            return (int(size[0]), int(size[1]))
        raise ValueError(
            f"input_size must be None, a positive int or a (height, width) pair of positive ints; got {size!r}."
        )


#: Parameters that may differ between the backbones of a list.
_PER_BACKBONE = ("weights", "layer", "input_size", "cache_layers")


def _per_backbone(value, names: list[str], param: str) -> dict:
    """``{backbone: value}`` from a dict, a list with one entry per backbone,
    or one value for all (always one value for ``input_size``, whose pairs
    are a height and a width)."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [name for name in names if name not in value]
        if unknown or missing:
            raise ValueError(
                f"{param} must have one entry per backbone of {names}; unknown: {unknown}, missing: {missing}."
            )
        return dict(value)
    if not isinstance(value, (list, tuple)) or param == "input_size":
        return {name: value for name in names}
    if len(value) != len(names):
        raise ValueError(
            f"{param}={value!r}: with several backbones {names}, a list gives one entry per backbone "
            f"({len(names)}, not {len(value)}); give one value for all, or a dict "
            f"{{backbone: value}} (e.g. {{{names[0]!r}: ['blocks.2', 'penultimate']}})."
        )
    return dict(zip(names, value, strict=True))


__all__ = ["PENULTIMATE", "CNNFeatureTransformer"]
