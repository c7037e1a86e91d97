"""skcnn: frozen pretrained CNN codes as scikit-learn transformers.

The path an image takes, one module each: ``images`` (decode) ->
``preprocessing`` (resize, crop, normalise) -> ``backbones`` / ``weights``
(the frozen network) -> ``taps`` (layers read in one forward pass) ->
``pooling`` (ReLU and pooling into codes) -> ``cache`` (HDF5 store keyed by
image content) -> ``transformer`` (the scikit-learn estimator).

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
    "CNNFeatureTransformer": ".transformer",
    "Layer": ".taps",
    "list_layers": ".layers",
    "CodeCache": ".cache",
    "check_images": ".images",
    "LayerSearchCV": ".search",
    "advise_layer": ".advice",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'skcnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
