"""skcnn: frozen pretrained CNN codes as scikit-learn transformers.

The path an image takes, one folder per part: ``decoding`` (files -> pixels
-> the network's input) -> ``network`` (the frozen network, its taps, how it
runs) -> ``codes`` (pooling, the engine, the HDF5 cache keyed by image
content) -> ``frozen`` (the estimators on codes: ``CNNFeatureTransformer``,
``LayerSearchCV``, ``advise_layer``). Beside them, ``finetuning`` (the second
strategy), ``inspection`` (after ``fit``) and ``deployment`` (ONNX export and
torch-free serving). The manual's Layout page (docs/layout.md) shows them all;
the flat paths of before 0.8 (``skcnn.cache``, ``skcnn.images``, ...) still
import (``skcnn.moved``).

The public names are imported lazily, so that ``skcnn.cache`` can read codes
on a machine without torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from . import moved

moved.install()

try:
    __version__ = version("skcnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_PUBLIC = {
    # estimators and advice
    "CNNFeatureTransformer": ".frozen.transformer",
    "LayerSearchCV": ".frozen.search",
    "CNNClassifier": ".finetuning.classifier",
    "CNNRegressor": ".finetuning.regressor",
    "clear_decoded_images": ".finetuning.store",
    "advise_layer": ".frozen.advice",
    "LayerAdvice": ".frozen.advice",
    # layers
    "list_layers": ".network.layers",
    "candidate_layers": ".network.layers",
    "Layer": ".network.taps",
    # images
    "check_images": ".decoding.images",
    "BadImagesError": ".decoding.images",
    "BadImagesWarning": ".decoding.images",
    "ImageFailure": ".decoding.images",
    # the code cache
    "CodeCache": ".codes.cache",
    "CacheStats": ".codes.extraction",
    "CacheError": ".codes.cache",
    # weights and the networks this process keeps
    "CheckpointError": ".network.weights",
    "clear_networks": ".network.backbones",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    if f"{__name__}.{name}" in moved.MOVED:
        # skcnn.dask where only skcnn.frozen.dask was imported (a Dask worker unpickling a task): the
        # attribute a flat module got when it was imported, now that it lives in a part folder.
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'skcnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
