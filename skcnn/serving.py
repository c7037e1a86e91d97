"""Predict with an exported model (:func:`skcnn.export.to_onnx`) without torch.

Needs numpy, Pillow and onnxruntime only: ``pip install numpy pillow
onnxruntime`` and ``pip install --no-deps skcnn`` are the whole environment.
Images are decoded as the fitted model decodes them
(:func:`skcnn.images.load_image`: EXIF orientation, colour rules, pixel
limit, the same JPEG DCT scaling), then resized and centre-cropped as the
fitted model does: images the resize enlarges with torch's own integer
arithmetic (``skcnn.resampling``, the same pixels), larger ones with
Pillow's antialiased filter, within one level of torch's on a few values
in a thousand; the recipe is the file's own metadata.
"""

from __future__ import annotations

import functools
import json
import os
from types import MethodType

import numpy as np
from PIL import Image

from . import images as image_io
from . import jpeg, resampling
from .options import MAX_PIXELS

#: The metadata key :func:`skcnn.export.to_onnx` writes (read here without importing it: it needs torch).
METADATA_KEY = "skcnn"
#: Method -> the output it reads: a classifier's (files of skcnn >= 0.7) and a transformer's.
_OUTPUTS = {"predict": "label", "predict_proba": "probabilities", "decision_function": "scores"}
#: Pillow's filters by torchvision's interpolation names.
_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


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


class OnnxImageClassifier:
    """A classifier (or transformer) exported by :func:`skcnn.export.to_onnx`, run by ONNX Runtime.

    Methods exist where the file has their output, as on the fitted model:
    ``predict_proba`` where it had ``predict_proba``, ``decision_function``
    where it had ``decision_function``, ``transform`` for a transformer
    (``hasattr`` says which).

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
    classes_ : ndarray
        The class labels, in the order of the probabilities' columns (classifiers).
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

    def __init__(self, path, *, batch_size=16, max_pixels=MAX_PIXELS, threads=0):
        import onnxruntime

        self.path, self.batch_size, self.max_pixels = os.fspath(path), batch_size, max_pixels
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        props = self._session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{self.path} was not written by skcnn.export.to_onnx (no {METADATA_KEY!r} metadata).")
        self.metadata_ = json.loads(props[METADATA_KEY])
        self.preprocessing_ = self.metadata_["preprocessing"]
        if self.metadata_["kind"] == "classifier":
            self.classes_ = np.asarray(self.metadata_["classes"])
        self.failed_: list = []

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
    out = np.full((n_images, *done.shape[1:]), np.nan) if done.dtype.kind == "f" else np.empty(n_images, done.dtype)
    out[kept] = done
    return out


__all__ = ["OnnxImageClassifier"]
