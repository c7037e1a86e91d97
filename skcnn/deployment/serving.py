"""Predict with an exported model (:func:`skcnn.export.to_onnx`) without torch.

Needs numpy, Pillow and onnxruntime only: ``pip install numpy pillow
onnxruntime`` and ``pip install --no-deps skcnn`` are the whole environment.
Images are decoded as the fitted model decodes them
(:func:`skcnn.images.load_image`: EXIF orientation, colour rules, pixel
limit, the same JPEG DCT scaling), then resized and centre-cropped as the
fitted model does: images the resize enlarges with torch's own integer
arithmetic (``skcnn.deployment.resampling``, the same pixels), larger ones with
Pillow's antialiased filter, within one level of torch's on a few values
in a thousand; the recipe is the file's own metadata.

The file comes from outside: its metadata is checked against a schema with
bounds when it is opened (:func:`validate_metadata`), and the graph's input
against it, so that a damaged or crafted file is refused by name
(:class:`ModelFileError`) before any image is resized as it asks.
"""

from __future__ import annotations

import functools
import json
import math
import os
from types import MethodType

import numpy as np
from PIL import Image

from ..decoding import images as image_io
from ..decoding import jpeg
from ..options import MAX_PIXELS
from . import resampling

#: The metadata key :func:`skcnn.export.to_onnx` writes (read here without importing it: it needs torch).
METADATA_KEY = "skcnn"
#: Method -> the output it reads: a classifier's (files of skcnn >= 0.7) and a transformer's.
_OUTPUTS = {"predict": "label", "predict_proba": "probabilities", "decision_function": "scores"}
#: Pillow's filters by torchvision's interpolation names.
_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
#: The metadata format :func:`skcnn.export.to_onnx` writes (its ``format_version``) and the newest this
#: module reads. Files of skcnn 0.7 and earlier have no such field: they are format 1.
FORMAT_VERSION = 1
#: The largest resize and crop side (px) a file may ask for. skcnn's networks take inputs of at most
#: about 600 px (EfficientNet-B7's 600, resized from 633; a "native" input size is at most twice the
#: network's), so 4096 is far past any file skcnn writes, while it bounds what one image costs the
#: predictor: an image enlarged to 4096 px is 4096 x 4096 x 3 int32 levels (200 MB) in the resize,
#: against 4.8 GB at the 20,000 px a crafted file may ask for.
MAX_SIDE = 4096
_KINDS = ("classifier", "regressor", "transformer")
#: What a file of skcnn <= 0.6 said its "probabilities" output held.
_LEGACY_SCORES = ("probabilities", "decision_function")
_MISSING = object()


class ModelFileError(ValueError):
    """An ``.onnx`` file that :class:`OnnxImageClassifier` cannot use: not loadable, or metadata out of bounds.

    Its message names the file, the field, what the field holds and what is allowed.
    """


def _if_output(method: str):
    """The decorated method exists only where the file has its output (scikit-learn's ``available_if``)."""

    def decorate(function):
        return _IfOutput(function, method)

    return decorate


class _IfOutput:
    """A method descriptor: ``instance._output(method)`` raises AttributeError where the file lacks it."""

    def __init__(self, function, method: str):
        self.function, self.method = function, method
        functools.update_wrapper(self, function)

    def __get__(self, instance, owner=None):
        if instance is None:
            return self.function
        instance._output(self.method)
        return MethodType(self.function, instance)


