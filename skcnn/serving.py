"""Predict with an exported model (:func:`skcnn.export.to_onnx`) without torch.

Needs numpy, Pillow and onnxruntime only: ``pip install numpy pillow
onnxruntime`` and ``pip install --no-deps skcnn`` are the whole environment.
Images are decoded as the fitted model decodes them
(:func:`skcnn.images.load_image`: EXIF orientation, colour rules, pixel
limit, the same JPEG DCT scaling), then resized and centre-cropped with
Pillow's antialiased filter, which torch's matches to within one level on a
few pixels in a thousand; the recipe is the file's own metadata.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from . import images as image_io
from . import jpeg
from .options import MAX_PIXELS

#: The metadata key :func:`skcnn.export.to_onnx` writes (read here without importing it: it needs torch).
METADATA_KEY = "skcnn"
#: Pillow's filters by torchvision's interpolation names.
_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


class OnnxImageClassifier:
    """A classifier (or transformer) exported by :func:`skcnn.export.to_onnx`, run by ONNX Runtime.

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

    def predict(self, X) -> np.ndarray:
        """The class of each image (``classes_``).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.

        Raises
        ------
        skcnn.BadImagesError
            When images cannot be used; it names them and holds the others' results.
        """
        return self._run(X, "label").astype(self.classes_.dtype)  # ONNX strings come back as objects

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n_images, n_classes)`` (where the model has them).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.
        """
        if self.metadata_.get("scores") == "decision_function":
            raise AttributeError("this model has no predict_proba (its classifier gives decision scores).")
        return self._run(X, "probabilities")

    def decision_function(self, X) -> np.ndarray:
        """The classifier's scores: probabilities, or decision scores (``LinearSVC``).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.
        """
        return self._run(X, "probabilities")

    def transform(self, X) -> np.ndarray:
        """Codes ``(n_images, n_features)`` of an exported transformer.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as the fitted model took them.
        """
        if self.metadata_["kind"] != "transformer":
            raise AttributeError("this file holds a classifier: use predict or predict_proba.")
        return self._run(X, self.metadata_["outputs"][0])

    def _run(self, X, output: str) -> np.ndarray:
        if self.metadata_["kind"] != "classifier" and output in ("label", "probabilities"):
            raise AttributeError("this file holds a transformer (codes out): use transform.")
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
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        h, w = pixels.shape[:2]
        # torchvision's rule for resizing the shorter side (the longer one truncated).
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        picture = picture.resize(size, _FILTERS[recipe["interpolation"]]).convert("RGB")
        return _centre_crop(np.asarray(picture), tuple(recipe["crop_size"]))


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
