"""skcnn: frozen pretrained CNN codes as scikit-learn transformers.

The path an image takes, one module each: ``images`` (decode) ->
``preprocessing`` (resize, crop, normalise) -> ``backbones`` / ``weights``
(the frozen network) -> ``taps`` (layers read in one forward pass) ->
``pooling`` (ReLU and pooling into codes) -> ``cache`` (HDF5 store keyed by
image content), driven by ``extraction`` (the engine) under the estimators
(``transformer``, ``search``). The manual's Layout page (docs/layout.md) shows them all.

The public names are imported lazily, so that ``skcnn.cache`` can read codes
on a machine without torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skcnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_PUBLIC = {
    # estimators and advice
    "CNNFeatureTransformer": ".transformer",
    "LayerSearchCV": ".search",
    "CNNClassifier": ".finetuning.classifier",
    "clear_decoded_images": ".finetuning.store",
    "advise_layer": ".advice",
    "LayerAdvice": ".advice",
    # layers
    "list_layers": ".layers",
    "candidate_layers": ".layers",
    "Layer": ".taps",
    # images
    "check_images": ".images",
    "BadImagesError": ".images",
    "BadImagesWarning": ".images",
    "ImageFailure": ".images",
    # the code cache
    "CodeCache": ".cache",
    "CacheStats": ".extraction",
    "CacheError": ".cache",
    # weights and the networks this process keeps
    "CheckpointError": ".weights",
    "clear_networks": ".backbones",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'skcnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