class OnnxImageModel:
    """A model exported by :func:`skcnn.export.to_onnx`, run by ONNX Runtime: what every kind shares.

    The file is opened and checked, images are decoded and cropped as the
    fitted model did, and the graph runs in batches. :func:`load_onnx` gives
    the class of the file's kind: :class:`OnnxImageClassifier` (a
    classifier, multi-label included, or a transformer),
    :class:`OnnxImageRegressor`.

    Parameters
    ----------
    path : str or path
        The ``.onnx`` file.
    batch_size : int, default=16
        Images per run of the graph.
    max_pixels : int or None, default=MAX_PIXELS
        Image files larger than this (width x height) are refused before decoding.
    threads : int, default=0
        ONNX Runtime's intra-op threads (0: one per core).

    Attributes
    ----------
    preprocessing_ : dict
        Crop and resize sizes, mean, std, interpolation and JPEG DCT margin.
    metadata_ : dict
        Everything the file says of itself (skcnn's version, its kind, outputs).
    failed_ : list of ImageFailure
        Images of the last call that could not be used.

    Examples
    --------
    See :func:`skcnn.export.to_onnx`.
    """

    #: The kinds of file this class runs.
    kinds: tuple[str, ...] = _KINDS

    def __init__(self, path, *, batch_size=16, max_pixels=MAX_PIXELS, threads=0):
        import onnxruntime

        self.path, self.batch_size, self.max_pixels = os.fspath(path), batch_size, max_pixels
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = _session(self.path, options)
        props = self._session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ModelFileError(f"{self.path} was not written by skcnn.export.to_onnx (no {METADATA_KEY!r} metadata).")
        try:
            meta = json.loads(props[METADATA_KEY])
        except ValueError as error:
            raise ModelFileError(f"{self.path}: its {METADATA_KEY!r} metadata is not valid JSON ({error}).") from None
        self.metadata_ = validate_metadata(meta, self.path)
        _check_graph(self._session, self.metadata_, self.path)
        kind = self.metadata_["kind"]
        if kind not in self.kinds:
            raise ModelFileError(
                f"{self.path} holds a {kind}, which {type(self).__name__} does not run: open it with "
                f"{_CLASSES[kind]} (or skcnn.serving.load_onnx, which picks the class of the file's kind)."
            )
        self.preprocessing_ = self.metadata_["preprocessing"]
        self.failed_: list = []

    def _run(self, X, output: str) -> np.ndarray:
        images = image_io.as_image_list(X)
        crops, kept, failures = [], [], []
        results = []
        for index, image in enumerate(images):
            try:
                crops.append(self.crop(image))
                kept.append(index)
            except image_io.ImageError as error:
                failures.append(image_io.failure(image, index, error))
            if len(crops) == self.batch_size or (index == len(images) - 1 and crops):
                results.append(self._session.run([output], {self.metadata_["input"]["name"]: np.stack(crops)})[0])
                crops = []
        self.failed_ = failures
        if failures:
            raise image_io.BadImagesError(failures, _rows(results, kept, len(images)))
        return np.concatenate(results) if results else np.empty((0,))

    def crop(self, image) -> np.ndarray:
        """The ``(h, w, 3)`` uint8 crop the network sees: decoded, resized, centre-cropped.

        Parameters
        ----------
        image : str, path, PIL.Image.Image or ndarray
            One image.
        """
        recipe = self.preprocessing_
        resize = int(recipe["resize_size"])
        min_side = jpeg.min_decoded_side(resize, recipe["jpeg_dct_margin"])
        pixels = image_io.load_image(image, self.max_pixels, min_side)
        if pixels.dtype != np.uint8:  # 16-bit and float sources: rounded, as the graph takes uint8
            pixels = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
        h, w = pixels.shape[:2]
        # torchvision's rule for resizing the shorter side (the longer one truncated).
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        if min(h, w) <= resize and recipe["interpolation"] in resampling.FILTERS:
            # Enlarged: torch's own integer arithmetic (Pillow's rounds its weights otherwise).
            resized = resampling.resize(pixels, size[::-1], recipe["interpolation"])
            resized = np.broadcast_to(resized, (*resized.shape[:2], 3))
        else:
            picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
            resized = np.asarray(picture.resize(size, _FILTERS[recipe["interpolation"]]).convert("RGB"))
        return _centre_crop(resized, tuple(recipe["crop_size"]))


