"""``CNNFeatureTransformer``: a frozen pretrained CNN as a scikit-learn transformer."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..codes import several_backbones
from ..codes.extraction import Extractor
from ..compat import _fit_context
from ..decoding import images as image_io
from ..options import DEFAULTS, constraints_of, parameter_names, show_progress


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

    pooling : {"avg", "max", "gem", "flatten", "spp"} or list of them, default="avg"
        How a conv map (C, H, W) becomes a vector: global average, global
        max, generalised mean (GeM, ``mean(x**3)**(1/3)``: between the two,
        so that a small strong response such as a crack or a spot counts),
        flattening (C*H*W values) or a spatial pyramid (1x1, 2x2 and
        4x4 average pools concatenated, 21*C values). A list concatenates
        several poolings of each map (``["avg", "max"]``: fastai's concat
        pooling). Vectors (fully
        connected outputs, penultimate codes of globally pooled networks)
        pass through unchanged, once.

    relu : bool, default=True
        Threshold activations at zero before pooling, as the codes were
        during the network's training.

    input_size : int, (int, int) or None, default=None
        Network input height and width. ``None`` uses the weights' own
        preprocessing (resize, centre crop, normalisation from
        torchvision's ``weights.transforms()`` or timm's
        ``pretrained_cfg``); an int or pair changes the size and keeps the
        crop fraction. Conv layers accept any size; fully connected layers
        of AlexNet and VGG expect the original one. Images larger than the
        weights' size (a 300 px close-up at 224) lose detail in the resize:
        an input size near theirs keeps it (:class:`skcnn.LayerSearchCV`
        measures which pays).

    crop : bool or float, default=True
        The centre crop after the resize. ``True``: the weights' own
        (224 of 256 for most ImageNet weights); ``False``: none, the shorter
        side is resized to the input size and a square image is seen whole
        (for close-ups already framed on the object, where a defect at the
        border would be cut away); a float in (0, 1]: the fraction of the
        resized shorter side kept.

    batch_size : int, default=8
        Images per forward pass. Small batches suit a CPU (measured in
        ``benchmarks/RESULTS.md``); on a GPU use more.
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
        (AVX512-BF16 or AMX), fp32 otherwise (and with
        ``runtime="onnxruntime"``). Half precision moves codes
        beyond float rounding (how far, and the accuracy of a linear
        classifier on them: ``benchmarks/RESULTS.md``). The resolved
        precision is part of the cache key, so codes of different
        precisions are never mixed. Without native support (most CPUs)
        bf16 and fp16 are emulated and much slower than fp32.

    decode : {"auto", "exact", "draft"}, default="auto"
        How far a JPEG file may be scaled down in the DCT while it is
        decoded (1/2, 1/4 or 1/8 of each side: less work on camera photos).
        ``"auto"`` scales only while the shorter side stays at least three
        times the resize target (``preprocessing.AUTO_DECODE_MARGIN``; a 12
        MP photo at 224 px is decoded at 1/2), where the penultimate codes
        stayed within 2% (relative L2, median) of an exact decode's;
        ``"exact"`` never scales; ``"draft"`` scales down to the resize
        target itself (fastest; codes move by about 5%). Other inputs, and
        JPEGs too small to scale (shorter side under 768 px at 224 px), are
        decoded exactly under every mode. Under ``"exact"`` a path and the
        same picture as a uint8 array give the same codes; under ``"auto"``
        they agree within that drift. The margin is part of the cache key.

    compile : bool or dict, default=False
        Run the network through ``torch.compile``, cut after the last tap:
        ``True`` uses inductor with weight freezing, a dict gives
        ``torch.compile``'s own arguments (e.g. ``{"mode":
        "max-autotune"}``). Compiling takes seconds to minutes once per
        process, network, layer list and batch size, and pays only on long
        runs, if at all on a CPU (``benchmarks/RESULTS.md``). The first
        batch is checked against the
        uncompiled pass: a network or machine where compiling fails (FX
        cannot trace it; inductor needs a C++ compiler on the CPU) runs
        uncompiled with a warning. Codes equal the uncompiled ones within
        float rounding (1e-4 relative), so the cache shares them.

    runtime : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the network. ``"onnxruntime"``: the network cut after
        its last tap is exported to ONNX once per machine (kept in
        ``skcnn.network.onnx_runtime.cache_dir()``, ``$SKCNN_ONNX_CACHE`` to move
        it) and run by ONNX Runtime on the CPU, in fp32: faster than
        torch's fp32 there (``benchmarks/RESULTS.md``, "Runtimes").
        ``"auto"``: ONNX Runtime where the network computes in fp32 on a
        CPU (CPUs without native bf16, or ``precision="fp32"``); torch
        where the CPU has native bf16 (faster still), with ``compile``, and
        on CUDA and MPS. The first batch is checked
        against torch: a network that does not export runs on torch with
        a warning. Codes equal torch's within float rounding (1e-4
        relative), so the cache shares them.

    device : str or torch.device, default="auto"
        ``"auto"``: CUDA if available, else Apple MPS, else the CPU.

    progress : bool or "auto", default="auto"
        A tqdm progress bar while transforming; ``"auto"`` shows it only
        on an interactive terminal or in a Jupyter notebook, for more than one batch.

    on_error : {"raise", "skip"}, default="raise"
        What a bad image (missing, truncated, not an image, too large) does.
        Either way every other image of the call is computed (and cached)
        first. ``"raise"``: then a :class:`~skcnn.BadImagesError`
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
        :class:`~skcnn.CodeCache` gives its options (a Dask worker's
        ``shard``, a ``lock_timeout``).

    cache_layers : list of str or None, default=None
        More layers to compute and store in the cache, in the same forward
        pass, whenever an image is missing there: a later request for any
        of them is a hit. Give it the candidates of a grid search over
        ``layer`` and the whole search costs one network pass per image.
        Needs ``cache``.

    tta : {"flips", "dihedral"} or None, default=None
        Test-time augmentation: each image's codes are the average of its
        views' codes, the four flips (``"flips"``) or the eight flips and
        90-degree rotations of the square (``"dihedral"``, square inputs
        only), in ``fit``'s data and later data alike (codes invariant to
        the views). For images with no up or down (cells, textures, tiles);
        it costs one forward pass per view, and codes with it are cached
        apart; ``to_onnx`` exports the views into the file's graph.
        ``None``: one view, the image as it is.

    Attributes
    ----------
    layers_ : tuple of str, or dict of str to tuple of str
        The tapped layers, in the order their codes are concatenated.
        With ``backbone=[...]``, this and the other per-network attributes
        (``layer_shapes_``, ``head_``, ``input_size_``, ``preprocessing_``)
        are always a dict ``{backbone: value of that backbone's part}``; with
        one backbone name, always the value itself.
    layer_shapes_ : dict of str to tuple of int (or a dict of those by backbone)
        Output shape of one image at each tapped (and ``cache_layers``) layer.
    head_ : str (or a dict of str by backbone)
        Name of the classifier head whose input ``"penultimate"`` taps.
    n_features_out_ : int
        Length of the code of one image, all backbones together.
    input_size_ : (int, int) (or a dict of those by backbone)
        Network input height and width.
    preprocessing_ : dict (or a dict of those by backbone)
        The resolved preprocessing: sizes, mean, std and interpolation.
    device_ : str
        The device the network runs on.
    extractor_ : Extractor or ConcatenatedExtractor
        The engine that computes the codes from the resolved parameters
        (``skcnn.codes.extraction.Extractor``; several backbones:
        ``skcnn.codes.several_backbones.ConcatenatedExtractor``). It holds
        no network: one per process is kept loaded, shared by clones.
    failed_ : list of ImageFailure
        Set by ``transform``: the images of the last call that could not be
        used (index, name, reason); empty when all were.
    cache_info_ : CacheStats, dict of str to CacheStats, or None
        Set by ``transform`` when ``cache`` is given: ``hits``, ``misses``
        and ``computed`` (distinct images run through the network) of the
        last call; a dict by backbone with ``backbone=[...]``; None when the
        call had no images.
    parts_ : list of CNNFeatureTransformer
        Only with ``backbone=[...]``: one fitted single-backbone transformer
        per backbone, in order.

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
    weights (it reloads them from their source after unpickling). A
    process keeps at most ``skcnn.network.backbones.MAX_NETWORKS`` networks,
    the least recently used dropped first; :func:`skcnn.clear_networks`
    drops them all.

    ``fit`` derives its attributes from the parameters alone, never from
    the images. So ``transform`` after ``set_params`` re-derives them
    (scikit-learn leaves this case undefined and most of its estimators
    would ask for ``fit`` again): the codes are always those of the
    current parameters.

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

    # As skcnn.options declares them, with a value for each network where backbone=[...].
    _parameter_constraints: dict = constraints_of(*parameter_names(), several_backbones=True)

    def __init__(
        self,
        *,
        backbone=DEFAULTS.backbone,
        weights=DEFAULTS.weights,
        layer=DEFAULTS.layer,
        pooling=DEFAULTS.pooling,
        relu=DEFAULTS.relu,
        input_size=DEFAULTS.input_size,
        crop=DEFAULTS.crop,
        batch_size=DEFAULTS.batch_size,
        num_workers=DEFAULTS.num_workers,
        precision=DEFAULTS.precision,
        decode=DEFAULTS.decode,
        compile=DEFAULTS.compile,
        runtime=DEFAULTS.runtime,
        device=DEFAULTS.device,
        progress=DEFAULTS.progress,
        on_error=DEFAULTS.on_error,
        max_pixels=DEFAULTS.max_pixels,
        cache=DEFAULTS.cache,
        cache_layers=DEFAULTS.cache_layers,
        tta=DEFAULTS.tta,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.relu = relu
        self.input_size = input_size
        self.crop = crop
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.precision = precision
        self.decode = decode
        self.compile = compile
        self.runtime = runtime
        self.device = device
        self.progress = progress
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.cache = cache
        self.cache_layers = cache_layers
        self.tta = tta

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
        params = self.get_params()
        if isinstance(self.backbone, str):
            several_backbones.check_one_value_each(params)
            self.extractor_ = Extractor.from_params(params)
            self._describe(self.extractor_)
        else:
            self.parts_ = [type(self)(**part).fit(X) for part in several_backbones.split_params(params)]
            self.extractor_ = several_backbones.ConcatenatedExtractor(tuple(part.extractor_ for part in self.parts_))
            for attribute in ("layers_", "layer_shapes_", "head_", "input_size_", "preprocessing_"):
                setattr(self, attribute, {part.backbone: getattr(part, attribute) for part in self.parts_})
            self.device_ = self.parts_[0].device_
        self.n_features_out_ = self.extractor_.width
        self._fitted_params = params
        return self

    def _describe(self, extractor: Extractor) -> None:
        """The fitted attributes of one backbone."""
        plan = extractor.stored_plan
        self.layers_ = extractor.layers
        self.layer_shapes_ = dict(zip(plan.layers, plan.shapes, strict=True))
        self.head_ = plan.head
        self.input_size_ = extractor.input_size
        self.preprocessing_ = extractor.preprocessing().as_dict()
        self.device_ = extractor.device

    def transform(self, X):
        """Compute the codes of ``X``.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays (see Notes of the class).

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features_out), dtype float32
            The codes of each image, tapped layers (and backbones)
            concatenated (NaN rows for images that could not be used, with
            ``on_error="skip"``).

        Raises
        ------
        skcnn.BadImagesError
            With ``on_error="raise"``, after all other images were computed,
            when some could not be used; it lists each with its reason.
        """
        check_is_fitted(self)
        images = image_io.as_image_list(X)
        if self.get_params() != self._fitted_params:
            # Parameters changed by set_params since fit. fit only derives
            # shapes from the parameters, never from data, so re-deriving
            # them here is what the user means (see Notes).
            self.fit(images)
        progress = show_progress(self.progress, len(images), self.batch_size)
        codes, self.failed_, cache_stats = self.extractor_.codes(images, progress=progress)
        if self.cache is not None:
            self.cache_info_ = cache_stats
        if self.failed_ and self.on_error == "raise":
            raise image_io.BadImagesError(self.failed_, codes)
        image_io.warn_bad_images(self.failed_, len(images), stacklevel=2, where="their rows are NaN; see failed_")
        return codes

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
        return np.asarray(self.extractor_.feature_names(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images (paths, PIL images, image arrays), not 2-D numeric tables.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # float32 codes whatever the input
        tags.requires_fit = True
        return tags


__all__ = ["CNNFeatureTransformer"]