class OnnxImageClassifier(OnnxImageModel):
    """A classifier (or transformer) exported by :func:`skcnn.export.to_onnx`, run by ONNX Runtime.

    Methods exist where the file has their output, as on the fitted model:
    ``predict_proba`` where it had ``predict_proba``, ``decision_function``
    where it had ``decision_function``, ``transform`` for a transformer
    (``hasattr`` says which). A multi-label classifier's ``predict`` gives
    the indicator matrix, ``predict_proba`` one probability per label.

    Parameters
    ----------
    path, batch_size, max_pixels, threads
        As for :class:`OnnxImageModel`.

    Attributes
    ----------
    classes_ : ndarray
        The class labels, in the order of the probabilities' columns (classifiers).
    preprocessing_, metadata_, failed_
        As for :class:`OnnxImageModel`.

    Examples
    --------
    See :func:`skcnn.export.to_onnx`.
    """

    kinds = ("classifier", "transformer")

    def __init__(self, path, *, batch_size=16, max_pixels=MAX_PIXELS, threads=0):
        super().__init__(path, batch_size=batch_size, max_pixels=max_pixels, threads=threads)
        if self.metadata_["kind"] == "classifier":
            self.classes_ = np.asarray(self.metadata_["classes"])

    def _output(self, method: str) -> str:
        """The graph output ``method`` reads, or AttributeError saying why this file has none."""
        meta = self.metadata_
        if meta["kind"] != "classifier":
            if method != "transform":
                raise AttributeError(
                    f"{self.path} holds a transformer (codes out), which has no {method}: use transform."
                )
            return meta["outputs"][0]
        if method == "transform":
            raise AttributeError(f"{self.path} holds a classifier: use predict, predict_proba or decision_function.")
        if "scores" in meta:  # written by skcnn <= 0.6: "probabilities" held the one or the other
            held = "predict_proba" if meta["scores"] == "probabilities" else "decision_function"
            if method in ("predict", held):
                return _OUTPUTS[method] if method == "predict" else "probabilities"
            if method == "decision_function":
                raise AttributeError(
                    f"{self.path} was exported by skcnn {meta.get('skcnn_version', '0.6 or earlier')}, which stored "
                    "probabilities but no decision scores: export the fitted model again with "
                    "skcnn.export.to_onnx (or skcnn export) to have decision_function."
                )
        elif _OUTPUTS[method] in meta["outputs"]:
            return _OUTPUTS[method]
        raise AttributeError(f"{self.path}: the exported model has no {method} (its classifier has none).")

    @_if_output("predict")
    def predict(self, X) -> np.ndarray:
        """The class of each image (``classes_``).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Returns
        -------
        labels : ndarray of shape (n_images,)

        Raises
        ------
        skcnn.BadImagesError
            When images cannot be used; it names them and holds the others' results.
        """
        if self.metadata_.get("multilabel", False):
            return self._run(X, "label")  # the indicator matrix: a column per label of classes_
        return self._run(X, "label").astype(self.classes_.dtype)  # ONNX strings come back as objects

    @_if_output("predict_proba")
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, where the fitted model has ``predict_proba``.

        Within 1e-3 of the fitted model's (``docs/user_guide/export.md``).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Returns
        -------
        probabilities : ndarray of shape (n_images, n_classes)
        """
        return self._run(X, self._output("predict_proba"))

    @_if_output("decision_function")
    def decision_function(self, X) -> np.ndarray:
        """Decision scores, as the fitted model's ``decision_function``, where it has one.

        A pipeline's classifier's scores (``LogisticRegression``,
        ``LinearSVC``, ``SVC``, ...); a ``CNNClassifier``'s logits.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Returns
        -------
        scores : ndarray of shape (n_images,) or (n_images, n_classes)
            ``(n_images,)`` for two classes (the second class's score), as scikit-learn's.
        """
        scores = self._run(X, self._output("decision_function"))
        if "scores" in self.metadata_ and scores.ndim == 2 and scores.shape[1] == 2 == len(self.classes_):
            return scores[:, 1]  # files of skcnn <= 0.6: skl2onnx's two columns, -s and s
        return scores

    @_if_output("transform")
    def transform(self, X) -> np.ndarray:
        """Codes of an exported transformer.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Returns
        -------
        codes : ndarray of shape (n_images, n_features)
        """
        return self._run(X, self._output("transform"))


class OnnxImageRegressor(OnnxImageModel):
    """A regressor exported by :func:`skcnn.export.to_onnx`, run by ONNX Runtime.

    A :class:`~skcnn.CNNRegressor` or a pipeline ending in a scikit-learn
    regressor; ``predict`` is shaped as the fitted model's (``(N,)`` for a
    target of one column given as a vector, ``(N, n_outputs)`` otherwise).

    Parameters
    ----------
    path, batch_size, max_pixels, threads
        As for :class:`OnnxImageModel`.

    Attributes
    ----------
    n_outputs_ : int
        The number of targets predicted.
    preprocessing_, metadata_, failed_
        As for :class:`OnnxImageModel`.

    Examples
    --------
    >>> import tempfile, os
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.export import to_onnx
    >>> from skcnn.serving import load_onnx
    >>> X, y = load_texture_patches(n_per_class=4, patch_size=64)
    >>> brightness = [image.mean() / 255 for image in X]
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), Ridge()).fit(X, brightness)
    >>> served = load_onnx(to_onnx(model, os.path.join(tempfile.mkdtemp(), "model.onnx")))
    >>> type(served).__name__, served.predict(X).shape
    ('OnnxImageRegressor', (12,))
    >>> bool(abs(served.predict(X) - model.predict(X)).max() < 1e-3)
    True
    """

    kinds = ("regressor",)

    def __init__(self, path, *, batch_size=16, max_pixels=MAX_PIXELS, threads=0):
        super().__init__(path, batch_size=batch_size, max_pixels=max_pixels, threads=threads)
        self.n_outputs_ = int(self.metadata_["n_outputs"])

    def predict(self, X) -> np.ndarray:
        """The predicted targets of each image.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Returns
        -------
        predictions : ndarray of shape (n_images,) or (n_images, n_outputs)

        Raises
        ------
        skcnn.BadImagesError
            When images cannot be used; it names them and holds the others' results.
        """
        predictions = self._run(X, "predictions")
        return predictions.reshape(len(predictions), -1)[:, 0] if self.metadata_["output_ndim"] == 1 else predictions


#: The class that runs each kind of file.
_CLASSES = {
    "classifier": "OnnxImageClassifier",
    "transformer": "OnnxImageClassifier",
    "regressor": "OnnxImageRegressor",
}


def load_onnx(path, **params) -> OnnxImageModel:
    """The exported model in ``path``, as the class of its kind.

    Parameters
    ----------
    path : str or path
        The ``.onnx`` file (:func:`skcnn.export.to_onnx`).
    **params
        ``batch_size``, ``max_pixels``, ``threads``, as for :class:`OnnxImageModel`.

    Returns
    -------
    model : OnnxImageClassifier or OnnxImageRegressor
        A classifier's or a transformer's file, or a regressor's.

    Raises
    ------
    ModelFileError
        Where the file is not one skcnn wrote, or its metadata is out of bounds.
    """
    model = OnnxImageModel(path, **params)
    return globals()[_CLASSES[model.metadata_["kind"]]](path, **params)


def validate_metadata(meta, path) -> dict:
    """``meta``, the JSON metadata of an exported file, checked against the schema skcnn writes.

    Every field the predictor reads is checked, with bounds: the kind, the
    outputs, the classes of a classifier, the input name, the resize and
    crop sizes (positive integers of at most :data:`MAX_SIDE` px, the crop
    within the resize), the interpolation (one the resampling code knows),
    mean and std (3 finite numbers, std > 0) and the JPEG DCT margin. A file
    of a newer format than :data:`FORMAT_VERSION` is refused as such, before
    its other fields.

    Parameters
    ----------
    meta : object
        The parsed metadata (:func:`skcnn.export.to_onnx` writes it).
    path : str or path
        The file, for the messages.

    Returns
    -------
    meta : dict
        ``meta`` itself, once checked.

    Raises
    ------
    ModelFileError
        Naming the file, the field, what it holds and what is allowed.

    Examples
    --------
    >>> from skcnn.serving import ModelFileError, validate_metadata
    >>> try:
    ...     validate_metadata({"kind": "segmenter"}, "model.onnx")
    ... except ModelFileError as error:
    ...     print(str(error).split(". ")[0])
    model.onnx: the metadata field 'kind' holds 'segmenter'; allowed: one of ('classifier', 'regressor', 'transformer')
    """
    path = os.fspath(path)
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: its {METADATA_KEY!r} metadata holds {_shown(meta)}, not a JSON object.")
    _check_format(meta, path)
    kind = _field(meta, "kind", path, lambda v: v in _KINDS, f"one of {_KINDS}")
    _field(meta, "outputs", path, lambda v: _list_of(v, str) and len(v) > 0, "a non-empty list of output names")
    if kind == "classifier":
        _check_classes(meta, path)
    elif kind == "regressor":
        _check_regressor(meta, path)
    elif "n_features" in meta:
        _field(meta, "n_features", path, lambda v: _integer(v, 1, None), "a positive integer")
    recipe = _field(meta, "preprocessing", path, lambda v: isinstance(v, dict), "a JSON object")
    _check_recipe(recipe, path)
    graph_input = _field(meta, "input", path, lambda v: isinstance(v, dict), "a JSON object")
    _field(graph_input, "name", path, lambda v: isinstance(v, str) and v != "", "a non-empty string", "input.")
    if "size" in graph_input:
        crop = recipe["crop_size"]
        _field(graph_input, "size", path, lambda v: v == crop, f"the crop size {crop}", "input.")
    return meta


def _check_format(meta: dict, path: str) -> None:
    """A newer format than this skcnn reads is refused as such: its other fields may mean other things."""
    version = meta.get("format_version", 1)
    if not _integer(version, 1, None):
        raise _invalid(path, "format_version", version, "a positive integer")
    if version > FORMAT_VERSION:
        from .. import __version__

        raise ModelFileError(
            f"{path} was written by a newer skcnn ({meta.get('skcnn_version', 'version unknown')}, metadata "
            f"format_version {version}); this skcnn ({__version__}) reads format_version {FORMAT_VERSION} at "
            "most: upgrade skcnn (pip install -U skcnn) to use the file."
        )


def _check_classes(meta: dict, path: str) -> None:
    """A classifier's classes (distinct strings, or distinct numbers), its ``label`` output, its legacy key."""
    allowed = "a non-empty list of distinct class labels, all strings or all finite numbers"
    classes = _field(meta, "classes", path, lambda v: _list_of(v, str) or _labels(v), allowed)
    if not classes or len(set(classes)) != len(classes):
        raise _invalid(path, "classes", classes, allowed)
    if "label" not in meta["outputs"]:
        raise _invalid(path, "outputs", meta["outputs"], "a list that has a classifier's 'label'")
    if "scores" in meta:
        _field(meta, "scores", path, lambda v: v in _LEGACY_SCORES, f"one of {_LEGACY_SCORES}")
    if "multilabel" in meta:  # the classes are the labels of the indicator matrix's columns
        _field(meta, "multilabel", path, lambda v: isinstance(v, bool), "true or false")


def _check_regressor(meta: dict, path: str) -> None:
    """A regressor's ``predictions`` output: ``n_outputs`` columns, predicted as a vector (1) or a matrix (2)."""
    if "predictions" not in meta["outputs"]:
        raise _invalid(path, "outputs", meta["outputs"], "a list that has a regressor's 'predictions'")
    n_outputs = _field(meta, "n_outputs", path, lambda v: _integer(v, 1, None), "a positive integer")
    single = "1 (one target, predicted as a vector) or 2"
    _field(meta, "output_ndim", path, lambda v: v == 2 or (v == 1 and n_outputs == 1), single)


def _check_recipe(recipe: dict, path: str) -> None:
    """Resize and crop within :data:`MAX_SIDE`, the crop within the resize, a known filter, finite numbers."""
    side = f"an integer from 1 to {MAX_SIDE} (px)"
    field = functools.partial(_field, recipe, path=path, prefix="preprocessing.")
    resize = field("resize_size", ok=lambda v: _integer(v, 1, MAX_SIDE), allowed=side)
    crop = field("crop_size", ok=_crop_size, allowed=f"[height, width], each {side}")
    if max(crop) > resize:  # the crop is taken from the resized image, whose shorter side is the resize
        raise _invalid(path, "preprocessing.crop_size", crop, f"sides of at most the resize size ({resize} px)")
    field("interpolation", ok=lambda v: isinstance(v, str) and v in _FILTERS, allowed=f"one of {tuple(_FILTERS)}")
    field("mean", ok=lambda v: _numbers(v, 3), allowed="a list of 3 finite numbers")
    field("std", ok=lambda v: _numbers(v, 3) and min(v) > 0, allowed="a list of 3 finite numbers above 0")
    margin = "null or a finite number of at least 1"
    field("jpeg_dct_margin", ok=lambda v: v is None or (_numbers([v], 1) and v >= 1), allowed=margin)


def _field(mapping: dict, key: str, path: str, ok, allowed: str, prefix: str = ""):
    """``mapping[key]`` where ``ok`` accepts it, or ModelFileError naming the field (``prefix + key``)."""
    value = mapping.get(key, _MISSING)
    if value is _MISSING or not ok(value):
        raise _invalid(path, prefix + key, value, allowed)
    return value


def _invalid(path: str, field: str, value, allowed: str) -> ModelFileError:
    shown = "nothing (the field is missing)" if value is _MISSING else _shown(value)
    return ModelFileError(
        f"{path}: the metadata field {field!r} holds {shown}; allowed: {allowed}. The file is damaged or was "
        "not written by skcnn.export.to_onnx: export the fitted model again."
    )


def _shown(value, limit: int = 80) -> str:
    """``repr(value)`` cut at ``limit`` characters: a crafted list of classes may be long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _integer(value, low: int, high: int | None) -> bool:
    """An int (not a bool: JSON's true) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high)


def _crop_size(value) -> bool:
    return _list_of(value, int) and len(value) == 2 and all(_integer(side, 1, MAX_SIDE) for side in value)


def _numbers(value, n: int) -> bool:
    """A list of ``n`` finite numbers (json parses NaN and Infinity as floats: refused here)."""
    return _list_of(value, int | float) and len(value) == n and all(_finite(x) for x in value)


def _labels(value) -> bool:
    """Numeric class labels: ints, or bools and floats, which skl2onnx exports as ints (and scikit-learn takes)."""
    return isinstance(value, list) and all(_finite(x) for x in value)


def _finite(value) -> bool:
    """A number other than NaN and infinity (an int always is: ``math.isfinite`` would overflow on a huge one)."""
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _list_of(value, kind) -> bool:
    """A list of ``kind`` (bools excluded: ``True`` is an int to Python)."""
    return isinstance(value, list) and all(isinstance(x, kind) and not isinstance(x, bool) for x in value)


def _check_graph(session, meta: dict, path: str) -> None:
    """The graph takes ``(N, h, w, 3)`` uint8 crops of the metadata's crop size under its input name, and has its
    outputs: a file whose metadata and graph disagree would fail at its first image, or run on other crops."""
    inputs = {graph_input.name: graph_input for graph_input in session.get_inputs()}
    name, crop = meta["input"]["name"], meta["preprocessing"]["crop_size"]
    if name not in inputs:
        raise _invalid(path, "input.name", name, f"an input of the graph {sorted(inputs)}")
    shape = inputs[name].shape
    expected = [None, *crop, 3]  # None: any batch size; a symbolic dimension (a str) takes any
    agrees = len(shape) == 4 and all(
        not isinstance(got, int) or want is None or got == want for got, want in zip(shape, expected, strict=True)
    )
    if inputs[name].type != "tensor(uint8)" or not agrees:
        raise ModelFileError(
            f"{path}: the graph's input {name!r} is {inputs[name].type} of shape {shape}, where the metadata's "
            f"crop size {crop} asks for uint8 crops of shape [N, {crop[0]}, {crop[1]}, 3]. The file is damaged "
            "or was not written by skcnn.export.to_onnx: export the fitted model again."
        )
    outputs = {output.name for output in session.get_outputs()}
    if not set(meta["outputs"]) <= outputs:
        raise _invalid(path, "outputs", meta["outputs"], f"outputs of the graph, {sorted(outputs)}")


def _session(path: str, options):
    """ONNX Runtime's session of ``path``, or an error a caller of skcnn expects (not ONNX Runtime's own kinds)."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as runtime_errors

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file.")
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except (runtime_errors.InvalidProtobuf, runtime_errors.InvalidGraph, runtime_errors.Fail) as error:
        raise ModelFileError(f"{path} is not an ONNX model ONNX Runtime can load: {error}") from None


def _centre_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """torchvision's centre crop: offsets rounded half to even, as Python rounds."""
    h, w = pixels.shape[:2]
    top, left = round((h - crop[0]) / 2.0), round((w - crop[1]) / 2.0)
    return np.ascontiguousarray(pixels[top : top + crop[0], left : left + crop[1]])


def _rows(results: list[np.ndarray], kept: list[int], n_images: int) -> np.ndarray | None:
    """The outputs of the usable images in their rows, NaN (or empty) rows for the others."""
    if not results:
        return None
    done = np.concatenate(results)
    shape = (n_images, *done.shape[1:])
    out = np.full(shape, np.nan) if done.dtype.kind == "f" else np.empty(shape, done.dtype)
    out[kept] = done
    return out


__all__ = [
    "FORMAT_VERSION",
    "MAX_SIDE",
    "ModelFileError",
    "OnnxImageClassifier",
    "OnnxImageModel",
    "OnnxImageRegressor",
    "load_onnx",
    "validate_metadata",
]
